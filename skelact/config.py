"""Composing skelact's hydra configs: the config folder, `skelact train`'s composed config, the
`--modality rgb+skeleton` sugar, and overrides on a checkpoint's saved config."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
GROUPS = ("data", "modality", "model", "trainer")
STREAM_ORDER = ("rgb", "skeleton", "depth")  # the order of the streams in modality names


def compose_config(overrides: list[str]) -> DictConfig:
    """The `skelact train` config for `overrides`, composed without running hydra's app."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def modality_streams(spec: str) -> list[str]:
    """'skeleton+rgb' -> ["rgb", "skeleton"]: the streams of a `--modality` value, in order."""
    parts = [p.strip() for p in spec.replace(",", "+").split("+") if p.strip()]
    unknown = [p for p in parts if p not in STREAM_ORDER]
    if unknown or not parts:
        raise SystemExit(
            f"skelact: unknown modality {spec!r}; combine {list(STREAM_ORDER)} with '+'"
        )
    return sorted(set(parts), key=STREAM_ORDER.index)


def modality_override(spec: str) -> str:
    """'rgb+skeleton' -> 'modality=rgb_skeleton', the config the sugar stands for."""
    return "modality=" + "_".join(modality_streams(spec))


def config_with_overrides(base: dict, overrides: list[str]) -> DictConfig:
    """A saved (checkpoint) config with command-line overrides applied.

    `group=name` replaces the whole group with configs/<group>/<name>.yaml (composed by
    hydra); `a.b=value` sets one key (value parsed as YAML).
    """
    cfg = OmegaConf.create(base)
    swaps = [o for o in overrides if o.split("=", 1)[0] in GROUPS]
    if swaps:
        composed = compose_config(swaps)
        for o in swaps:
            group = o.split("=", 1)[0]
            cfg[group] = composed[group]
    for o in overrides:
        if o in swaps:
            continue
        if "=" not in o:
            raise SystemExit(f"skelact: expected key=value, got {o!r}")
        key, value = o.split("=", 1)
        OmegaConf.update(cfg, key.lstrip("+"), yaml.safe_load(value), force_add=True)
    return cfg
