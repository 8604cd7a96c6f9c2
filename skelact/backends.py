"""The inference backends a trained model runs on: torch (a checkpoint) and onnxruntime (an
ONNX export). Both take stream inputs with batch N first and return logits (N, classes) and
attention {stream: (N, T)}; `skelact.api` runs a model on either, `skelact.export` writes
the ONNX file `OnnxBackend` reads.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from skelact.contract import Contract, ContractError, check_views


class TorchBackend:
    """The checkpoint's network in torch eager mode (CPU)."""

    def __init__(self, ck: dict):
        import torch
        from omegaconf import OmegaConf

        from skelact.models.recognizer import build_recognizer

        cfg = OmegaConf.create(ck["config"])
        streams = list(cfg.modality.streams)
        self.net = build_recognizer(cfg.model, streams, ck["num_classes"], ck["specs"])
        self.net.load_state_dict(ck["model"])
        self.net.eval()
        self._torch = torch

    def __call__(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
        """Stream inputs with batch N first -> logits (N, classes), attention {stream: (N, T)}."""
        torch = self._torch
        with torch.no_grad():
            x = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
            out = self.net(x)
        return out["logits"].numpy(), {k: a.numpy() for k, a in out["attention"].items()}


def input_shapes(contract: Contract, batch: int = 1) -> dict[str, tuple[int, ...]]:
    """The network's input shape per stream for `batch` clips."""
    shapes = {}
    for s, spec in contract.streams.items():
        if "num_joints" in spec:
            t = contract.skeleton["clip_len"]
            shapes[s] = (batch, spec["num_bodies"], t, spec["num_joints"], spec["channels"])
        else:
            shapes[s] = (batch, contract.frames[s], spec["feature_dim"])
    return shapes


# Upper bounds of the contract's sizes, checked also where the graph leaves a size dynamic:
# preprocessing allocates by them (a clip_len of 10**8 would ask for gigabytes per clip).
LIMITS = {
    "num_bodies": 64, "clip_len": 10_000, "num_joints": 1_000, "channels": 10_000,
    "num_frames": 10_000, "feature_dim": 1_000_000, "test_clips": 1_000, "classes": 1_000_000,
}  # fmt: skip


def check_graph(contract: Contract, inputs, outputs, source) -> None:
    """Refuse (ContractError) an ONNX file whose contract metadata the graph contradicts:
    input names and sizes (`input_shapes`), the logits' width against the class names, an
    attention output per stream; sizes the graph leaves dynamic must lie within `LIMITS`.
    `inputs`, `outputs`: onnxruntime's NodeArgs (name, shape with ints or dim names)."""
    if not isinstance(contract.classes, list) or not all(
        isinstance(c, str) for c in contract.classes
    ):
        raise ContractError(f"{source}: the metadata's class names are not a list of strings")
    names = [i.name for i in inputs]
    if names != list(contract.streams):
        raise ContractError(
            f"{source}: the graph's inputs {names} are not the metadata's streams "
            f"{list(contract.streams)}"
        )
    try:
        sizes = {"test_clips": contract.skeleton["test_clips"], "classes": len(contract.classes)}
        expected = input_shapes(contract)
    except (KeyError, TypeError) as err:
        raise ContractError(
            f"{source}: incomplete skelact contract in its metadata: {err!r}"
        ) from err
    _check_sizes(sizes, [None, None], source, "the metadata")
    check_views(contract.skeleton.get("test_views"), source, "metadata")
    for node in inputs:
        dims = SKELETON_DIMS if len(expected[node.name]) == 5 else FEATURE_DIMS
        want = dict(zip(dims, expected[node.name][1:], strict=True))
        _check_sizes(want, node.shape[1:], source, f"the graph's input {node.name!r}")
    logits = {o.name: o.shape for o in outputs}.get("logits")
    if logits is None or len(logits) != 2:
        raise ContractError(f"{source}: the graph has no (batch, classes) output 'logits'")
    _check_sizes({"classes": len(contract.classes)}, logits[1:], source, "the graph's logits")
    missing = {f"attention_{s}" for s in contract.streams} - {o.name for o in outputs}
    if missing:
        raise ContractError(f"{source}: the graph lacks the output(s) {sorted(missing)}")


SKELETON_DIMS = ("num_bodies", "clip_len", "num_joints", "channels")  # after the batch
FEATURE_DIMS = ("num_frames", "feature_dim")


def _check_sizes(want: dict, graph_dims, source, where: str) -> None:
    """Each metadata size in `want`: an int in 1..LIMITS, equal to the graph's dim when the
    graph fixes it (an int in `graph_dims`, same order)."""
    if len(graph_dims) != len(want):
        raise ContractError(f"{source}: {where} has {len(graph_dims) + 1} dims, the metadata "
                            f"implies {len(want) + 1}")  # fmt: skip
    for (key, value), dim in zip(want.items(), graph_dims, strict=True):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LIMITS[key]:
            raise ContractError(f"{source}: the metadata's {key}={value!r} is not a size in "
                                f"1..{LIMITS[key]}")  # fmt: skip
        if isinstance(dim, int) and dim != value:
            raise ContractError(
                f"{source}: the metadata's {key}={value}, but {where} has {dim} there"
            )


class OnnxBackend:
    """An exported model in onnxruntime (CPU); `contract` read from its metadata."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise RuntimeError(
                f"{path}: running ONNX models needs onnxruntime: pip install 'skelact[onnx]'"
            ) from err
        if not Path(path).is_file():
            raise FileNotFoundError(f"ONNX model {path} does not exist")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime's own error types: one line
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RuntimeError(
                f"ONNX model {path} could not be loaded (a damaged or unfinished file? export it "
                f"again with `skelact export`): {reason}"
            ) from err
        meta = self.session.get_modelmeta().custom_metadata_map
        if "skelact_contract" not in meta:
            raise ContractError(f"{path}: no skelact contract in its metadata (not exported by "
                                "`skelact export`)")  # fmt: skip
        try:
            self.contract = Contract.from_json(meta["skelact_contract"])
        except (ValueError, TypeError) as err:
            raise ContractError(
                f"{path}: unreadable skelact contract in its metadata: {err}"
            ) from err
        check_graph(self.contract, self.session.get_inputs(), self.session.get_outputs(), path)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
        """Stream inputs with batch N first -> logits (N, classes), attention {stream: (N, T)}."""
        feed = {k: np.ascontiguousarray(v, np.float32) for k, v in inputs.items()}
        res = dict(zip(self.outputs, self.session.run(None, feed), strict=True))
        att = {k[len("attention_") :]: v for k, v in res.items() if k.startswith("attention_")}
        return res["logits"], att
