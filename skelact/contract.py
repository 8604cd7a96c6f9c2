"""A checkpoint's input contract, and samples conformed to it.

A trained model fixes what it reads: the joint layout, the number of bodies, the coordinates
per joint and the input channels made from them, the clip length and the test clips, and for
fused models the frames of each cached-feature stream. `Contract` holds these as plain data
(it travels in checkpoints and in ONNX metadata); `conform` makes a sample fit it, or refuses
with a message naming the mismatch. `skelact predict`, the Python API and `skelact eval` share
them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from skelact.data.prep.augment import check_test_views
from skelact.data.prep.channels import MotionFeatures
from skelact.data.prep.sampling import present


class ContractError(ValueError):
    """A sample does not fit the model's input contract; the message names the mismatch."""


@dataclass
class Contract:
    """What a model reads. `streams`: stream -> input spec as in the checkpoint ("num_joints",
    "channels", "num_bodies" for skeletons; "feature_dim" for cached features). `skeleton`:
    the data.skeleton config (preprocessing). `frames`: feature stream -> frames sampled."""

    layout: str
    classes: list[str]
    streams: dict[str, dict]
    skeleton: dict
    frames: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_checkpoint(cls, ck: dict, source: str = "checkpoint") -> Contract:
        cfg = ck["config"]
        streams = list(cfg["modality"]["streams"])
        specs = {s: dict(ck["specs"][s]) for s in streams}
        frames = {}
        for s, spec in specs.items():
            if "in_channels" in spec:
                raise ContractError(
                    f"{source}: stream {s!r} reads video frames; only skeleton streams and "
                    "cached features (model.<stream>.input=features) can be used here"
                )
            if "feature_dim" in spec:
                frames[s] = int(cfg["data"][s]["num_frames"])
        classes = list(ck["classes"])[: ck["num_classes"]]
        classes += [str(i) for i in range(len(classes), ck["num_classes"])]
        skeleton = dict(cfg["data"]["skeleton"])
        check_views(skeleton.get("test_views"), source, "config")
        return cls(ck["layout"], classes, specs, skeleton, frames)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Contract:
        return cls(**json.loads(text))

    @property
    def skeleton_streams(self) -> list[str]:
        return [s for s, spec in self.streams.items() if "num_joints" in spec]

    @property
    def stream_kinds(self) -> dict[str, list[str]]:
        """The feature kinds of each skeleton stream: "skeleton" reads skeleton["features"],
        a "skeleton_*" stream its skeleton["stream_features"] entry (modality=skeleton_4s)."""
        table = self.skeleton.get("stream_features") or {}
        return {
            s: list(self.skeleton["features"] if s == "skeleton" else table[s])
            for s in self.skeleton_streams
        }

    @property
    def num_bodies(self) -> int:
        return int(self.streams[self.skeleton_streams[0]]["num_bodies"])

    @property
    def num_joints(self) -> int:
        return int(self.streams[self.skeleton_streams[0]]["num_joints"])

    @property
    def coords(self) -> int:
        """Coordinates per joint of the raw keypoints (3 for x y z), from the channel count."""
        first = self.skeleton_streams[0]
        spec, kinds = self.streams[first], self.stream_kinds[first]
        wide = sum(k in MotionFeatures.PER_JOINT for k in kinds)
        dist = wide * spec["num_joints"]
        per = len(kinds) - wide
        return (spec["channels"] - dist) // per if per else 3

    def summary(self) -> str:
        s = self.skeleton
        return (
            f"layout {self.layout}, {self.num_bodies} bod{'y' if self.num_bodies == 1 else 'ies'}"
            f" x {self.num_joints} joints x {self.coords} coords, features "
            f"{self.features_text()}, clip_len {s['clip_len']}, test_clips {s['test_clips']}"
        )

    def features_text(self) -> str:
        """ "joint+velocity+bone", or per stream for several skeleton streams."""
        kinds = self.stream_kinds
        if list(kinds) == ["skeleton"]:
            return "+".join(kinds["skeleton"])
        return ", ".join(f"{s}: {'+'.join(k)}" for s, k in kinds.items())


def check_views(views, source, where: str) -> None:
    """A model's test_views (in its checkpoint's config or ONNX metadata): None, or what
    `check_test_views` accepts; else ContractError naming the file."""
    if views is not None:
        try:
            check_test_views(views)
        except ValueError as err:
            raise ContractError(f"{source}: the {where}'s {err}") from err


def real_array(x, source: str, what: str) -> np.ndarray:
    """x (a numpy array, a nested list, or a torch tensor of any float dtype, bfloat16 included)
    -> a numpy array of real numbers; ContractError naming `source` for complex, boolean,
    text or object data."""
    if type(x).__module__.startswith("torch"):  # numpy cannot take bfloat16 tensors
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise ContractError(f"{source}: {what} are not an array of numbers ({err})") from err
    if arr.dtype.kind not in "fiu":
        raise ContractError(
            f"{source}: {what} must be real numbers, got dtype {arr.dtype} (of {type(x).__name__})"
        )
    return arr


def conform(
    keypoint: np.ndarray, contract: Contract, source: str = "sample", layout: str | None = None
) -> np.ndarray:
    """keypoint (M, T, V, C) -> (num_bodies, T, V, C) float32 for `contract`.

    With more bodies than the contract's count, the most active are kept (`most_active`);
    missing ones are zero-padded. Refuses (ContractError naming `source`) another layout,
    joint count or coordinate count, no frames, nobody in any frame (all zeros), and values
    that are not finite as float32.
    """
    kp = real_array(keypoint, source, "keypoints")
    if layout is not None and layout != contract.layout:
        raise ContractError(
            f"{source}: layout {layout!r}, but the model was trained on {contract.layout!r}"
        )
    if kp.ndim != 4:
        raise ContractError(f"{source}: keypoints must be (M, T, V, C), got shape {kp.shape}")
    m, t, v, c = kp.shape
    if v != contract.num_joints:
        raise ContractError(
            f"{source}: {v} joints per body, but the model's layout {contract.layout!r} has "
            f"{contract.num_joints}"
        )
    if c != contract.coords:
        raise ContractError(
            f"{source}: {c} coordinates per joint, but the model reads {contract.coords} "
            f"({contract.features_text()})"
        )
    if t == 0 or m == 0:
        raise ContractError(f"{source}: no frames or no body (shape {kp.shape})")
    with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, refused below
        kp = kp.astype(np.float32, copy=False)
    if not np.isfinite(kp).all():  # a NaN would pass through the model to a NaN probability
        bad = np.argwhere(~np.isfinite(kp))
        raise ContractError(
            f"{source}: {len(bad)} non-finite coordinate(s) (NaN or inf), the first at body "
            f"{bad[0][0]}, frame {bad[0][1]}, joint {bad[0][2]}; give an untracked joint or "
            "body as zeros, coordinates within float32's range"
        )
    if not kp.any():  # nobody in any frame: no action to tell (live and windows skip these)
        raise ContractError(f"{source}: every coordinate is zero: no body in any frame")
    n = contract.num_bodies
    kp = most_active(kp, n)
    if m < n:
        kp = np.concatenate([kp, np.zeros((n - m, t, v, c), np.float32)])
    return kp


def order_by_activity(keypoint: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Body order (M,) most active first: the sum over joints and coordinates of the temporal
    variance over the frames the body is present in (the rule of the NTU importer).

    keypoint (M, T, V, C); mask (M, T) bool, default: frames with any non-zero joint.
    """
    if mask is None:
        mask = present(keypoint)
    from skelact.data.sources.ntu_bodies import activity

    scores = [activity(keypoint[m, mask[m]]) if mask[m].any() else -1 for m in range(len(keypoint))]
    return np.argsort(-np.asarray(scores), kind="stable")


def most_active(keypoint: np.ndarray, n: int) -> np.ndarray:
    """keypoint (M, T, V, C) -> (min(M, n), T, V, C): all bodies when M <= n, else the n most
    active, most active first (`order_by_activity`). Importers that order bodies (NTU,
    MediaPipe) make this the first n; SBU lists person A first, whoever acts."""
    if len(keypoint) <= n:
        return keypoint
    return keypoint[order_by_activity(np.asarray(keypoint))[:n]]


def check_specs(trained: dict, found: dict) -> None:
    """Refuse (SystemExit) when the input specs a dataset gives differ from those a checkpoint
    was trained with (joints, channels, bodies, feature width), naming the stream and key."""
    for stream, spec in trained.items():
        for key, value in spec.items():
            got = found.get(stream, {}).get(key, value)
            if got != value:
                raise SystemExit(
                    f"skelact eval: stream {stream}: the checkpoint takes {key}={value}, the "
                    f"evaluation data gives {got}"
                )
