"""Collect episodes of a registered task with the scripted expert at a chosen quality.

Qualities (the sub-optimality knobs of `steergym.policies.scripted.ScriptedExpert`):
    expert   noise 0.0, no random actions                 (near-perfect demonstrations)
    noisy    noise 0.3, random_action_prob 0.1            (succeeds less often, slower)
    failing  noise 1.0, random_action_prob 0.5            (rarely succeeds)
    mixed    40% expert, 30% noisy, 30% failing episodes  (what Cal-QL, PTR and V-GPS are about)
Episode k of a collection resets with seed `seed + k`; the expert's generator is seeded the same
way, so a collection is reproducible byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from steergym.data.dataset import Episode, write_dataset


@dataclass(frozen=True)
class Behaviour:
    """Knobs of the scripted expert for one quality label."""

    noise: float
    random_action_prob: float


BEHAVIOURS: dict[str, Behaviour] = {
    "expert": Behaviour(0.0, 0.0),
    "noisy": Behaviour(0.3, 0.1),
    "failing": Behaviour(1.0, 0.5),
}
MIXED_PROPORTIONS: dict[str, float] = {"expert": 0.4, "noisy": 0.3, "failing": 0.3}
QUALITIES = (*BEHAVIOURS, "mixed")


def episode_qualities(quality: str, episodes: int) -> list[str]:
    """The behaviour label of each of `episodes` episodes for a collection of `quality`."""
    if quality not in QUALITIES:
        raise ValueError(f"quality={quality!r} is not one of {list(QUALITIES)}")
    if quality != "mixed":
        return [quality] * episodes
    counts = {k: int(round(p * episodes)) for k, p in MIXED_PROPORTIONS.items()}
    counts["expert"] += episodes - sum(counts.values())
    # Smooth weighted round-robin: every prefix of the collection is mixed in the same proportions.
    assigned = dict.fromkeys(counts, 0)
    labels = []
    for i in range(episodes):
        label = max(counts, key=lambda q: counts[q] * (i + 1) / episodes - assigned[q])
        assigned[label] += 1
        labels.append(label)
    return labels


def record_episode(env: gym.Env, policy, seed: int, quality: str) -> Episode:
    """Run one episode of `policy` (an object with reset() and act(obs)) from reset(seed=seed)."""
    obs, _ = env.reset(seed=seed)
    policy.reset()
    observations, actions, rewards, terms, truncs, successes = [obs], [], [], [], [], []
    while True:
        action = np.asarray(policy.act(obs), dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        successes.append(bool(info["is_success"]))
        if terminated or truncated:
            break
    if isinstance(observations[0], dict):
        stacked: Any = {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    else:
        stacked = np.stack(observations)
    return Episode(
        observations=stacked,
        actions=np.stack(actions),
        rewards=np.asarray(rewards, dtype=np.float64),
        terminations=np.asarray(terms, dtype=bool),
        truncations=np.asarray(truncs, dtype=bool),
        successes=np.asarray(successes, dtype=bool),
        seed=seed,
        quality=quality,
    )


def record_seeds(env: gym.Env, tasks: list[tuple[int, str]], seed: int = 0, progress: bool = False,
                 desc: str = "collect") -> list[Episode]:
    """Episode k of a collection for each (k, quality label) in `tasks`: reset with seed + k, the
    expert at that label's knobs seeded with seed + k. Each episode depends on (k, label, seed)
    only, so a collection can be split over processes (`steergym.distributed.collect_distributed`)."""
    # Deferred so that `import steergym.data` does not import torch (steergym.policies does).
    from steergym.policies.scripted import make_expert

    recorded = []
    for k, label in tqdm(tasks, desc=desc, disable=not progress):
        behaviour = BEHAVIOURS[label]
        expert = make_expert(env, behaviour.noise, behaviour.random_action_prob, seed=seed + k)
        recorded.append(record_episode(env, expert, seed + k, label))
    return recorded


def collect_episodes(
    env_id: str,
    episodes: int,
    quality: str = "expert",
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[list[Episode], gym.Env]:
    """Roll out the scripted expert of `env_id`; returns the episodes and the (open) env."""
    labels = episode_qualities(quality, episodes)
    env = gym.make(env_id, **(env_kwargs or {}))
    try:
        recorded = record_seeds(env, list(enumerate(labels)), seed, progress, f"collect {env_id} ({quality})")
    except BaseException:
        env.close()
        raise
    return recorded, env


def write_collection(
    dataset_id: str,
    recorded: list[Episode],
    env: gym.Env,
    quality: str,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    root=None,
    overwrite: bool = False,
):
    """Write the episodes of a collection (episode k reset with seed + k) as a Minari dataset with
    steergym's metadata; `env` is an env of the task (its spaces and spec go into the dataset)."""
    extra = {"quality": quality, "seed": seed, "env_kwargs": env_kwargs or {},
             "behaviours": {k: vars(v) for k, v in BEHAVIOURS.items()}}
    return write_dataset(dataset_id, recorded, env, root=root, extra_metadata=extra, overwrite=overwrite)


def collect(
    env_id: str,
    episodes: int,
    quality: str,
    dataset_id: str,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    root=None,
    overwrite: bool = False,
    progress: bool = True,
):
    """Collect and write a Minari dataset; returns (folder, episodes)."""
    recorded, env = collect_episodes(env_id, episodes, quality, seed, env_kwargs, progress)
    try:
        folder = write_collection(dataset_id, recorded, env, quality, seed, env_kwargs, root, overwrite)
    finally:
        env.close()
    return folder, recorded
