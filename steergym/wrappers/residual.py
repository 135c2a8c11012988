"""Residual RL around a frozen base policy: the agent outputs a bounded correction to its action."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from steergym.checks import finite_array
from steergym.policies.base import check_action, reset_policy
from steergym.wrappers.chunk import bind_task, check_policy_spaces, check_positive


class ResidualActionWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Execute clip(base + scale * correction, env bounds), base = `policy.act(obs)`.

    Args:
        env: an env with a 1-D Box action space (d,).
        policy: any Policy (`act`, `reset`, spaces equal to the env's); a generative policy's
            open-loop chunk queue is fine. It is reset at every env reset *with the reset's seed*,
            so a seeded episode is reproducible. The wrapper acts through `policy.fork()` when the
            policy has one (`GenerativePolicy.fork`: shared weights, its own chunk queue and noise
            generator), so several wrappers, e.g. the sub-envs of a vector env, can share one
            loaded policy; `self.policy` is that fork. A policy without `fork` keeps its episode
            state in the object itself: give each env its own (e.g. `copy.deepcopy(policy)` in the
            vector env's factory), or two envs would interleave their chunk queues.
        scale: the correction's weight, in the env's action units per unit of correction (> 0).

    Action space: Box(-1, 1, (d,), float32), the correction (clipped to [-1, 1]; a wrong shape or a
    non-finite value raises ValueError). Observation space: the env's (the base action is not in
    the observation; with an open-loop chunk queue it depends on the chunk's phase as well).
    Info: the env's, plus `base_action` (d,) and `executed_action` (d,), both float32.
    """

    def __init__(self, env: gym.Env, policy: Any, scale: float = 0.1) -> None:
        who = "ResidualActionWrapper"
        space = env.action_space
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
            raise ValueError(f"{who}: the env's action space must be a 1-D Box, got {space}")
        self.scale = check_positive(who, "scale", scale)
        if not callable(getattr(policy, "act", None)) or not hasattr(policy, "observation_space"):
            raise ValueError(f"{who}: the policy must have act(obs) and observation/action spaces, got "
                             f"{type(policy).__name__}")
        check_policy_spaces(who, policy, env.observation_space, space)
        gym.utils.RecordConstructorArgs.__init__(self, policy=policy, scale=scale, _disable_deepcopy=True)
        super().__init__(env)
        policy = bind_task(who, policy, env)
        fork = getattr(policy, "fork", None)
        self.policy = fork() if callable(fork) else policy  # own episode state, shared weights
        self.action_space = gym.spaces.Box(-1.0, 1.0, space.shape, np.float32)
        self._last_obs: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        reset_policy(self.policy, seed)
        self._last_obs = obs
        return obs, info

    def step(self, action: Any):
        if self._last_obs is None:
            raise gym.error.ResetNeeded("ResidualActionWrapper: call reset() before step()")
        correction = self._correction(action)
        base = check_action(self.policy.act(self._last_obs), self.env.action_space, False,
                            f"ResidualActionWrapper: base policy {type(self.policy).__name__}")
        space = self.env.action_space
        executed = np.clip(base + self.scale * correction, space.low, space.high).astype(space.dtype)
        obs, reward, terminated, truncated, info = self.env.step(executed)
        self._last_obs = obs
        info = dict(info)
        info["base_action"] = base
        info["executed_action"] = executed
        return obs, reward, terminated, truncated, info

    def _correction(self, action: Any) -> np.ndarray:
        arr = finite_array(action, self.action_space.shape, owner="ResidualActionWrapper", what="the correction",
                           dtype=np.float32)
        return np.clip(arr, -1.0, 1.0)
