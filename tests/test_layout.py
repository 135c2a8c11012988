"""Initial object placement: no overlaps, inside the stated regions, driven by the reset seed."""

import numpy as np
import pytest

from steergym.envs.layout import Placement, _corners, rectangles_overlap, sample_layout
from steergym.envs.tasks import TASKS, PickAndPlaceTask


def test_rectangle_overlap_test():
    a = _corners(np.array([0.0, 0.0]), np.array([0.05, 0.02]), 0.0)
    assert rectangles_overlap(a, _corners(np.array([0.09, 0.0]), np.array([0.05, 0.02]), 0.0))
    assert not rectangles_overlap(a, _corners(np.array([0.11, 0.0]), np.array([0.05, 0.02]), 0.0))
    # Rotated 90 degrees, the second one's long side no longer reaches.
    assert not rectangles_overlap(a, _corners(np.array([0.075, 0.0]), np.array([0.05, 0.02]), np.pi / 2))


def test_sample_layout_respects_regions_and_separation():
    rng = np.random.default_rng(0)
    places = [Placement((0.0, 0.0), (0.1, 0.1), yaws=(0.0, 1.0), yaw_jitter=0.1), Placement((0.0, 0.0), (0.1, 0.1))]
    halves = [np.array([0.03, 0.01]), np.array([0.02, 0.02])]
    for _ in range(50):
        poses = sample_layout(rng, places, halves)
        for xy, _yaw in poses:
            assert np.all(xy >= 0.0) and np.all(xy <= 0.1)
        rects = [_corners(xy, h + 0.01, yaw) for (xy, yaw), h in zip(poses, halves)]
        assert not rectangles_overlap(*rects)


def test_impossible_layout_raises():
    places = [Placement((0.0, 0.0), (0.0, 0.0)), Placement((0.0, 0.0), (0.0, 0.0))]
    with pytest.raises(RuntimeError, match="without overlap"):
        sample_layout(np.random.default_rng(0), places, [np.array([0.02, 0.02])] * 2, max_tries=10)


@pytest.mark.parametrize("name", [n for n, c in TASKS.items() if issubclass(c, PickAndPlaceTask) and c.target])
def test_objects_start_at_rest_apart_and_not_on_target(name):
    env = TASKS[name]()
    for seed in range(5):
        _, info = env.reset(seed=seed)
        assert not info["is_success"] and not info["src_on_target"]
        assert np.abs(env.data.qvel).max() < 0.05  # settled
        src, _ = env.body_pose(env.source)
        tgt, _ = env.body_pose(env.target)
        assert np.linalg.norm(src[:2] - tgt[:2]) > 0.05
        assert not env.touches_gripper(env.source)
    env.close()
