"""Diffusion: the rectified-flow objective (flow.py)."""
