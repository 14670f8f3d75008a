"""Stream processors: frame decoding, face detection and alignment, quality scoring."""
