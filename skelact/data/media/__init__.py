"""Frames and per-frame features: where RGB and depth live, how they are read and encoded."""
