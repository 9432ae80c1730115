"""medssl.heads"""
