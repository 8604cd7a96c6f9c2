"""What a model saw before its own training: the models a run starts from
(`trainer.init_from`) or learns from (`trainer.distill.teacher`), theirs in turn, and how many
samples of the run's test split each of them was trained on.

A model pretrained on a merge that holds the test set (`skelact merge` of every set, then
fine-tuning on one of them) has seen the test samples, and its test score counts them. Training
refuses that, as it refuses a test split that shares samples with its own training split
(`data.allow_test_overlap=true` lets it through, with a warning); `skelact eval` warns. Both
write the findings to metrics.json ("lineage").

The samples are matched by name, where the names mean the same samples: the model's training
file is the test file itself, or a merge of it (`skelact merge` names a file's samples
"<tag>/<name>" and records the files it merged). A model trained on another file is listed
with `test_samples` null and a note.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from skelact.checkpoints import checkpoint_file, load_checkpoint
from skelact.files import same_file

log = logging.getLogger("skelact")

# The settings through which a run takes in another model: (setting, its keys in the config).
SOURCES = (
    ("trainer.init_from", ("trainer", "init_from")),
    ("trainer.distill.teacher", ("trainer", "distill", "teacher")),
)
MAX_DEPTH = 8  # models followed back from the run (a chain of fine-tunings), at most


def _sources(config: dict) -> list[tuple[str, str]]:
    """(setting, path) of each model `config` (a run's config, plain) took in."""
    found = []
    for setting, keys in SOURCES:
        value = config
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value:
            found.append((setting, str(value)))
    return found


def lineage(config: dict, source: str, test_names: np.ndarray, store=None) -> list[dict]:
    """For each model `config` (a run's config, plain) started from or learned from, and each
    of theirs in turn: where it is, the annotation file and split it trained on, and
    `test_samples`, how many of `test_names` (names in the annotation file `source`, opened as
    `store` where given) that split holds, with one of them as `example`; null where that
    cannot be told, `note` saying why."""
    found: list[dict] = []
    seen: set[Path] = set()
    todo = [(setting, path, 0) for setting, path in _sources(config)]
    while todo:
        by, given, depth = todo.pop(0)
        path = checkpoint_file(given)
        entry = {"by": by, "checkpoint": str(path), "ann_file": None, "train_split": None,
                 "test_samples": None, "example": None, "note": None}  # fmt: skip
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        try:
            ck = load_checkpoint(path)
        except (OSError, RuntimeError) as err:
            found.append({**entry, "note": f"not read: {err}"})
            continue
        trained = ck.get("config") or {}
        data = trained.get("data") or {}
        entry["ann_file"], entry["train_split"] = data.get("ann_file"), data.get("train_split")
        entry.update(_count(entry["ann_file"], entry["train_split"], source, test_names, store))
        found.append(entry)
        if depth + 1 < MAX_DEPTH:
            todo += [(f"{by} -> {s}", p, depth + 1) for s, p in _sources(trained)]
    return found


def _count(ann_file, split, source: str, test_names: np.ndarray, store) -> dict:
    """{"test_samples", "example", "note"}: the samples of `test_names` in `ann_file`'s
    `split`, where that file is `source` or a merge of it."""
    from skelact.data.formats.annotations import open_annotations

    if not ann_file or not split:
        return {"note": "the checkpoint does not record the data it was trained on"}
    if not Path(ann_file).exists():
        return {"note": f"its training file {ann_file} is not there (moved or deleted)"}
    if same_file(ann_file, source):
        trained_store, prefix = store if store is not None else open_annotations(source), ""
    else:
        trained_store = open_annotations(ann_file)
        prefix = _merged_as(trained_store, Path(ann_file), source)
        if prefix is None:
            parts = [p["file"] for p in trained_store.top.get("merged_from") or []]
            what = f"a merge of {', '.join(parts)}, none of them" if parts else "not"
            return {"note": f"trained on another file ({ann_file}, {what} {source}): its "
                            "samples cannot be matched by name"}  # fmt: skip
    if split not in trained_store.splits:
        return {"note": f"{ann_file} has no split {split} any more"}
    names = trained_store.names[trained_store.split(split)].astype(str)
    if prefix:
        names = np.array([n[len(prefix) :] for n in names if n.startswith(prefix)], dtype=str)
    hits = np.asarray(test_names)[np.isin(test_names, names)]
    how = "the same file" if not prefix else f"merged from this file, as {prefix}<name>"
    return {"test_samples": int(len(hits)), "example": str(hits[0]) if len(hits) else None,
            "note": how}  # fmt: skip


def _merged_as(store, path: Path, source: str) -> str | None:
    """The prefix ("<tag>/") under which the merged annotation file `store` (at `path`) holds
    the samples of `source`; None when it is not a merge of `source`."""
    for part in store.top.get("merged_from") or []:
        given = Path(part["file"])
        places = [part.get("path"), given, path.parent / given]
        if any(p is not None and same_file(p, source) for p in places):
            tag = part.get("tag") or given.name.split(".")[0]
            return f"{tag}/"
    return None


def check_lineage(cfg: DictConfig, data, refuse: bool = True) -> list[dict] | None:
    """The lineage of `cfg`'s run (`lineage`) against its data.test_split, logged; None where
    the run takes in no other model, or its test split was carved from its training split (a
    fusion fit's development run). With `refuse`, a model that trained on test samples ends
    the run unless data.allow_test_overlap=true (then a warning), as a shared split does."""
    config = OmegaConf.to_container(cfg, resolve=False)
    split = cfg.data.test_split
    if not _sources(config) or split in data.carved:
        return None
    test_names = data.names_of(split).astype(str)
    source = str(cfg.data.ann_file)
    found = lineage(config, source, test_names, data.store)
    for entry in found:
        n = entry["test_samples"]
        if n is None:
            log.info("%s=%s: not checked for samples of the test split: %s",
                     entry["by"], entry["checkpoint"], entry["note"])  # fmt: skip
            continue
        if not n:
            continue
        what = (
            f"{entry['by']}={entry['checkpoint']} was trained on {entry['ann_file']}'s split "
            f"{entry['train_split']}, which holds {n} of the {len(test_names)} samples of "
            f"data.test_split={split} (e.g. {entry['example']}): the test score would count "
            "samples the model was trained on"
        )
        if refuse and not cfg.data.get("allow_test_overlap", False):
            raise SystemExit(
                f"{source}: {what}. Start from a model trained without them (e.g. a `skelact "
                "merge` of the other sets only), or set data.allow_test_overlap=true if this is "
                "deliberate."
            )
        log.warning("%s%s", what, " (allowed by data.allow_test_overlap)" if refuse else "")
    return found
