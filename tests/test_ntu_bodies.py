"""NTU body denoising on cases built from the real .skeleton files: a short ghost, an ID switch,
an object track, and a real two-person scene that must stay intact."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skelact.data.sources.ntu_skeleton import load_skeleton_full
from tests.conftest import shared_data

ACTOR = "S001C001P001R001A001"  # 103 frames, one body
OTHER = "S002C001P003R001A003"  # 100 frames, one body


def read_frames(name: str) -> list[list[list[str]]]:
    """Per frame, per body: [info line, "25", 25 joint lines] of a real file."""
    lines = shared_data("ntu", "skeletons", f"{name}.skeleton").read_bytes().decode()
    lines = lines.split("\r\n")
    frames, i = [], 1
    for _ in range(int(lines[0])):
        bodies, i = [], i + 1
        for _ in range(int(lines[i - 1])):
            bodies.append(lines[i : i + 27])
            i += 27
        frames.append(bodies)
    return frames


def write(path: Path, frames: list[list[list[str]]]) -> Path:
    lines = [str(len(frames))]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for body in bodies:
            lines += body
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


def with_id(body: list[str], body_id: str) -> list[str]:
    return [" ".join([body_id, *body[0].split()[1:]]), *body[1:]]


def shifted(body: list[str], dx: float, jitter: float = 0.0, seed: int = 0) -> list[str]:
    """The body moved by dx metres along x, each joint jittered by up to `jitter` metres."""
    rng = np.random.default_rng(seed)
    joints = []
    for line in body[2:]:
        v = line.split()
        x, y, z = (float(a) + rng.uniform(-jitter, jitter) for a in v[:3])
        joints.append(" ".join([f"{x + dx:.6f}", f"{y:.6f}", f"{z:.6f}", *v[3:]]))
    return [body[0], body[1], *joints]


def test_short_ghost_does_not_become_the_actor(tmp_path):
    clean = load_skeleton_full(shared_data("ntu", "skeletons", f"{ACTOR}.skeleton"))
    frames = read_frames(ACTOR)
    for t in range(40, 45):  # a jittering ghost 1.5 m to the side, seen in 5 frames
        ghost = with_id(shifted(frames[t][0], 1.5, jitter=0.3, seed=t), "99")
        frames[t].append(ghost)
    full = load_skeleton_full(write(tmp_path / f"{ACTOR}.skeleton", frames))
    assert full["num_bodies"] == 2 and full["body_ids"] == clean["body_ids"]
    np.testing.assert_array_equal(full["keypoint"], clean["keypoint"])
    assert full["denoise"]["dropped_length"] == 1


def test_id_switch_is_merged_into_one_actor(tmp_path):
    clean = load_skeleton_full(shared_data("ntu", "skeletons", f"{ACTOR}.skeleton"))
    frames = read_frames(ACTOR)
    for t in range(52, len(frames)):
        frames[t] = [with_id(frames[t][0], "42")]
    full = load_skeleton_full(write(tmp_path / f"{ACTOR}.skeleton", frames))
    assert full["num_bodies"] == 2 and full["denoise"]["merged"] == 1
    np.testing.assert_array_equal(full["keypoint"], clean["keypoint"])  # slot 1 stays empty
    assert not full["keypoint"][1].any()
    # what the merge prevents: a "vanishing" person has a velocity spike at the switch
    spine = np.linalg.norm(clean["keypoint"][0, :, 20] - clean["keypoint"][0, :, 0], axis=-1)
    step = np.linalg.norm(np.diff(full["keypoint"][0], axis=0), axis=-1).mean(-1)
    assert step.max() / spine.mean() < 0.2


def test_two_real_people_stay_intact(tmp_path):
    """Two real performers side by side, both tracked throughout: both kept, exactly."""
    a, b = read_frames(ACTOR), read_frames(OTHER)
    frames = [[a[t][0], with_id(shifted(b[t][0], 1.0), "77")] for t in range(len(b))]
    full = load_skeleton_full(write(tmp_path / f"{ACTOR}.skeleton", frames))
    assert full["num_bodies"] == 2 and sum(full["denoise"].values()) == 0
    single_a = load_skeleton_full(write(tmp_path / "a.skeleton", [[f[0]] for f in frames]))
    single_b = load_skeleton_full(write(tmp_path / "b.skeleton", [[f[1]] for f in frames]))
    got = {tuple(full["keypoint"][m, 0, 0]) for m in range(2)}
    want = {tuple(single_a["keypoint"][0, 0, 0]), tuple(single_b["keypoint"][0, 0, 0])}
    assert got == want
    for m in range(2):  # each slot holds exactly one of the two people, every frame
        is_a = full["keypoint"][m, 0, 0, 0] == single_a["keypoint"][0, 0, 0, 0]
        ref = single_a if is_a else single_b
        np.testing.assert_array_equal(full["keypoint"][m], ref["keypoint"][0])


def test_wide_object_track_is_dropped(tmp_path):
    """A long track wider than tall (a table edge seen as a body) loses to the actor."""
    clean = load_skeleton_full(shared_data("ntu", "skeletons", f"{ACTOR}.skeleton"))
    frames = read_frames(ACTOR)
    for t, bodies in enumerate(frames):
        body = bodies[0]
        flat = [body[0].replace(body[0].split()[0], "55", 1), body[1]]
        for j, line in enumerate(body[2:]):
            v = line.split()
            x, y, z = -1.0 + 0.08 * j + 0.01 * np.sin(t), 0.01 * (j % 3), 3.0
            flat.append(" ".join([f"{x:.6f}", f"{y:.6f}", f"{z:.6f}", *v[3:]]))
        bodies.append(flat)
    full = load_skeleton_full(write(tmp_path / f"{ACTOR}.skeleton", frames), max_bodies=2)
    assert full["denoise"]["dropped_spread"] == 1 and full["body_ids"] == clean["body_ids"]
    np.testing.assert_array_equal(full["keypoint"], clean["keypoint"])
