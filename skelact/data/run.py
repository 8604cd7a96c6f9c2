"""The data of a run: its annotation store, the checked splits, classes and layout, and the
datasets and DataLoaders of its splits (all reading one memory-mapped store)."""

from __future__ import annotations

import functools
import logging
import os

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from skelact.data.datasets import (
    ActionDataset,
    EpochSampler,
    StoreSamples,
    build_loaders,
    keep_available,
    resolve_layout,
    split_samples,
)
from skelact.data.formats.annotations import open_annotations

log = logging.getLogger("skelact")


# Splits that must not share samples: (role, role, the key that allows it, why not).
OVERLAPS = (
    ("train_split", "val_split", "allow_val_overlap", "best.pt would be chosen on training data"),
    ("train_split", "test_split", "allow_test_overlap",
     "the test score would count samples the model was trained on"),
    ("val_split", "test_split", "allow_val_test_overlap",
     "best.pt would be chosen on the test split"),
)  # fmt: skip


def split_names(store, split: str) -> np.ndarray:
    """(N,) str: the names of `split`'s samples, in its order."""
    return store.names[store.split(split)]


def shared_names(a: np.ndarray, b: np.ndarray) -> list[str]:
    """The sorted names that two splits' name arrays both hold."""
    return sorted(str(n) for n in np.intersect1d(a, b))


def check_unique(store, split: str, source: str) -> None:
    """Refuse a split that names a sample more than once: it would be scored every time."""
    names, counts = np.unique(split_names(store, split), return_counts=True)
    if (counts > 1).any():
        worst = int(np.argmax(counts))
        raise SystemExit(
            f"{source}: split {split} names {int((counts > 1).sum())} sample(s) more than once "
            f"(e.g. {names[worst]} {counts[worst]} times); a split must name each sample once"
        )


def _worker_init(nice: int, _: int) -> None:
    torch.set_num_threads(1)  # workers decode and transform; they must not spawn thread pools
    if nice > 0 and hasattr(os, "nice"):
        # below the training process: on a machine with few cores the workers fill the time the
        # step leaves free instead of taking its core (they still get a core when it waits)
        os.nice(nice)


class Data:
    """The annotation store of a run (a pickle is converted once, see `open_annotations`) with
    its train and test datasets; all of them read the same memory-mapped store."""

    def __init__(self, cfg: DictConfig, store=None):
        """`store`: cfg.data.ann_file already opened (`open_annotations`)."""
        self.store = store if store is not None else open_annotations(cfg.data.ann_file)
        self.num_classes = cfg.data.num_classes or self.store.num_classes()
        # classes without a name (no table, or data.num_classes beyond it) go by their index
        named = list(self.store.classes)
        n = max(self.num_classes, self.store.num_classes())
        self.classes = named + [str(i) for i in range(len(named), n)]
        self.streams = list(cfg.modality.streams)
        self.seed = cfg.seed
        self.mcfg = cfg.model
        self.views = int(cfg.trainer.get("views", 1))  # augmented views per training sample
        self.layout = resolve_layout(cfg.data, self.store).name
        # splits made in memory (name -> store indices), e.g. skelact.fusion's development split
        self.carved: dict[str, np.ndarray] = {}
        self.left_out: dict[str, dict[str, int]] = {}  # split -> {stream: samples left out}

    def check_splits(self, dcfg, source: str) -> None:
        """Refuse, by name, a train/test/val split that is missing, empty or names a sample
        twice, and splits that share samples (`OVERLAPS`) unless their data.allow_* key says
        it is deliberate (then warn with the count)."""
        roles = {"train_split": dcfg.train_split, "test_split": dcfg.test_split}
        if dcfg.val_split:
            roles["val_split"] = dcfg.val_split
        splits = {*self.store.splits, *self.carved}
        for role, split in roles.items():
            if split in self.carved:
                continue
            if split not in splits:
                raise SystemExit(
                    f"{source}: data.{role}={split} is not a split of this file; it has "
                    f"{sorted(splits)}"
                )
            if not len(self.store.split(split)):
                raise SystemExit(f"{source}: data.{role}={split} is empty (0 samples)")
            check_unique(self.store, split, source)
        for role, split in roles.items():  # a label the model has no class for
            if split in self.carved:
                continue
            index = self.store.split(split)
            labels = np.asarray(self.store.labels)[index]
            if len(labels) and labels.max() >= self.num_classes:
                worst = int(np.argmax(labels))
                raise SystemExit(
                    f"{source}: sample {self.store.names[index[worst]]} of data.{role}={split} "
                    f"has label {labels[worst]}, but the model has {self.num_classes} classes "
                    f"(labels 0-{self.num_classes - 1}); set data.num_classes to at least "
                    f"{labels.max() + 1}, or fix the file's labels"
                )
        for first, second, key, why in OVERLAPS:
            if first not in roles or second not in roles:
                continue
            both = shared_names(self.names_of(roles[first]), self.names_of(roles[second]))
            if both and not dcfg.get(key, False):
                raise SystemExit(
                    f"{source}: {len(both)} sample(s) of data.{second}={roles[second]} are also "
                    f"in data.{first}={roles[first]} (e.g. {both[0]}): {why}. Use splits that "
                    f"do not share samples, or set data.{key}=true if this is deliberate."
                )
            if both:
                log.warning(
                    "data.%s %s shares %d samples with data.%s %s (allowed by data.%s)",
                    second, roles[second], len(both), first, roles[first], key,
                )  # fmt: skip

    def names_of(self, split: str) -> np.ndarray:
        """(N,) str: the names of `split`'s samples, a carved split's included."""
        if split in self.carved:
            return self.store.names[self.carved[split]]
        return split_names(self.store, split)

    def dataset(self, dcfg, split: str, train: bool) -> tuple[ActionDataset, dict]:
        if split in self.carved:
            samples = StoreSamples(self.store, self.carved[split])
        else:
            samples = split_samples(self.store, split)
        loaders, specs = build_loaders(dcfg, self.mcfg, self.store, self.streams, train, self.views)
        self.left_out[split] = {}  # {stream: samples without its input}, for metrics.json
        samples = keep_available(samples, specs, split, self.left_out[split])
        return ActionDataset(samples, loaders, seed=self.seed), specs


def make_loader(
    dataset,
    tcfg,
    shuffle: bool,
    rank: int = 0,
    world: int = 1,
    seed: int = 0,
    eval_mode: bool = False,
) -> DataLoader:
    sampler = EpochSampler(len(dataset), shuffle, seed, rank, world) if not eval_mode else None
    return DataLoader(
        dataset,
        batch_size=tcfg.batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=tcfg.num_workers,
        drop_last=False,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=functools.partial(_worker_init, int(tcfg.get("worker_nice", 0) or 0)),
        # the dataset holds no per-epoch state (the sampler passes the epoch): workers persist
        persistent_workers=tcfg.num_workers > 0,
    )
