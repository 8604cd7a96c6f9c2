"""skelact: human action recognition from 3D skeletons, RGB video and depth."""

__version__ = "0.1.0"
