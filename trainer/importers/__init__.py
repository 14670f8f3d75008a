"""Readers that turn model files from registry packages into PyTorch modules."""
