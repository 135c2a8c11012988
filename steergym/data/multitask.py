"""Multi-task offline data for task-conditioned agents (PTR, the V-GPS critic).

    prior = [with_task(load_transitions(d), TASKS, task) for d, task in prior_sets]   # one-hot appended
    target = with_task(load_transitions(demos), TASKS, "steergym/WidowXPutCarrotOnPlate-v0")
    data = mix_transitions([concat_transitions(prior), target], ratios=(0.9, 0.1))     # PTR's mixing
    agent.pretrain(data, steps)          # every batch: 90% prior rows, 10% target rows

Task conditioning is PTR's: the one-hot of the task among `task_ids` is appended to a flat
observation, or added as the key "task" of a Dict observation (reference/algorithms.md section
2.3). `steergym.wrappers.TaskConditionWrapper` does the same to an env's observations online, so
an agent trained on these transitions acts in the wrapped env unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from steergym.data.dataset import Transitions

TASK_KEY = "task"


def task_one_hot(task_ids: Sequence[str], task: str) -> np.ndarray:
    """(len(task_ids),) float32 one-hot of `task`; ValueError naming the known tasks otherwise."""
    task_ids = tuple(task_ids)
    if len(set(task_ids)) != len(task_ids) or not task_ids:
        raise ValueError(f"task_ids must be a non-empty list of distinct task names, got {list(task_ids)}")
    if task not in task_ids:
        raise ValueError(f"task {task!r} is not one of the task_ids {list(task_ids)}")
    one_hot = np.zeros(len(task_ids), np.float32)
    one_hot[task_ids.index(task)] = 1.0
    return one_hot


def append_task(obs: Any, one_hot: np.ndarray, batch: int | None = None) -> Any:
    """Observation(s) with the task appended: flat (..., o) -> (..., o + T) float32; a dict gets the
    key "task": (T,), or (batch, T) when `batch` rows are given."""
    if isinstance(obs, dict):
        if TASK_KEY in obs:
            raise ValueError(f"the Dict observation already has a {TASK_KEY!r} key")
        column = one_hot if batch is None else np.broadcast_to(one_hot, (batch, one_hot.shape[0]))
        return {**obs, TASK_KEY: np.array(column, dtype=np.float32)}
    obs = np.asarray(obs, dtype=np.float32)
    return np.concatenate([obs, np.broadcast_to(one_hot, (*obs.shape[:-1], one_hot.shape[0]))], axis=-1)


def with_task(transitions: Transitions, task_ids: Sequence[str], task: str) -> Transitions:
    """`transitions` of one task with the task's one-hot in every observation and next observation
    (flat observations must be 1-D per row: (N, o) -> (N, o + T)); metadata["task"] records it."""
    one_hot = task_one_hot(task_ids, task)
    obs, next_obs = transitions.observations, transitions.next_observations
    if not isinstance(obs, dict) and np.asarray(obs).ndim != 2:
        raise ValueError(f"with_task: flat observations must be (N, o), got shape {np.asarray(obs).shape} "
                         "(image observations: use a Dict observation, e.g. obs_mode='pixels_state')")
    n = len(transitions)
    obs, next_obs = append_task(obs, one_hot, n), append_task(next_obs, one_hot, n)
    metadata = {**transitions.metadata, "task": task, "task_ids": list(task_ids)}
    return dataclasses.replace(transitions, observations=obs, next_observations=next_obs, metadata=metadata)


def concat_transitions(parts: Sequence[Transitions]) -> Transitions:
    """One `Transitions` of several (same observation layout); episode indices stay distinct."""
    parts = list(parts)
    if not parts:
        raise ValueError("concat_transitions: no transitions given")
    if any(p.sample_group is not None for p in parts):
        raise ValueError("concat_transitions: a part is already a mixture; concatenate before mixing")
    shapes = {_layout(p.observations) for p in parts}
    if len(shapes) != 1:
        raise ValueError(f"concat_transitions: the parts have different observation layouts {sorted(shapes)}; "
                         "tasks whose observations differ in size cannot share one task-conditioned agent")
    offsets = np.cumsum([0] + [int(p.episode_index.max()) + 1 if len(p) else 0 for p in parts[:-1]])
    cat = lambda key: _concat([getattr(p, key) for p in parts])  # noqa: E731
    return Transitions(
        observations=cat("observations"), actions=cat("actions"), rewards=cat("rewards"),
        next_observations=cat("next_observations"), terminals=cat("terminals"), timeouts=cat("timeouts"),
        mc_returns=cat("mc_returns"), successes=cat("successes"),
        episode_index=np.concatenate([p.episode_index + off for p, off in zip(parts, offsets)]),
        metadata={"parts": [p.metadata for p in parts]})


def mix_transitions(parts: Sequence[Transitions], ratios: Sequence[float]) -> Transitions:
    """Concatenate `parts` and mark them as a sampling mixture: a trainer drawing a batch of B rows
    takes round(B * ratios[i]) of them from part i (PTR: prior 0.9, target 0.1). Ratios >= 0, sum 1."""
    parts, ratios = list(parts), tuple(float(r) for r in ratios)
    if len(parts) != len(ratios):
        raise ValueError(f"mix_transitions: {len(parts)} parts but {len(ratios)} ratios {list(ratios)}")
    if not ratios or min(ratios) < 0 or not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"mix_transitions: ratios must be >= 0 and sum to 1, got {list(ratios)}")
    for i, (part, ratio) in enumerate(zip(parts, ratios)):
        if ratio > 0 and len(part) == 0:
            raise ValueError(f"mix_transitions: part {i} is empty but has ratio {ratio}")
    mixed = concat_transitions(parts)
    group = np.concatenate([np.full(len(p), i, np.int64) for i, p in enumerate(parts)])
    mixed.metadata["mixing_ratios"] = list(ratios)
    return dataclasses.replace(mixed, sample_group=group, group_ratios=ratios)


def _layout(obs: Any) -> tuple:
    if isinstance(obs, dict):
        return tuple(sorted((k, np.asarray(v).shape[1:]) for k, v in obs.items()))
    return (np.asarray(obs).shape[1:],)


def _concat(values: list[Any]) -> Any:
    if isinstance(values[0], dict):
        return {k: np.concatenate([v[k] for v in values]) for k in values[0]}
    return np.concatenate(values)
