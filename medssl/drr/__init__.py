"""medssl.drr"""
