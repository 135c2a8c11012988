"""dm_control suite tasks as Gymnasium envs with flat float32 observations.

    env = gymnasium.make("steergym/DMC-cheetah-run-v0")                  # needs pip install -e ".[suites]"

`DMCEnv(domain, task)` loads `dm_control.suite.load(domain, task)` and keeps the semantics of
Shimmy's `DmControlCompatibilityV0` (the spaces come from Shimmy's spec conversion; a last
timestep with discount > 0 is a truncation, one with discount 0 a termination; reward
`timestep.reward or 0`), with what the suite's users need on top:

* Observation: by default one float32 vector, the suite's observation dict flattened in its own
  key order (`obs_names` labels every entry); `flat_obs=False` gives the dict with float32 arrays.
* Action: float32 Box of the task's bounds ([-1, 1] for every suite task); NaN/inf or a wrong shape
  raise ValueError naming the env; finite values outside the bounds act as the bound (every
  registered task's actuators are ctrl-limited, so MuJoCo clamps them; no copy is made here).
* Seeding: `np_random` is a gymnasium Generator (Shimmy exposes dm_control's legacy RandomState,
  which gymnasium's checker rejects); `reset(seed=s)` reseeds the task's RandomState from it, so the
  same seed gives the same episode and seedless resets continue the stream.
* Episode end: dm_control's own time limit (1000 control steps for these tasks) truncates; stepping
  a finished episode raises `ResetNeeded` (dm_control would silently start a new one).
* Registered "thin": `gymnasium.make` adds no OrderEnforcing / PassiveEnvChecker wrapper (this
  class raises ResetNeeded itself; tests/test_dmc.py runs the full checkers).
* Rendering: `render_mode="rgb_array"` renders camera `render_camera` (default 0) offscreen (EGL).
  `metadata["render_fps"]` is the control rate, 1 / control_timestep (Shimmy stores the step in
  milliseconds there, in a dict shared by every instance).

The step does not go through Shimmy's `step`: Shimmy copies the observation dict and builds an info
dict per step, which costs 10-20% of a cheap suite step on a 2-core CPU (benchmarks/env_speed.py
--section adapters); this class converts straight into a preallocated float32 vector.

dm_control and Shimmy are imported only when an env is built.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

SUITES_HINT = 'pip install -e ".[suites]"'
RENDER_MODES = (None, "rgb_array")

# (domain, task) -> (flat observation size, action size), for `steergym list` without importing
# dm_control (tests/test_dmc.py checks them against the loaded tasks). Each has a 1000-step limit.
TASKS: dict[tuple[str, str], tuple[int, int]] = {
    ("cartpole", "swingup"): (5, 1),
    ("cheetah", "run"): (17, 6),
    ("walker", "walk"): (24, 6),
    ("reacher", "easy"): (6, 2),
    ("ball_in_cup", "catch"): (8, 2),
    ("finger", "spin"): (9, 2),
}
HORIZON = 1000


def _import_suite(who: str):
    try:
        from dm_control import suite
        from shimmy.utils.dm_env import dm_spec2gym_space
    except ImportError as exc:
        raise ImportError(
            f"{who} needs dm_control 1.0.41 and shimmy, which are not installed ({exc}); install the "
            f"suites extra: {SUITES_HINT}"
        ) from exc
    return suite, dm_spec2gym_space


class DMCEnv(gym.Env):
    """One dm_control suite task (`domain`, `task`) as a Gymnasium env."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(
        self,
        domain: str = "cartpole",
        task: str = "swingup",
        flat_obs: bool = True,
        render_mode: str | None = None,
        render_size: tuple[int, int] = (240, 320),
        render_camera: int | str = 0,
        **unknown: Any,
    ) -> None:
        who = f"DMCEnv({domain}-{task})"
        if unknown:
            raise TypeError(f"{who}: unknown option(s) {sorted(unknown)}; "
                            f"valid options: {sorted(valid_options())}")
        if render_mode not in RENDER_MODES:
            raise ValueError(f"{who}: render_mode={render_mode!r} is not one of {list(RENDER_MODES)}")
        if len(render_size) != 2 or min(int(v) for v in render_size) < 8:
            raise ValueError(f"{who}: render_size must be (height, width) >= 8 pixels, got {render_size!r}")
        suite, dm_spec2gym_space = _import_suite(who)
        if (domain, task) not in suite.ALL_TASKS:
            raise ValueError(f"{who}: ({domain!r}, {task!r}) is not a dm_control suite task")
        self.name, self.domain, self.task_name = who, domain, task
        self.flat_obs = bool(flat_obs)
        self.render_mode = render_mode
        self.render_size = (int(render_size[0]), int(render_size[1]))
        self.render_camera = render_camera
        self._env = suite.load(domain, task, task_kwargs={"random": 0})
        # per-instance metadata: the control rate in frames per second
        self.metadata = {**type(self).metadata, "render_fps": round(1.0 / self._env.control_timestep())}

        action = dm_spec2gym_space(self._env.action_spec())
        self.action_space = spaces.Box(action.low.astype(np.float32), action.high.astype(np.float32),
                                       dtype=np.float32)
        self._action_shape = self.action_space.shape
        limited = self._env.physics.model.actuator_ctrllimited
        if not np.all(limited):  # the registered tasks' are; out-of-range actions rely on MuJoCo's clamp
            raise ValueError(f"{who}: actuators without a ctrlrange are not supported")
        obs_spec = self._env.observation_spec()
        self._layout: list[tuple[str, slice]] = []
        self.obs_names: list[str] = []
        start = 0
        for key, spec in obs_spec.items():
            size = int(np.prod(spec.shape))
            self._layout.append((key, slice(start, start + size)))
            self.obs_names += [key] if size == 1 and spec.shape == () else [f"{key}_{i}" for i in range(size)]
            start += size
        self._obs_dim = start
        if self.flat_obs:
            self.observation_space = spaces.Box(-np.inf, np.inf, (start,), np.float32)
        else:
            self.observation_space = spaces.Dict(
                {k: spaces.Box(-np.inf, np.inf, spec.shape, np.float32) for k, spec in obs_spec.items()})
        self._needs_reset = True

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._env.task._random = np.random.RandomState(int(self.np_random.integers(2**32)))
        ts = self._env.reset()
        self._needs_reset = False
        return self._observation(ts.observation), {}

    def step(self, action):
        if self._needs_reset:
            raise gym.error.ResetNeeded(f"{self.name}: call reset() before step() and after an episode ends")
        ts = self._env.step(self._validate_action(action))
        terminated = truncated = False
        if ts.step_type == 2:  # dm_env.StepType.LAST
            self._needs_reset = True
            truncated = ts.discount > 0
            terminated = not truncated
        return self._observation(ts.observation), float(ts.reward or 0.0), terminated, truncated, {}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        h, w = self.render_size
        return self._env.physics.render(height=h, width=w, camera_id=self.render_camera)

    def close(self) -> None:
        env = getattr(self, "_env", None)
        if env is not None:
            env.physics.free()  # its GL contexts, before EGL is torn down at exit (as Shimmy's close)
            env.close()

    @property
    def dm_env(self):
        """The underlying dm_control environment."""
        return self._env

    # ------------------------------------------------------------------ internals
    def _observation(self, obs: dict[str, np.ndarray]):
        if not self.flat_obs:
            return {k: np.asarray(v, dtype=np.float32).reshape(self.observation_space[k].shape)
                    for k, v in obs.items()}
        out = np.empty(self._obs_dim, dtype=np.float32)
        for key, sl in self._layout:
            out[sl] = obs[key]  # 0-d entries (walker's height) broadcast into their one slot
        return out

    def _validate_action(self, action) -> np.ndarray:
        # kept lean: a cheap suite step is ~0.08 ms, and each numpy call here costs ~1 us
        arr = action
        if type(action) is not np.ndarray or action.dtype.kind != "f":
            try:
                arr = np.asarray(action, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{self.name}: action must be numeric, got {action!r} "
                                 f"({type(action).__name__})") from exc
        if arr.shape != self._action_shape:
            raise ValueError(f"{self.name}: action must have shape {self._action_shape}, "
                             f"got shape {arr.shape}: {action!r}")
        if not all(map(math.isfinite, arr.tolist())):  # for a handful of numbers, faster than numpy
            raise ValueError(f"{self.name}: action must be finite, got {arr.tolist()}")
        return arr


def valid_options() -> set[str]:
    import inspect

    params = inspect.signature(DMCEnv.__init__).parameters
    return {p for p in params if p not in ("self", "unknown")}


def describe(domain: str, task: str) -> dict[str, Any]:
    """Spaces of a registered task's default observation without importing dm_control."""
    obs_dim, action_dim = TASKS[(domain, task)]
    return {"instruction": f"dm_control {domain} {task}", "obs_shape": [obs_dim],
            "action_shape": [action_dim]}
