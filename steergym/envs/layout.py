"""Random initial placement of objects on the table without overlaps.

Objects are treated as rectangles in the table plane (their colliding geoms' half extents, rotated
by their yaw); a candidate layout is rejected while any two rectangles, grown by a margin, overlap
(separating-axis test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Placement:
    """Where one object may start: a box of xy centres (metres) and the yaws it may take (rad).

    Attributes:
        low, high: (2,) corners of the region of the object's centre.
        yaws: nominal headings; one is chosen uniformly, then `yaw_jitter` is added.
        yaw_jitter: half-width of the uniform noise added to the heading, rad.
    """

    low: tuple[float, float]
    high: tuple[float, float]
    yaws: tuple[float, ...] = (0.0,)
    yaw_jitter: float = 0.0


def _corners(center: np.ndarray, half: np.ndarray, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s], [s, c]])
    signs = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]])
    return center + (signs * half) @ rot.T


def rectangles_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test for two convex quadrilaterals given as (4, 2) corner arrays."""
    for poly in (a, b):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


def sample_layout(
    rng: np.random.Generator,
    placements: list[Placement],
    half_extents: list[np.ndarray],
    margin: float = 0.01,
    max_tries: int = 1000,
) -> list[tuple[np.ndarray, float]]:
    """Sample (xy, yaw) for each object so that no two footprints (grown by `margin`) overlap.

    Args:
        rng: the env's generator (so layouts follow the reset seed).
        placements: one `Placement` per object.
        half_extents: (2,) xy half-size of each object's footprint in its own frame, metres.
    """
    for _ in range(max_tries):
        poses = []
        for place in placements:
            xy = rng.uniform(place.low, place.high)
            yaw = place.yaws[rng.integers(len(place.yaws))] + rng.uniform(-place.yaw_jitter, place.yaw_jitter)
            poses.append((xy, float(yaw)))
        rects = [_corners(xy, np.asarray(h) + margin, yaw) for (xy, yaw), h in zip(poses, half_extents)]
        if not any(rectangles_overlap(rects[i], rects[j]) for i in range(len(rects)) for j in range(i)):
            return poses
    raise RuntimeError(f"could not place {len(placements)} objects without overlap in {max_tries} tries")
