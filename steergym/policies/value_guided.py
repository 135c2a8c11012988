"""V-GPS: re-rank a frozen generative policy's samples with a value function (Nakamoto et al. 2024).

    critic = lambda obs, chunks: -np.abs(chunks[:, 0] - target).sum(-1)   # (N, ...), (N, H, d) -> (N,)
    policy = ValueGuidedPolicy(base, critic, num_samples=10, temperature=0.0)
    action = policy.act(obs)

Reference: reference/algorithms.md section 3 (K = 10 or 50, temperature 0 = argmax or 1.0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from steergym.policies.base import is_batched, reset_policy

Critic = Callable[[Any, np.ndarray], Any]


class ValueGuidedPolicy:
    """Sample K chunks from a base policy, score them with a critic, execute the best one.

    Args:
        policy: the base policy; needs `sample_n(obs, n)` -> (n, H, d) / (B, n, H, d) (a
            `DiffusionPolicy` or `FlowPolicy`), `observation_space`, `action_space`.
        critic: any callable `critic(obs, chunks) -> values`: `obs` is a batch of N observations
            ((N, *obs_shape) array, or a dict of such arrays for a Dict space), `chunks` the N
            candidate chunks (N, H, d) in env action units; returns N values ((N,) or (N, 1),
            numpy or torch), higher is better. All B * K candidates of a call are scored in ONE
            critic call. V-GPS's critic scores single actions: use `chunks[:, 0]` for that.
        num_samples: K, candidates per decision (V-GPS: 10 or 50).
        temperature: 0 executes the argmax; T > 0 samples index k with probability
            softmax(values / T)_k (V-GPS's beta).
        seed: seed of the generator used for softmax sampling (the base policy draws its own noise;
            `reset(seed)` reseeds both).
        action_steps: actions of each selected chunk `act` executes before re-planning. Default 1:
            re-rank at every control step, V-GPS's setting (its SimplerEnv evaluation samples and
            re-ranks K chunks at each step); None: the base policy's `config.action_steps` if it has
            one, else the whole chunk (one re-ranking per chunk, K/H as many samples per step).

    Implements the Policy protocol (`act`, `reset`, spaces); `sample_chunk` returns whole chunks.
    """

    def __init__(self, policy: Any, critic: Critic, num_samples: int = 10, temperature: float = 0.0,
                 seed: int = 0, action_steps: int | None = 1) -> None:
        who = "ValueGuidedPolicy"
        if not callable(getattr(policy, "sample_n", None)) or not hasattr(policy, "observation_space"):
            raise ValueError(f"{who}: the base policy needs sample_n(obs, n) and spaces "
                             f"(a DiffusionPolicy or FlowPolicy), got {type(policy).__name__}")
        if not callable(critic):
            raise ValueError(f"{who}: critic must be callable (obs (N, ...), chunks (N, H, d)) -> (N,), "
                             f"got {critic!r}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"{who}: num_samples must be an integer >= 1, got {num_samples!r}")
        try:
            temp = float(temperature)
        except (TypeError, ValueError):
            temp = math.nan
        if not math.isfinite(temp) or temp < 0:
            raise ValueError(f"{who}: temperature must be a finite number >= 0, got {temperature!r}")
        if action_steps is None:
            action_steps = getattr(getattr(policy, "config", None), "action_steps", None)
        if action_steps is not None and (isinstance(action_steps, bool) or int(action_steps) != action_steps
                                         or action_steps < 1):
            raise ValueError(f"{who}: action_steps must be an integer >= 1, got {action_steps!r}")
        self.policy, self.critic = policy, critic
        self.num_samples, self.temperature = int(num_samples), temp
        self.action_steps = None if action_steps is None else int(action_steps)
        self.observation_space: gym.Space = policy.observation_space
        self.action_space: gym.Space = policy.action_space
        self._rng = np.random.default_rng(seed)
        self._queue: np.ndarray | None = None  # (B, steps_left, d)
        self._queue_batched = False

    def reset(self, seed: int | None = None) -> None:
        """Forget the chunk in progress; with a seed, reseed the selection and the base policy."""
        self._queue = None
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        reset_policy(self.policy, seed)

    def act(self, obs: Any) -> np.ndarray:
        """(d,) for one observation, (B, d) for a batch; re-plans when the selected chunk is used up."""
        batched = is_batched(obs, self.observation_space)
        batch = _batch_size(obs) if batched else 1
        if self._queue is None or self._queue.shape[1] == 0 or self._queue.shape[0] != batch \
                or self._queue_batched != batched:
            chunks = self.sample_chunk(obs)
            chunks = chunks if batched else chunks[None]
            self._queue = chunks[:, : self.action_steps]
            self._queue_batched = batched
        action, self._queue = self._queue[:, 0], self._queue[:, 1:]
        return action if batched else action[0]

    def sample_chunk(self, obs: Any) -> np.ndarray:
        """The selected chunk: (H, d) for one observation, (B, H, d) for a batch."""
        chunks, values = self.propose(obs)
        batched = chunks.ndim == 4
        chunks, values = (chunks, values) if batched else (chunks[None], values[None])
        index = self.select(values)
        chosen = chunks[np.arange(len(index)), index]
        return chosen if batched else chosen[0]

    def propose(self, obs: Any) -> tuple[np.ndarray, np.ndarray]:
        """K candidates and their values: ((K, H, d), (K,)), or ((B, K, H, d), (B, K)) for a batch."""
        batched = is_batched(obs, self.observation_space)
        chunks = np.asarray(self.policy.sample_n(obs, self.num_samples), dtype=np.float32)
        per_obs = chunks if batched else chunks[None]  # (B, K, H, d)
        batch, k = per_obs.shape[:2]
        flat_obs = repeat_observation(obs if batched else _add_batch_axis(obs), k)
        values = self._score(flat_obs, per_obs.reshape(batch * k, *per_obs.shape[2:])).reshape(batch, k)
        return (per_obs, values) if batched else (per_obs[0], values[0])

    def select(self, values: np.ndarray) -> np.ndarray:
        """(B,) chosen indices for values (B, K): argmax at T = 0, else softmax(values / T) samples."""
        values = np.asarray(values, dtype=np.float64)
        if self.temperature == 0.0:
            return values.argmax(axis=1)
        logits = (values - values.max(axis=1, keepdims=True)) / self.temperature
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        return np.array([self._rng.choice(values.shape[1], p=p) for p in probs])

    def _score(self, obs: Any, chunks: np.ndarray) -> np.ndarray:
        n = chunks.shape[0]
        values = self.critic(obs, chunks)
        if torch.is_tensor(values):
            values = values.detach().cpu().numpy()
        values = np.asarray(values, dtype=np.float64)
        if values.shape == (n, 1):
            values = values[:, 0]
        if values.shape != (n,):
            raise ValueError(f"ValueGuidedPolicy: the critic must return {n} values ((N,) or (N, 1)) "
                             f"for N = {n} candidates, got shape {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"ValueGuidedPolicy: the critic returned non-finite values {values.tolist()}")
        return values

    def __repr__(self) -> str:
        return (f"ValueGuidedPolicy({type(self.policy).__name__}, num_samples={self.num_samples}, "
                f"temperature={self.temperature})")


def repeat_observation(obs: Any, n: int) -> Any:
    """Each of the B observations of a batch repeated n times in place: (B * n, ...) (dicts per key)."""
    if isinstance(obs, dict):
        return {key: np.repeat(np.asarray(value), n, axis=0) for key, value in obs.items()}
    return np.repeat(np.asarray(obs), n, axis=0)


def _add_batch_axis(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {key: np.asarray(value)[None] for key, value in obs.items()}
    return np.asarray(obs)[None]


def _batch_size(obs: Any) -> int:
    return len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
