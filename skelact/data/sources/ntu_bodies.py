"""NTU body denoising: which Kinect tracks are people, and which actor slot each one fills.

Kinect v2 gives every tracked body an ID. Real NTU files hold two kinds of fault that the
standard NTU preprocessing exists for: short-lived ghost bodies (a chair, a reflection), and
one person split over two IDs when the sensor loses and finds them again. The rules, applied
to the tracks (records grouped by ID) of one file:

1. length: a track seen in at most `NOISE_MAX_FRAMES` frames is noise;
2. spread: a frame is noisy when the body is wider (x) than `SPREAD_RATIO` x its height (y);
   a track with more than `SPREAD_NOISY_FRACTION` noisy frames is noise (objects, not people);
3. motion: a track whose joints jump by more than `JITTER_MAX` metres per frame (median over
   its frames of the mean joint displacement) is noise: a person, even running, moves a few
   centimetres a frame at 30 fps. A minimum motion is not required: a partner who stands still
   in an interaction is a person.

Rule 1 always applies; rules 2 and 3 only while more than one track is left, and no rule
removes the last track. The survivors are ranked by activity (sum over joints and x y z of
the temporal variance), most active first, and assigned greedily to actor slots: a track that
shares no frame with a slot's tracks joins that slot (the nearest one in space at the hand-over,
when several fit); otherwise it opens a new slot while fewer than `max_bodies` are open, else
it is dropped as an extra. Slot 0 holds the most active person.
"""

from __future__ import annotations

import numpy as np

NOISE_MAX_FRAMES = 11  # tracks seen in <= this many frames are ghosts (as in CTR-GCN's rules)
SPREAD_RATIO = 0.8  # a frame is noisy when x-spread > 0.8 * y-spread
SPREAD_NOISY_FRACTION = 0.69754  # a track is noise when more of its frames than this are noisy
JITTER_MAX = 0.25  # metres per frame (median of the mean joint displacement)

COUNTERS = ("dropped_length", "dropped_spread", "dropped_motion", "dropped_extra", "merged")


def _spread_noisy(xyz: np.ndarray) -> bool:
    """xyz (F, V, 3) of one track: whether most frames look wider than tall."""
    x_spread = np.ptp(xyz[..., 0], axis=1)
    y_spread = np.ptp(xyz[..., 1], axis=1)
    return float((x_spread > SPREAD_RATIO * y_spread).mean()) > SPREAD_NOISY_FRACTION


def _jitter(xyz: np.ndarray, frames: np.ndarray) -> float:
    """Median over consecutive frames of the mean joint displacement (metres per frame)."""
    if len(frames) < 2:
        return 0.0
    step = np.linalg.norm(np.diff(xyz, axis=0), axis=-1).mean(-1)  # (F-1,)
    step = step / np.maximum(np.diff(frames), 1)  # gaps in the track spread the motion
    return float(np.median(step))


def activity(xyz: np.ndarray) -> float:
    """How much a body moves: xyz (F, V, C) -> sum over joints and coordinates of the temporal
    variance. The rule that orders bodies, most active first, everywhere in skelact."""
    return float(xyz.astype(np.float64).var(axis=0).sum())


def _filter(tracks: list[np.ndarray], keep: np.ndarray, counts: dict, key: str) -> list:
    """Drop the tracks where `keep` is False, unless that drops every track."""
    if keep.all() or not keep.any():
        return tracks
    counts[key] += int((~keep).sum())
    return [t for t, k in zip(tracks, keep, strict=True) if k]


def denoise_tracks(
    tracks: list[np.ndarray], frames: np.ndarray, xyz: np.ndarray, counts: dict
) -> list[np.ndarray]:
    """Rules 1-3 over `tracks` (record indices per ID); frames (R,), xyz (R, V, 3)."""
    lengths = np.array([len(t) for t in tracks])
    tracks = _filter(tracks, lengths > NOISE_MAX_FRAMES, counts, "dropped_length")
    if len(tracks) > 1:
        keep = np.array([not _spread_noisy(xyz[t]) for t in tracks])
        tracks = _filter(tracks, keep, counts, "dropped_spread")
    if len(tracks) > 1:
        keep = np.array([_jitter(xyz[t], frames[t]) <= JITTER_MAX for t in tracks])
        tracks = _filter(tracks, keep, counts, "dropped_motion")
    return tracks


def _centre(xyz: np.ndarray) -> np.ndarray:
    return xyz.mean(axis=0)  # (3,) mean over joints of one frame


def _handover_distance(slot: list[np.ndarray], track: np.ndarray, frames, xyz) -> float:
    """Distance between the slot's body and the track's where one ends and the other begins."""
    slot_records = np.concatenate(slot)
    before = slot_records[frames[slot_records] < frames[track[0]]]
    after = slot_records[frames[slot_records] > frames[track[-1]]]
    gaps = []
    if len(before):
        last = before[np.argmax(frames[before])]
        gaps.append(np.linalg.norm(_centre(xyz[last]) - _centre(xyz[track[0]])))
    if len(after):
        first = after[np.argmin(frames[after])]
        gaps.append(np.linalg.norm(_centre(xyz[first]) - _centre(xyz[track[-1]])))
    return float(min(gaps)) if gaps else 0.0


def assign_actors(
    tracks: list[np.ndarray], frames: np.ndarray, xyz: np.ndarray, max_bodies: int, counts: dict
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(record indices, seed track) per actor slot, most active first.

    A slot is opened by its seed, the most active of its tracks; time-disjoint tracks join it.
    """
    order = sorted(range(len(tracks)), key=lambda k: -activity(xyz[tracks[k]]))  # stable
    slots: list[list[np.ndarray]] = []
    slot_frames: list[set[int]] = []
    for k in order:
        track = tracks[k]
        mine = set(frames[track].tolist())
        fits = [s for s in range(len(slots)) if not (slot_frames[s] & mine)]
        if fits:
            best = min(fits, key=lambda s: _handover_distance(slots[s], track, frames, xyz))
            slots[best].append(track)
            slot_frames[best] |= mine
            counts["merged"] += 1
        elif len(slots) < max_bodies:
            slots.append([track])
            slot_frames.append(mine)
        else:
            counts["dropped_extra"] += 1
    return [(np.sort(np.concatenate(s)), s[0]) for s in slots]


def select_bodies(
    ids: list[bytes], frames: list[int], xyz: np.ndarray, max_bodies: int
) -> tuple[list[np.ndarray], list[bytes], dict[str, int]]:
    """Denoise and assign: record indices per slot, the ID that opened each slot, and counts.

    ids (R,) tracking IDs, frames (R,) frame index, xyz (R, V, 3) of every body record.
    """
    counts = dict.fromkeys(COUNTERS, 0)
    if len(set(ids)) == 1 and max_bodies >= 1:  # one track (most files): nothing to decide
        return [np.arange(len(ids))], [ids[0]], counts
    groups: dict[bytes, list[int]] = {}
    for r, body_id in enumerate(ids):
        groups.setdefault(body_id, []).append(r)
    tracks = [np.asarray(g) for g in groups.values()]
    frame_of = np.asarray(frames, dtype=np.int64)
    tracks = denoise_tracks(tracks, frame_of, xyz, counts)
    slots = assign_actors(tracks, frame_of, xyz, max_bodies, counts)
    return [records for records, _ in slots], [ids[seed[0]] for _, seed in slots], counts
