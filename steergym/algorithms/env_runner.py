"""Stepping a training env for an off-policy trainer: one Gymnasium env or a vector env (any autoreset
mode), reported uniformly as batches of n envs, and the online counters saved with a checkpoint.

    runner = EnvRunner(env, seed_base=TRAIN_SEED_OFFSET + seed, layout=None)
    obs = runner.observe(state)            # (n, o) float32, or {key: (n, *shape)} for pixels
    result = runner.step(actions)          # StepResult: next_obs, rewards, terminated, ... (n,) each

A single env's k-th reset uses seed seed_base + k (`OnlineState.resets` counts them), so training
episodes are reproducible; a vector env's autoreset steps are not transitions (`StepResult.valid`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from steergym.algorithms.encoders import IMAGE_KEY, is_image_space
from steergym.policies.config import config_from_dict


@dataclass
class OnlineState:
    """Counters of the online phase (saved with a checkpoint, JSON)."""

    num_timesteps: int = 0  # online transitions collected (the budget of `learn`)
    env_steps: int = 0  # primitive env steps (a DSRL chunk counts H; info["steps"])
    updates_due: int = 0  # updates owed for transitions already collected
    resets: int = 0  # training-env resets so far (single env k-th reset seed: base + k)
    next_eval: int = 0
    next_checkpoint: int = 0
    recent: list = field(default_factory=list)  # [return, success] of the last 50 training episodes
    episode_return: list = field(default_factory=list)  # per env, episode in progress
    episode_success: list = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OnlineState":
        return config_from_dict(cls, data)


@dataclass
class StepResult:
    next_obs: np.ndarray  # (n, o) the observation each transition led to (the final one at an episode end)
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    success: np.ndarray
    valid: np.ndarray  # False for a vector env's autoreset step (no transition)
    primitive_steps: int


class EnvRunner:
    """Steps a Gymnasium env or vector env and reports transitions uniformly as batches of n envs."""

    def __init__(self, env: Any, seed_base: int, layout: dict[str, gym.spaces.Box] | None = None) -> None:
        self.env, self.seed_base, self.layout = env, int(seed_base), layout
        self.vector = isinstance(env, gym.vector.VectorEnv)
        self.num_envs = int(env.num_envs) if self.vector else 1
        self.mode = gym.vector.AutoresetMode(env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)) \
            if self.vector else None
        self.obs: np.ndarray | None = None
        self.skip = np.zeros(self.num_envs, bool)

    def observe(self, state: OnlineState) -> np.ndarray:
        if self.obs is None:  # first call, or a single env's episode ended: reset with the next seed
            obs, _ = self.env.reset(seed=self.seed_base + state.resets)
            state.resets += self.num_envs
            self.obs = batch_obs(obs, self.layout, self.num_envs)
            self.skip[:] = False
            if len(state.episode_return) != self.num_envs or not self.vector:
                state.episode_return, state.episode_success = [0.0] * self.num_envs, [False] * self.num_envs
        return self.obs

    def step(self, actions: np.ndarray) -> StepResult:
        if not self.vector:
            obs, reward, terminated, truncated, info = self.env.step(actions[0])
            next_obs = batch_obs(obs, self.layout, 1)
            self.obs = None if terminated or truncated else next_obs
            return StepResult(next_obs, np.array([reward], np.float64), np.array([bool(terminated)]),
                               np.array([bool(truncated)]), np.array([bool(info.get("is_success", False))]),
                               np.ones(1, bool), int(info.get("steps", 1)))
        obs, reward, terminated, truncated, info = self.env.step(actions)
        obs = batch_obs(obs, self.layout, self.num_envs)
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        done, valid = terminated | truncated, ~self.skip
        next_obs = {k: v.copy() for k, v in obs.items()} if isinstance(obs, dict) else obs.copy()
        success = info_array(info, "is_success", self.num_envs, False).astype(bool)
        if self.mode == gym.vector.AutoresetMode.SAME_STEP and done.any():
            final_obs, final_info = info["final_obs"], info.get("final_info", {})
            final_success = info_array(final_info, "is_success", self.num_envs, False).astype(bool)
            for i in np.flatnonzero(done):
                final = batch_obs(final_obs[i], self.layout, 1)
                if isinstance(next_obs, dict):
                    for k in next_obs:
                        next_obs[k][i] = final[k][0]
                else:
                    next_obs[i] = final[0]
                success[i] = final_success[i]
        steps = info_array(info, "steps", self.num_envs, 1).astype(np.int64)
        if self.mode == gym.vector.AutoresetMode.NEXT_STEP:
            self.skip = done.copy()  # the next step of these envs is their reset, not a transition
        elif self.mode == gym.vector.AutoresetMode.DISABLED and done.any():
            obs, _ = self.env.reset(options={"reset_mask": done})
            obs = batch_obs(obs, self.layout, self.num_envs)
        self.obs = obs
        return StepResult(next_obs, np.asarray(reward, np.float64), terminated, truncated, success, valid,
                           int(steps[valid].sum()))


def batch_obs(obs: Any, layout: dict[str, gym.spaces.Box] | None, n: int) -> Any:
    """An env's observation(s) of n envs as a batch: flat (n, o) float32, or {key: (n, *shape)} in
    the space's dtype for pixel observations (a bare image gets the key IMAGE_KEY)."""
    if layout is None:
        return np.asarray(obs, np.float32).reshape(n, -1)
    if not isinstance(obs, dict):
        obs = {IMAGE_KEY: obs}
    return {k: np.asarray(obs[k], space.dtype if is_image_space(space) else np.float32).reshape(n, *space.shape)
            for k, space in layout.items()}


def info_array(info: dict, key: str, n: int, default: Any) -> np.ndarray:
    """A vector env's info[key] as an (n,) array, `default` where the sub-env did not report it."""
    if key not in info:
        return np.full(n, default)
    values, mask = np.asarray(info[key]), np.asarray(info.get(f"_{key}", np.ones(n, bool)), bool)
    return np.where(mask, values, default)


def single_spaces(env: Any) -> tuple[gym.Space, gym.Space]:
    """(observation_space, action_space) of one env, also for a Gymnasium vector env."""
    if isinstance(env, gym.vector.VectorEnv):
        return env.single_observation_space, env.single_action_space
    return env.observation_space, env.action_space
