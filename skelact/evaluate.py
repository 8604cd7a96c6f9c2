"""Evaluate a model on a split and write the outputs (`evaluate_model`): a run's final model
(`skelact train`), or a checkpoint (`skelact eval ckpt=PATH [overrides]`)."""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from skelact.checkpoints import checkpoint_file, load_checkpoint
from skelact.config import DATA_PATHS, changed_settings, check_settings, config_with_overrides
from skelact.contract import check_specs
from skelact.data.formats.annotations import open_annotations
from skelact.data.run import Data, check_unique, make_loader, split_names
from skelact.engine import evaluate, write_eval_outputs
from skelact.files import same_file
from skelact.lineage import check_lineage
from skelact.models.recognizer import build_recognizer
from skelact.runtime import pick_device, set_threads

log = logging.getLogger("skelact")


# The data.skeleton settings an evaluation may choose (test clips and views, the training-only
# augmentation; the body count follows the checkpoint's inputs below). Every other key is the
# preprocessing the checkpoint was trained with, which evaluation uses whatever the data group
# says (a key added to the preprocessing is pinned without being listed here).
EVAL_CHOICES = ("test_clips", "test_views", "augment", "num_bodies")


def conform_config(cfg: DictConfig, ckpt: dict, overrides: list[str]) -> None:
    """Make `cfg` evaluate what the checkpoint was trained on, or refuse naming the mismatch.

    Pins the skeleton preprocessing (every data.skeleton key but `EVAL_CHOICES`), the layout
    and the body count (extra bodies of the evaluation data are dropped, most active kept;
    missing ones are zero-padded).
    """
    groups = {o.split("=", 1)[0].lstrip("+").split(".")[0] for o in overrides}
    groups &= {"model", "modality"}  # those the command line touches
    changed = [c for c in changed_settings(ckpt["config"], cfg) if c.split(".")[0] in groups]
    if changed:  # the network is the checkpoint's: another model config scores another model
        raise SystemExit(
            f"skelact eval: {'; '.join(changed[:5])}: the checkpoint was trained with the "
            "first; its network scores only with its own model and modality settings (leave "
            "those overrides out)"
        )
    trained = OmegaConf.create(ckpt["config"]).data.skeleton
    for key in (k for k in trained if k not in EVAL_CHOICES):
        asked = [o for o in overrides if o.split("=", 1)[0].lstrip("+") == f"data.skeleton.{key}"]
        value = OmegaConf.select(cfg, f"data.skeleton.{key}")
        if asked and value != trained.get(key):
            raise SystemExit(
                f"skelact eval: the checkpoint was trained with data.skeleton.{key}="
                f"{trained.get(key)}; evaluating it with {value} would not be the same model"
            )
        OmegaConf.update(cfg, f"data.skeleton.{key}", trained[key], force_add=True)
    if cfg.data.layout not in (None, "auto", ckpt["layout"]):
        raise SystemExit(
            f"skelact eval: data.layout={cfg.data.layout}, but the checkpoint was trained on "
            f"{ckpt['layout']} skeletons"
        )
    cfg.data.layout = ckpt["layout"]
    bodies = [s["num_bodies"] for s in ckpt["specs"].values() if "num_bodies" in s]
    if bodies:
        cfg.data.skeleton.num_bodies = bodies[0]


FOLD_KEYS = ("name", "train_split", "test_split", "val_split")  # what a data group's fold names


def refold(cfg: DictConfig, trained: dict, overrides: list[str]) -> None:
    """`data.fold=K` for a checkpoint of a data group with folds (`data=sbu`): the checkpoint
    holds its split names resolved (fold1_test), which the fold alone would not change, so the
    group's names are made again at fold K (a split named on the command line stays). Refuses
    where the checkpoint's group is not found."""
    import yaml

    from skelact.config import CONFIG_DIR

    given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    if "data.fold" not in given or "data" in given or "fold" not in trained:
        return
    for path in sorted(Path(CONFIG_DIR, "data").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        if "fold" not in raw:
            continue
        group = OmegaConf.create({k: v for k, v in raw.items() if k in (*FOLD_KEYS, "fold")})
        group.fold = trained["fold"]
        if group.get("name") != trained.get("name"):
            continue
        group.fold = cfg.data.fold
        for key in FOLD_KEYS:
            if key in group and f"data.{key}" not in given:
                cfg.data[key] = group[key]
        return
    raise SystemExit(
        f"skelact eval: data.fold={cfg.data.fold} does not choose this checkpoint's splits (its "
        f"config names them: {trained.get('test_split')}); give data.test_split=SPLIT"
    )


def keep_data_paths(cfg: DictConfig, ckpt: dict, overrides: list[str]) -> None:
    """Files the command line does not name come from the checkpoint: `data=ntu60_xview`
    swaps the split names, not the annotation file (or feature caches) it was trained on.
    Refuses an annotation file that does not exist, naming the override that fixes it."""
    trained = OmegaConf.create(ckpt["config"]).data
    given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    for key in DATA_PATHS:
        if f"data.{key}" in given or OmegaConf.select(trained, key) is None:
            continue
        if OmegaConf.select(cfg.data, key, default=None) is None:  # missing (???) or null
            OmegaConf.update(cfg.data, key, OmegaConf.select(trained, key), force_add=True)
    source = Path(str(cfg.data.ann_file))
    if not source.exists():
        whence = "given" if "data.ann_file" in given else "the checkpoint's"
        raise FileNotFoundError(
            f"annotation file {source} ({whence}) does not exist; name the file to evaluate "
            "with data.ann_file=PATH"
        )


def eval_name(source: str, ckpt: dict, split: str) -> str:
    """The default evaluation folder's name: eval_<split> on the file the model was trained
    on, eval_<file stem>_<split> on another (so evaluating another file keeps the first's)."""
    trained = Path(str(ckpt["config"]["data"]["ann_file"]))
    same = Path(source).resolve() == trained.resolve()
    return f"eval_{split}" if same else f"eval_{Path(source).stem}_{split}"


def check_layout(store, ckpt: dict, source: str) -> None:
    """Refuse an evaluation file whose own layout differs from the checkpoint's."""
    own = store.layout
    if own and own != ckpt["layout"]:
        raise SystemExit(
            f"skelact eval: {source} holds {own} skeletons; the checkpoint takes "
            f"{ckpt['layout']} (`skelact repack {source} OUT --layout {ckpt['layout']}` maps "
            "the file onto it)"
        )


def label_map(data: Data, ckpt: dict, split: str, source: str) -> np.ndarray:
    """(file classes,) checkpoint label of each label of the evaluation file.

    Class names are matched when the file has a class table (so an NTU60 file evaluates a
    120-class model, and a table in another order is reordered); without one, labels are the
    checkpoint's. Refuses a class or label the checkpoint does not know.
    """
    classes = list(ckpt["classes"])
    file_classes = data.store.classes
    if file_classes:
        unknown = [c for c in file_classes if c not in classes]
        if unknown:
            raise SystemExit(
                f"skelact eval: {source} has class(es) the checkpoint does not know, e.g. "
                f"{unknown[0]!r} (the checkpoint has {len(classes)} classes)"
            )
        mapping = np.array([classes.index(c) for c in file_classes])
    else:
        mapping = np.arange(len(classes))
    labels = data.store.labels[data.store.split(split)]  # (N,)
    worst = int(labels.max(initial=0))
    if worst >= len(mapping):
        raise SystemExit(
            f"skelact eval: {source} split {split} has label {worst}, but the checkpoint knows "
            f"{len(classes)} classes (0..{len(classes) - 1})"
        )
    return mapping


def evaluate_model(
    model,
    cfg: DictConfig,
    data: Data,
    out_dir: Path,
    device,
    classes: list[str] | None = None,
    label_map: np.ndarray | None = None,
    contract: dict | None = None,
    trained_on: Collection[str] | None = None,
    weights: dict | None = None,
    lineage: list[dict] | None = None,
) -> dict:
    """Evaluate on data.test_split and write metrics, predictions and confusion matrix.

    `classes`, `label_map` (file label -> model label) and `contract` (the input specs the
    model was trained with, checked against the test set's) come from a checkpoint.
    `trained_on`: the names the model was trained on; metrics.json's "train_overlap" counts
    the evaluated samples among them (null: not known). `weights`: which weights these are
    (checkpoint, epoch, weight average), metrics.json's "weights". `lineage`: the models the
    model started from or learned from, with the test samples each trained on
    (`skelact.lineage`), metrics.json's "lineage".
    """
    test_set, specs = data.dataset(cfg.data, cfg.data.test_split, train=False)
    if contract is not None:
        check_specs(contract, specs)
    loader = make_loader(test_set, cfg.trainer, False, eval_mode=True)
    result = evaluate(model, loader, device, data.streams, show=cfg.trainer.progress)
    if label_map is not None:
        result["labels"] = label_map[result["labels"]]
    names = [test_set.name(i) for i in range(len(test_set))]
    overlap = None if trained_on is None else int(np.isin(names, trained_on).sum())
    if overlap:
        log.warning(
            "%d of the %d evaluated samples of %s are in the model's training split %s",
            overlap, len(names), cfg.data.test_split, cfg.data.train_split,
        )  # fmt: skip
    # samples of the split left out for lack of a stream's input: the scores are over the rest
    left_out = data.left_out.get(cfg.data.test_split) or {}
    extra = {"train_overlap": overlap, **({"left_out": left_out} if left_out else {})}
    if weights is not None:
        extra["weights"] = weights
    if lineage is not None:
        extra["lineage"] = lineage
    metrics = write_eval_outputs(
        result, names, classes or data.classes, cfg.data.test_split, out_dir, extra=extra
    )
    top5 = "n/a" if metrics["top5"] is None else f"{metrics['top5']:.4f}"
    gone = "".join(f", {n} without {s} left out" for s, n in left_out.items())
    log.info(
        "%s: top1 %.4f top5 %s mean-class %.4f (%d samples%s) -> %s",
        cfg.data.test_split,
        metrics["top1"],
        top5,
        metrics["mean_class_accuracy"],
        metrics["num_samples"],
        gone,
        out_dir,
    )
    return metrics


def evaluate_checkpoint(args: list[str]) -> dict:
    """Parse `ckpt=PATH [out_dir=DIR] [overrides]`, evaluate, return the metrics."""
    opts = dict(a.split("=", 1) for a in args if a.split("=", 1)[0] in ("ckpt", "out_dir"))
    if "ckpt" not in opts:
        raise SystemExit("skelact eval: give the checkpoint as ckpt=PATH")
    ckpt_path = checkpoint_file(opts["ckpt"])
    ckpt = load_checkpoint(ckpt_path)
    rest = [a for a in args if a.split("=", 1)[0] not in ("ckpt", "out_dir")]
    cfg = config_with_overrides(ckpt["config"], rest)
    refold(cfg, ckpt["config"]["data"], rest)
    check_settings(cfg)
    keep_data_paths(cfg, ckpt, rest)
    conform_config(cfg, ckpt, rest)
    set_threads(cfg.trainer, 1)
    source = str(cfg.data.ann_file)
    store = open_annotations(source)
    check_layout(store, ckpt, source)  # before Data, which would take the model's layout
    data = Data(cfg, store)
    split = cfg.data.test_split
    if split not in data.store.splits or not len(data.store.split(split)):
        raise SystemExit(
            f"skelact eval: {source} has no samples in split {split!r} (data.test_split); "
            f"its splits: {', '.join(sorted(data.store.splits)) or 'none'}"
        )
    check_unique(data.store, split, source)
    mapping = label_map(data, ckpt, split, source)
    trained_on = training_names(data, ckpt, source)
    seen = check_lineage(cfg, data, refuse=False)
    cfg.data.train_split = ckpt["config"]["data"]["train_split"]  # the model's, whatever asked
    # the checkpoint's input specs: the test dataset is built (and checked) once, below
    model = build_recognizer(cfg.model, data.streams, ckpt["num_classes"], ckpt["specs"])
    model.load_state_dict(ckpt["model"])
    ema = float(ckpt["config"]["trainer"].get("ema_epochs", 0) or 0)
    device = pick_device(cfg.trainer.device)
    out_dir = Path(opts.get("out_dir") or ckpt_path.parent.parent / eval_name(source, ckpt, split))
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / "config.yaml")
    return evaluate_model(
        model.to(device),
        cfg,
        data,
        out_dir,
        device,
        classes=list(ckpt["classes"]),
        label_map=mapping,
        contract=ckpt["specs"],
        trained_on=trained_on,
        lineage=seen,
        # a checkpoint of an averaging run carries the trained weights beside the average
        weights=weights_note(ckpt_path, ckpt, ema if "trained_model" in ckpt else 0),
    )


def weights_note(checkpoint: str | Path, state: dict, ema: float) -> dict:
    """metrics.json's "weights": the checkpoint, the epochs its run had trained and the best
    validation top-1 by then (`state`: a run's state or a checkpoint, which holds it; null
    without data.val_split), and `ema`, trainer.ema_epochs when the weights are a moving
    average (else 0)."""
    return {
        "checkpoint": str(checkpoint),
        "epoch": int(state.get("epoch", 0)),
        "ema_epochs": ema,
        "best_val_top1": state.get("best"),
    }


def training_names(data: Data, ckpt: dict, source: str) -> np.ndarray | None:
    """(N,) str: the names of the checkpoint's training split when `source` is the file it
    was trained from (names in another file need not be the same samples); else None."""
    trained = ckpt["config"]["data"]
    if not same_file(trained["ann_file"], source):
        log.info("%s is not the training file %s: no train/test overlap check", source,
                 trained["ann_file"])  # fmt: skip
        return None
    if trained["train_split"] not in data.store.splits:
        return None
    return split_names(data.store, trained["train_split"])
