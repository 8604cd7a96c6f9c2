"""The data of a run: its annotation store, the checked splits, classes and layout, and the
datasets and DataLoaders of its splits (all reading one memory-mapped store)."""

from __future__ import annotations

import logging

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
from skelact.data.pickles import open_annotations

log = logging.getLogger("skelact")


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode and transform; they must not spawn thread pools


class Data:
    """The annotation store of a run (a pickle is converted once, see `open_annotations`) with
    its train and test datasets; all of them read the same memory-mapped store."""

    def __init__(self, cfg: DictConfig):
        self.store = open_annotations(cfg.data.ann_file)
        self.num_classes = cfg.data.num_classes or self.store.num_classes()
        # classes without a name (no table, or data.num_classes beyond it) go by their index
        named = list(self.store.classes)
        n = max(self.num_classes, self.store.num_classes())
        self.classes = named + [str(i) for i in range(len(named), n)]
        self.streams = list(cfg.modality.streams)
        self.seed = cfg.seed
        self.mcfg = cfg.model
        self.layout = resolve_layout(cfg.data, self.store).name
        # splits made in memory (name -> store indices), e.g. skelact.fusion's development split
        self.carved: dict[str, np.ndarray] = {}

    def check_splits(self, dcfg, source: str) -> None:
        """Refuse, by name, a train/test/val split that is missing or empty, and a val split
        that overlaps the train split (best.pt would be chosen on training data) unless
        data.allow_val_overlap says it is deliberate."""
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
        if dcfg.val_split:
            shared = np.intersect1d(
                self.store.split(dcfg.train_split), self.store.split(dcfg.val_split)
            )
            both = sorted(str(n) for n in self.store.names[shared])
            if both and not dcfg.get("allow_val_overlap", False):
                raise SystemExit(
                    f"{source}: {len(both)} sample(s) of data.val_split={dcfg.val_split} are also "
                    f"in data.train_split={dcfg.train_split} (e.g. {both[0]}): best.pt "
                    "would be chosen on training data. Use a val split carved from outside the "
                    "train split, or set data.allow_val_overlap=true if this is deliberate."
                )
            if both:
                log.warning(
                    "data.val_split %s shares %d samples with the train split (allowed by "
                    "data.allow_val_overlap)",
                    dcfg.val_split,
                    len(both),
                )

    def dataset(self, dcfg, split: str, train: bool) -> tuple[ActionDataset, dict]:
        if split in self.carved:
            samples = StoreSamples(self.store, self.carved[split])
        else:
            samples = split_samples(self.store, split)
        loaders, specs = build_loaders(dcfg, self.mcfg, self.store, self.streams, train)
        samples = keep_available(samples, specs, split)
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
        worker_init_fn=_worker_init,
        # the dataset holds no per-epoch state (the sampler passes the epoch): workers persist
        persistent_workers=tcfg.num_workers > 0,
    )
