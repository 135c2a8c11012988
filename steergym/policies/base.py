"""The Policy protocol and adapters that turn scripted experts, SB3 models and callables into Policies.

A `Policy` has `observation_space`, `action_space`, `act(obs) -> action` for a single observation
(shape of the space) or a batch (leading B axis), and `reset(seed=None)` at episode start.
Generative policies (`DiffusionPolicy`, `FlowPolicy`) add `noise_shape`, `sample(obs, noise)` and
`sample_n(obs, n)`; see `steergym.policies.generative`.

`as_policy(obj, env)` accepts a Policy, a Stable-Baselines3 model, the string "expert" (the task's
scripted expert) or any callable obs -> action.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from steergym.policies.scripted import make_expert
from steergym.rollout import reset_policy


@runtime_checkable
class Policy(Protocol):
    """What evaluation, wrappers and trainers need from a policy."""

    observation_space: gym.Space
    action_space: gym.Space

    def act(self, obs: Any) -> np.ndarray:
        """(d,) action for one observation, (B, d) for a batch."""

    def reset(self, seed: int | None = None) -> None:
        """Start of an episode: clear internal state (action chunks, expert phase); optionally reseed."""


@runtime_checkable
class GenerativePolicyProtocol(Policy, Protocol):
    """A policy whose action chunk is a deterministic function of (observation, initial noise)."""

    noise_shape: tuple[int, ...]

    def sample(self, obs: Any, noise: Any) -> np.ndarray:
        """(H, d) chunk for one observation and noise `noise_shape`; (B, H, d) for batches."""

    def sample_n(self, obs: Any, n: int) -> np.ndarray:
        """n chunks with fresh noise: (n, H, d), or (B, n, H, d) for a batch."""


def agent_noise_shape(noise_shape: tuple[int, int], shared: bool) -> tuple[int, int]:
    """What the agent chooses of a policy's (H, D) noise: all of it, or one row (1, D) when `shared`."""
    return (1, int(noise_shape[1])) if shared else (int(noise_shape[0]), int(noise_shape[1]))


def expand_noise(noise: np.ndarray, noise_shape: tuple[int, int]) -> np.ndarray:
    """Flat noise (..., H*D) from the agent's (..., H*D) or, shared, (..., D) (the row repeated H times)."""
    horizon, dim = (int(n) for n in noise_shape)
    if noise.shape[-1] == horizon * dim:
        return noise
    if noise.shape[-1] != dim:
        raise ValueError(f"noise of width {noise.shape[-1]} is neither the chunk noise ({horizon * dim}) nor one row ({dim})")
    return np.tile(noise, (1,) * (noise.ndim - 1) + (horizon,))


def is_batched(obs: Any, space: gym.Space) -> bool:
    """True when `obs` carries a leading batch axis relative to `space` (Box or Dict of Boxes)."""
    if isinstance(space, gym.spaces.Dict):
        key = next(iter(space.spaces))
        return is_batched(obs[key], space[key])
    shape = np.shape(obs)
    if tuple(shape) == tuple(space.shape):
        return False
    if len(shape) == len(space.shape) + 1 and tuple(shape[1:]) == tuple(space.shape):
        return True
    raise ValueError(f"observation of shape {tuple(shape)} does not match the space {space} (or a batch of it)")


def check_action(action: Any, space: gym.Space, batched: bool, who: str) -> np.ndarray:
    """`action` as a float32 array of shape (d,) or (B, d); ValueError naming `who` otherwise."""
    arr = np.asarray(action, dtype=np.float32)
    if batched:
        ok = arr.ndim == len(space.shape) + 1 and arr.shape[1:] == space.shape
    else:
        ok = arr.shape == space.shape
    if not ok:
        want = f"(B, *{space.shape})" if batched else f"{space.shape}"
        raise ValueError(f"{who}: returned an action of shape {arr.shape}, expected {want}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{who}: returned a non-finite action {arr}")
    return arr


class CallablePolicy:
    """A function obs -> action as a Policy; a batch is fed item by item unless `batched=True`."""

    def __init__(self, fn: Callable[[Any], Any], observation_space: gym.Space, action_space: gym.Space,
                 batched: bool = False, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"CallablePolicy: {fn!r} is not callable")
        self.fn, self.batched = fn, batched
        self.observation_space, self.action_space = observation_space, action_space
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def act(self, obs: Any) -> np.ndarray:
        batched = is_batched(obs, self.observation_space)
        if batched and not self.batched:
            n = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
            items = [{k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i] for i in range(n)]
            return np.stack([check_action(self.fn(o), self.action_space, False, self.name) for o in items])
        return check_action(self.fn(obs), self.action_space, batched, self.name)

    def reset(self, seed: int | None = None) -> None:
        reset_policy(self.fn, seed)


class SB3Policy:
    """A Stable-Baselines3 model (`model.predict`) as a Policy; SB3 itself handles batching."""

    def __init__(self, model: Any, deterministic: bool = True) -> None:
        if not hasattr(model, "predict"):
            raise TypeError(f"SB3Policy: {type(model).__name__} has no predict(); pass a Stable-Baselines3 model")
        self.model, self.deterministic = model, deterministic
        self.observation_space, self.action_space = model.observation_space, model.action_space

    def act(self, obs: Any) -> np.ndarray:
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return np.asarray(action)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None and hasattr(self.model, "set_random_seed"):
            self.model.set_random_seed(seed)


class ScriptedPolicy:
    """The task's privileged scripted expert as a Policy (single env only: it reads `env`'s simulator)."""

    def __init__(self, env: gym.Env, noise: float = 0.0, random_action_prob: float = 0.0, seed: int | None = None):
        self.expert = make_expert(env, noise, random_action_prob, seed)
        self.observation_space, self.action_space = env.observation_space, env.action_space
        self._knobs = (noise, random_action_prob)
        self._env = env

    def act(self, obs: Any = None) -> np.ndarray:
        if obs is not None and is_batched(obs, self.observation_space):
            raise ValueError("ScriptedPolicy: the scripted expert reads one simulator and cannot act on a batch")
        return self.expert.act(obs)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.expert = make_expert(self._env, *self._knobs, seed=seed)
        self.expert.reset()


def as_policy(obj: Any, env: gym.Env | None = None) -> Any:
    """`obj` as a Policy: Policies pass through; SB3 models, "expert" and callables are adapted."""
    if isinstance(obj, str):
        if obj != "expert":
            raise ValueError(f"as_policy: unknown policy name {obj!r}; use 'expert' or load_policy(name)")
        if env is None:
            raise ValueError("as_policy('expert') needs the env whose simulator the expert reads")
        return ScriptedPolicy(env)
    if hasattr(obj, "act") and hasattr(obj, "action_space"):
        return obj
    try:
        from stable_baselines3.common.base_class import BaseAlgorithm

        if isinstance(obj, BaseAlgorithm):
            return SB3Policy(obj)
    except ImportError:  # pragma: no cover - SB3 is a dependency
        pass
    if callable(obj):
        if env is None:
            raise ValueError("as_policy(callable) needs an env (or use CallablePolicy with explicit spaces)")
        return CallablePolicy(obj, env.observation_space, env.action_space)
    raise TypeError(f"as_policy: cannot make a policy from {type(obj).__name__}")
