"""Composing skelact's hydra configs: the config folder, `skelact train`'s composed config, the
`--modality rgb+skeleton` sugar, and overrides on a checkpoint's saved config."""

from __future__ import annotations

import difflib
import math
import re
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
        raise ValueError(_unknown_modality(spec))
    return sorted(set(parts), key=STREAM_ORDER.index)


def _modality_names() -> list[str]:
    return sorted(p.stem for p in Path(CONFIG_DIR, "modality").glob("*.yaml"))


def _unknown_modality(spec: str) -> str:
    return (
        f"unknown modality {spec!r}; choose one of {', '.join(_modality_names())} "
        f"or combine {'/'.join(STREAM_ORDER)} with '+'"
    )


def modality_name(spec: str) -> str:
    """The modality config a `--modality` value names: 'skeleton_4s' as it is, 'rgb+skeleton'
    -> 'rgb_skeleton'; refuses a value without a config."""
    spec = spec.strip()
    if spec in _modality_names():
        return spec
    name = "_".join(modality_streams(spec))
    if name not in _modality_names():
        raise ValueError(_unknown_modality(spec))
    return name


def modality_override(spec: str) -> str:
    """'rgb+skeleton' -> 'modality=rgb_skeleton', the config the sugar stands for."""
    return "modality=" + modality_name(spec)


def modality_overrides(spec: str, given: list[str] = ()) -> list[str]:
    """`--modality` as overrides: the modality config and the model config its YAML pairs with
    it (its `model` key), unless `given` already chooses a model."""
    name = modality_name(spec)
    also = [o for o in given if o.split("=", 1)[0].lstrip("+~") == "modality"]
    if also and also[-1].split("=", 1)[1] != name:  # the two would compose a mix of both
        raise ValueError(
            f"--modality {spec} and {also[-1]} choose two modalities; give one of them"
        )
    model = modality_config(name).get("model", "bilstm")
    chosen = any(o.split("=", 1)[0].lstrip("+~") == "model" for o in given)
    return [f"modality={name}"] + ([] if chosen else [f"model={model}"])


def modality_config(spec: str) -> dict:
    """The YAML of the modality config a `--modality` value names (name, streams, model)."""
    path = Path(CONFIG_DIR, "modality", f"{modality_name(spec)}.yaml")
    return yaml.safe_load(path.read_text())


def compose_run(overrides: list[str]) -> tuple[DictConfig, Path]:
    """`skelact train`'s config and run directory (hydra.run.dir, resolved as hydra's app
    would), without hydra's app: nothing is created until training starts."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from omegaconf import open_dict

    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=overrides, return_hydra_config=True)
    except MissingConfigException as err:  # group=name without configs/<group>/<name>.yaml
        raise ValueError(_no_config(err) or str(err)) from None
    except ConfigCompositionException as err:  # a key no config has
        key = re.match(r"Could not override '([^']+)'", str(err))
        if key is None or "not in struct" not in str(err.__cause__):
            raise
        raise ValueError(_no_setting(key.group(1))) from None
    run_dir = Path(cfg.hydra.run.dir)
    with open_dict(cfg):
        del cfg["hydra"]
    _warn_added(overrides)
    return cfg, run_dir


def _warn_added(overrides: list[str]) -> None:
    """`+key=value` (or `++`) adds a key no config has: skelact reads none such, so the run
    goes on as if it were not given; say so (hydra's own advice for a misspelt key is `+`)."""
    added = [o.lstrip("+").split("=", 1)[0] for o in overrides if o.startswith("+")]
    added = [k for k in added if k.split(".")[0] != "hydra"]
    if not added:
        return
    import logging

    keys = setting_keys([o for o in overrides if not o.startswith("+")])  # the groups chosen
    for key in added:
        if key in keys or any(k.startswith(key + ".") for k in keys):  # ++ of a setting
            continue
        logging.getLogger("skelact").warning(
            "+%s adds a setting skelact's configs do not have: nothing reads it, the run goes "
            "on as without it (`skelact train --cfg job` prints every setting)%s",
            key,
            nearest(key, keys),
        )


def _no_config(err) -> str | None:
    """hydra's "Could not find 'data/x'" as skelact says it: the group's configs (not the
    shared _base the others build on), the nearest first."""
    found = re.search(r"Could not find '(\w+)/([^']+)'", str(err))
    if found is None or found.group(1) not in GROUPS:
        return None
    group, name = found.groups()
    names = sorted(p.stem for p in Path(CONFIG_DIR, group).glob("*.yaml") if p.stem[0] != "_")
    near = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"did you mean {group}={near[0]}? " if near else ""
    return f"no {group} config {name!r}; {hint}the {group} configs: {', '.join(names)}"


def _no_setting(key: str) -> str:
    """A key that no config holds: the nearest setting, or the groups for a top-level name."""
    if "." not in key and key not in ("seed",):
        return (
            f"no setting or config group {key!r}; the groups are {', '.join(GROUPS)} "
            "(`skelact train --cfg job` prints every setting)"
        )
    hint = nearest(key, setting_keys())
    return f"no setting {key!r} (`skelact train --cfg job` prints every setting){hint}"


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
        if not key.startswith("+"):
            check_known(key, cfg)
        OmegaConf.update(cfg, key.lstrip("+"), yaml.safe_load(value), force_add=True)
    return cfg


def check_known(key: str, cfg: DictConfig) -> None:
    """SystemExit naming `key` unless it is a setting of `cfg` or of today's defaults (a
    checkpoint saved before a setting existed still takes it); a misspelt key would otherwise
    be added and ignored, and the run done with the setting it meant to change."""
    keys = leaf_keys(OmegaConf.to_container(cfg))  # a value still ??? is a key too
    if key in keys:
        return
    keys |= setting_keys()
    if key in keys:
        return
    if key.split(".", 1)[0] == "hydra":
        hint = "; eval writes to <run>/eval_<split>, or where out_dir=DIR says"
    else:
        hint = nearest(key, keys)
    raise SystemExit(f"skelact eval: no setting {key!r} in the model's config{hint}")


def nearest(key: str, keys: set[str]) -> str:
    """The hint "; did you mean K?" for the key of `keys` nearest to `key`, or "": among its
    siblings when its parent exists (trainer.epoch -> trainer.epochs), else among all keys."""
    parent, _, leaf = key.rpartition(".")
    siblings = sorted({k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == parent})
    if parent in keys and siblings:
        near = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.7)
        near = [f"{parent}.{n}" for n in near]
    else:
        others = sorted(k for k in keys if not key.startswith(k + "."))
        near = difflib.get_close_matches(key, others, n=1, cutoff=0.75)
    return f"; did you mean {near[0]}?" if near else ""


def setting_keys(overrides: list[str] = ()) -> set[str]:
    """The dotted keys of `skelact train`'s config composed with `overrides` (the defaults)."""
    return leaf_keys(OmegaConf.to_container(compose_config(list(overrides))))


def leaf_values(node, prefix: str = "") -> dict:
    """{dotted key: value} of a nested dict's leaves (lists count as leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for k, v in node.items():
        out.update(leaf_values(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def changed_settings(saved: dict, cfg: DictConfig, ignore=()) -> list[str]:
    """Each setting of `cfg` that differs from the run config `saved` (a checkpoint's), as
    "key: was -> now", but those in `ignore` and keys only one of them has."""
    was = leaf_values({k: v for k, v in saved.items() if k != "hydra"})
    now = leaf_values(OmegaConf.to_container(cfg, resolve=True))
    return [f"{k}: {was[k]!r} -> {now[k]!r}" for k in sorted(was.keys() & now.keys())
            if k not in ignore and was[k] != now[k]]  # fmt: skip


def leaf_keys(node, prefix: str = "") -> set[str]:
    """The dotted keys of a nested dict's leaves (lists count as leaves)."""
    if not isinstance(node, dict):
        return {prefix}
    out = {prefix} if prefix else set()  # a group as a whole is a key too
    for k, v in node.items():
        out |= leaf_keys(v, f"{prefix}.{k}" if prefix else str(k))
    return out


DATA_PATHS = ("ann_file", "rgb.root", "rgb.features", "depth.root", "depth.features")


def absolute_data_paths(config: dict) -> dict:
    """A plain (resolved) run config with its data files as absolute paths, so a checkpoint
    names them wherever it is evaluated from; returns `config`, changed in place."""
    for key in DATA_PATHS:
        *parents, leaf = key.split(".")
        node = config.get("data", {})
        for part in parents:
            node = node.get(part) or {}
        if isinstance(node.get(leaf), str):
            node[leaf] = str(Path(node[leaf]).absolute())
    return config


def is_number(x) -> bool:
    """A finite int or float (not a bool, not a string)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


# (key, int only, lowest value, that value allowed, highest value or None): what
# `check_settings` refuses a mistyped value for before a run starts (a string or an
# out-of-range number would otherwise fail deep in the optimizer, numpy or a DataLoader worker)
NUMBERS = (
    ("seed", True, 0, True, None),
    ("trainer.epochs", True, 0, True, None),
    ("trainer.min_steps", True, 0, True, None),
    ("trainer.batch_size", True, 1, True, None),
    ("trainer.lr", False, 0, False, None),
    ("trainer.weight_decay", False, 0, True, None),
    ("trainer.warmup_epochs", False, 0, True, None),
    ("trainer.label_smoothing", False, 0, True, 1),
    ("trainer.grad_clip", False, 0, True, None),
    ("trainer.num_workers", True, 0, True, None),
    ("data.skeleton.clip_len", True, 1, True, None),
    ("data.skeleton.num_bodies", True, 1, True, None),
    ("data.skeleton.test_clips", True, 1, True, None),
    ("data.rgb.num_frames", True, 1, True, None),
    ("data.depth.num_frames", True, 1, True, None),
    ("trainer.ema_epochs", False, 0, True, None),
    ("trainer.sam", False, 0, True, None),
    ("trainer.mixup", False, 0, True, None),
    ("trainer.mutual", False, 0, True, None),
    ("trainer.restarts", True, 0, True, None),
    ("trainer.min_lr_ratio", False, 0, True, 1),
    ("trainer.eval_every", True, 0, True, None),
    ("trainer.views", True, 1, True, None),
    ("model.attention_heads", True, 1, True, None),
    ("trainer.distill.weight", False, 0, True, 1),  # above 1 the labels' loss turns negative
    ("trainer.distill.temperature", False, 0, False, None),
    ("trainer.consistency", False, 0, True, None),
)

# settings with a few named values: anything else was taken as one of them without a word
# (model.fusion_weights=Fit fused with equal weights, model.skeleton.encoder=gnc was the MLP)
CHOICES = (
    ("model.fusion_weights", ("fit", "equal")),
    ("model.fusion", ("concat", "mean", "weighted", "ensemble")),
    ("model.core.cell", ("lstm", "gru")),
    ("model.skeleton.encoder", ("mlp", "gcn")),
    ("trainer.optimizer", ("adamw", "sgd")),
    ("trainer.precision", ("auto", "fp32", "bf16")),
    ("data.skeleton.align_axis", ("shoulders", "hips", "both")),
    ("data.skeleton.bone_lengths", ("keep", "median")),
)

# switches: a mistyped one (trainer.resume=flase) would be a non-empty string, so true
SWITCHES = (
    "trainer.resume",
    "trainer.tensorboard",
    "trainer.progress",
    "data.allow_val_overlap",
    "data.allow_test_overlap",
    "data.allow_val_test_overlap",
    "data.skeleton.interpolate",
    "data.skeleton.center",
    "data.skeleton.align_view",
    "data.skeleton.scale_normalize",
    "data.skeleton.augment.enabled",
    "trainer.distill.online",
    "model.core.bidirectional",
    "model.core.shared",
    "model.replica_augment",
    "model.skeleton.input_norm",
)


def check_settings(cfg: DictConfig) -> None:
    """Refuse, by key, a `NUMBERS` entry of the wrong type or range, a `SWITCHES` entry that
    is not true or false, or a `CHOICES` entry not among its values (ValueError); keys a
    config lacks are skipped."""
    for key, allowed in CHOICES:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value not in allowed:
            raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    threads = OmegaConf.select(cfg, "trainer.threads", default=None)
    if threads not in (None, "auto") and (type(threads) is not int or threads < 1):
        raise ValueError(f"trainer.threads must be auto or an integer >= 1, got {threads!r}")
    for key in SWITCHES:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
    for key, whole, low, closed, high in NUMBERS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        ok = is_number(value) and (not whole or isinstance(value, int))
        ok = ok and (value >= low if closed else value > low) and (high is None or value <= high)
        if not ok:
            bound = f"{'>=' if closed else '>'} {low}" + ("" if high is None else f" and <= {high}")
            raise ValueError(
                f"{key} must be {'an integer' if whole else 'a number'} {bound}, got {value!r}"
            )
