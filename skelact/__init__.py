"""skelact: human action recognition from 3D skeletons, RGB video and depth.

`skelact.load(path)` opens a trained model (checkpoint or exported ONNX) for prediction: see
`skelact.api`.
"""

__version__ = "0.1.0"


def load(path, pose_model=None, threads=None):
    """A trained model from a checkpoint (.pt) or an ONNX export (.onnx): `skelact.api.load`."""
    from skelact.api import load as _load  # torch is imported only when a model is loaded

    return _load(path, pose_model=pose_model, threads=threads)
