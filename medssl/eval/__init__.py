"""medssl.eval"""
