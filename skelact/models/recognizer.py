"""Streams (encoder -> recurrent core -> attention) and their late fusion in the classifier."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from skelact.fusion import groups_of
from skelact.models.dropout import Dropout
from skelact.models.temporal import RecurrentCore, TemporalAttention, TemporalConv


class Stream(nn.Module):
    """One modality: per-frame encoder -> recurrent core -> attention -> clip embedding.

    Input is what the encoder takes with time in dim 1 ((N, M, T, V, C) for skeletons is
    handled by the encoder itself); output embedding (N, E) and attention (N, T).
    `skeleton`: the input is (N, M, T, V, C) and frames where nobody is present are masked out
    of the attention (`presence`; the Recognizer passes one mask shared by every skeleton stream
    of the clip). `core`: a recurrent core shared with other streams (model.core.shared); each
    stream still runs it on its own features.
    """

    def __init__(
        self,
        encoder: nn.Module,
        enc_dim: int,
        core_cfg,
        attn_hidden: int,
        dropout: float,
        temporal_kernel: int = 0,
        temporal_dilations: Sequence[int] = (1,),
        skeleton: bool = False,
        core: RecurrentCore | None = None,
        attn_heads: int = 1,
    ):
        super().__init__()
        self.encoder = encoder
        self.skeleton = skeleton
        # optional local motion features over a few frames before the core (0: none)
        self.local = (
            TemporalConv(enc_dim, temporal_kernel, temporal_dilations)
            if temporal_kernel
            else nn.Identity()
        )
        self.core = core or build_core(enc_dim, core_cfg)
        self.attention = TemporalAttention(self.core.out_dim, attn_hidden, attn_heads)
        self.dropout = Dropout(dropout)
        self.out_dim = self.attention.out_dim

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame features (N, T, D) for the core."""
        return self.local(self.encoder(x))

    def pool(self, h: torch.Tensor, mask: torch.Tensor | None):
        emb, weights = self.attention(h, mask)  # (N, H), (N, T)
        return self.dropout(emb), weights

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`mask` (N, T): the clip's frames with somebody present; a skeleton stream called
        alone takes it from its own input."""
        if mask is None and self.skeleton:
            mask = presence([x])
        return self.pool(self.core(self.frames(x)), mask)  # core: (N, T, D) -> (N, T, H)


def presence(inputs: list[torch.Tensor]) -> torch.Tensor:
    """(N, T) bool: frames where some body has a non-zero value in any of the clip's skeleton
    inputs, each (N, M, T, V, C). Motion channels of a still body are zero, but the same clip's
    position or bone channels are not, so the streams of one clip share this one mask: a stream
    of motion alone cannot tell a still body from an absent one."""
    # the largest |value| as max(max, -min): two reads of the input, no |x| copy of it
    peak = torch.stack([torch.maximum(x.amax((1, 3, 4)), -x.amin((1, 3, 4))) for x in inputs])
    return peak.amax(0) > 0  # (N, T); float max, not bool any(): the ONNX export keeps it


def build_core(enc_dim: int, core_cfg) -> RecurrentCore:
    return RecurrentCore(
        enc_dim,
        core_cfg.hidden,
        core_cfg.layers,
        core_cfg.cell,
        core_cfg.bidirectional,
        core_cfg.dropout,
    )


class Recognizer(nn.Module):
    """Streams fused late in the classifier.

    fusion "concat": embeddings concatenated -> MLP; "mean": per-stream logits averaged;
    "weighted": softmax-learned weights over per-stream logits; "ensemble": the streams train
    independently, each on its own loss only (out["independent"]), and the fused scores are
    their averaged probabilities (logits = log of the mean softmax), like separately trained
    models whose scores are averaged. Per-stream heads always exist so every stream can be
    scored alone (and trained with an auxiliary loss).

    Ensemble of several modalities (skeleton streams + depth, say): each modality's streams
    are averaged, then the modalities are weighted by `group_weights` (fit on data carved from
    the training split, `skelact.fusion`; equal until set). The image streams are then kept
    apart from the skeleton streams' randomness (their initialisation and dropout draw from a
    forked generator) and `grad_groups` lets their gradients be clipped apart: the skeleton
    streams train exactly as in a skeleton-only run of the same seed. `offset` shifts the
    seeds of those image streams' heads (a replica's, `Replicas`).
    """

    # the run's own choice, not learned: the modality weights (fit or equal) of an ensemble,
    # which `skelact.checkpoints.init_weights` leaves as this run sets them
    run_own = ("group_weights",)

    def __init__(
        self,
        streams: dict[str, Stream],
        num_classes: int,
        fusion: str = "concat",
        fusion_hidden: int = 256,
        dropout: float = 0.0,
        offset: int = 0,
        modality_dropout: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"model.modality_dropout must be in [0, 1), got {modality_dropout}")
        self.modality_dropout = modality_dropout
        if fusion not in ("concat", "mean", "weighted", "ensemble"):
            raise ValueError(f"unknown fusion {fusion!r}; use concat, mean, weighted or ensemble")
        self.streams = nn.ModuleDict(streams)
        self.groups = groups_of(streams)
        heads = {}
        for i, (k, s) in enumerate(streams.items()):
            with isolated(fusion, self.groups, k, offset=100 + i + offset):
                heads[k] = nn.Linear(s.out_dim, num_classes)
        self.heads = nn.ModuleDict(heads)
        self.fusion = fusion
        if fusion == "ensemble" and len(self.groups) > 1:
            self.register_buffer(
                "group_weights", torch.full((len(self.groups),), 1 / len(self.groups))
            )
        if fusion == "concat" and len(streams) > 1:
            total = sum(s.out_dim for s in streams.values())
            self.fuse = nn.Sequential(
                nn.Linear(total, fusion_hidden),
                nn.GELU(),
                Dropout(dropout),
                nn.Linear(fusion_hidden, num_classes),
            )
        if fusion == "weighted" and len(streams) > 1:
            self.stream_logit_weights = nn.Parameter(torch.zeros(len(streams)))
        for layer in [*heads.values(), *([self.fuse[-1]] if hasattr(self, "fuse") else [])]:
            layer.scores_classes = True  # one output per class (`skelact.checkpoints.init_weights`)

    def isolated(self, stream: str):
        """`isolated` for a forward pass of one of this model's streams."""
        return isolated(self.fusion, self.groups, stream, None)

    def set_group_weights(self, weights: dict[str, float]) -> None:
        """Modality weights {modality: w} for the ensemble (normalised to sum 1)."""
        w = torch.tensor([float(weights[g]) for g in self.groups])
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"group weights must be >= 0 with a positive sum, got {weights}")
        self.group_weights.copy_(w / w.sum())

    def grad_groups(self) -> list[list[nn.Parameter]]:
        """Parameters per modality (the skeleton streams with their shared core): gradients
        clipped per group keep one modality's gradient norm from scaling another's steps."""
        if self.fusion != "ensemble" or len(self.groups) == 1:
            return [list(self.parameters())]
        out = []
        for names in self.groups.values():
            mods = [self.streams[n] for n in names] + [self.heads[n] for n in names]
            params = {id(p): p for m in mods for p in m.parameters()}  # a shared core once
            out.append(list(params.values()))
        return out

    def encode(self, inputs: dict[str, torch.Tensor]) -> dict[str, tuple]:
        """{stream: (embedding (N, H), attention (N, T))}. Streams sharing a core (the skeleton
        streams with model.core.shared) run it once on their features stacked along the batch
        (they have the same T), then split again."""
        groups: dict[int, list[str]] = {}
        for name, stream in self.streams.items():
            groups.setdefault(id(getattr(stream, "core", stream)), []).append(name)
        masks, out = self.presence(inputs), {}
        for names in groups.values():
            if len(names) == 1:
                name = names[0]
                mask = {"mask": masks[name]} if name in masks else {}
                with self.isolated(name):
                    out[name] = self.streams[name](inputs[name], **mask)
                continue
            feats = {k: self.streams[k].frames(inputs[k]) for k in names}
            sizes = [f.shape[0] for f in feats.values()]
            core = self.streams[names[0]].core
            hs = core(torch.cat(list(feats.values()), 0)).split(sizes)
            for k, h in zip(names, hs, strict=True):
                out[k] = self.streams[k].pool(h, masks.get(k))
        return {k: out[k] for k in self.streams}

    def presence(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{skeleton stream: (N, T) mask of frames with somebody present}: one mask shared by
        every skeleton stream (they come from one pass of the pipeline over the same clip, so
        their N and T agree): body presence, not each stream's values (a still body has zero
        motion but is there)."""
        names = [k for k, s in self.streams.items() if getattr(s, "skeleton", False)]
        if not names:
            return {}
        return dict.fromkeys(names, presence([inputs[k] for k in names]))

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict:
        """inputs: stream -> (N*K, ...) or, for a stream with one clip per sample while the
        others have K, (N, ...): encoded once, its embedding repeated for the K clips."""
        embs, logits, attention = self.encode(inputs), {}, {}
        n = max(emb.shape[0] for emb, _ in embs.values())
        for name, (emb, attn) in embs.items():
            if emb.shape[0] != n:
                r = n // emb.shape[0]
                embs[name] = (emb.repeat_interleave(r, 0), attn.repeat_interleave(r, 0))
        for name in self.streams:
            embs[name], attention[name] = embs[name]
            logits[name] = self.heads[name](embs[name])  # (N, classes)
        if len(self.streams) == 1:
            fused = next(iter(logits.values()))
        elif self.fusion == "concat":
            fused = self.fuse(torch.cat(self.drop_modalities(embs), -1))
        elif self.fusion == "mean":
            fused = torch.stack([logits[k] for k in self.streams]).mean(0)
        elif self.fusion == "ensemble":
            probs = torch.stack(
                [self._group_probs(names, logits) for names in self.groups.values()]
            )
            if len(self.groups) > 1:
                probs = torch.einsum("g,gnc->nc", self.group_weights, probs)  # (N, C)
            else:
                probs = probs[0]
            fused = torch.log(probs.clamp_min(1e-12))
            return {"logits": fused, "streams": logits, "attention": attention, "independent": True}
        else:
            w = torch.softmax(self.stream_logit_weights, 0)
            fused = torch.einsum("s,snc->nc", w, torch.stack([logits[k] for k in self.streams]))
        return {"logits": fused, "streams": logits, "attention": attention}

    def drop_modalities(self, embs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The embeddings concat fusion joins; in training with model.modality_dropout = p and
        several modalities, each sample loses each modality's embeddings (zeroed) with
        chance p, never all of them, so the fused classifier learns to use each alone."""
        out = [embs[k] for k in self.streams]
        p, groups = self.modality_dropout, list(self.groups.values())
        if not self.training or p == 0 or len(groups) < 2:
            return out
        n = out[0].shape[0]
        keep = torch.rand(n, len(groups), device=out[0].device) >= p  # (N, G)
        none = ~keep.any(1)
        pick = torch.randint(len(groups), (n,), device=out[0].device)
        keep[none, pick[none]] = True  # a sample that lost every modality keeps one
        index = {k: g for g, names in enumerate(groups) for k in names}
        return [
            x * keep[:, index[k], None].to(x.dtype) for k, x in zip(self.streams, out, strict=True)
        ]

    @staticmethod
    def _group_probs(names: list[str], logits: dict) -> torch.Tensor:
        return torch.stack([torch.softmax(logits[k], -1) for k in names]).mean(0)  # (N, C)


class Replicas(nn.Module):
    """`model.replicas` copies of one recognizer, built from successive draws of the generator
    (so initialised differently) and trained side by side on the same batches, each on its own
    loss, with their own dropout; scored like separately trained models whose probabilities
    are averaged. out: "logits" and each stream's "streams" entry are logs of the replicas'
    mean probabilities, "attention" their mean, "members" each replica's own output (the
    losses are taken from these).

    `own_views` (`model.replica_augment`): in training, each skeleton input holds one augmented
    view per replica, (N * replicas, ...) with the views of a sample adjacent, and replica r
    sees view r only (so the replicas also differ in the augmentation they were trained on);
    inputs of N rows (one clip of an image stream) go to every replica. Evaluation: one input
    for all."""

    def __init__(self, members: list[Recognizer], own_views: bool = False):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.own_views = own_views
        self.fusion = members[0].fusion
        self.groups = members[0].groups

    def set_group_weights(self, weights: dict[str, float]) -> None:
        for m in self.members:
            m.set_group_weights(weights)

    def grad_groups(self) -> list[list[nn.Parameter]]:
        return [group for m in self.members for group in m.grad_groups()]

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict:
        if self.training and self.own_views:
            outs = [m(x) for m, x in zip(self.members, self.views(inputs), strict=True)]
        else:
            outs = [m(inputs) for m in self.members]

        def mean_probs(xs: list[torch.Tensor]) -> torch.Tensor:
            probs = torch.stack([torch.softmax(x.float(), -1) for x in xs]).mean(0)
            return torch.log(probs.clamp_min(1e-12))

        streams, attention = outs[0]["streams"], outs[0]["attention"]
        return {
            "logits": mean_probs([o["logits"] for o in outs]),
            "streams": {k: mean_probs([o["streams"][k] for o in outs]) for k in streams},
            "attention": {
                k: torch.stack([o["attention"][k] for o in outs]).mean(0) for k in attention
            },
            "members": outs,
        }

    def views(self, inputs: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Each replica's inputs: its view of every input of N * replicas rows."""
        r = len(self.members)
        rows = max(x.shape[0] for x in inputs.values())
        if rows % r:
            raise ValueError(f"replica views: {rows} rows is not a multiple of {r} replicas")
        return [
            {k: x[i::r] if x.shape[0] == rows else x for k, x in inputs.items()} for i in range(r)
        ]


def isolated(fusion: str, groups: dict, stream: str, offset: int | None):
    """For a non-skeleton stream of a multi-modality ensemble: a forked torch generator, so
    that it draws none of the numbers the skeleton streams draw; reseeded from the initial
    seed + `offset` (initialisation) or not (forward: dropout). Otherwise nothing."""
    if fusion != "ensemble" or len(groups) == 1 or stream.startswith("skeleton"):
        return contextlib.nullcontext()
    return _forked(None if offset is None else torch.initial_seed() + 7919 * offset)


@contextlib.contextmanager
def _forked(seed: int | None):
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def build_recognizer(
    mcfg, streams: list[str], num_classes: int, specs: dict[str, dict]
) -> Recognizer | Replicas:
    """Build the model from the `model` config node for the streams the modality asks for:
    a `Recognizer`, or `Replicas` of it when model.replicas > 1.

    `specs[stream]` describes the input: skeleton {"num_joints", "channels", "num_bodies"};
    rgb/depth {"feature_dim"} when reading cached features, or {"in_channels"} for frames.
    """
    replicas = int(mcfg.get("replicas", 1))
    if replicas < 1:
        raise ValueError(f"model.replicas must be >= 1, got {replicas}")
    if mcfg.get("replica_augment", False) and replicas == 1:
        raise ValueError("model.replica_augment=true needs model.replicas > 1")
    if mcfg.get("modality_dropout", 0.0) and mcfg.fusion != "concat":
        raise ValueError(
            f"model.modality_dropout applies to model.fusion=concat, not {mcfg.fusion!r}"
        )
    if replicas == 1:
        return _build_one(mcfg, streams, num_classes, specs)
    members = [_build_one(mcfg, streams, num_classes, specs, r) for r in range(replicas)]
    return Replicas(members, own_views=bool(mcfg.get("replica_augment", False)))


def _build_one(
    mcfg, streams: list[str], num_classes: int, specs: dict[str, dict], replica: int = 0
) -> Recognizer:
    """One recognizer; `replica` shifts the seeds of the isolated (image) streams."""
    from skelact.models.encoders import build_encoder  # encoders import torchvision lazily

    built = {}
    # model.core.shared: the skeleton streams (same frames, same width) share one core
    skeletons = [n for n in streams if n.startswith("skeleton")]
    shared = None
    if mcfg.core.get("shared", False) and len(skeletons) > 1:
        shared = build_core(mcfg.skeleton.embed, mcfg.core)
    for i, name in enumerate(streams):
        kind = "skeleton" if name.startswith("skeleton") else name  # skeleton_* share a config
        with isolated(mcfg.fusion, groups_of(streams), name, offset=2 + i + 1000 * replica):
            encoder, enc_dim = build_encoder(kind, mcfg[kind], specs[name])
            built[name] = Stream(
                encoder,
                enc_dim,
                mcfg.core,
                mcfg.attention_hidden,
                mcfg.dropout,
                mcfg.get("temporal_kernel", 0),
                tuple(mcfg.get("temporal_dilations", (1,))),
                skeleton="num_joints" in specs[name],
                core=shared if name in skeletons else None,
                attn_heads=int(mcfg.get("attention_heads", 1)),
            )
    return Recognizer(
        built,
        num_classes,
        mcfg.fusion,
        mcfg.fusion_hidden,
        mcfg.dropout,
        offset=1000 * replica,
        modality_dropout=float(mcfg.get("modality_dropout", 0.0)),
    )
