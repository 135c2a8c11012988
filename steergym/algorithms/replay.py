"""The online replay buffer of Cal-QL's fine-tuning phase: finished episodes only, each transition
with its Monte-Carlo return-to-go.

Cal-QL's public code (nakamotoo/Cal-QL `sampler.py`) collects a whole trajectory, computes its
discounted returns-to-go, and only then inserts it into the online buffer, so no transition is
ever sampled without its reference value. This buffer keeps that rule while the trainer steps the
env one transition at a time: transitions of an episode in progress wait in a per-env *pending*
list and become sampleable when their episode ends (terminated or truncated). Until the first
online episode ends, batches are all offline (`CalQL.learn`). A truncated episode is not
bootstrapped (no tail), as in the reference code (reference/algorithms.md section 1.7).

Storage is a ring of numpy arrays (oldest finished transitions are overwritten past `capacity`;
Cal-QL: 1e6); `state()` / `from_state()` turn it into plain arrays for a safetensors file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from steergym.data.returns import monte_carlo_returns

FIELDS = ("obs", "actions", "rewards", "next_obs", "terminals", "mc_returns")


class OnlineReplay:
    """Finished online transitions with MC returns-to-go, plus the pending episodes of `num_envs` envs.

    Args:
        capacity: maximum number of finished transitions kept.
        obs_dim, action_dim: flat sizes; actions are stored as the actor outputs them, in [-1, 1].
        discount: gamma of the returns-to-go.
        failure_reward: Cal-QL's sparse-reward rule (in the stored, transformed reward units): an
            episode whose every reward equals it gets failure_reward / (1 - gamma) everywhere. None: off.
        num_envs: parallel envs feeding pending episodes.
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, discount: float,
                 failure_reward: float | None = None, num_envs: int = 1) -> None:
        if int(capacity) < 1:
            raise ValueError(f"OnlineReplay: capacity must be >= 1, got {capacity}")
        self.capacity, self.obs_dim, self.action_dim = int(capacity), int(obs_dim), int(action_dim)
        self.discount, self.failure_reward = float(discount), failure_reward
        self.obs = np.zeros((self.capacity, self.obs_dim), np.float32)
        self.next_obs = np.zeros((self.capacity, self.obs_dim), np.float32)
        self.actions = np.zeros((self.capacity, self.action_dim), np.float32)
        self.rewards = np.zeros(self.capacity, np.float32)
        self.terminals = np.zeros(self.capacity, np.float32)
        self.mc_returns = np.zeros(self.capacity, np.float32)
        self.size = 0  # finished transitions stored
        self.pos = 0  # next ring slot
        self.episodes = 0  # finished episodes inserted so far
        self.set_num_envs(num_envs)

    def set_num_envs(self, num_envs: int) -> None:
        """(Re)start the pending lists for `num_envs` envs; any episode in progress is dropped."""
        self.pending: list[list[tuple[np.ndarray, np.ndarray, float, np.ndarray, bool]]] = [
            [] for _ in range(int(num_envs))]

    @property
    def pending_transitions(self) -> int:
        return sum(len(p) for p in self.pending)

    def add(self, env_index: int, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray,
            terminated: bool) -> None:
        """One transition of env `env_index`'s episode in progress (not sampleable yet)."""
        self.pending[env_index].append((np.asarray(obs, np.float32), np.asarray(action, np.float32), float(reward),
                                        np.asarray(next_obs, np.float32), bool(terminated)))

    def end_episode(self, env_index: int) -> np.ndarray:
        """Env `env_index`'s episode ended: compute its returns-to-go and make it sampleable.
        Returns the episode's MC returns (T,)."""
        steps, self.pending[env_index] = self.pending[env_index], []
        if not steps:
            return np.zeros(0)
        rewards = np.array([s[2] for s in steps], np.float64)
        terminals = np.array([s[4] for s in steps], bool)
        returns = monte_carlo_returns(rewards, terminals, self.discount, self.failure_reward)
        slots = (self.pos + np.arange(len(steps))) % self.capacity
        self.obs[slots] = np.stack([s[0] for s in steps])
        self.actions[slots] = np.stack([s[1] for s in steps])
        self.rewards[slots] = rewards
        self.next_obs[slots] = np.stack([s[3] for s in steps])
        self.terminals[slots] = terminals
        self.mc_returns[slots] = returns
        self.pos = int((self.pos + len(steps)) % self.capacity)
        self.size = min(self.capacity, self.size + len(steps))
        self.episodes += 1
        return returns

    def sample(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Rows `index` (< size) of every field."""
        return {name: getattr(self, name)[index] for name in FIELDS}

    # ------------------------------------------------------------------------ persistence
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, JSON meta) of the finished transitions; pending episodes are not included."""
        arrays = {f"replay/{name}": np.ascontiguousarray(getattr(self, name)[:self.size]) for name in FIELDS}
        meta = {"capacity": self.capacity, "size": self.size, "pos": self.pos, "episodes": self.episodes,
                "discount": self.discount, "failure_reward": self.failure_reward}
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any], obs_dim: int, action_dim: int,
                   num_envs: int = 1) -> "OnlineReplay":
        buffer = cls(meta["capacity"], obs_dim, action_dim, meta["discount"], meta["failure_reward"], num_envs)
        size = int(meta["size"])
        for name in FIELDS:
            value = np.asarray(arrays[f"replay/{name}"])
            if value.shape[0] != size:
                raise ValueError(f"OnlineReplay: saved {name!r} has {value.shape[0]} rows, expected {size}")
            getattr(buffer, name)[:size] = value
        buffer.size, buffer.pos, buffer.episodes = size, int(meta["pos"]), int(meta["episodes"])
        return buffer
