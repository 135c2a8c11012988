"""The WidowX tasks: four SIMPLER Bridge tasks and two small ones for fast tests and RL.

Success follows SIMPLER's "on" test (PutOnInSceneEnv.evaluate, reference/envs.md 2.3) made a little
stricter, as users asked for (SimplerEnv #129): the source object's centre lies over the target's
footprint (+3 mm), it rests at most 2 cm above the target's top, it does not touch the table where
SIMPLER requires "completely on", and the gripper has let go of it.

Layouts are in the base frame around SIMPLER's object centre, which sits 0.31 m in front of the
robot base (0.31, 0.03); every episode draws positions and headings from the reset seed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from steergym.envs.layout import Placement, sample_layout
from steergym.envs.rotations import quat_to_yaw
from steergym.envs.widowx import WidowXEnv

XY_TOLERANCE = 0.003  # m added to the target's half extent (SIMPLER)
Z_TOLERANCE = 0.02  # m allowed between the source's bottom and the target's top (SIMPLER)
Z_SINK_TOLERANCE = 0.005  # m the source's bottom may lie below the target's top (contact, tilt)


def _closeness(distance: float, scale: float = 10.0) -> float:
    """1 at distance 0, falling smoothly toward 0; `distance` in metres."""
    return float(1.0 - np.tanh(scale * distance))


class PickAndPlaceTask(WidowXEnv):
    """Pick `source` and put it on (or in) `target`.

    Class attributes:
        source, target: object names (assets/objects).
        source_place, target_place: where each starts (`Placement`).
        completely_on: SIMPLER's "completely on" (source may touch nothing but target and robot).
        grasp_symmetry: headings the gripper may grasp the source at, as a period in rad
            (pi for elongated objects, pi/2 for cubes); used by the scripted expert.
        grasp_offset: (x, y) in the source's frame of the point to grasp, metres.
        release_height: height of the source's centre above the target's top when the scripted
            expert opens the gripper, metres.
    """

    source: ClassVar[str] = ""
    target: ClassVar[str] = ""
    source_place: ClassVar[Placement]
    target_place: ClassVar[Placement]
    completely_on: ClassVar[bool] = True
    grasp_symmetry: ClassVar[float] = np.pi
    grasp_offset: ClassVar[tuple[float, float]] = (0.0, 0.0)
    release_height: ClassVar[float] = 0.03

    def _place_objects(self, rng: np.random.Generator) -> None:
        names = [self.source, self.target]
        placements = [self.source_place, self.target_place]
        halves = [self.geometry[n].half_extents[:2] for n in names]
        for name, (xy, yaw) in zip(names, sample_layout(rng, placements, halves)):
            z = self.geometry[name].half_extents[2] - self.geometry[name].center_offset[2] + 0.001
            if self.model.body_mocapid[self._body_ids[name]] >= 0:
                self.set_mocap_pose(name, np.array([xy[0], xy[1], 0.0]), yaw)
            else:
                self.set_free_body_pose(name, np.array([xy[0], xy[1], z]), yaw)

    # -- geometry used by success, reward and the scripted expert -------------------------------
    def target_top(self) -> float:
        """Height of the target's top surface (or basket floor), metres."""
        pos, _ = self.body_pose(self.target)
        geo = self.geometry[self.target]
        return float(pos[2] + geo.center_offset[2] + geo.half_extents[2])

    def source_offset_in_target(self) -> np.ndarray:
        """(3,) centre of the source minus centre of the target, in the target's yaw frame, metres."""
        src, _ = self.body_pose(self.source)
        tgt, tgt_quat = self.body_pose(self.target)
        yaw = quat_to_yaw(tgt_quat)
        c, s = np.cos(yaw), np.sin(yaw)
        d = src - tgt
        return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2]])

    def place_position(self) -> np.ndarray:
        """Where the scripted expert releases the source's centre (above the target), metres."""
        tgt, _ = self.body_pose(self.target)
        src_half = self.geometry[self.source].half_extents[2]
        return np.array([tgt[0], tgt[1], self.target_top() + src_half + self.release_height])

    def _on_target(self) -> bool:
        offset = self.source_offset_in_target()
        tgt_half = self.geometry[self.target].half_extents
        src_geo = self.geometry[self.source]
        xy_ok = bool(np.all(np.abs(offset[:2]) <= tgt_half[:2] + XY_TOLERANCE))
        src_pos, _ = self.body_pose(self.source)
        # The bottom of the colliding geometry, which need not be centred on the body origin (the
        # spoon's bowl puts it 0.5 mm higher: the body origin alone let 20.5 mm pass the 2 cm band).
        gap = src_pos[2] + src_geo.center_offset[2] - src_geo.half_extents[2] - self.target_top()
        z_ok = bool(-Z_SINK_TOLERANCE <= gap <= Z_TOLERANCE)  # Python bool: info["src_on_target"] serialises
        return xy_ok and z_ok and not (self.completely_on and self.touches_table(self.source))

    def _evaluate(self) -> dict[str, Any]:
        grasped = self.is_grasped(self.source)
        on_target = self._on_target()
        released = not self.touches_gripper(self.source)
        return {"is_success": on_target and released, "is_grasped": grasped, "src_on_target": on_target}

    def _dense_reward(self, metrics: dict[str, Any]) -> float:
        tcp = self.data.site_xpos[self.controller.site_id]
        src, _ = self.body_pose(self.source)
        reach = _closeness(float(np.linalg.norm(tcp - src)))
        place = _closeness(float(np.linalg.norm(src - self.place_position())))
        lifted = float(metrics["is_grasped"])
        return 0.2 * reach + 0.2 * lifted + 0.5 * place * (lifted or metrics["src_on_target"])


CENTER = (0.31, 0.03)  # SIMPLER's object-grid centre in the base frame, metres


def _around(dx: float, dy: float, cx: float = CENTER[0], cy: float = CENTER[1]) -> dict[str, tuple]:
    return {"low": (cx - dx, cy - dy), "high": (cx + dx, cy + dy)}


class PutSpoonOnTowel(PickAndPlaceTask):
    """SIMPLER widowx_spoon_on_towel: the spoon may rest partly off the towel."""

    objects = ("spoon", "towel")
    source, target = "spoon", "towel"
    instruction = "put the spoon on the towel"
    max_episode_steps = 60
    completely_on = False
    source_place = Placement(**_around(0.075, 0.085), yaws=(0.0, np.pi / 2), yaw_jitter=0.3)
    target_place = Placement(**_around(0.06, 0.07), yaws=(0.0,), yaw_jitter=0.2)
    grasp_offset = (-0.005, 0.0)  # the handle, near the balance point
    release_height = 0.02


class PutCarrotOnPlate(PickAndPlaceTask):
    """SIMPLER widowx_carrot_on_plate ("completely on": the carrot may not touch the table)."""

    objects = ("carrot", "plate")
    source, target = "carrot", "plate"
    instruction = "put carrot on plate"
    max_episode_steps = 60
    source_place = Placement(**_around(0.075, 0.085), yaws=(np.pi, -np.pi / 2), yaw_jitter=0.3)
    target_place = Placement(**_around(0.06, 0.07))
    release_height = 0.02


class StackGreenOnYellowBlock(PickAndPlaceTask):
    """SIMPLER widowx_stack_cube: two 3 cm blocks, green on top of yellow."""

    objects = ("green_block", "yellow_block")
    source, target = "green_block", "yellow_block"
    instruction = "stack the green block on the yellow block"
    max_episode_steps = 60
    source_place = Placement(**_around(0.08, 0.09), yaws=(0.0,), yaw_jitter=np.pi / 4)
    target_place = Placement(**_around(0.06, 0.07), yaws=(0.0,), yaw_jitter=np.pi / 4)
    grasp_symmetry = np.pi / 2
    release_height = 0.008


class PutEggplantInBasket(PickAndPlaceTask):
    """SIMPLER widowx_put_eggplant_in_basket: the basket is fixed; "in" allows touching its walls."""

    objects = ("eggplant", "basket")
    source, target = "eggplant", "basket"
    instruction = "put eggplant into yellow basket"
    max_episode_steps = 120
    completely_on = False
    source_place = Placement(low=(0.24, -0.12), high=(0.32, -0.06), yaws=(0.0, np.pi / 4, -np.pi / 4), yaw_jitter=0.1)
    target_place = Placement(low=(0.30, 0.10), high=(0.34, 0.13))
    release_height = 0.05
    inner_half_extents = (0.085, 0.065)  # m: the eggplant's centre must lie inside the walls (17 x 13 cm)
    in_height = 0.06  # m of the eggplant's centre above the floor: below the 5 cm rim plus SIMPLER's "in"

    def target_top(self) -> float:
        """The basket's floor, metres."""
        pos, _ = self.body_pose(self.target)
        return float(pos[2] + 0.006)

    def _on_target(self) -> bool:
        offset = self.source_offset_in_target()
        inside_xy = bool(np.all(np.abs(offset[:2]) <= self.inner_half_extents))
        src_pos, _ = self.body_pose(self.source)
        # In the basket: below its rim (5 cm walls) plus SIMPLER's looser 6 cm allowance for "in".
        return bool(inside_xy and src_pos[2] - self.target_top() <= self.in_height)


class LiftCube(PickAndPlaceTask):
    """Small task: grasp the red cube and lift it 5 cm above the table."""

    objects = ("red_cube",)
    source = "red_cube"
    instruction = "lift the red cube"
    max_episode_steps = 40
    source_place = Placement(**_around(0.08, 0.09), yaws=(0.0,), yaw_jitter=np.pi / 4)
    grasp_symmetry = np.pi / 2
    lift_height = 0.05  # m of the cube's bottom above the table for success

    def _place_objects(self, rng: np.random.Generator) -> None:
        ((xy, yaw),) = sample_layout(rng, [self.source_place], [self.geometry[self.source].half_extents[:2]])
        self.set_free_body_pose(self.source, np.array([xy[0], xy[1], 0.0185]), yaw)

    def place_position(self) -> np.ndarray:
        src, _ = self.body_pose(self.source)
        return np.array([src[0], src[1], self.lift_height + 0.05])

    def _evaluate(self) -> dict[str, Any]:
        grasped = self.is_grasped(self.source)
        src, _ = self.body_pose(self.source)
        lifted = src[2] - self.geometry[self.source].half_extents[2] >= self.lift_height
        return {"is_success": bool(lifted and grasped), "is_grasped": grasped, "src_on_target": False}

    def _dense_reward(self, metrics: dict[str, Any]) -> float:
        tcp = self.data.site_xpos[self.controller.site_id]
        src, _ = self.body_pose(self.source)
        reach = _closeness(float(np.linalg.norm(tcp - src)))
        height = float(np.clip(src[2] / (self.lift_height + 0.0175), 0.0, 1.0))
        return 0.3 * reach + 0.2 * float(metrics["is_grasped"]) + 0.4 * height * float(metrics["is_grasped"])


class PushCube(WidowXEnv):
    """Small task: push the blue cube onto the green mark on the table (no grasp needed).

    Success: the cube's centre within `goal_radius` of the mark's centre in xy, and the cube
    touching the table (held or falling over the mark does not count).
    """

    objects = ("blue_cube", "goal_marker")
    instruction = "push the blue cube to the green mark"
    max_episode_steps = 60
    goal_radius = 0.025  # m between the cube's centre and the mark's centre (in xy) for success
    cube_place = Placement(**_around(0.06, 0.08), yaws=(0.0,), yaw_jitter=np.pi / 4)

    def _place_objects(self, rng: np.random.Generator) -> None:
        ((xy, yaw),) = sample_layout(rng, [self.cube_place], [np.array([0.02, 0.02])])
        self.set_free_body_pose("blue_cube", np.array([xy[0], xy[1], 0.021]), yaw)
        # The mark lies 8-14 cm away, in a direction the arm can push from (not toward the base).
        for _ in range(100):
            angle = rng.uniform(-np.pi * 0.75, np.pi * 0.75)
            dist = rng.uniform(0.08, 0.14)
            goal = xy + dist * np.array([np.cos(angle), np.sin(angle)])
            if 0.18 <= goal[0] <= 0.42 and -0.10 <= goal[1] <= 0.18:
                break
        self.set_mocap_pose("goal_marker", np.array([goal[0], goal[1], 0.0]))

    def goal_position(self) -> np.ndarray:
        pos, _ = self.body_pose("goal_marker")
        return pos

    def _evaluate(self) -> dict[str, Any]:
        cube, _ = self.body_pose("blue_cube")
        distance = float(np.linalg.norm(cube[:2] - self.goal_position()[:2]))
        # On the mark *on the table*: a cube carried or falling over the mark is not there yet.
        on_table = self.touches_table("blue_cube")
        return {"is_success": distance <= self.goal_radius and on_table, "goal_distance": distance}

    def _dense_reward(self, metrics: dict[str, Any]) -> float:
        tcp = self.data.site_xpos[self.controller.site_id]
        cube, _ = self.body_pose("blue_cube")
        reach = _closeness(float(np.linalg.norm(tcp - cube)))
        return 0.3 * reach + 0.6 * _closeness(metrics["goal_distance"], scale=5.0)


TASKS: dict[str, type[WidowXEnv]] = {
    "WidowXPutSpoonOnTowel": PutSpoonOnTowel,
    "WidowXPutCarrotOnPlate": PutCarrotOnPlate,
    "WidowXStackGreenOnYellowBlock": StackGreenOnYellowBlock,
    "WidowXPutEggplantInBasket": PutEggplantInBasket,
    "WidowXLiftCube": LiftCube,
    "WidowXPushCube": PushCube,
}
