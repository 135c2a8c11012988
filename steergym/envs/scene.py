"""Compose the WidowX table scene with a task's objects into one MuJoCo model.

The robot and table live in ``assets/widowx/widowx250_table.xml``; each task object is a small MJCF
``<body>`` fragment in ``assets/objects/<name>.xml``. Composition is plain text insertion at the
``<!-- steergym:task-objects -->`` marker, so every model a task uses is a readable MJCF document
(`scene_xml` returns it for inspection or for loading in MuJoCo's viewer).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import mujoco
import numpy as np

OBJECTS_MARKER = "<!-- steergym:task-objects -->"


def _asset_text(*parts: str) -> str:
    return resources.files("steergym.assets").joinpath(*parts).read_text()


def available_objects() -> list[str]:
    """Names of the object fragments shipped in ``assets/objects``."""
    folder = resources.files("steergym.assets").joinpath("objects")
    return sorted(p.name[: -len(".xml")] for p in folder.iterdir() if p.name.endswith(".xml"))


def scene_xml(object_names: tuple[str, ...]) -> str:
    """The full MJCF text of the table scene holding `object_names` (see `available_objects`)."""
    known = available_objects()
    unknown = [n for n in object_names if n not in known]
    if unknown:
        raise ValueError(f"unknown scene object(s) {unknown}; available: {known}")
    robot = _asset_text("widowx", "widowx250_table.xml")
    fragments = "\n".join(_asset_text("objects", f"{name}.xml") for name in object_names)
    return robot.replace(OBJECTS_MARKER, fragments)


@functools.lru_cache(maxsize=32)
def _compiled(object_names: tuple[str, ...]) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(scene_xml(object_names))


def build_model(object_names: tuple[str, ...]) -> mujoco.MjModel:
    """A fresh copy of the compiled scene model (compiled once per object set and cached)."""
    return _compiled(tuple(object_names)).__copy__()


@dataclass(frozen=True)
class BodyGeometry:
    """Geometry facts about one rigid body, read from the compiled model.

    Attributes:
        body_id: MuJoCo body id.
        geom_ids: ids of the body's colliding geoms (contype or conaffinity non-zero).
        half_extents: (3,) half-size in metres of the axis-aligned box around those geoms,
            in the body frame.
        center_offset: (3,) centre of that box in the body frame, metres.
    """

    body_id: int
    geom_ids: np.ndarray
    half_extents: np.ndarray
    center_offset: np.ndarray


def body_geometry(model: mujoco.MjModel, body_name: str) -> BodyGeometry:
    """Colliding geoms and their bounding box (body frame) for the body `body_name`."""
    body_id = model.body(body_name).id
    start, count = model.body_geomadr[body_id], model.body_geomnum[body_id]
    ids = [
        g
        for g in range(start, start + count)
        if model.geom_contype[g] != 0 or model.geom_conaffinity[g] != 0
    ]
    if not ids:
        raise ValueError(f"body {body_name!r} has no colliding geoms")
    lows, highs = [], []
    for g in ids:
        rot = np.empty(9)
        mujoco.mju_quat2Mat(rot, model.geom_quat[g])
        rot = rot.reshape(3, 3)
        center, half = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
        # Box corners in the body frame -> axis-aligned bounds.
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        corners = (center + signs * half) @ rot.T + model.geom_pos[g]
        lows.append(corners.min(axis=0))
        highs.append(corners.max(axis=0))
    low, high = np.min(lows, axis=0), np.max(highs, axis=0)
    return BodyGeometry(body_id, np.array(ids), (high - low) / 2.0, (high + low) / 2.0)
