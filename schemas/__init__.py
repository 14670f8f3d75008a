"""The message contract of every FaceGate topic."""
