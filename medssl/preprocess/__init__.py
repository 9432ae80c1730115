"""medssl.preprocess"""
