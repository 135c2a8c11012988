"""V-GPS as an MDP: the agent chooses one of the base policy's K proposed action chunks."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from steergym.policies.value_guided import repeat_observation
from steergym.wrappers.chunk import (
    ActionChunkWrapper,
    bind_task,
    check_count,
    check_generative,
    check_policy_spaces,
    chunk_length,
)

PROPOSALS_KEY = "proposals"
OBSERVATION_KEY = "observation"
_SEED_SALT = 0x5EED  # keeps the proposal noise stream apart from the env's own np_random(seed)


class ProposalWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Discrete(K) choice among K chunks the base policy proposes for the current observation.

    Args:
        env: an env with a 1-D Box action space (d,).
        policy: a generative policy (`sample(obs, noise)`, `noise_shape == (H, d)`, spaces equal to
            the env's); a task-conditioned one is bound to the env's id. Used read-only.
        num_samples: K, proposals per step.

    Observation space: a Dict with
        "observation"  the env's observation (for a Dict env, its keys are kept at the top level
                       instead: Stable-Baselines3 cannot take nested Dicts)
        "proposals"    Box (K, H*d) float32 within the env's action bounds: row k is proposal k's
                       chunk, flattened row-major like `ActionChunkWrapper`'s action.
    The K proposals decode K fresh noises w ~ N(0, I) (one batched `policy.sample`) from the
    wrapper's own generator, seeded at `reset(seed=s)` from s, so a seeded episode is reproducible.

    Action space: Discrete(K). Step: proposal k's chunk is executed by a private
    `ActionChunkWrapper(env, H)`: summed reward, stops early when the episode ends, its info keys, plus
    `proposal_index` k. Then K new proposals are drawn for the new observation.
    """

    def __init__(self, env: gym.Env, policy: Any, num_samples: int) -> None:
        who = "ProposalWrapper"
        self.num_samples = check_count(who, "num_samples", num_samples)
        horizon, dim = check_generative(who, policy)
        check_policy_spaces(who, policy, env.observation_space, env.action_space)
        gym.utils.RecordConstructorArgs.__init__(self, policy=policy, num_samples=num_samples,
                                                 _disable_deepcopy=True)
        super().__init__(env)
        self.policy = bind_task(who, policy, env)
        self.chunker = ActionChunkWrapper(env, chunk_length(policy))  # composed, not stacked: env.spec stays remakeable
        self.noise_shape = (horizon, dim)
        chunk_space = self.chunker.action_space
        proposals = gym.spaces.Box(
            np.tile(chunk_space.low, (self.num_samples, 1)), np.tile(chunk_space.high, (self.num_samples, 1)),
            (self.num_samples, chunk_space.shape[0]), np.float32,
        )
        inner = env.observation_space
        if isinstance(inner, gym.spaces.Dict):
            if PROPOSALS_KEY in inner.spaces:
                raise ValueError(f"{who}: the env's Dict observation already has a {PROPOSALS_KEY!r} key")
            self._nested = False
            self.observation_space = gym.spaces.Dict({**inner.spaces, PROPOSALS_KEY: proposals})
        else:
            self._nested = True
            self.observation_space = gym.spaces.Dict({OBSERVATION_KEY: inner, PROPOSALS_KEY: proposals})
        self.action_space = gym.spaces.Discrete(self.num_samples)
        self._rng = np.random.default_rng()
        self._proposals: np.ndarray | None = None  # (K, H, d)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._rng = np.random.default_rng([_SEED_SALT, int(seed)])
        return self._observe(obs), info

    def step(self, action: Any):
        if self._proposals is None:
            raise gym.error.ResetNeeded("ProposalWrapper: call reset() before step()")
        index = self._index(action)
        obs, reward, terminated, truncated, info = self.chunker.step(self._proposals[index])
        info["proposal_index"] = index
        return self._observe(obs), reward, terminated, truncated, info

    @property
    def proposals(self) -> np.ndarray | None:
        """The current K proposals (K, H, d), or None before the first reset."""
        return None if self._proposals is None else self._proposals.copy()

    def _observe(self, obs: Any) -> dict[str, Any]:
        k = self.num_samples
        noise = self._rng.standard_normal((k, *self.noise_shape), dtype=np.float32)
        if isinstance(obs, dict):
            batch = {key: np.asarray(value)[None] for key, value in obs.items()}
        else:
            batch = np.asarray(obs)[None]
        chunks = np.asarray(self.policy.sample(repeat_observation(batch, k), noise), dtype=np.float32)
        self._proposals = chunks
        flat = chunks.reshape(k, -1)
        if self._nested:
            return {OBSERVATION_KEY: obs, PROPOSALS_KEY: flat}
        return {**obs, PROPOSALS_KEY: flat}

    def _index(self, action: Any) -> int:
        arr = np.asarray(action)
        if arr.size != 1 or not (np.issubdtype(arr.dtype, np.integer) or
                                 (np.issubdtype(arr.dtype, np.floating) and float(arr.item()).is_integer())):
            raise ValueError(f"ProposalWrapper: the action must be one integer index in "
                             f"[0, {self.num_samples}), got {action!r}")
        index = int(arr.item())
        if not 0 <= index < self.num_samples:
            raise ValueError(f"ProposalWrapper: proposal index {index} is out of range "
                             f"[0, {self.num_samples})")
        return index
