"""Use a trained model from Python.

    import skelact
    model = skelact.load("runs/.../checkpoints/best.pt")   # or an exported model.onnx
    result = model.predict("clip.mp4")     # a video, keypoints (M, T, V, C) or a sample dict
    # (a model fused with cached RGB features computes them from the video, as it was trained)
    result.name, result.prob, result.probs, result.topk(5), result.attention
    for update in model.stream("clip.mp4"):  # camera index, stream URL or video file, live
        print(f"{update.time:.1f}s {update.name} {update.prob:.2f}")

The model applies its checkpoint's own preprocessing (layout, bodies, centring, view
alignment, scale, clip length, test clips, input channels: `skelact.contract`) in numpy, so
a checkpoint and its ONNX export see the same inputs. `skelact predict` is built on this.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skelact.backends import OnnxBackend, TorchBackend
from skelact.contract import Contract, ContractError, conform, order_by_activity, real_array
from skelact.layouts import POSE_LAYOUTS


@dataclass
class Result:
    """One prediction: class probabilities (classes,) averaged over the test clips, the first
    clip's temporal attention (T',) with the input frame of each weight (T',)."""

    probs: np.ndarray
    classes: list[str]
    attention: np.ndarray | None
    frames: np.ndarray
    sample: dict | None = None  # the converted video, when the input was one

    @property
    def label(self) -> int:
        return int(self.probs.argmax())

    @property
    def name(self) -> str:
        return self.classes[self.label]

    @property
    def prob(self) -> float:
        return float(self.probs[self.label])

    def topk(self, k: int = 5) -> list[tuple[int, str, float]]:
        """[(label, name, probability)] of the k most probable classes, best first."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"topk: k must be an integer >= 1, got {k!r}")
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [(int(i), self.classes[i], float(self.probs[i])) for i in order]


_CROP_KEYS = ("color_box", "color_xy", "keypoint_2d")  # per-body (M, ...) fields a crop reads


class Model:
    """A trained recognizer with its contract: predict on videos, keypoints, samples; stream."""

    def __init__(self, backend, contract: Contract, source: str, pose_model=None):
        self.backend, self.contract, self.source = backend, contract, source
        self.pose_model = pose_model
        self._pipeline = None
        self._encoders: dict = {}  # stream -> frozen per-frame encoder, built on first use

    @property
    def classes(self) -> list[str]:
        return self.contract.classes

    def pipeline(self):
        """The test-time skeleton transforms of the checkpoint (built once)."""
        if self._pipeline is None:
            from omegaconf import OmegaConf

            from skelact.data.datasets import skeleton_channels
            from skelact.data.prep.transforms import build_skeleton_pipeline
            from skelact.layouts import get_layout

            c = self.contract
            layout = get_layout(c.layout, c.num_joints)
            scfg = OmegaConf.create(c.skeleton)
            # one pass computes every skeleton stream's channels; each takes its own
            union, self._channels = skeleton_channels(c.stream_kinds, c.coords, c.num_joints)
            self._pipeline = build_skeleton_pipeline(layout, scfg, False, c.num_bodies, union)
        return self._pipeline

    def inputs(self, keypoint, features: dict | None = None, source="sample", layout=None):
        """keypoint (M, T, V, C) [+ cached features {stream: (T0, D)}] -> the network's inputs
        {stream: (K, ...)} for the K test clips, and the input frame per step of clip 0."""
        from skelact.data.prep.sampling import sample_indices

        kp = conform(keypoint, self.contract, source, layout)
        res = self.pipeline()({"keypoint": kp})
        x = {s: res["keypoint"][..., i] for s, i in self._channels.items()}  # (K, M, T, V, C_s)
        k = len(res["keypoint"])
        for s, n in self.contract.frames.items():
            feats = (features or {}).get(s)
            if feats is None:
                from_video = (
                    "features=model.features(sample) for a sample of model.convert(video), or "
                    if s == "rgb"
                    else ""  # depth cannot come from a video
                )
                raise ContractError(
                    f"{source}: the model also reads {s!r} features: pass {from_video}"
                    f"features={{{s!r}: its (T, {self.contract.streams[s]['feature_dim']}) array "
                    f"from `skelact prepare features --modality {s}`}}"
                )
            f = real_array(feats, source, f"{s} features").astype(np.float32, copy=False)
            if f.ndim != 2 or f.shape[1] != self.contract.streams[s]["feature_dim"]:
                raise ContractError(
                    f"{source}: {s} features must be (T, {self.contract.streams[s]['feature_dim']})"
                    f", got {f.shape}"
                )
            # repeated for the K clips (the torch model would take one clip, but the exported
            # ONNX graph wants every stream at the same batch size)
            x[s] = np.repeat(f[sample_indices(len(f), n)][None], k, 0)  # (K, T, D)
        return x, res["trim_offset"] + res["frame_inds"][0]

    def predict(
        self, x, features: dict | None = None, layout: str | None = None, mirrored: bool = False
    ) -> Result:
        """Classify a video path (`mirrored`: a mirror-image video, as NTU's), keypoints
        (M, T, V, C) in the model's layout, or a sample dict with "keypoint" (an annotation
        file's entry: `open_annotations(path)[i]` as it is). `features`: cached features
        {stream: (T, D)} for fused models."""
        sample = None
        if isinstance(x, str | os.PathLike):
            sample = self.convert(x, mirrored=mirrored)
            x = sample
            if features is None and self.contract.frames:
                features = self.features(sample)
        if isinstance(x, Mapping):  # a dict, or a store's sample (store[i])
            source = str(x.get("frame_dir", "sample"))
            if "keypoint" not in x:
                raise ContractError(f'{source}: a sample dict needs its "keypoint" (M, T, V, C)')
            feats = features or x.get("features")
            inputs, frames = self.inputs(x["keypoint"], feats, source, layout or x.get("layout"))
        else:
            inputs, frames = self.inputs(x, features, "keypoints", layout)
        logits, attention = self.backend(inputs)
        e = np.exp(logits - logits.max(-1, keepdims=True))
        probs = (e / e.sum(-1, keepdims=True)).mean(0)  # softmax, averaged over the test clips
        # several skeleton streams see the same frames: their attention averaged
        sk = [attention[s] for s in self.contract.skeleton_streams if s in attention]
        att = np.mean(sk, axis=0) if sk else None
        return Result(probs, self.classes, None if att is None else att[0], frames, sample)

    def predict_people(self, sample: dict) -> list[tuple[int, Result]]:
        """Each tracked body of `sample` on its own: [(track id, Result)], for one-person
        models on videos with several people (a fused model's RGB crop is the person's own)."""
        out = []
        for m in range(sample["keypoint"].shape[0]):
            if not np.abs(sample["keypoint"][m]).any():
                continue
            feats = self.features(sample, track=m) if self.contract.frames else None
            out.append((m, self.predict(sample["keypoint"][m : m + 1], feats)))
        return out

    def features(
        self, sample: dict, track: int | None = None, span: tuple[int, int] | None = None
    ) -> dict[str, np.ndarray]:
        """The cached-feature streams' inputs computed from the video of a converted `sample`
        (`convert`), as `skelact prepare features` made them for training: {stream: (T0, D)}.

        The crop goes around every body's "color_box" (or track `track`'s only); span:
        (start, stop) frames to sample from (a sliding window). Only RGB can come from a video:
        a depth stream's features must be given to `predict`.
        """
        from skelact.data.media.features import clip_features, crop_points, frame_encoder

        if track is not None:  # this person's crop only
            per_body = {k: sample[k][track : track + 1] for k in _CROP_KEYS if k in sample}
            sample = {**sample, **per_body}
        out = {}
        for s in self.contract.frames:
            settings = self._extractor(s)
            if s not in self._encoders:
                self._encoders[s] = frame_encoder(settings)
            xy = crop_points(sample, "rgb")
            out[s] = clip_features(sample["video"], xy, settings, self._encoders[s], span=span)
        return out

    def _extractor(self, stream: str) -> dict:
        """How the checkpoint's `stream` features were made; refuses what a video cannot give."""
        settings = self.contract.streams[stream].get("extractor")
        if settings and settings.get("modality") == "rgb":
            return settings
        why = (
            "they were made from depth, not video"
            if settings
            else "the checkpoint does not say how they were made: trained before skelact kept "
            "it, or on a cache without index.json"
        )
        raise ContractError(
            f"{self.source}: the {stream!r} features cannot be computed from a video ({why}); "
            f"pass features={{{stream!r}: (T, D) array}}"
        )

    def convert(
        self, video, max_people: int | None = None, mirrored: bool = False, progress=False
    ) -> dict:
        """MediaPipe over `video` in the model's layout; with several bodies kept, the most
        active first (as the NTU importer orders them). `progress`: a bar over the frames."""
        from tqdm import tqdm

        from skelact.pose.convert import frame_count
        from skelact.pose.extract import extract_video
        from skelact.pose.model import ensure_pose_model

        self._check_video_layout()
        people = max_people or self.contract.num_bodies
        model = ensure_pose_model(self.pose_model)
        bar: list = []  # made at the first frame: a video that fails to open shows none

        def on_frame() -> None:
            if not bar:
                bar.append(tqdm(total=frame_count(Path(video)), desc="pose", unit="frame",
                                leave=False, disable=None))  # on a terminal only  # fmt: skip
            bar[0].update(1)

        try:
            sample = extract_video(
                video, model, people, self.contract.layout, on_frame if progress else None,
                mirrored,
            )  # fmt: skip
        finally:
            for b in bar:
                b.close()
        if sample["keypoint"].shape[0] > 1:  # max_people given or not (tracks are slots)
            order = order_by_activity(sample["keypoint"], sample["mask"])
            for key in ("keypoint", "keypoint_2d", "keypoint_score", "mask", "color_box"):
                sample[key] = sample[key][order]
        return sample

    def warmup(self) -> None:
        """One pass on a still pose: the first call pays for allocations, not the first update."""
        c = self.contract
        kp = np.zeros((c.num_bodies, c.skeleton["clip_len"], c.num_joints, c.coords), np.float32)
        kp[0] = np.linspace(0, 1, c.num_joints * c.coords).reshape(c.num_joints, c.coords)
        feats = {s: np.zeros((n, c.streams[s]["feature_dim"])) for s, n in c.frames.items()}
        self.predict(kp, feats)

    def _check_video_layout(self) -> None:
        """Refuse a model whose joint layout videos cannot be converted to."""
        if self.contract.layout not in POSE_LAYOUTS:
            raise ContractError(
                f"{self.source}: the model was trained on layout {self.contract.layout!r};"
                f" skeletons from videos come in {' or '.join(POSE_LAYOUTS)} only: for videos,"
                " train on skeletons from `skelact convert` (or NTU's); keypoints of this"
                " layout go to predict()"
            )

    def stream(self, source, **kwargs):
        """Live updates over a camera index, stream URL or video file: see `skelact.live`."""
        from skelact.live import stream

        if self.contract.frames:
            raise ContractError(
                f"{self.source}: live prediction reads skeletons only; this model also reads "
                f"{', '.join(self.contract.frames)} features (use `predict` on a video file)"
            )
        self._check_video_layout()
        return stream(self, source, **kwargs)


def load(path: str | os.PathLike, pose_model=None, threads: int | None = None) -> Model:
    """A checkpoint (.pt; a run directory for its checkpoints/last.pt) or an exported ONNX
    model (.onnx), ready to predict."""
    path = Path(path)
    if path.suffix == ".onnx":
        backend = OnnxBackend(path, threads)
        return Model(backend, _with_skeleton(backend.contract, path), str(path), pose_model)
    from skelact.checkpoints import checkpoint_file, load_checkpoint

    if threads:
        import torch

        torch.set_num_threads(threads)
    path = checkpoint_file(path)
    ck = load_checkpoint(path)
    contract = _with_skeleton(Contract.from_checkpoint(ck, str(path)), path)
    return Model(TorchBackend(ck), contract, str(path), pose_model)


def _with_skeleton(contract: Contract, path) -> Contract:
    """`contract`, refused where it has no skeleton stream: every use here (a video, keypoints,
    a sample, ONNX export) starts from a skeleton; a model of cached features alone (e.g.
    `--modality depth`) is scored by `skelact eval`."""
    if not contract.skeleton_streams:
        raise ContractError(
            f"{path}: a model of {', '.join(contract.streams)} alone, no skeleton stream; predict, "
            "the API and export take models with one (`skelact eval ckpt=...` scores this one "
            "on its feature cache)"
        )
    return contract
