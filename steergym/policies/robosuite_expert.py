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


class RobosuiteLiftExpert:
    """Policy for `steergym/Robosuite-Lift-v0` (state observations, one env at a time)."""

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
        if noise < 0 or not 0.0 <= random_action_prob <= 1.0:
            raise ValueError(f"RobosuiteLiftExpert: noise must be >= 0 and random_action_prob in [0, 1], "
                             f"got {noise}, {random_action_prob}")
        self.observation_space = observation_space or gym.spaces.Box(-10.0, 10.0, (19,), np.float32)
        self.action_space = action_space or gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        if self.observation_space.shape != (19,):
            raise ValueError(f"RobosuiteLiftExpert: needs the Lift state observation (19,), got "
                             f"{self.observation_space.shape}")
        self.noise, self.random_action_prob = float(noise), float(random_action_prob)
        self.hover, self.lift_height = hover, lift_height
        self.close_steps, self.gain = close_steps, gain
        self._rng = np.random.default_rng(seed)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.phase = APPROACH
        self._closed_for = 0
        self._cube_start_z: float | None = None

    def act(self, obs: Any) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        if obs.shape != (19,):
            raise ValueError(f"RobosuiteLiftExpert: expects one Lift observation of shape (19,), "
                             f"got {obs.shape}")
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
        if self.noise:
            action += self._rng.normal(0.0, self.noise, 7)
        if self.random_action_prob and self._rng.random() < self.random_action_prob:
            action = self._rng.uniform(-1.0, 1.0, 7)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    __call__ = act
