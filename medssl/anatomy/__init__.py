"""medssl.anatomy"""
