"""Reading a backbone's weights file: tensors only, so loading never runs code from the file."""

from __future__ import annotations

import torch


def read_state(path, arch: str, remedy: str) -> dict[str, torch.Tensor]:
    """A weights file -> state dict; raises naming the file, the backbone and `remedy` (what to
    do about it) when it cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means an unusable checkpoint
        raise RuntimeError(
            f"{arch} ImageNet weights {path}: not a readable checkpoint ({err}); "
            f"{remedy} or pass another weights_file"
        ) from err
