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
Cal-QL: 1e6), grown as transitions arrive (a 1e6-row image ring is never allocated up front);
`state()` / `from_state()` turn it into plain arrays for a safetensors file. Observations are flat
float32 vectors, or dicts of arrays for pixel observations (images kept as uint8).
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np

from steergym.data.returns import monte_carlo_returns

FIELDS = ("obs", "actions", "rewards", "next_obs", "terminals", "mc_returns")
MIN_ROWS = 256  # first allocation; then powers of two up to the capacity

# flat observation size, or {key: (shape, dtype)} of dict observations
ObsSpec = Union[int, dict[str, tuple[tuple[int, ...], Any]]]


class OnlineReplay:
    """Finished online transitions with MC returns-to-go, plus the pending episodes of `num_envs` envs.

    Args:
        capacity: maximum number of finished transitions kept.
        obs_dim: flat observation size (stored float32), or {key: (shape, dtype)} for dict
            observations (each key stored in its dtype: images uint8).
        action_dim: actions are stored as the actor outputs them, in [-1, 1].
        discount: gamma of the returns-to-go.
        failure_reward: Cal-QL's sparse-reward rule (in the stored, transformed reward units): an
            episode whose every reward equals it gets failure_reward / (1 - gamma) everywhere. None: off.
        num_envs: parallel envs feeding pending episodes.

    `obs` / `next_obs` are (rows, o) arrays, or dicts {key: (rows, *shape)}; rows grow to `capacity`.
    """

    def __init__(self, capacity: int, obs_dim: ObsSpec, action_dim: int, discount: float,
                 failure_reward: float | None = None, num_envs: int = 1) -> None:
        if int(capacity) < 1:
            raise ValueError(f"OnlineReplay: capacity must be >= 1, got {capacity}")
        self.capacity, self.action_dim = int(capacity), int(action_dim)
        if isinstance(obs_dim, dict):
            self.obs_spec: ObsSpec = {k: (tuple(int(n) for n in shape), np.dtype(dtype))
                                      for k, (shape, dtype) in obs_dim.items()}
            self.obs_dim = None
        else:
            self.obs_spec = self.obs_dim = int(obs_dim)
        self.discount, self.failure_reward = float(discount), failure_reward
        self.obs, self.next_obs = empty_obs(self.obs_spec, 0), empty_obs(self.obs_spec, 0)
        self.actions = np.zeros((0, self.action_dim), np.float32)
        self.rewards = np.zeros(0, np.float32)
        self.terminals = np.zeros(0, np.float32)
        self.mc_returns = np.zeros(0, np.float32)
        self.size = 0  # finished transitions stored
        self.pos = 0  # next ring slot
        self.episodes = 0  # finished episodes inserted so far
        self.set_num_envs(num_envs)

    def _reserve(self, rows: int) -> None:
        """Grow every array to hold at least `rows` rows (see `ring_rows`)."""
        if rows <= len(self.rewards):
            return
        size = ring_rows(rows, self.capacity)
        for name in FIELDS:
            setattr(self, name, grow_rows(getattr(self, name), size))

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
        self.pending[env_index].append((self._copy_obs(obs), np.asarray(action, np.float32), float(reward),
                                        self._copy_obs(next_obs), bool(terminated)))

    def _copy_obs(self, obs: Any) -> Any:
        if isinstance(self.obs_spec, dict):
            return {k: np.array(obs[k], dtype) for k, (_, dtype) in self.obs_spec.items()}
        return np.array(obs, np.float32)

    def end_episode(self, env_index: int) -> np.ndarray:
        """Env `env_index`'s episode ended: compute its returns-to-go and make it sampleable.
        Returns the episode's MC returns (T,)."""
        steps, self.pending[env_index] = self.pending[env_index], []
        if not steps:
            return np.zeros(0)
        rewards = np.array([s[2] for s in steps], np.float64)
        terminals = np.array([s[4] for s in steps], bool)
        returns = monte_carlo_returns(rewards, terminals, self.discount, self.failure_reward)
        self._reserve(min(self.capacity, self.size + len(steps)))  # before wrapping, pos == size
        slots = (self.pos + np.arange(len(steps))) % self.capacity
        for field, column in (("obs", 0), ("next_obs", 3)):
            store = getattr(self, field)
            if isinstance(store, dict):
                for k in store:
                    store[k][slots] = np.stack([s[column][k] for s in steps])
            else:
                store[slots] = np.stack([s[column] for s in steps])
        self.actions[slots] = np.stack([s[1] for s in steps])
        self.rewards[slots] = rewards
        self.terminals[slots] = terminals
        self.mc_returns[slots] = returns
        self.pos = int((self.pos + len(steps)) % self.capacity)
        self.size = min(self.capacity, self.size + len(steps))
        self.episodes += 1
        return returns

    def sample(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Rows `index` (< size) of every field (observations: arrays or dicts of arrays)."""
        return {name: take_rows(getattr(self, name), index) for name in FIELDS}

    # ------------------------------------------------------------------------ persistence
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, JSON meta) of the finished transitions; pending episodes are not included."""
        arrays = {}
        for name in FIELDS:
            value = getattr(self, name)
            parts = {f"/{k}": v for k, v in value.items()} if isinstance(value, dict) else {"": value}
            arrays.update({f"replay/{name}{k}": np.ascontiguousarray(v[:self.size]) for k, v in parts.items()})
        meta = {"capacity": self.capacity, "size": self.size, "pos": self.pos, "episodes": self.episodes,
                "discount": self.discount, "failure_reward": self.failure_reward}
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any], obs_dim: ObsSpec, action_dim: int,
                   num_envs: int = 1) -> "OnlineReplay":
        """Inverse of `state` (KeyError for a missing array; ValueError for a mis-shaped one)."""
        buffer = cls(meta["capacity"], obs_dim, action_dim, meta["discount"], meta["failure_reward"], num_envs)
        size = int(meta["size"])
        buffer._reserve(size)
        for name in FIELDS:
            store = getattr(buffer, name)
            targets = {f"replay/{name}/{k}": v for k, v in store.items()} if isinstance(store, dict) \
                else {f"replay/{name}": store}
            for key, target in targets.items():
                value = np.asarray(arrays[key])
                if value.shape != (size, *target.shape[1:]):
                    raise ValueError(f"OnlineReplay: saved {key!r} has shape {value.shape}, expected "
                                     f"{(size, *target.shape[1:])}")
                target[:size] = value
        buffer.size, buffer.pos, buffer.episodes = size, int(meta["pos"]), int(meta["episodes"])
        return buffer


def ring_rows(needed: int, capacity: int) -> int:
    """Rows a growing ring allocates to hold `needed` rows: the next power of two, at least
    MIN_ROWS, at most `capacity`."""
    return min(int(capacity), max(MIN_ROWS, 1 << (int(needed) - 1).bit_length()))


def grow_rows(value: Any, rows: int) -> Any:
    """A copy of `value` (an array, or a dict of arrays) with `rows` rows: the old rows first, zeros after."""
    if isinstance(value, dict):
        return {k: grow_rows(v, rows) for k, v in value.items()}
    grown = np.zeros((rows, *value.shape[1:]), value.dtype)
    grown[:len(value)] = value
    return grown


def empty_obs(spec: ObsSpec, rows: int) -> Any:
    """Zeros for `rows` observations of `spec` (a flat size, or {key: (shape, dtype)})."""
    if isinstance(spec, dict):
        return {k: np.zeros((rows, *shape), dtype) for k, (shape, dtype) in spec.items()}
    return np.zeros((rows, spec), np.float32)


def take_rows(value: Any, index: Any) -> Any:
    """Rows `index` (an index array or a slice) of an array / tensor, key by key for a dict of them."""
    return {k: v[index] for k, v in value.items()} if isinstance(value, dict) else value[index]
