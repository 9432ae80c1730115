"""medssl.io"""
