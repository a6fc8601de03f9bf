"""Sweeps on Ray Tune over the training engine's recipes."""
