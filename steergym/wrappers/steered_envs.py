"""Steered tasks: a base task and a frozen base policy inside a steering wrapper, as one env.

The registered ids (`steergym.registry`, family "steered") are built here:

| id                                    | env                                                              |
|---------------------------------------|------------------------------------------------------------------|
| `steergym/<Task>-DSRL-v0`             | `NoiseActionWrapper(make(<Task>-v0), policy, noise_bound=1.5)`   |
| `steergym/<Task>-Residual-v0`         | `ResidualActionWrapper(make(<Task>-v0), policy, scale=0.1)`      |
| `steergym/<Task>-<Kind>-DSRL-v0` etc. | the same with the task's other shipped policy of kind <Kind>     |

`policy` is the task's shipped diffusion policy for the plain ids (e.g. `widowx-lift-diffusion`),
and e.g. `widowx-lift-flow` for `steergym/WidowXLiftCube-Flow-DSRL-v0`.

    env = gymnasium.make("steergym/WidowXLiftCube-DSRL-v0")          # action: noise (H*d,) in [-1.5, 1.5]
    env = gymnasium.make("steergym/WidowXPutCarrotOnPlate-Residual-v0", obs_mode="pixels_state",
                         render_mode="rgb_array")                      # options go to the base task
    env = make_dsrl_env("steergym/WidowXLiftCube-v0", "runs/my_bc/final", noise_bound=1.0)

Episodes end when the base task's own TimeLimit truncates (in primitive control steps); a steered
id has no TimeLimit of its own. Note that `gymnasium.make(steered_id, max_episode_steps=k)` adds
one that counts *agent* steps (chunks, for DSRL); to shorten the base task's episodes pass
`base_max_episode_steps=k` instead.

`env.spec` of a made steered env is the steered id's spec (its kwargs: base_id, policy, noise_bound
or scale and the base task's options; max_episode_steps None), so `gymnasium.make(env.spec)`
rebuilds it. As for every env made through `gymnasium.make`, the innermost env's
`unwrapped.spec` is that spec too (gymnasium sets it), not the base task's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from steergym.policies.zoo import resolve_policy
from steergym.wrappers.noise import NoiseActionWrapper
from steergym.wrappers.residual import ResidualActionWrapper


def make_dsrl_env(base_id: str, policy: Any, noise_bound: float = 1.5, *,
                  base_max_episode_steps: int | None = None, policy_seed: int = 0,
                  **env_kwargs: Any) -> NoiseActionWrapper:
    """`NoiseActionWrapper(gymnasium.make(base_id, **env_kwargs), policy, noise_bound)`.

    Args:
        base_id: the task, e.g. "steergym/WidowXLiftCube-v0".
        policy: a shipped policy's name, a checkpoint folder, or a loaded generative policy
            (a task-conditioned one is bound to `base_id`).
        noise_bound: the half-width of the noise box (the action space is [-b, b]^(H*d)).
        base_max_episode_steps: the base task's TimeLimit, in control steps (default: its own).
        policy_seed: seed of a loaded policy's own generator (unused by DSRL's deterministic decode).
        env_kwargs: options of the base task (obs_mode, render_mode, image_size, ...).
    """
    _check_seed(policy_seed)
    return _wrap_base(base_id, base_max_episode_steps, env_kwargs,
                      lambda env: SteeredNoiseActionWrapper(env, _resolve(policy, base_id, policy_seed), noise_bound))


def make_residual_env(base_id: str, policy: Any, scale: float = 0.1, *,
                      base_max_episode_steps: int | None = None, policy_seed: int = 0,
                      **env_kwargs: Any) -> ResidualActionWrapper:
    """`ResidualActionWrapper(gymnasium.make(base_id, **env_kwargs), policy, scale)`.

    Args as `make_dsrl_env`; `policy` may be any Policy object as well (the wrapper acts through
    its own `fork()` where the policy has one, so one loaded policy can serve several envs), and
    `scale` is the correction's weight in action units. The base policy is reseeded at each
    reset with the reset's seed (`policy_seed` seeds it until the first seeded reset).
    """
    _check_seed(policy_seed)
    return _wrap_base(base_id, base_max_episode_steps, env_kwargs,
                      lambda env: SteeredResidualActionWrapper(env, _resolve(policy, base_id, policy_seed), scale))


class _SteeredSpec:
    """`spec`: the steered id's spec once `gymnasium.make` has set it on the innermost env.

    Without this, a wrapper's spec is derived from the inner ones: the base task's TimeLimit would
    report max_episode_steps (primitive steps; remaking would add an outer TimeLimit counting
    chunks) and the steering wrapper would appear twice on `gymnasium.make(env.spec)`.
    """

    @property
    def spec(self):
        own = self.unwrapped.spec
        if own is not None and own.id != getattr(self, "_base_id", None):  # gymnasium.make(steered id)
            return own
        return super().spec  # built directly: the base task's spec plus this wrapper


class SteeredNoiseActionWrapper(_SteeredSpec, NoiseActionWrapper):
    """A `NoiseActionWrapper` whose `spec` is its steered id's (what `make_dsrl_env` returns)."""

    def __init__(self, env: gym.Env, policy: Any, noise_bound: float = 1.5, shared_noise: bool = False) -> None:
        super().__init__(env, policy, noise_bound, shared_noise)
        self._base_id = env.spec.id if env.spec is not None else None


class SteeredResidualActionWrapper(_SteeredSpec, ResidualActionWrapper):
    """A `ResidualActionWrapper` whose `spec` is its steered id's (what `make_residual_env` returns)."""

    def __init__(self, env: gym.Env, policy: Any, scale: float = 0.1) -> None:
        super().__init__(env, policy, scale)
        self._base_id = env.spec.id if env.spec is not None else None


def _wrap_base(base_id: str, max_episode_steps: int | None, env_kwargs: dict[str, Any],
               wrap: Callable[[gym.Env], gym.Env]) -> gym.Env:
    """`wrap(gymnasium.make(base_id, ...))`, closing the base env if wrapping fails."""
    if not isinstance(base_id, str):
        raise ValueError(f"base_id must be a registered env id, got {base_id!r}")
    if max_episode_steps is not None and (isinstance(max_episode_steps, bool)
                                          or not isinstance(max_episode_steps, (int, np.integer))
                                          or max_episode_steps < 1):
        # gymnasium's TimeLimit would take a negative or zero horizon and never truncate
        raise ValueError(f"base_max_episode_steps must be an integer >= 1 or None, got {max_episode_steps!r}")
    env = gym.make(base_id, max_episode_steps=None if max_episode_steps is None else int(max_episode_steps),
                   **env_kwargs)
    try:
        return wrap(env)
    except BaseException:
        env.close()
        raise


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"policy_seed must be an integer in [0, 2**64), got {seed!r}")  # torch's seed range


def _resolve(policy: Any, base_id: str, seed: int) -> Any:
    """A shipped name or checkpoint folder -> the loaded policy bound to `base_id`; objects pass."""
    if isinstance(policy, (str, os.PathLike)):
        return resolve_policy(os.fspath(policy), base_id, seed=seed)[0]
    return policy
