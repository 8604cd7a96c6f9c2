"""Shared fixtures: paths to the real data, a learnable toy annotation file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from skelact.data.formats.annotations import save_annotations

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
FRESH_THREADS = torch.get_num_threads()  # before any test or fixture sets its own


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (see ../shared/data/README.md)")
    return path


def toy_annotations(
    num_classes: int = 3,
    per_class: int = 24,
    frames: int = 40,
    joints: int = 25,
    bodies: int = 1,
    seed: int = 0,
) -> dict:
    """A learnable set: class c moves joint group c along a sine of its own frequency.

    Two "subjects" per class alternate between the train and test splits.
    """
    rng = np.random.default_rng(seed)
    anns, split = [], {"train": [], "test": []}
    base = rng.normal(0, 0.3, (joints, 3)).astype(np.float32)
    for c in range(num_classes):
        for i in range(per_class):
            t = np.linspace(0, 2 * np.pi, frames)
            kp = np.repeat(base[None], frames, 0) + rng.normal(0, 0.02, (frames, joints, 3))
            group = slice(c * joints // num_classes, (c + 1) * joints // num_classes)
            kp[:, group, 1] += 0.4 * np.sin((c + 1) * t + rng.uniform(0, 1))[:, None]
            kp = np.repeat(kp[None], bodies, 0).astype(np.float32)
            name = f"toy_c{c}_{i:03d}"
            anns.append({"frame_dir": name, "label": c, "keypoint": kp, "total_frames": frames})
            split["train" if i % 4 else "test"].append(name)
    return {
        "split": split,
        "annotations": anns,
        "classes": [f"class{c}" for c in range(num_classes)],
    }


@pytest.fixture(autouse=True, scope="session")
def _store_cache(tmp_path_factory):
    """Pickles converted to stores during tests go to a temporary cache, not ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SKELACT_CACHE", str(tmp_path_factory.mktemp("skelact_cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _torch_threads():
    """Each test runs with torch's thread count of a fresh process (what `skelact` run in a
    subprocess gets): fixtures that train in-process set their own, and features computed
    with another count differ in the last bits from a cache a subprocess wrote."""
    torch.set_num_threads(FRESH_THREADS)
    yield


@pytest.fixture
def toy_ann_file(tmp_path) -> Path:
    return save_annotations(toy_annotations(), tmp_path / "toy.pkl")


@pytest.fixture(scope="session")
def pose_model() -> Path:
    """The offline MediaPipe bundle, built once (pip fetches the mediapipe 0.10.21 wheel)."""
    from skelact.pose.model import PoseModelError, ensure_pose_model

    try:
        return ensure_pose_model(offline=True)
    except PoseModelError as err:
        pytest.skip(f"offline pose bundle unavailable (pip could not fetch the wheel?): {err}")


@pytest.fixture(scope="session")
def clip() -> Path:
    """The real NTU RGB clip (1920x1080, 72 frames)."""
    return shared_data("ntu", "videos", "ntu_sample.avi")


def train_toy_checkpoint(
    root: Path, bodies: int = 1, fused: bool = False, multistream: bool = False, extra=()
) -> Path:
    """One epoch on toy NTU-layout data (clip_len 16): a small real checkpoint of the single
    skeleton stream (`modality=skeleton model=bilstm`). `fused`: plus an RGB stream reading
    cached features (T, 8) made from each sample's own motion. `multistream`: the default
    skeleton streams (five) instead. `extra`: further overrides."""
    from skelact.config import compose_config
    from skelact.train import train

    data = {**toy_annotations(num_classes=6, per_class=8, frames=30, bodies=bodies)}
    data["layout"] = "ntu25"
    ann = save_annotations(data, root / "toy_ntu.pkl")
    overrides = [
        f"data.ann_file={ann}",
        "data.train_split=train",
        "data.test_split=test",
        "trainer.epochs=1",
        "trainer.num_workers=0",
        "trainer.threads=1",
        "trainer.progress=false",
        "data.skeleton.clip_len=16",
    ]
    if not multistream:
        overrides += ["modality=skeleton", "model=bilstm"]
    if fused:
        feats = root / "rgb_features"
        feats.mkdir()
        for a in data["annotations"]:
            f = a["keypoint"][0, :, :8, 1]  # (T, 8): a stand-in image feature per frame
            np.save(feats / f"{a['frame_dir']}.npy", f.astype(np.float16))
        overrides += ["modality=rgb_skeleton", f"data.rgb.features={feats}"]
        overrides += ["data.rgb.num_frames=8"]
    train(compose_config([*overrides, *extra]), root / "run")
    return root / "run" / "checkpoints" / "last.pt"


@pytest.fixture(scope="session")
def ntu_ckpt(tmp_path_factory) -> Path:
    """A one-person ntu25 checkpoint (toy data, 1 epoch)."""
    return train_toy_checkpoint(tmp_path_factory.mktemp("ckpt1"))


def assert_training_step(net, out: dict, labels) -> None:
    """One backward pass from `out` reaches every parameter, and an optimiser step moves them."""
    import torch

    from skelact.losses import stream_loss

    loss = stream_loss(out, labels, 0.1, 0.5)
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad
    before = [p.detach().clone() for p in net.parameters()]
    torch.optim.AdamW(net.parameters(), lr=1e-3).step()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
