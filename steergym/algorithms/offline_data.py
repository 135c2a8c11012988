"""Offline data for the off-policy trainers (Cal-QL/CQL, PTR): validation, returns-to-go, mixtures.

- `check_transitions`: a `Transitions` (or any object with its fields) validated against the agent's
  spaces, rewards transformed and Monte-Carlo returns-to-go recomputed per episode (Cal-QL's floor);
- `sampling_groups`: a mixture's rows per group and batch shares (`steergym.data.mix_transitions`);
- `data_fingerprint`: what a checkpoint remembers of its offline data.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from steergym.algorithms.encoders import check_pixel_obs
from steergym.data.returns import monte_carlo_returns


def check_transitions(transitions: Any, name: str, observation_space: gym.Space, action_space: gym.spaces.Box,
                      layout: dict[str, gym.spaces.Box] | None, config: Any) -> dict[str, Any]:
    """The offline transitions an off-policy trainer learns from, validated and prepared.

    Returns {"observations", "next_observations": (N, o) arrays, or {key: (N, *shape)} for pixel
    layouts; "actions": (N, d) in env units; "rewards": config.transform_reward(r) when
    `episode_index` is there (else as given); "terminals": (N,); "mc_returns": recomputed per
    episode with `config.discount` and `config.failure_value` when `episode_index` is there, else as
    given}. ValueError naming `name` and the field for anything missing, mis-shaped, non-finite or
    outside the action space; reward_scale/bias other than the identity need `episode_index`.
    """
    obs_dim = int(observation_space.shape[0]) if layout is None else None
    action_dim = int(action_space.shape[0])
    fields, pixel_obs = {}, {}
    for key in ("observations", "actions", "rewards", "next_observations", "terminals", "mc_returns"):
        value = getattr(transitions, key, None)
        if value is None:
            raise ValueError(f"{name}: the transitions have no {key!r}"
                             + (" (Cal-QL's reference values; load with steergym.data.load_transitions)"
                                if key == "mc_returns" else ""))
        if layout is not None and key in ("observations", "next_observations"):
            pixel_obs[key] = value  # checked below, once N is known
            continue
        if isinstance(value, dict):
            raise ValueError(f"{name}: {key!r} is a dict (Dict observations), but this agent has flat Box "
                             f"observations {observation_space}")
        fields[key] = np.asarray(value)
    size = fields["actions"].shape[0] if fields["actions"].ndim else 0
    if size == 0:
        raise ValueError(f"{name}: the transitions are empty")
    expected = {"observations": (size, obs_dim), "next_observations": (size, obs_dim),
                "actions": (size, action_dim), "rewards": (size,), "terminals": (size,),
                "mc_returns": (size,)}
    for key in pixel_obs:
        del expected[key]
    for key, shape in expected.items():
        if fields[key].shape != shape:
            raise ValueError(f"{name}: {key!r} has shape {fields[key].shape}, expected {shape} "
                             f"(N={size}, observation dim {obs_dim}, action dim {action_dim})")
        if fields[key].dtype.kind not in "biuf":
            raise ValueError(f"{name}: {key!r} has dtype {fields[key].dtype}, expected numbers")
        bad = ~np.isfinite(fields[key].astype(np.float64))
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ValueError(f"{name}: {key!r} holds {int(bad.sum())} non-finite values "
                             f"(first at transition {row}: {fields[key][row]})")
    low, high = action_space.low, action_space.high
    outside = (fields["actions"] < low - 1e-6) | (fields["actions"] > high + 1e-6)
    if outside.any():
        row = int(np.argwhere(outside)[0][0])
        raise ValueError(f"{name}: 'actions' leave the action space [{low}, {high}] "
                         f"(first at transition {row}: {fields['actions'][row]})")
    cfg = config
    episode_index = getattr(transitions, "episode_index", None)
    identity = cfg.reward_scale == 1.0 and cfg.reward_bias == 0.0
    if episode_index is not None:
        episode_index = np.asarray(episode_index)
        if episode_index.shape != (size,):
            raise ValueError(f"{name}: 'episode_index' has shape {episode_index.shape}, expected ({size},)")
        fields["rewards"] = cfg.transform_reward(fields["rewards"].astype(np.float64))
        fields["mc_returns"] = episode_returns(fields["rewards"], fields["terminals"].astype(bool),
                                                episode_index, cfg.discount, cfg.failure_value)
    elif not identity:
        raise ValueError(f"{name}: reward_scale/reward_bias ({cfg.reward_scale}, {cfg.reward_bias}) need "
                         "'episode_index' to recompute the returns-to-go; the transitions have none")
    for key, value in pixel_obs.items():
        fields[key] = check_pixel_obs(value, layout, observation_space, key, name, size)[0]
    return fields


def data_fingerprint(data: dict[str, torch.Tensor], mixture: tuple[np.ndarray, tuple[float, ...]] | None = None) -> str:
    """SHA-256 of the prepared offline tensors (and a mixture's groups and shares): a checkpoint keeps
    it, so resuming with other data is an error."""
    digest = hashlib.sha256()
    for key in sorted(data):
        digest.update(key.encode())
        if isinstance(data[key], dict):  # dict observations: every entry under its key
            for sub in sorted(data[key]):
                digest.update(f"{key}/{sub}".encode())
                digest.update(data[key][sub].detach().cpu().numpy().tobytes())
        else:
            digest.update(data[key].detach().cpu().numpy().tobytes())
    if mixture is not None:  # (uniform data keeps the fingerprint it had before mixtures existed)
        digest.update(np.asarray(mixture[0], dtype=np.int64).tobytes())
        digest.update(np.asarray(mixture[1], dtype=np.float64).tobytes())
    return digest.hexdigest()


def sampling_groups(transitions, size: int, owner: str) -> tuple[list[np.ndarray] | None, tuple[float, ...]]:
    """The row indices of each group of a mixture and the groups' batch shares; (None, ()) if uniform."""
    group = getattr(transitions, "sample_group", None)
    ratios = getattr(transitions, "group_ratios", None)
    if group is None and ratios is None:
        return None, ()
    if group is None or ratios is None:
        raise ValueError(f"{owner}: a mixture needs both 'sample_group' and 'group_ratios' "
                         f"(got {'no sample_group' if group is None else 'no group_ratios'})")
    group, ratios = np.asarray(group), tuple(float(r) for r in ratios)
    if group.shape != (size,) or group.dtype.kind not in "iu":
        raise ValueError(f"{owner}: 'sample_group' must be ({size},) integers, got {group.shape} {group.dtype}")
    if not ratios or min(ratios) < 0 or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise ValueError(f"{owner}: 'group_ratios' must be >= 0 and sum to 1, got {ratios}")
    if group.min() < 0 or group.max() >= len(ratios):
        raise ValueError(f"{owner}: 'sample_group' values must be in [0, {len(ratios)}), "
                         f"got [{group.min()}, {group.max()}]")
    rows = [np.flatnonzero(group == g) for g in range(len(ratios))]
    empty = [g for g, r in enumerate(rows) if len(r) == 0 and ratios[g] > 0]
    if empty:
        raise ValueError(f"{owner}: mixture group(s) {empty} have a share > 0 but no rows")
    return rows, ratios


def episode_returns(rewards: np.ndarray, terminals: np.ndarray, episode_index: np.ndarray, discount: float,
                     failure_value: float | None) -> np.ndarray:
    """Returns-to-go of every transition, computed per episode (rows of an episode in their order)."""
    returns = np.zeros(rewards.shape, np.float64)
    for k in np.unique(episode_index):
        rows = np.flatnonzero(episode_index == k)
        returns[rows] = monte_carlo_returns(rewards[rows], terminals[rows], discount, failure_value)
    return returns

