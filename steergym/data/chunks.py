"""Behaviour-cloning samples: (observation, action chunk, task index) from recorded episodes.

For step t of an episode with T actions, the chunk is actions[t : t + H]; chunks running past the
episode end repeat its last action (Diffusion Policy's edge padding), so every step is a sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from steergym.data.dataset import Episode, _concat, _take, load_dataset, load_episodes, read_metadata


@dataclass
class ChunkData:
    """N behaviour-cloning samples.

    Attributes:
        observations: (N, *obs_shape) array, or a dict of such arrays.
        chunks: (N, H, d) float32 action chunks.
        task_index: (N,) int64 index into `task_ids` (all 0 for one task).
        task_ids: the env id of each task, in index order.
        actions: (M, d) every recorded action (M <= N*H), for fitting the action normaliser.
        sources: the dataset ids the samples came from.
        options: the `load_chunk_data` filters used (to reload the same samples on resume).
    """

    observations: Any
    chunks: np.ndarray
    task_index: np.ndarray
    task_ids: tuple[str, ...]
    actions: np.ndarray
    sources: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.chunks))

    def batch(self, index: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        """(observations, chunks, task_index) at `index`."""
        return _take(self.observations, index), self.chunks[index], self.task_index[index]


def episode_chunks(episode: Episode, horizon: int) -> tuple[Any, np.ndarray]:
    """(observations (T, ...), chunks (T, H, d)) of one episode, edge-padded at the end."""
    n = len(episode)
    if n == 0:
        raise ValueError("episode_chunks: empty episode")
    index = np.minimum(np.arange(n)[:, None] + np.arange(horizon)[None, :], n - 1)
    return _take(episode.observations, np.arange(n)), np.asarray(episode.actions, dtype=np.float32)[index]


def chunks_from_episodes(episodes: list[Episode], horizon: int, task: int = 0) -> tuple[Any, np.ndarray, np.ndarray]:
    parts = [episode_chunks(ep, horizon) for ep in episodes]
    obs = _concat([p[0] for p in parts])
    chunks = np.concatenate([p[1] for p in parts])
    return obs, chunks, np.full(len(chunks), task, dtype=np.int64)


def load_chunk_data(
    dataset_ids: list[str] | tuple[str, ...],
    horizon: int,
    *,
    root: str | os.PathLike | None = None,
    success_only: bool = False,
    max_episodes: int | None = None,
) -> ChunkData:
    """Behaviour-cloning samples from one or more local datasets (one task per distinct env id).

    Args:
        dataset_ids: Minari dataset ids written by `steergym collect` (or any with the same spaces).
        horizon: action chunk length H.
        success_only: keep only episodes that reached success.
        max_episodes: keep the first `max_episodes` (kept) episodes of each dataset.

    Raises:
        ValueError: no datasets, datasets whose observation or action spaces differ, or nothing
            left after filtering (the message names the dataset).
    """
    if not dataset_ids:
        raise ValueError("load_chunk_data: no dataset ids given")
    task_ids: list[str] = []
    obs_parts, chunk_parts, task_parts, action_parts = [], [], [], []
    first_spaces = None
    for dataset_id in dataset_ids:
        ds = load_dataset(dataset_id, root)
        spaces = (ds.observation_space, ds.action_space)
        if first_spaces is None:
            first_spaces = spaces
        elif spaces != first_spaces:
            raise ValueError(
                f"dataset {dataset_id!r} has spaces {spaces} but {dataset_ids[0]!r} has {first_spaces}; "
                "datasets trained together must share observation and action spaces"
            )
        episodes, _ = load_episodes(dataset_id, root)
        if success_only:
            episodes = [ep for ep in episodes if ep.successes.any()]
        if max_episodes is not None:
            episodes = episodes[: int(max_episodes)]
        if not episodes:
            raise ValueError(f"dataset {dataset_id!r}: no episodes left (success_only={success_only})")
        env_id = read_metadata(dataset_id, root).get("env_id") or dataset_id
        if env_id not in task_ids:
            task_ids.append(env_id)
        obs, chunks, tasks = chunks_from_episodes(episodes, horizon, task_ids.index(env_id))
        obs_parts.append(obs)
        chunk_parts.append(chunks)
        task_parts.append(tasks)
        action_parts.append(np.concatenate([ep.actions for ep in episodes]))
    return ChunkData(
        observations=_concat(obs_parts),
        chunks=np.concatenate(chunk_parts),
        task_index=np.concatenate(task_parts),
        task_ids=tuple(task_ids),
        actions=np.concatenate(action_parts).astype(np.float32),
        sources=tuple(dataset_ids),
        options={"success_only": success_only, "max_episodes": max_episodes},
    )


def dataset_spaces(dataset_id: str, root: str | os.PathLike | None = None):
    """(observation_space, action_space) of a local dataset."""
    ds = load_dataset(dataset_id, root)
    return ds.observation_space, ds.action_space
