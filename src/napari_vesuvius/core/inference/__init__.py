"""Sliding-window 3D inference: models, normalisation, the tiling engine and model loading."""
