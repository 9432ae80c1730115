"""medssl.views"""
