"""steergym.space_json: the one space serialiser of every checkpoint, and the old formats it still reads."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from minari.serialization import serialize_space

from steergym.space_json import space_from_json, space_to_json

SPACES = [
    gym.spaces.Box(-1.0, 1.0, (7,), np.float32),
    gym.spaces.Box(np.array([-np.inf, 0.0]), np.array([np.inf, 2.5]), dtype=np.float64),
    gym.spaces.Box(0, 255, (32, 32, 3), np.uint8),
    gym.spaces.Box(np.zeros((2, 3)), np.arange(1, 7, dtype=np.float64).reshape(2, 3),
                   dtype=np.float64),  # unequal bounds: kept
    gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
                     "state": gym.spaces.Box(-5.0, 5.0, (4,), np.float32)}),
    gym.spaces.Discrete(5, start=1),
    gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(-1.0, 1.0, (2,), np.float32))),
]


@pytest.mark.parametrize("space", SPACES, ids=lambda s: type(s).__name__ + str(getattr(s, "shape", "")))
def test_round_trip_through_json_text(space):
    text = json.dumps(space_to_json(space))
    assert space_from_json(json.loads(text)) == space


def test_an_image_box_keeps_one_number_per_bound():
    data = space_to_json(gym.spaces.Box(0, 255, (64, 64, 3), np.uint8))
    assert data == {"type": "Box", "dtype": "uint8", "shape": [64, 64, 3], "low": 0, "high": 255}


@pytest.mark.parametrize("space", SPACES, ids=lambda s: type(s).__name__ + str(getattr(s, "shape", "")))
def test_reads_minaris_own_format(space):
    """Policy checkpoints written before this module used minari.serialization directly."""
    assert space_from_json(json.loads(serialize_space(space))) == space


def test_reads_the_format_of_old_calql_checkpoints():
    old_box = {"low": [-1.0, -1.0], "high": [1.0, 1.0], "shape": [2], "dtype": "float32"}
    old_dict = {"dict": {"pixels": {"low": 0, "high": 255, "shape": [16, 16, 3], "dtype": "uint8"},
                         "state": {"low": [-1.0] * 3, "high": [1.0] * 3, "shape": [3], "dtype": "float32"}}}
    assert space_from_json(old_box) == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    assert space_from_json(old_dict) == gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8),
                                                         "state": gym.spaces.Box(-1.0, 1.0, (3,), np.float32)})


@pytest.mark.parametrize("bad", [
    [1, 2], "Box", {"type": "Box", "dtype": "float32", "shape": [2], "low": [0.0, 0.0, 0.0], "high": 1.0},
    {"type": "Box", "dtype": "not-a-dtype", "shape": [2], "low": 0, "high": 1}, {"shape": [2]},
    {"type": "Dict", "subspaces": [1]}, {"type": "Nonsense"},
])
def test_malformed_data_is_a_value_error_that_shows_it(bad):
    with pytest.raises(ValueError, match="space_from_json"):
        space_from_json(bad)
