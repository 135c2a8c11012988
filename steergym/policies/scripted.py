"""Privileged scripted experts for the WidowX tasks (demonstrations, baselines, dataset generation).

The experts read the simulator through ``env.unwrapped`` (object poses, task geometry, measured tcp)
and never the observation, so they work with every ``obs_mode``. Each is a small phase machine over
waypoints of the controller *target* (``controller.target_pos`` / ``target_rpy``): the action moves
the target toward the current waypoint at up to 5 cm / 0.25 rad per step (roll and pitch are held at
0), and a phase ends when the measured tcp is within a tolerance of its waypoint or after a per-phase
step limit. Waypoints are recomputed every step from the current object poses, so the experts are
closed-loop and keep working when noise is added to their actions.

* `PickPlaceExpert` (every `PickAndPlaceTask`: spoon, carrot, stack, eggplant, lift): approach above
  the grasp point (object origin + `grasp_offset`) with the gripper yaw set to the object's heading
  modulo `grasp_symmetry`, descend, close, lift, carry above `place_position()`, lower, open,
  retreat. A dropped object or a failed grasp or placement restarts from the approach.
* `PushExpert` (`PushCube`): closed jaw, go behind the cube on the goal line at low height, push
  along the line while steering back onto it; re-align from above if the cube slips off the line.

Sub-optimality knobs (for mixed-quality datasets): ``noise`` is the std of Gaussian noise added to
the normalised action (all 7 dims, then clipped), ``random_action_prob`` the probability that an
action is replaced by a uniform random one. Success over 100 seeds (reset seeds 0-99,
`expert_success_rate`; the expert's own generator reseeded with each episode's reset seed), with the
mean episode length in steps in brackets (measured 2026-12-03 after that reseeding and the PushCube
rule that the cube must touch the table):

    task                      noise 0      noise 0.1    noise 0.3    noise 0.3 + random 0.1
    PutSpoonOnTowel           1.00 (13)    0.98 (20)    0.30 (54)    0.14 (58)
    PutCarrotOnPlate          1.00 (14)    1.00 (17)    0.77 (39)    0.64 (45)
    StackGreenOnYellowBlock   1.00 (13)    1.00 (17)    0.47 (49)    0.27 (54)
    PutEggplantInBasket       1.00 (15)    1.00 (18)    1.00 (37)    0.88 (57)   (120-step limit)
    LiftCube                  1.00 (8)     1.00 (9)     0.88 (23)    0.68 (27)   (40-step limit)
    PushCube                  1.00 (11)    1.00 (12)    0.73 (42)    0.63 (46)

So noise 0.1 mostly slows the expert down (closed-loop waypoints absorb it); noise 0.3 gives clearly
mixed-quality behaviour (dropped or missed grasps, misplaced objects, overshot pushes). Figures at
0.3 move by several points with small changes to the simulation; they are indicative.

The same ``seed`` gives the same actions for the same simulator states (own ``np.random.Generator``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from steergym.envs.robosuite_tasks import RobosuiteEnv  # robosuite itself is imported lazily
from steergym.envs.rotations import quat_to_yaw
from steergym.envs.tasks import PickAndPlaceTask, PushCube
from steergym.envs.widowx import FINGER_CLOSED, FINGER_OPEN
from steergym.policies.robosuite_expert import RobosuiteCanExpert, RobosuiteLiftExpert
from steergym.rollout import evaluate

PAD_CLEARANCE = 0.003  # m kept between the pad bottoms and the table when grasping
YAW_LIMIT = 1.57  # rad, the controller clips its yaw target to +-YAW_LIMIT
OPEN, CLOSED = 1.0, -1.0


def pad_reach_below_tcp(model) -> float:
    """How far (m) the finger pads reach past the tcp along the gripper's pointing axis (~19.5 mm)."""
    finger = model.body("left_finger_link").pos[0]
    pad = model.geom("left_pad")
    return float(finger + pad.pos[0] + pad.size[0] - model.site("tcp").pos[0])


def _wrap_sym(angle: float, period: float) -> float:
    """`angle` modulo `period`, into [-period/2, period/2)."""
    return float((angle + period / 2.0) % period - period / 2.0)


class ScriptedExpert:
    """Base class: action shaping, noise, and the phase bookkeeping shared by the experts.

    Args:
        env: a steergym WidowX environment (wrappers are fine; it reads ``env.unwrapped``).
        noise: std of Gaussian noise added to the normalised action before clipping.
        random_action_prob: probability of replacing the action with a uniform random one.
        seed: seed of the expert's own generator (noise and random actions).
    """

    def __init__(
        self, env: gym.Env, noise: float = 0.0, random_action_prob: float = 0.0, seed: int | None = None
    ) -> None:
        if noise < 0 or not 0.0 <= random_action_prob <= 1.0:
            raise ValueError(
                f"noise must be >= 0 and random_action_prob in [0, 1], got {noise}, {random_action_prob}"
            )
        self.env = env
        self.u = env.unwrapped
        self.noise = float(noise)
        self.random_action_prob = float(random_action_prob)
        self.rng = np.random.default_rng(seed)
        limits = self.u.controller.limits
        self._dpos, self._drot = limits.max_delta_pos, limits.max_delta_rot
        self.pad_reach = pad_reach_below_tcp(self.u.model)
        self.reset()

    # -- public API -------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Forget the phase machine; call after every ``env.reset()``. A `seed` reseeds the
        generator (as a new expert with that seed would be): `evaluate` passes each episode's
        reset seed, so a noisy expert's episodes depend on their own seed only."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.phase = self.initial_phase
        self.phase_steps = 0
        self.attempts = 0
        self._memory: dict[str, Any] = {}

    def act(self, obs: Any = None) -> np.ndarray:
        """The next (7,) float32 action in [-1, 1] (``obs`` is ignored: the expert reads the sim)."""
        action = np.asarray(self._expert_action(), dtype=np.float64)
        if self.noise > 0.0:
            action = action + self.rng.normal(0.0, self.noise, size=7)
        if self.random_action_prob > 0.0 and self.rng.random() < self.random_action_prob:
            action = self.rng.uniform(-1.0, 1.0, size=7)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    __call__ = act

    # -- helpers for subclasses -------------------------------------------------------------
    initial_phase = "start"

    def _expert_action(self) -> np.ndarray:
        raise NotImplementedError

    def _goto(self, phase: str) -> None:
        self.phase, self.phase_steps = phase, 0

    def _move(self, pos: np.ndarray, yaw: float, gripper: float, max_step: float | None = None) -> np.ndarray:
        """Action moving the controller target toward `pos` / `yaw` (roll, pitch kept at 0)."""
        ctrl = self.u.controller
        delta = np.asarray(pos, float) - ctrl.target_pos
        if max_step is not None:
            norm = np.linalg.norm(delta)
            if norm > max_step:
                delta *= max_step / norm
        dpos = delta / self._dpos
        # Scale the whole translation so its direction is kept when one axis saturates.
        peak = np.abs(dpos).max()
        if peak > 1.0:
            dpos = dpos / peak
        rpy_err = np.array([-ctrl.target_rpy[0], -ctrl.target_rpy[1], yaw - ctrl.target_rpy[2]])
        drot = np.clip(rpy_err / self._drot, -1.0, 1.0)
        return np.concatenate([dpos, drot, [gripper]])

    def _reached(
        self, pos: np.ndarray, yaw: float | None = None, xy_tol: float = 0.01, z_tol: float = 0.01
    ) -> bool:
        """The measured tcp is within `xy_tol` / `z_tol` of `pos` (and the yaw target near `yaw`).

        Tolerances are on the measured tcp, not the target, so noisy actions still make progress.
        """
        if yaw is not None and abs(self.u.controller.target_rpy[2] - yaw) > 0.1:
            return False
        tcp, _ = self.u.tcp_pose()
        return bool(np.linalg.norm(tcp[:2] - pos[:2]) <= xy_tol and abs(tcp[2] - pos[2]) <= z_tol)


class PickPlaceExpert(ScriptedExpert):
    """Pick-and-place (and lift-only) expert for `PickAndPlaceTask` subclasses."""

    initial_phase = "approach"
    hover = 0.07  # m above the grasp height for the approach
    carry_min = 0.10  # m, lowest tcp height while carrying
    max_attempts = 4
    jaw_margin = 0.008  # m per side between an open finger and the source when grasping

    def __init__(self, env: gym.Env, **kwargs: Any) -> None:
        u = env.unwrapped
        self.source = u.source
        self.lift_only = not u.target
        geo = u.geometry[self.source]
        self.src_half = geo.half_extents
        self.src_center_z = float(geo.center_offset[2])
        super().__init__(env, **kwargs)

    # -- geometry ---------------------------------------------------------------------------
    def _grasp_pose(self) -> tuple[np.ndarray, float]:
        """(3,) tcp position and yaw to grasp the source where it lies now.

        Among the headings allowed by `grasp_symmetry`, the one closest to the yaw chosen at the
        start of the approach (`_choose_yaw`) is used, so the choice does not flip mid-approach.
        """
        pos, quat = self.u.body_pose(self.source)
        heading = quat_to_yaw(quat)
        ox, oy = self.u.grasp_offset
        c, s = np.cos(heading), np.sin(heading)
        xy = pos[:2] + np.array([c * ox - s * oy, s * ox + c * oy])
        z = max(pos[2] + self.src_center_z, self.pad_reach + PAD_CLEARANCE)
        candidates = self._yaw_candidates(heading)
        ref = self._memory.get("yaw_ref")
        if ref is None:
            ref = self._choose_yaw(candidates, xy)
            self._memory["yaw_ref"] = ref
        yaw = min(candidates, key=lambda y: abs(_wrap_sym(y - ref, np.pi)))
        return np.array([xy[0], xy[1], z]), yaw

    def _yaw_candidates(self, heading: float) -> list[float]:
        """Gripper yaws (in the controller's range) that grasp an object with this heading."""
        sym = float(self.u.grasp_symmetry)
        count = max(1, int(round(np.pi / sym)))  # the jaw is symmetric under a half turn
        yaws = [_wrap_sym(heading + k * sym, np.pi) for k in range(count)]
        return [float(np.clip(y, -YAW_LIMIT, YAW_LIMIT)) for y in yaws]

    def _choose_yaw(self, candidates: list[float], grasp_xy: np.ndarray) -> float:
        """The candidate whose open jaw points most away from the other objects (and the yaw 0)."""
        if len(candidates) == 1:
            return candidates[0]
        others = [o for o in self.u.objects if o != self.source and o in self.u.geometry]
        best, best_cost = candidates[0], np.inf
        for yaw in candidates:
            jaw = np.array([-np.sin(yaw), np.cos(yaw)])  # the fingers open along this axis
            cost = 0.05 * abs(yaw)  # prefer small wrist turns
            for other in others:
                d = self.u.body_pose(other)[0][:2] - grasp_xy
                dist = float(np.linalg.norm(d))
                if dist < 0.12:
                    cost += abs(float(jaw @ d)) / dist * (0.12 - dist) / 0.12
            if cost < best_cost:
                best, best_cost = yaw, cost
        return best

    def _preshape(self) -> float:
        """Gripper command opening the jaw just wider than the source (less to knock over)."""
        half = float(np.max(self.src_half[:2])) if self.u.grasp_symmetry < np.pi else float(self.src_half[1])
        q = np.clip(half + self.jaw_margin, FINGER_CLOSED, FINGER_OPEN)
        return float(2.0 * (q - FINGER_CLOSED) / (FINGER_OPEN - FINGER_CLOSED) - 1.0)

    def _carry_z(self) -> float:
        place = self.u.place_position()
        return float(min(max(self.carry_min, place[2] + self._memory.get("grip_dz", 0.0) + 0.03), 0.17))

    # -- phase machine ------------------------------------------------------------------------
    def _expert_action(self) -> np.ndarray:
        for _ in range(4):  # a phase change re-plans in the same step
            phase = self.phase
            action = getattr(self, f"_phase_{phase}")()
            if action is not None:
                self.phase_steps += 1
                return action
        return self._hold(OPEN)

    def _hold(self, gripper: float) -> np.ndarray:
        ctrl = self.u.controller
        return self._move(ctrl.target_pos, ctrl.target_rpy[2], gripper)

    def _phase_approach(self):
        grasp, yaw = self._grasp_pose()
        self._memory["yaw"] = yaw
        above = grasp + np.array([0.0, 0.0, self.hover])
        tcp, _ = self.u.tcp_pose()
        # Coming from low (a failed grasp / release): go up first, then over.
        if tcp[2] < grasp[2] + 0.5 * self.hover and np.linalg.norm(tcp[:2] - grasp[:2]) > 0.01:
            above_here = np.array([*self.u.controller.target_pos[:2], above[2]])
            return self._move(above_here, yaw, self._preshape())
        if self._reached(above, yaw, xy_tol=0.01, z_tol=0.015) or self.phase_steps > 15:
            self._goto("descend")
            return None
        return self._move(above, yaw, self._preshape())

    def _phase_descend(self):
        grasp, _ = self._grasp_pose()
        yaw = self._memory["yaw"]
        if self._reached(grasp, yaw, xy_tol=0.006, z_tol=0.004) or self.phase_steps > 5:
            self._goto("close")
            return None
        return self._move(grasp, yaw, self._preshape())

    def _phase_close(self):
        opening = self.u.gripper_opening()
        last = self._memory.get("last_opening", 2.0)
        self._memory["last_opening"] = opening
        if self.phase_steps >= 2 and (abs(opening - last) < 0.01 or self.phase_steps >= 5):
            self._memory.pop("last_opening", None)
            tcp, _ = self.u.tcp_pose()
            src, _ = self.u.body_pose(self.source)
            self._memory["grip_dz"] = float(tcp[2] - src[2])
            self._goto("lift")
            return None
        return self._hold(CLOSED)

    def _phase_lift(self):
        ctrl = self.u.controller
        z = self._carry_z()
        goal = np.array([ctrl.target_pos[0], ctrl.target_pos[1], z])
        if self.phase_steps >= 1 and not self.u.is_grasped(self.source):
            return self._retry()
        if self._reached(goal, xy_tol=1.0, z_tol=0.015) or self.phase_steps > 6:
            self._goto("hold" if self.lift_only else "carry")
            return None
        return self._move(goal, ctrl.target_rpy[2], CLOSED)

    def _release_tcp(self) -> np.ndarray:
        """Where the tcp must be so the source's centre sits at `place_position()`."""
        tcp, _ = self.u.tcp_pose()
        src, _ = self.u.body_pose(self.source)
        return self.u.place_position() + (tcp - src)

    def _phase_carry(self):
        if not self.u.is_grasped(self.source):
            return self._retry()
        ctrl = self.u.controller
        goal = self._release_tcp()
        goal[2] = max(self._carry_z(), goal[2])
        if self._reached(goal, xy_tol=0.01, z_tol=0.02) or self.phase_steps > 15:
            self._goto("lower")
            return None
        return self._move(goal, ctrl.target_rpy[2], CLOSED)

    def _phase_lower(self):
        if not self.u.is_grasped(self.source):
            return self._retry()
        ctrl = self.u.controller
        goal = self._release_tcp()
        if self._reached(goal, xy_tol=0.008, z_tol=0.005) or self.phase_steps > 6:
            self._goto("release")
            return None
        return self._move(goal, ctrl.target_rpy[2], CLOSED)

    def _phase_release(self):
        if self.phase_steps >= 2 and (not self.u.touches_gripper(self.source) or self.phase_steps >= 4):
            self._goto("retreat")
            return None
        return self._hold(self._preshape())

    def _phase_retreat(self):
        ctrl = self.u.controller
        if "retreat_z" not in self._memory:
            self._memory["retreat_z"] = min(ctrl.target_pos[2] + 0.06, 0.17)
        goal = np.array([ctrl.target_pos[0], ctrl.target_pos[1], self._memory["retreat_z"]])
        if self.phase_steps > 6 or (self.phase_steps > 2 and self._reached(goal, xy_tol=1.0, z_tol=0.015)):
            self._memory.pop("retreat_z")
            # The task's own success test (privileged, like everything the expert reads).
            if not self.u._evaluate()["is_success"]:
                return self._retry()
            self._goto("done")
            return None
        return self._move(goal, ctrl.target_rpy[2], OPEN)

    def _phase_hold(self):
        if not self.u.is_grasped(self.source):
            return self._retry()
        ctrl = self.u.controller
        goal = np.array([ctrl.target_pos[0], ctrl.target_pos[1], self._carry_z()])
        return self._move(goal, ctrl.target_rpy[2], CLOSED)

    def _phase_done(self):
        return self._hold(OPEN)

    def _retry(self):
        self.attempts += 1
        self._memory.pop("yaw_ref", None)
        self._goto("approach" if self.attempts <= self.max_attempts else "done")
        return None


class PushExpert(ScriptedExpert):
    """Push the cube to the goal mark with the closed jaw (`PushCube`)."""

    initial_phase = "align"
    push_clearance = 0.005  # m between the pads and the table while pushing
    hover_clearance = 0.035  # m between the pads' reach and the cube's top when going over it
    gap = 0.012  # m between the pads and the cube at the pre-push point
    push_lead = 0.03  # m, how far ahead of the cube the push aims each step (the goal when closer)
    push_speed = 0.02  # m per step of the tcp while pushing (fast pushes make the cube jump)
    lateral_tol = 0.01  # m of tcp offset from the push line tolerated while pushing

    def __init__(self, env: gym.Env, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        u = self.u
        cube_half = float(u.geometry["blue_cube"].half_extents[0])
        pad_half_width = float(u.model.geom("left_pad").size[2])  # along the push with the jaw across it
        self.contact = cube_half + pad_half_width  # tcp-to-cube-centre distance while pushing, m
        self.standoff = self.contact + self.gap  # tcp-to-cube-centre distance before pushing, m
        self._push_z = self.pad_reach + self.push_clearance  # tcp height while pushing, m
        self.hover_z = 2 * cube_half + self.hover_clearance  # tcp height when going over the cube, m

    def _line(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Cube position, unit push direction (cube to goal), distance to the goal, jaw yaw."""
        cube, _ = self.u.body_pose("blue_cube")
        goal = self.u.goal_position()
        d = goal[:2] - cube[:2]
        dist = float(np.linalg.norm(d))
        direction = d / max(dist, 1e-9)
        # The closed jaw is symmetric under a half turn: take the equivalent yaw nearest the
        # current target, so a push direction near +-90 deg does not swing the wrist around.
        base = _wrap_sym(np.arctan2(direction[1], direction[0]), np.pi)
        current = self.u.controller.target_rpy[2]
        options = [y for y in (base - np.pi, base, base + np.pi) if abs(y) <= YAW_LIMIT + 0.3]
        yaw = min(options, key=lambda y: abs(y - current))
        return cube, direction, dist, float(np.clip(yaw, -YAW_LIMIT, YAW_LIMIT))

    def _expert_action(self) -> np.ndarray:
        for _ in range(4):
            action = getattr(self, f"_phase_{self.phase}")()
            if action is not None:
                self.phase_steps += 1
                return action
        ctrl = self.u.controller
        return self._move(ctrl.target_pos, ctrl.target_rpy[2], CLOSED)

    def _phase_align(self):
        """Go over the pre-push point behind the cube (from above, so the cube is not knocked)."""
        cube, direction, _, yaw = self._line()
        behind = cube[:2] - direction * self.standoff
        tcp, _ = self.u.tcp_pose()
        ctrl = self.u.controller
        if tcp[2] < self.hover_z - 0.02 and np.linalg.norm(tcp[:2] - behind) > 0.01:
            return self._move(np.array([*ctrl.target_pos[:2], self.hover_z]), yaw, CLOSED)
        goal = np.array([behind[0], behind[1], self.hover_z])
        if self._reached(goal, yaw, xy_tol=0.008, z_tol=0.015) or self.phase_steps > 15:
            self._goto("drop")
            return None
        return self._move(goal, yaw, CLOSED)

    def _phase_drop(self):
        cube, direction, _, yaw = self._line()
        behind = cube[:2] - direction * self.standoff
        goal = np.array([behind[0], behind[1], self._push_z])
        if self._reached(goal, xy_tol=0.008, z_tol=0.005) or self.phase_steps > 5:
            self._goto("push")
            return None
        return self._move(goal, yaw, CLOSED)

    def _phase_push(self):
        """Push along the cube-goal line; step back and sideways onto the line when it drifts."""
        cube, direction, dist, yaw = self._line()
        tcp, _ = self.u.tcp_pose()
        rel = tcp[:2] - cube[:2]
        along = float(rel @ direction)
        lateral = float(rel @ np.array([-direction[1], direction[0]]))
        if along > -(self.contact - 0.008) or abs(lateral) > 0.03 or tcp[2] > self._push_z + 0.02:
            # Beside or ahead of the cube (or knocked up): re-align from above.
            self.attempts += 1
            self._goto("align")
            return None
        if abs(lateral) > self.lateral_tol:
            # Off the line but still behind the cube: step back onto the line at low height.
            behind = cube[:2] - direction * self.standoff
            return self._move(np.array([behind[0], behind[1], self._push_z]), yaw, CLOSED)
        goal_xy = cube[:2] + direction * (min(dist, self.push_lead) - self.contact)
        goal = np.array([goal_xy[0], goal_xy[1], self._push_z])
        return self._move(goal, yaw, CLOSED, max_step=self.push_speed)


def make_expert(
    env: gym.Env, noise: float = 0.0, random_action_prob: float = 0.0, seed: int | None = None
) -> Any:
    """The scripted expert for `env`'s task (an object with `reset()` and `act(obs)`); raises
    ValueError for an env it has no expert for.

    WidowX tasks get a privileged `ScriptedExpert`; `steergym/Robosuite-Lift-v0` and
    `steergym/Robosuite-PickPlaceCan-v0` (state observations) get the observation-only
    `RobosuiteLiftExpert` / `RobosuiteCanExpert`.
    """
    u = getattr(env, "unwrapped", env)
    kwargs = dict(noise=noise, random_action_prob=random_action_prob, seed=seed)
    if isinstance(u, PickAndPlaceTask):
        return PickPlaceExpert(env, **kwargs)
    if isinstance(u, PushCube):
        return PushExpert(env, **kwargs)
    if isinstance(u, RobosuiteEnv) and u.task.env_name in ("Lift", "PickPlaceCan") and not u.cameras:
        expert = RobosuiteLiftExpert if u.task.env_name == "Lift" else RobosuiteCanExpert
        return expert(u.observation_space, u.action_space, **kwargs)
    raise ValueError(
        f"make_expert: no scripted expert for {getattr(u, 'name', type(u).__name__)}; it supports the "
        "steergym WidowX tasks (PickAndPlaceTask subclasses and PushCube) and steergym/Robosuite-Lift-v0 "
        "and steergym/Robosuite-PickPlaceCan-v0 with state observations"
    )


def expert_success_rate(
    env_id: str,
    episodes: int = 100,
    seed: int = 0,
    noise: float = 0.0,
    random_action_prob: float = 0.0,
) -> dict[str, float]:
    """Success rate and mean episode length of the expert on `env_id` over seeds seed..seed+episodes-1
    (a thin view of `steergym.rollout.evaluate` with the expert's sub-optimality knobs)."""
    result = evaluate(
        env_id,
        "expert",
        episodes=episodes,
        seed=seed,
        progress=False,
        make_policy=lambda env, s: make_expert(env, noise, random_action_prob, seed=s),
    )
    return {"success_rate": result.success_rate, "mean_length": result.mean_length, "episodes": episodes}
