"""Evaluate a policy on a registered task by name: the scripted "expert", "random", or any policy.

The episode loop, the Wilson interval and the result live in `steergym.rollout` (below the
trainers, which score with it too); this module adds the task's scripted expert and keeps the
names users import from here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from steergym.registry import make_env
from steergym.rollout import EvalResult, score_episodes, wilson_interval
from steergym.rollout import evaluate as evaluate_policy

POLICY_NAMES = ("expert", "random")

__all__ = ["POLICY_NAMES", "EvalResult", "evaluate", "make_env", "policy_maker", "score_episodes", "wilson_interval"]


def evaluate(
    env_id: str,
    policy: str | Callable[[Any], Any] = "expert",
    episodes: int = 20,
    seed: int = 0,
    video: str | os.PathLike | None = None,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    video_episodes: int = 3,
    expert_kwargs: dict[str, Any] | None = None,
) -> EvalResult:
    """Run `episodes` episodes of `policy` on `env_id` and report the success rate.

    Args:
        env_id: a registered id, e.g. "steergym/WidowXPutCarrotOnPlate-v0".
        policy: "expert" (the task's scripted expert), "random" (uniform actions, the action space
            reseeded with each episode's reset seed), a callable obs -> action, or an object with
            `act(obs)` (and optionally `reset()` or `reset(seed=...)`, called after every
            `env.reset` with the episode's reset seed).
        episodes: number of episodes (>= 1); episode i is reset with seed + i.
        video: optional .mp4 or .gif path; the first `video_episodes` episodes are recorded from
            `render_mode="rgb_array"` at the env's `metadata["render_fps"]`, each ending with one
            second of its last frame framed green (success) or red (failure).
        env_kwargs: options for `gymnasium.make` (obs_mode, reward_type, render_size, ...).
        progress: show a tqdm progress bar on stderr.
        video_episodes: how many leading episodes the video holds.
        expert_kwargs: sub-optimality knobs of the scripted expert (`noise`,
            `random_action_prob`); only with policy="expert". Its generator is reseeded with each
            episode's reset seed.

    Raises:
        ValueError: unknown env id or policy name, bad env option, episodes < 1, bad video path.
    """
    make_policy = policy_maker(policy, expert_kwargs)
    return evaluate_policy(env_id, policy, episodes=episodes, seed=seed, video=video, env_kwargs=env_kwargs,
                           progress=progress, video_episodes=video_episodes, make_policy=make_policy)


def policy_maker(policy: Any, expert_kwargs: dict[str, Any] | None = None) -> Callable[[Any, int], Any] | None:
    """The `make_policy` that `steergym.rollout` needs for `policy` (the scripted expert's builder
    for "expert", else None), after checking the name and that `expert_kwargs` go with "expert"."""
    if isinstance(policy, str) and policy not in POLICY_NAMES:
        valid = ", ".join(POLICY_NAMES)
        raise ValueError(f"unknown policy {policy!r}; valid policies: {valid} or a callable")
    if expert_kwargs and policy != "expert":
        raise ValueError(f"expert_kwargs apply to policy='expert' only, got policy={policy!r}")
    return _expert_maker(dict(expert_kwargs or {})) if policy == "expert" else None


def _expert_maker(knobs: dict[str, Any]) -> Callable[[Any, int], Any]:
    """(env, seed) -> the task's scripted expert with the sub-optimality `knobs`."""
    # Deferred so that `import steergym.bench` does not import torch (steergym.policies does).
    from steergym.policies.scripted import make_expert

    return lambda env, seed: make_expert(env, seed=seed, **knobs)
