"""`skelact eval ckpt=PATH [overrides]`: evaluate a checkpoint on a split, write the outputs."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from skelact.engine import load_checkpoint, pick_device
from skelact.models.recognizer import build_recognizer
from skelact.train import CONFIG_DIR, Data, evaluate_model, set_threads

log = logging.getLogger("skelact")
GROUPS = ("data", "modality", "model", "trainer")


def config_with_overrides(base: dict, overrides: list[str]) -> DictConfig:
    """The checkpoint's config with command-line overrides applied.

    `group=name` replaces the whole group with configs/<group>/<name>.yaml (composed by
    hydra); `a.b=value` sets one key (value parsed as YAML).
    """
    cfg = OmegaConf.create(base)
    swaps = [o for o in overrides if o.split("=", 1)[0] in GROUPS]
    if swaps:
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            composed = compose("train", overrides=swaps)
        for o in swaps:
            group = o.split("=", 1)[0]
            cfg[group] = composed[group]
    for o in overrides:
        if o in swaps:
            continue
        if "=" not in o:
            raise SystemExit(f"skelact eval: expected key=value, got {o!r}")
        key, value = o.split("=", 1)
        OmegaConf.update(cfg, key.lstrip("+"), yaml.safe_load(value), force_add=True)
    return cfg


def evaluate_checkpoint(args: list[str]) -> dict:
    """Parse `ckpt=PATH [out_dir=DIR] [overrides]`, evaluate, return the metrics."""
    opts = dict(a.split("=", 1) for a in args if a.split("=", 1)[0] in ("ckpt", "out_dir"))
    if "ckpt" not in opts:
        raise SystemExit("skelact eval: give the checkpoint as ckpt=PATH")
    ckpt_path = Path(opts["ckpt"])
    ckpt = load_checkpoint(ckpt_path)
    rest = [a for a in args if a.split("=", 1)[0] not in ("ckpt", "out_dir")]
    cfg = config_with_overrides(ckpt["config"], rest)
    set_threads(cfg.trainer, 1)
    data = Data(cfg)
    # the checkpoint's input specs: the test dataset is built (and checked) once, below
    model = build_recognizer(cfg.model, data.streams, ckpt["num_classes"], ckpt["specs"])
    model.load_state_dict(ckpt["model"])
    device = pick_device(cfg.trainer.device)
    out_dir = Path(opts.get("out_dir") or ckpt_path.parent.parent / f"eval_{cfg.data.test_split}")
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / "config.yaml")
    return evaluate_model(model.to(device), cfg, data, out_dir, device)
