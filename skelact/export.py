"""`skelact export CKPT --onnx model.onnx` (onnxruntime runs it: `skelact.backends.OnnxBackend`).

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

from skelact.backends import input_shapes
from skelact.contract import Contract

OPSET = 17


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
    if out.is_dir():
        raise ValueError(f"{out} is a folder: give the ONNX file's name, e.g. {out}/model.onnx")
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
        "features": json.dumps(contract.stream_kinds),
        "class_names": json.dumps(contract.classes),
    }
