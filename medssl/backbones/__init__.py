"""medssl.backbones"""
