"""Checkpoints: written atomically, read without running code from the file, found from a run
directory, and used to start a model from another's weights (trainer.init_from)."""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from skelact.files import atomic_write


def save_checkpoint(state: dict, path: str | Path) -> None:
    """torch.save to a temporary file, fsync, then rename: a kill or a full disk never leaves a
    half-written checkpoint, nor the temporary file."""
    with atomic_write(path) as f:
        torch.save(state, f)


def checkpoint_file(path: str | Path) -> Path:
    """The file a checkpoint path names: a run directory of `skelact train` stands for its
    checkpoints/last.pt (its final weights); anything else as given."""
    path = Path(path)
    last = path / "checkpoints" / "last.pt"
    return last if path.is_dir() and last.is_file() else path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(
            f"checkpoint {path} is a folder without checkpoints/last.pt: give a run directory "
            "of `skelact train` or a checkpoint file (.pt)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".onnx":
        raise RuntimeError(
            f"{path} is an ONNX model, not a checkpoint (.pt): evaluation and training read "
            "checkpoints; skelact.load and `skelact predict` run ONNX models"
        )
    try:
        # weights_only: tensors, numbers, strings and containers; never code from the file
        with warnings.catch_warnings():  # torch's notes on a foreign pickle: the error says it
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message suggests turning weights_only off: the very thing that would run code
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found:
            raise RuntimeError(
                f"checkpoint {path} names {found.group(1)}, not only tensors and plain data: "
                "loading it could run code from the file, so skelact did not load it"
            ) from err
        detail = [x.strip() for x in str(err).splitlines() if x.startswith("Unsupported")]
        raise RuntimeError(
            f"checkpoint {path} could not be read: not a checkpoint of tensors and plain data"
            + (f" ({detail[0]})" if detail else "")
        ) from err
    except Exception as err:  # noqa: BLE001 - report which file is broken
        detail = str(err).strip()  # torch says no more than a number for some foreign files
        if not detail or detail.isdigit():
            detail = f"not a file torch.save wrote ({type(err).__name__} {detail})".strip()
        raise RuntimeError(
            f"checkpoint {path} could not be read (is it a checkpoint of `skelact train`?): "
            f"{detail}"
        ) from err


def run_checkpoint(path: str | Path, option: str) -> Path:
    """The checkpoint that a path given to `option` names: a file as it is, a run directory's
    checkpoints/last.pt (its final weights)."""
    path = checkpoint_file(path)
    if not path.is_file():
        what = "has no checkpoints/last.pt" if path.is_dir() else "does not exist"
        raise SystemExit(
            f"{option}: {path} {what}; give a run directory of `skelact train` or one of its "
            "checkpoints"
        )
    return path


def init_weights(
    model: torch.nn.Module, source: str | Path, layout: str, classes: Sequence[str]
) -> dict:
    """Start `model` from a trained model's weights (trainer.init_from): every tensor whose
    name and shape match is copied; the others (a stream the checkpoint lacks, a layer of
    another shape) keep their fresh initialisation, and so do the layers that score the
    classes unless the checkpoint's classes are `classes`, by name and in order, and the
    modality weights of a fused model (the run's own, `Recognizer.run_own`). Refuses a
    checkpoint of another joint layout, and one that shares no tensor with the model. Returns
    a report."""
    path = run_checkpoint(source, "trainer.init_from")
    ck = load_checkpoint(path)
    if ck.get("layout") != layout:
        raise SystemExit(
            f"trainer.init_from: {path} was trained on the {ck.get('layout')} joint layout, "
            f"this run's data is {layout}; the joints must be the same (`skelact repack "
            f"DATA OUT --layout {ck.get('layout')}` where the data has its joints, or start "
            "from a model of this layout)"
        )
    own, theirs = model.state_dict(), ck["model"]
    same_classes = list(ck.get("classes") or []) == list(classes)
    not_taken = set() if same_classes else {
        f"{name}.{key}"
        for name, module in model.named_modules()
        if getattr(module, "scores_classes", False)
        for key, _ in module.named_parameters(recurse=False)
    }  # fmt: skip
    not_taken |= {  # the run's own choices (the modality weights), never the checkpoint's
        f"{name}.{key}" if name else key
        for name, module in model.named_modules()
        for key in getattr(module, "run_own", ())
    }
    taken = {
        k: v
        for k, v in theirs.items()
        if k in own and own[k].shape == v.shape and k not in not_taken
    }
    if not taken:
        raise SystemExit(
            f"trainer.init_from: no tensor of {path} fits this model (another architecture or "
            "other streams); start from a checkpoint of the same model config"
        )
    model.load_state_dict(taken, strict=False)
    fresh = sorted(k for k in own if k not in taken)
    unused = sorted(k for k in theirs if k not in taken)
    return {
        "checkpoint": str(path),
        "loaded": len(taken),
        "same_classes": same_classes,
        "fresh": fresh,
        "unused": unused,
    }
