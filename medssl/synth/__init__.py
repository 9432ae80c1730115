"""medssl.synth"""
