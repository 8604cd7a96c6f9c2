"""A per-frame spatial encoder that knows the skeleton graph (`model.skeleton.encoder=gcn`).

Graph convolution over the joints of each body in each frame, with ST-GCN's spatial
partitions: for every joint, itself, its neighbours nearer the body centre (centripetal) and
those farther away (centrifugal), each a normalised adjacency with its own weights, plus a
learned residual adjacency per layer (2s-AGCN's B, initialised at zero). Layouts without bones
(`generic`) start from the identity and a uniform all-joint partition and learn the rest.
No temporal mixing: the recurrent core sees one vector per frame, as with the joint MLP.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from skelact.layouts import Layout, body_parts
from skelact.models.dropout import Dropout


def hop_distance(layout: Layout) -> np.ndarray:
    """(V,) number of bones from each joint to the nearest centre joint (BFS over the bones)."""
    v = layout.num_joints
    neighbours = [[] for _ in range(v)]
    for child, parent in layout.bones():
        neighbours[child].append(parent)
        neighbours[parent].append(child)
    dist = np.full(v, np.inf)
    frontier = list(layout.center) or [0]
    dist[frontier] = 0
    while frontier:
        nxt = []
        for i in frontier:
            for j in neighbours[i]:
                if dist[j] == np.inf:
                    dist[j] = dist[i] + 1
                    nxt.append(j)
        frontier = nxt
    return dist


def partition_adjacency(layout: Layout) -> np.ndarray:
    """(3, V, V) self / centripetal / centrifugal adjacencies, each row i summing the inputs of
    joint i, normalised by joint i's degree over all three (A[k] @ x averages neighbours)."""
    v = layout.num_joints
    bones = layout.bones()
    if not bones:  # generic: identity and all joints equally, the residual learns the graph
        return np.stack([np.eye(v), np.full((v, v), 1.0 / v)]).astype(np.float32)
    dist = hop_distance(layout)
    a = np.zeros((3, v, v), np.float32)
    a[0] = np.eye(v)
    for child, parent in bones:
        for i, j in ((child, parent), (parent, child)):  # joint i receives from neighbour j
            a[1 if dist[j] < dist[i] else 2, i, j] = 1.0
    degree = a.sum((0, 2))  # (V,)
    return a / degree[None, :, None]


class GraphConv(nn.Module):
    """x (B, V, C_in) -> (B, V, C_out): sum_k (A_k + B_k) x W_k, residual, norm, GELU."""

    def __init__(self, adjacency: torch.Tensor, c_in: int, c_out: int, dropout: float = 0.0):
        super().__init__()
        k, v, _ = adjacency.shape
        self.register_buffer("adjacency", adjacency)
        self.residual_adj = nn.Parameter(torch.zeros(k, v, v))
        self.weight = nn.Linear(c_in, k * c_out)
        self.skip = nn.Linear(c_in, c_out) if c_in != c_out else nn.Identity()
        self.norm = nn.LayerNorm(c_out)
        self.act = nn.GELU()
        self.drop = Dropout(dropout)
        self.k, self.c_out = k, c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, v, c_in = x.shape
        k, c_out = self.k, self.c_out
        a = self.adjacency + self.residual_adj  # (K, V, W)
        # the same sum in whichever order is cheaper; batched matmuls with the adjacency
        # expanded (no copies of the big activations), not einsum (about 1.5x slower)
        if c_in < c_out:  # mix the joints on the narrower input first, then the weights
            ax = torch.bmm(a.reshape(k * v, v).expand(b, -1, -1), x)  # (B, K V, C_in)
            ax = ax.view(b, k, v, c_in).permute(0, 2, 1, 3).reshape(b, v, k * c_in)
            w = self.weight.weight.view(k, c_out, c_in).permute(1, 0, 2).reshape(c_out, -1)
            bias = a.sum(2).T @ self.weight.bias.view(k, c_out)  # (V, C_out): A_k 1 b_k
            y = torch.nn.functional.linear(ax, w) + bias
        else:  # weights first: (B, W, K C_out) is (B, W K, C_out), contracted with A
            wk = a.permute(1, 2, 0).reshape(v, v * k)  # [v, w K + k] = A_k[v, w]
            y = self.weight(x).view(b, v * k, c_out)
            y = torch.bmm(wk.expand(b, -1, -1), y)  # (B, V, C_out)
        return self.drop(self.act(self.norm(y + self.skip(x))))


class JointTemporalConv(nn.Module):
    """x (B, T, V, C) -> same: every joint's features convolved over `kernel` neighbouring
    frames (weights shared by the joints, zero padded), residual, norm, GELU; with the graph
    convolution before it, one spatio-temporal block (ST-GCN style)."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"JointTemporalConv: kernel must be odd and positive, got {kernel}")
        self.conv = nn.Conv2d(channels, channels, (kernel, 1), padding=(kernel // 2, 0))
        self.norm = nn.LayerNorm(channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, T, V, C)
        return self.act(self.norm(x + y))


class GraphEncoder(nn.Module):
    """(N, M, T, V, C) -> (N, T, D): graph convolutions per body-frame, then the joints pooled
    ("flatten": all joint features, joint identity kept, like the joint MLP; "parts": averaged
    within each body part, `skelact.layouts.body_parts`; "mean": over all joints), bodies
    encoded by the same weights and joined in body order.
    temporal_kernel > 0: each graph layer is followed by a convolution of every joint over that
    many frames (`JointTemporalConv`), so the per-frame encoder sees its neighbouring frames."""

    def __init__(
        self,
        layout: Layout,
        in_channels: int,
        num_bodies: int,
        width: int = 64,
        layers: int = 3,
        hidden: int = 256,
        out_dim: int = 128,
        dropout: float = 0.0,
        pool: str = "flatten",
        temporal_kernel: int = 0,
    ):
        super().__init__()
        if pool not in ("flatten", "parts", "mean"):
            raise ValueError(f"GraphEncoder: pool must be flatten, parts or mean, got {pool!r}")
        adjacency = torch.from_numpy(partition_adjacency(layout))
        widths = [in_channels] + [width] * layers
        self.convs = nn.Sequential(
            *(
                GraphConv(adjacency, a, b, dropout)
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            )
        )
        self.temporal = nn.ModuleList(
            JointTemporalConv(width, temporal_kernel)
            for _ in range(layers if temporal_kernel else 0)
        )
        self.pool = pool
        pooled = {"flatten": width * layout.num_joints, "mean": width}.get(pool)
        if pool == "parts":  # (P, V): row p averages the joints of part p
            parts = list(body_parts(layout).values())
            average = torch.zeros(len(parts), layout.num_joints)
            for p, joints in enumerate(parts):
                average[p, list(joints)] = 1.0 / len(joints)
            self.register_buffer("part_average", average, persistent=False)
            pooled = width * len(parts)
        self.project = nn.Sequential(nn.Linear(pooled, hidden), nn.LayerNorm(hidden), nn.GELU())
        self.merge = nn.Linear(num_bodies * hidden, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, m, t, v, c = x.shape
        if self.temporal:  # graph layer, then over time, per layer
            h = x.reshape(n * m * t, v, c)
            for conv, temporal in zip(self.convs, self.temporal, strict=True):
                h = conv(h)
                h = temporal(h.view(n * m, t, v, -1)).reshape(n * m * t, v, -1)
        else:
            h = self.convs(x.reshape(n * m * t, v, c))  # (NMT, V, W)
        if self.pool == "parts":
            h = torch.matmul(self.part_average, h).flatten(1)  # (NMT, P x W)
        else:
            h = h.flatten(1) if self.pool == "flatten" else h.mean(1)
        h = self.project(h).view(n, m, t, -1)  # (N, M, T, H)
        return self.merge(h.permute(0, 2, 1, 3).reshape(n, t, -1))  # (N, T, D)
