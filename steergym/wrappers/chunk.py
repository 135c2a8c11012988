"""`ActionChunkWrapper`: one action of the wrapped env = a chunk of H primitive actions.

Also home of the checks every steering wrapper makes on its base policy (`check_policy_spaces`,
`check_generative`, `bind_task`, `check_positive`), so that all of them word errors the same way.
"""

from __future__ import annotations

import math
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from steergym.checks import real_array


class ActionChunkWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Execute a chunk of `horizon` actions open loop as one step (DSRL's `ActionChunkWrapper`).

    Action space: a *flat* Box of shape (H * d,) (Stable-Baselines3 needs 1-D Boxes), its bounds
    the env's (d,) bounds tiled H times; row-major, so `action.reshape(H, d)[i]` is the i-th
    primitive action. An (H, d) array is accepted as well. Actions are clipped to the env's bounds
    before they are sent, so `info["executed_actions"]` is exactly what the env received.

    Step: the H actions are executed in order; the chunk stops early at the first step that
    terminates or truncates (k <= H steps executed). Returned are the *last* observation, the
    undiscounted sum of the k rewards, and the last step's terminated / truncated flags. An RL
    agent on this env discounts once per chunk (gamma per agent step, not gamma**H), as in DSRL.

    Info: the last primitive step's info, plus
        chunk_rewards     list of the k rewards, in order
        chunk_observations  list of the k observations after each primitive step (the last is the
                          returned one): trainers that learn from primitive steps inside a chunk
        chunk_successes   list of the k per-step `is_success` flags (False where absent)
        is_success        any step of the chunk succeeded
        steps             k, the number of primitive steps executed
        executed_actions  (H, d) float32 array of the actions sent; rows k.. are NaN when the
                          episode ended mid-chunk (a fixed shape, so gymnasium vector envs can
                          batch it; `executed_actions[:steps]` is the (k, d) part)
    """

    def __init__(self, env: gym.Env, horizon: int) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, horizon=horizon)
        super().__init__(env)
        space = env.action_space
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
            raise ValueError(f"ActionChunkWrapper: the env's action space must be a 1-D Box, got {space}")
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"ActionChunkWrapper: horizon must be an integer >= 1, got {horizon!r}")
        self.horizon = int(horizon)
        self.action_dim = int(space.shape[0])
        self._low, self._high = space.low, space.high
        self.action_space = gym.spaces.Box(
            np.tile(space.low, self.horizon), np.tile(space.high, self.horizon),
            (self.horizon * self.action_dim,), space.dtype,
        )

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        chunk = self.chunk_from_action(action)
        executed = np.full(chunk.shape, np.nan, dtype=np.float32)
        rewards: list[float] = []
        successes: list[bool] = []
        observations: list[Any] = []
        for i, primitive in enumerate(chunk):
            executed[i] = primitive
            obs, reward, terminated, truncated, info = self.env.step(primitive)
            rewards.append(float(reward))
            observations.append(obs)
            successes.append(bool(info.get("is_success", False)))
            if terminated or truncated:
                break
        info = dict(info)
        info.update(
            chunk_rewards=rewards,
            chunk_observations=observations,
            chunk_successes=successes,
            is_success=any(successes),
            steps=len(rewards),
            executed_actions=executed,
        )
        return obs, float(sum(rewards)), bool(terminated), bool(truncated), info

    def chunk_from_action(self, action: Any) -> np.ndarray:
        """The (H, d) chunk, clipped to the env's bounds, of a flat (H*d,) or (H, d) action."""
        arr = real_array(action, owner="ActionChunkWrapper", what="action")
        shape = (self.horizon, self.action_dim)
        if arr.shape not in (shape, (self.horizon * self.action_dim,)):
            raise ValueError(
                f"ActionChunkWrapper: action must have shape ({self.horizon * self.action_dim},) "
                f"(horizon {self.horizon} x action dim {self.action_dim}, flat) or {shape}, got {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"ActionChunkWrapper: action must be finite, got {arr.reshape(shape).tolist()}")
        return np.clip(arr.reshape(shape), self._low, self._high).astype(self.env.action_space.dtype)


# --------------------------------------------------------------- checks shared by the wrappers
def check_positive(who: str, name: str, value: Any) -> float:
    """`value` as a float; ValueError naming `who` and `name` unless it is finite and > 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ValueError(f"{who}: {name} must be a finite number > 0, got {value!r}")
    return number


def check_count(who: str, name: str, value: Any) -> int:
    """`value` as an int; ValueError naming `who` and `name` unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{who}: {name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_generative(who: str, policy: Any) -> tuple[int, ...]:
    """The policy's `noise_shape` (H, d); ValueError unless it has `sample` and `noise_shape`."""
    missing = [name for name in ("sample", "noise_shape", "observation_space", "action_space")
               if not hasattr(policy, name)]
    if missing or not callable(policy.sample):
        raise ValueError(
            f"{who}: the policy must be generative (sample(obs, noise), noise_shape, spaces), like "
            f"steergym.policies.DiffusionPolicy / FlowPolicy; {type(policy).__name__} lacks "
            f"{missing or ['sample()']}"
        )
    shape = tuple(int(n) for n in policy.noise_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"{who}: the policy's noise_shape must be (horizon, action_dim), "
                         f"got {policy.noise_shape}")
    return shape


def chunk_length(policy: Any) -> int:
    """Actions executed per sampled chunk: the policy's `chunk_length` where it has one, else H of its
    `noise_shape` (H, d). A LeRobot diffusion policy denoises `horizon` steps and executes
    `n_action_steps` of them, so its noise and executed chunk differ in length."""
    length = getattr(policy, "chunk_length", None)
    length = int(policy.noise_shape[0]) if length is None else length
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise ValueError(f"the policy's chunk_length must be an integer >= 1, got {length!r}")
    return int(length)


def check_policy_spaces(who: str, policy: Any, observation_space: gym.Space, action_space: gym.Space) -> None:
    """ValueError naming both spaces when the policy's spaces do not fit the env's.

    Observation spaces must agree in type, keys, shapes and dtypes; action spaces also in bounds
    (a policy clips its actions to its own bounds, so different bounds would silently distort them).
    """
    for label, theirs, ours, bounds in (
        ("observation", policy.observation_space, observation_space, False),
        ("action", policy.action_space, action_space, True),
    ):
        problem = _space_difference(theirs, ours, bounds)
        if problem:
            raise ValueError(
                f"{who}: the policy's {label} space {theirs} does not match the env's {label} space "
                f"{ours} ({problem})"
            )


def bind_task(who: str, policy: Any, env: Any) -> Any:
    """A task-conditioned policy with no task bound, bound to `env`'s id (`policy.for_task(id)`).

    `env` is an env or vector env (its `spec.id` is used) or an env id; other policies pass through.
    """
    task_ids = tuple(getattr(policy, "task_ids", ()) or ())
    if not task_ids or getattr(policy, "task", None) is not None:
        return policy
    if isinstance(env, str):
        env_id = env
    else:
        spec = getattr(env, "spec", None)
        env_id = spec.id if spec is not None else None
    if env_id not in task_ids:
        raise ValueError(
            f"{who}: the policy is conditioned on tasks {list(task_ids)} and the env's id {env_id!r} is "
            "not one of them; bind a task first with policy.for_task(env_id)"
        )
    return policy.for_task(env_id)


def _space_difference(a: gym.Space, b: gym.Space, bounds: bool, where: str = "") -> str:
    """'' when `a` and `b` agree, else a short description of the first difference."""
    at = f" at key {where!r}" if where else ""
    if isinstance(a, gym.spaces.Dict) and isinstance(b, gym.spaces.Dict):
        if set(a.spaces) != set(b.spaces):
            return f"keys {sorted(a.spaces)} vs {sorted(b.spaces)}"
        for key in a.spaces:
            problem = _space_difference(a[key], b[key], bounds, f"{where}.{key}" if where else key)
            if problem:
                return problem
        return ""
    if isinstance(a, gym.spaces.Box) and isinstance(b, gym.spaces.Box):
        if a.shape != b.shape:
            return f"shape {a.shape} vs {b.shape}{at}"
        if a.dtype != b.dtype:
            return f"dtype {a.dtype} vs {b.dtype}{at}"
        if bounds and not (np.allclose(a.low, b.low) and np.allclose(a.high, b.high)):
            return f"bounds [{a.low}, {a.high}] vs [{b.low}, {b.high}]{at}"
        return ""
    if type(a) is not type(b):
        return f"{type(a).__name__} vs {type(b).__name__}{at}"
    return "" if a == b else f"{a} vs {b}{at}"
