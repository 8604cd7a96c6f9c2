"""NTU RGB+D: sample names, protocols, missing-skeleton lists and class names.

A sample name `SsssCcccPpppRrrrAaaa` gives setup, camera, performer (subject), replication and
action (1-based). The `.skeleton` parser is `skelact.data.sources.ntu_skeleton`; its bodies
are chosen in `skelact.data.sources.ntu_bodies`; `skelact.data.sources.ntu_prepare` turns a
folder of files into a store.
"""

from __future__ import annotations

import os
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

NTU60_XSUB_TRAIN_SUBJECTS = frozenset(
    {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}
)
NTU120_XSUB_TRAIN_SUBJECTS = NTU60_XSUB_TRAIN_SUBJECTS | frozenset(
    {45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85,
     86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103}
)  # fmt: skip
XVIEW_TRAIN_CAMERAS = frozenset({2, 3})  # camera 1 tests
# Per dataset: its setups and actions, and per protocol whether a sample trains.
DATASETS = {
    "ntu60": {
        "setups": 17,
        "actions": 60,
        "protocols": {
            "xsub": lambda n: n.subject in NTU60_XSUB_TRAIN_SUBJECTS,
            "xview": lambda n: n.camera in XVIEW_TRAIN_CAMERAS,
        },
    },
    "ntu120": {
        "setups": 32,
        "actions": 120,
        "protocols": {
            "xsub": lambda n: n.subject in NTU120_XSUB_TRAIN_SUBJECTS,
            "xset": lambda n: n.setup % 2 == 0,  # even setup ids train, odd ones test
        },
    },
}
_MISSING_LISTS = {
    "ntu60": ("NTU_RGBD_samples_with_missing_skeletons.txt", 302),
    "ntu120": ("NTU_RGBD120_samples_with_missing_skeletons.txt", 535),
}
_NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})(?!\d)")


class NTUName(NamedTuple):
    """The fields of an NTU sample name; `str()` gives the name back."""

    setup: int
    camera: int
    subject: int
    replication: int
    action: int

    def __str__(self) -> str:
        s, c, p, r, a = self
        return f"S{s:03d}C{c:03d}P{p:03d}R{r:03d}A{a:03d}"


def parse_name(name: str | os.PathLike) -> NTUName:
    """Fields of "S001C002P003R002A013" (a bare name, a path, or a name with a suffix)."""
    base = Path(name).name
    m = _NAME_RE.match(base)
    fields = tuple(int(g) for g in m.groups()) if m else ()
    if not fields or min(fields) < 1:
        raise ValueError(
            f"{str(name)!r} is not an NTU sample name "
            "(expected SsssCcccPpppRrrrAaaa with 1-based ids, e.g. S001C002P003R002A013)"
        )
    return NTUName(*fields)


# ---------------------------------------------------------------------------- protocols
def _check_dataset(dataset: str) -> dict[str, Any]:
    if dataset not in DATASETS:
        raise ValueError(f"unknown NTU dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    return DATASETS[dataset]


def in_dataset(name: str | os.PathLike | NTUName, dataset: str) -> bool:
    """Whether a sample belongs to "ntu60" (setups 1-17, actions 1-60) or "ntu120" (all)."""
    spec = _check_dataset(dataset)
    n = name if isinstance(name, NTUName) else parse_name(name)
    return n.setup <= spec["setups"] and n.action <= spec["actions"]


def split_of(name: str | os.PathLike | NTUName, dataset: str = "ntu60") -> dict[str, str]:
    """Membership per protocol: {"xsub": "train"|"val", "xview"|"xset": "train"|"val"}."""
    n = name if isinstance(name, NTUName) else parse_name(name)
    if not in_dataset(n, dataset):
        raise ValueError(f"sample {n} is not part of {dataset}")
    protocols = DATASETS[dataset]["protocols"]
    return {proto: "train" if trains(n) else "val" for proto, trains in protocols.items()}


def _resource(filename: str) -> str:
    return resources.files("skelact").joinpath("resources", filename).read_text("utf-8")


@cache
def _missing(dataset: str) -> frozenset[str]:
    filename, expected = _MISSING_LISTS[dataset]
    lines = _resource(filename).splitlines()[3:]  # 3 header lines
    names = frozenset(str(parse_name(ln.strip())) for ln in lines if ln.strip())
    if len(names) != expected:
        raise RuntimeError(f"packaged {filename} lists {len(names)} names, expected {expected}")
    return names


def missing_samples(dataset: str = "ntu60") -> set[str]:
    """The official names of samples without usable skeletons (302 for ntu60, 535 for ntu120)."""
    _check_dataset(dataset)
    return set(_missing(dataset))


def ntu_classes(dataset: str = "ntu60") -> list[str]:
    """The official action names in label order (60 or 120)."""
    names = [ln for ln in _resource("ntu120_classes.txt").splitlines() if ln]
    return names[: _check_dataset(dataset)["actions"]]
