"""medssl.losses"""
