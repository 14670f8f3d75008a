"""PyTorch definitions of the embedding models FaceGate serves and fine-tunes."""
