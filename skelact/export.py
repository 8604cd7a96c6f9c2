"""`skelact export CKPT --onnx model.onnx`, and running the exported model with onnxruntime.

The ONNX graph is the network only: one input per stream in the checkpoint's order (skeleton
streams (N, M, T, V, C'), cached-feature streams (N, T, D)), outputs "logits" (N, classes)
and "attention_<stream>" (N, T) per stream; the batch N is dynamic, the other sizes are the
contract's. Preprocessing stays in numpy (`skelact.api.Model.inputs`), shared by both
backends. The contract goes into the model's metadata: "skelact_contract" (JSON, read back
by `skelact.load`) and, for other tools, "layout", "channels", "num_bodies", "clip_len",
"num_frames", "class_names" (JSON strings).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from skelact.contract import Contract, ContractError

OPSET = 17


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


def export_onnx(ckpt: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Export the checkpoint's network to `out` (ONNX, opset 17) with its contract."""
    import onnx
    import torch

    from skelact.api import load

    if Path(ckpt).suffix == ".onnx":
        raise ValueError(f"{ckpt}: export reads a checkpoint (.pt), not an ONNX file")
    model = load(ckpt)
    contract, net = model.contract, model.backend.net
    names = list(contract.streams)

    class Flat(torch.nn.Module):  # positional inputs -> a flat tuple of outputs
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, *xs):
            res = self.net(dict(zip(names, xs, strict=True)))
            return (res["logits"], *(res["attention"][s] for s in names))

    gen = torch.Generator().manual_seed(0)
    example = tuple(torch.randn(s, generator=gen) for s in input_shapes(contract, 2).values())
    outputs = ["logits", *(f"attention_{s}" for s in names)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # the legacy-exporter notice, and torch's caution about RNNs with batch != 1: the
        # dynamic batch is checked against torch by the tests
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*")
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the RNN's own shape checks
        _export(Flat().eval(), example, out, names, outputs)
    proto = onnx.load(str(out))
    for key, value in metadata(contract).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(out))
    return out


def _export(module, example, out: Path, names: list[str], outputs: list[str]) -> None:
    import torch

    torch.onnx.export(
        module,
        example,
        str(out),
        input_names=names,
        output_names=outputs,
        dynamic_axes={n: {0: "batch"} for n in names + outputs},
        opset_version=OPSET,
        dynamo=False,  # the TorchScript exporter: no onnxscript dependency
    )


def metadata(contract: Contract) -> dict[str, str]:
    sk = contract.skeleton_streams
    return {
        "skelact_contract": contract.to_json(),
        "layout": contract.layout,
        "channels": json.dumps({s: contract.streams[s]["channels"] for s in sk}),
        "num_bodies": str(contract.num_bodies) if sk else "0",
        "clip_len": str(contract.skeleton["clip_len"]),
        "num_frames": json.dumps(contract.frames),
        "features": json.dumps(list(contract.skeleton["features"])),
        "class_names": json.dumps(contract.classes),
    }


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
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if "skelact_contract" not in meta:
            raise ContractError(f"{path}: no skelact contract in its metadata (not exported by "
                                "`skelact export`)")  # fmt: skip
        self.contract = Contract.from_json(meta["skelact_contract"])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
        """Stream inputs with batch N first -> logits (N, classes), attention {stream: (N, T)}."""
        feed = {k: np.ascontiguousarray(v, np.float32) for k, v in inputs.items()}
        res = dict(zip(self.outputs, self.session.run(None, feed), strict=True))
        att = {k[len("attention_") :]: v for k, v in res.items() if k.startswith("attention_")}
        return res["logits"], att
