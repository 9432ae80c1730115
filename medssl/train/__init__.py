"""medssl.train"""
