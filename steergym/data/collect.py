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


def collect_episodes(
    env_id: str,
    episodes: int,
    quality: str = "expert",
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[list[Episode], gym.Env]:
    """Roll out the scripted expert of `env_id`; returns the episodes and the (open) env."""
    # Deferred so that `import steergym.data` does not import torch (steergym.policies does).
    from steergym.policies.scripted import make_expert

    env = gym.make(env_id, **(env_kwargs or {}))
    labels = episode_qualities(quality, episodes)
    recorded = []
    for k, label in enumerate(tqdm(labels, desc=f"collect {env_id} ({quality})", disable=not progress)):
        behaviour = BEHAVIOURS[label]
        expert = make_expert(env, behaviour.noise, behaviour.random_action_prob, seed=seed + k)
        recorded.append(record_episode(env, expert, seed + k, label))
    return recorded, env


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
        extra = {"quality": quality, "seed": seed, "env_kwargs": env_kwargs or {},
                 "behaviours": {k: vars(v) for k, v in BEHAVIOURS.items()}}
        folder = write_dataset(dataset_id, recorded, env, root=root, extra_metadata=extra, overwrite=overwrite)
    finally:
        env.close()
    return folder, recorded
