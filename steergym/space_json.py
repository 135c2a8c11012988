"""Gymnasium spaces as JSON: the one serialiser of every steergym checkpoint and run file.

    data = space_to_json(env.observation_space)     # a dict, for json.dumps
    space = space_from_json(data)                     # == env.observation_space

The format is Minari's (`minari.serialization`: {"type": "Box", "dtype", "shape", "low", "high"},
{"type": "Dict", "subspaces": {...}}, ...), so a steergym file and a Minari dataset describe a space
the same way, with one difference: a Box of more than one axis whose bounds are all equal (an image,
0..255) keeps one number for each bound instead of H x W x C of them (not in policy checkpoints). `space_from_json` reads that,
Minari's own output, and the format Cal-QL/PTR checkpoints used before this module
({"low", "high", "shape", "dtype"} for a Box, {"dict": {key: box}} for a Dict of Boxes), so old
checkpoints keep loading.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np


def space_to_json(space: gym.Space, compact: bool = True) -> dict[str, Any]:
    """`space` as a JSON-ready dict: Minari's format, with equal-bound multi-axis Boxes compacted
    unless `compact=False` (policy checkpoints: their loader refuses scalar bounds before building
    the space, so a small file cannot make it allocate a huge Box)."""
    from minari.serialization import serialize_space

    if isinstance(space, gym.spaces.Box):
        low, high = space.low.tolist(), space.high.tolist()
        if compact and space.low.ndim > 1 and _uniform(space.low) and _uniform(space.high):
            low, high = space.low.flat[0].item(), space.high.flat[0].item()
        return {"type": "Box", "dtype": str(space.dtype), "shape": list(space.shape), "low": low, "high": high}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "subspaces": {k: space_to_json(v, compact) for k, v in space.spaces.items()}}
    try:
        return serialize_space(space, to_string=False)
    except NotImplementedError as error:
        raise ValueError(f"space_to_json: cannot write {space!r} ({error})") from None


def space_from_json(data: Any) -> gym.Space:
    """The space `data` (from `space_to_json`, Minari, or an old Cal-QL checkpoint) describes."""
    from minari.serialization import deserialize_space

    if not isinstance(data, dict):
        raise ValueError(f"space_from_json: a space is a JSON object, got {type(data).__name__} {data!r:.80}")
    kind = data.get("type")
    if kind == "Box" or (kind is None and {"low", "high", "shape", "dtype"} <= data.keys()):
        return _box(data)
    if kind == "Dict" or (kind is None and "dict" in data):
        subspaces = data.get("subspaces", data.get("dict"))
        if not isinstance(subspaces, dict):
            raise ValueError(f"space_from_json: a Dict space needs an object of subspaces, got {subspaces!r:.80}")
        return gym.spaces.Dict({k: space_from_json(v) for k, v in subspaces.items()})
    if kind is None:
        raise ValueError(f"space_from_json: not a space (no 'type'): {data!r:.120}")
    try:
        return deserialize_space(json.dumps(data))
    except (NotImplementedError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"space_from_json: cannot read a {kind!r} space from {data!r:.120} ({error})") from None


def _box(data: dict[str, Any]) -> gym.spaces.Box:
    try:
        dtype, shape = np.dtype(data["dtype"]), tuple(int(n) for n in data["shape"])
        bound_dtype = dtype if dtype.kind in "iu" else np.float64  # integers exactly, inf for floats
        low = np.broadcast_to(np.asarray(data["low"], dtype=bound_dtype), shape).astype(dtype)
        high = np.broadcast_to(np.asarray(data["high"], dtype=bound_dtype), shape).astype(dtype)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"space_from_json: malformed Box {data!r:.120} ({error})") from None
    return gym.spaces.Box(low, high, shape=shape, dtype=dtype)


def _uniform(values: np.ndarray) -> bool:
    return bool(np.all(values == values.flat[0]))
