"""A scripted expert for robosuite Lift (`steergym/Robosuite-Lift-v0`), reading only the observation.

Phases over the OSC_POSE delta action (x 0.05 m per step, rotation held, gripper -1 open / +1 close):
approach a point `hover` above the cube with the jaw open, descend to the cube, close for
`close_steps` steps, then lift `lift_height` above the cube's start. A cube that falls out of the
jaw (the cube is low again while the jaw is far from it) restarts the approach, so the expert is
closed-loop and still succeeds when noise is added to its actions.

The observation is the adapter's robomimic vector: eef_pos (0:3), eef_quat (3:7), gripper_qpos (7:9),
cube_pos (9:12), cube_quat (12:16), gripper_to_cube_pos (16:19); so the expert works on recorded
observations too (no simulator access). Sub-optimality knobs, as for the WidowX experts
(`steergym.data.collect` qualities expert / noisy / failing): `noise`, the std of Gaussian noise
added to the 7-D action, and `random_action_prob`, the chance that an action is replaced by a
uniform random one (then clipped), both from the expert's own Generator (`seed`; `reset(seed=...)`
reseeds it). `steergym.policies.scripted.make_expert` builds it for a Lift env.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

OPEN, CLOSE = -1.0, 1.0
APPROACH, DESCEND, GRASP, LIFT = "approach", "descend", "grasp", "lift"


class _ObservationExpert:
    """What the robosuite experts share: spaces, the sub-optimality knobs and their Generator.

    Subclasses set `OBS_DIM` and `TASK`, implement `_reset_phases()` and `_expert_action(obs)`
    (a (7,) float64 action before noise), and take their own geometry options.
    """

    OBS_DIM: int = 0
    TASK: str = ""

    def __init__(self, observation_space: gym.Space | None, action_space: gym.Space | None,
                 noise: float, seed: int | None, random_action_prob: float) -> None:
        who = type(self).__name__
        if noise < 0 or not 0.0 <= random_action_prob <= 1.0:
            raise ValueError(f"{who}: noise must be >= 0 and random_action_prob in [0, 1], "
                             f"got {noise}, {random_action_prob}")
        self.observation_space = observation_space or gym.spaces.Box(-10.0, 10.0, (self.OBS_DIM,), np.float32)
        self.action_space = action_space or gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        if self.observation_space.shape != (self.OBS_DIM,):
            raise ValueError(f"{who}: needs the {self.TASK} state observation ({self.OBS_DIM},), got "
                             f"{self.observation_space.shape}")
        self.noise, self.random_action_prob = float(noise), float(random_action_prob)
        self._rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode's phase machine; `seed` reseeds the noise Generator."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._reset_phases()

    def act(self, obs: Any) -> np.ndarray:
        """The next (7,) float32 action in [-1, 1] for one observation."""
        obs = np.asarray(obs, dtype=np.float64)
        if obs.shape != (self.OBS_DIM,):
            raise ValueError(f"{type(self).__name__}: expects one {self.TASK} observation of shape "
                             f"({self.OBS_DIM},), got {obs.shape}")
        action = self._expert_action(obs)
        if self.noise:
            action = action + self._rng.normal(0.0, self.noise, 7)
        if self.random_action_prob and self._rng.random() < self.random_action_prob:
            action = self._rng.uniform(-1.0, 1.0, 7)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    __call__ = act

    def _reset_phases(self) -> None:
        raise NotImplementedError

    def _expert_action(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class RobosuiteLiftExpert(_ObservationExpert):
    """Policy for `steergym/Robosuite-Lift-v0` (state observations, one env at a time)."""

    OBS_DIM, TASK = 19, "Lift"

    def __init__(
        self,
        observation_space: gym.Space | None = None,
        action_space: gym.Space | None = None,
        noise: float = 0.0,
        seed: int | None = None,
        random_action_prob: float = 0.0,
        hover: float = 0.06,
        lift_height: float = 0.12,
        close_steps: int = 8,
        gain: float = 1.0,
    ) -> None:
        super().__init__(observation_space, action_space, noise, seed, random_action_prob)
        self.hover, self.lift_height = hover, lift_height
        self.close_steps, self.gain = close_steps, gain
        self.reset()

    def _reset_phases(self) -> None:
        self.phase = APPROACH
        self._closed_for = 0
        self._cube_start_z: float | None = None

    def _expert_action(self, obs: np.ndarray) -> np.ndarray:
        eef, cube = obs[0:3], obs[9:12]
        if self._cube_start_z is None:
            self._cube_start_z = float(cube[2])
        to_cube = cube - eef
        flat = float(np.linalg.norm(to_cube[:2]))
        dropped = cube[2] < self._cube_start_z + 0.01 and np.linalg.norm(to_cube) > 0.03
        if self.phase in (GRASP, LIFT) and dropped:
            self.phase, self._closed_for = APPROACH, 0  # dropped or missed: start over

        gripper = OPEN
        if self.phase == APPROACH:
            target = cube + (0.0, 0.0, self.hover)
            if flat < 0.015 and abs(eef[2] - target[2]) < 0.02:
                self.phase = DESCEND
        if self.phase == DESCEND:
            target = cube.copy()
            if flat > 0.03:
                self.phase = APPROACH
                target = cube + (0.0, 0.0, self.hover)
            elif abs(to_cube[2]) < 0.01:
                self.phase = GRASP
        if self.phase == GRASP:
            target, gripper = cube.copy(), CLOSE
            self._closed_for += 1
            if self._closed_for >= self.close_steps:
                self.phase = LIFT
        if self.phase == LIFT:
            target = np.array([cube[0], cube[1], self._cube_start_z + self.lift_height])
            gripper = CLOSE

        action = np.zeros(7)
        action[:3] = np.clip(self.gain * (target - eef) / 0.05, -1.0, 1.0)
        action[6] = gripper
        return action


# ---------------------------------------------------------------------------------------------- Can
# robosuite PickPlace (single_object_mode=2, object "can", id 3): bin2 at (0.1, 0.28, 0.8), bins
# 0.39 x 0.49, so the can's compartment is x in (0.1, 0.295), y in (0.28, 0.525), z in (0.8, 0.9)
# and its centre, `target_bin_placements[3]`, is (0.1975, 0.4025, 0.8) (robosuite 1.5
# environments/manipulation/pick_place.py: not_in_bin, _load_model; the bins' walls and dividers
# rise 0.1 above their floors, arenas/bins_arena.xml). The target is not in the observation; it is
# a fixed location of the task, so it is a constant here. That centre, at carry height with the
# gripper pointing down, is past the Panda's reach (the arm stalls ~4 cm short whatever its yaw), so
# the expert places the can at CAN_PLACE_XY, nearer the robot: its centre 0.06 m / 0.07 m inside the
# compartment's x / y dividers.
CAN_TARGET_XY = (0.1975, 0.4025)
CAN_PLACE_XY = (0.16, 0.35)
CAN_BIN_LOW, CAN_BIN_HIGH = (0.1, 0.28, 0.8), (0.295, 0.525, 0.9)
CARRY, LOWER, RELEASE, RETREAT = "carry", "lower", "release", "retreat"


def _quat_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of the xyzw quaternion q."""
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


class RobosuiteCanExpert(_ObservationExpert):
    """Policy for `steergym/Robosuite-PickPlaceCan-v0` (state observations, one env at a time).

    Phases: approach a point `hover` above the can with the jaw open, descend to the can's centre,
    close for `close_steps` steps, lift to `carry_z`, carry the can over its bin compartment, lower
    it to `place_z` (the can's centre), open for `open_steps` steps, then retreat upwards (robosuite
    counts the can as placed only once the gripper is > 4.2 cm from it). The gripper is kept within
    `tilt_slack` rad of pointing down (OSC rotation deltas drift, and noise on them integrates); for
    a can lying on its side (knocked over) the jaw turns to close across the can's axis. A can that leaves the jaw before the
    release restarts the approach; so does one that settles outside its compartment after it.

    The observation is the adapter's vector: eef_pos (0:3), eef_quat (3:7, xyzw), gripper_qpos
    (7:9), then robosuite's "object-state" for the can in robosuite's own order (robosuite 1.5
    `_create_obj_sensors`): can_to_eef_pos (9:12), can_to_eef_quat (12:16), can_pos (16:19),
    can_quat (19:23); the relative entries are zeros in an episode's first observation, so the
    expert reads the world-frame entries only. Knobs as for `RobosuiteLiftExpert`.
    """

    OBS_DIM, TASK = 23, "PickPlaceCan"
    CAN_POS, CAN_QUAT = slice(16, 19), slice(19, 23)

    def __init__(
        self,
        observation_space: gym.Space | None = None,
        action_space: gym.Space | None = None,
        noise: float = 0.0,
        seed: int | None = None,
        random_action_prob: float = 0.0,
        hover: float = 0.08,
        carry_z: float = 1.05,
        place_z: float = 0.88,
        close_steps: int = 8,
        open_steps: int = 4,
        settle_steps: int = 10,
        gain: float = 1.0,
        rot_gain: float = 1.0,
        tilt_slack: float = 0.25,
    ) -> None:
        super().__init__(observation_space, action_space, noise, seed, random_action_prob)
        self.hover, self.carry_z, self.place_z = hover, carry_z, place_z
        self.close_steps, self.open_steps, self.settle_steps = close_steps, open_steps, settle_steps
        self.gain, self.rot_gain, self.tilt_slack = gain, rot_gain, tilt_slack
        self.target = np.array(CAN_PLACE_XY)
        self.reset()

    def _reset_phases(self) -> None:
        self.phase = APPROACH
        self._count = 0

    def _set(self, phase: str) -> None:
        self.phase, self._count = phase, 0

    def _rotation(self, eef_quat: np.ndarray, can_quat: np.ndarray) -> np.ndarray:
        """World-frame axis-angle command: tilt beyond `tilt_slack` back to pointing down and,
        before grasping a can lying on its side, turn the jaw (its closing direction) across the
        can's axis. The slack matters: holding the tilt exactly pinned the arm at its elbow limit
        over the far side of the can's start bin (the rotation and position commands cancelled).
        The yaw is otherwise left free (an upright can is round)."""
        eef_rot = _quat_matrix(eef_quat)
        pointing, jaw = eef_rot[:, 2], eef_rot[:, 1]
        cross = np.cross(pointing, (0.0, 0.0, -1.0))
        sin = float(np.linalg.norm(cross))
        tilt = float(np.arctan2(sin, -pointing[2]))
        error = np.zeros(3) if sin < 1e-9 else cross / sin * max(tilt - self.tilt_slack, 0.0)
        can_axis = _quat_matrix(can_quat)[:, 2]
        if self.phase in (APPROACH, DESCEND, GRASP) and abs(can_axis[2]) < 0.7:  # lying can
            turn = np.arctan2(can_axis[1], can_axis[0]) + np.pi / 2 - np.arctan2(jaw[1], jaw[0])
            error[2] += (turn + np.pi / 2) % np.pi - np.pi / 2  # the jaw is symmetric: +-90 deg
        return error

    def _expert_action(self, obs: np.ndarray) -> np.ndarray:
        eef, eef_quat, can = obs[0:3], obs[3:7], obs[self.CAN_POS]
        to_can = can - eef
        flat = float(np.linalg.norm(to_can[:2]))
        held = np.linalg.norm(to_can) < 0.05
        in_bin = bool(np.all(can > CAN_BIN_LOW) and np.all(can < CAN_BIN_HIGH))
        if self.phase in (LIFT, CARRY, LOWER) and not held:
            self._set(APPROACH)  # dropped or missed: start over
        if self.phase == RETREAT and not in_bin and self._count > self.settle_steps:
            self._set(APPROACH)  # settled outside the compartment after the release: pick it up again
        self._count += 1

        gripper = OPEN
        if self.phase == APPROACH:
            target = can + (0.0, 0.0, self.hover)
            if flat < 0.015 and abs(eef[2] - target[2]) < 0.02:
                self._set(DESCEND)
        if self.phase == DESCEND:
            target = can.copy()
            if flat > 0.03:
                self._set(APPROACH)
                target = can + (0.0, 0.0, self.hover)
            elif abs(to_can[2]) < 0.015:
                self._set(GRASP)
        if self.phase == GRASP:
            target, gripper = can.copy(), CLOSE
            if self._count >= self.close_steps:
                self._set(LIFT)
        if self.phase == LIFT:
            target, gripper = np.array([eef[0], eef[1], self.carry_z]), CLOSE
            if eef[2] > self.carry_z - 0.03:
                self._set(CARRY)
        if self.phase == CARRY:
            target, gripper = np.array([*(eef[:2] + self.target - can[:2]), self.carry_z]), CLOSE
            if np.linalg.norm(can[:2] - self.target) < 0.03:
                self._set(LOWER)
        if self.phase == LOWER:
            target, gripper = eef + np.array([*(self.target - can[:2]), self.place_z - can[2]]), CLOSE
            if can[2] < self.place_z + 0.01 or (self._count > 20 and in_bin):
                self._set(RELEASE)
        if self.phase == RELEASE:
            target, gripper = eef.copy(), OPEN
            if self._count >= self.open_steps:
                self._set(RETREAT)
        if self.phase == RETREAT:
            target = np.array([eef[0], eef[1], self.carry_z])

        action = np.zeros(7)
        action[:3] = np.clip(self.gain * (target - eef) / 0.05, -1.0, 1.0)
        rotation = self._rotation(eef_quat, obs[self.CAN_QUAT])
        action[3:6] = np.clip(self.rot_gain * rotation / 0.5, -1.0, 1.0)
        action[6] = gripper
        return action
