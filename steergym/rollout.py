"""Episode loops and scoring, below every trainer: `evaluate` a policy on a registered task (success
rate with a Wilson 95% interval, returns, videos) and the trainers' periodic `score_episodes`.

Episode i starts from `env.reset(seed=seed + i)`, and the policy's sampling is reseeded with that
same seed after the reset ("random" reseeds the action space, a policy's `reset(seed=...)` its
noise), so every episode depends on its reset seed only: two evaluations with the same seed see the
same episodes, and the episodes can be split over processes (`steergym.distributed`) and merged in
seed order with the same result. An episode counts as a success when `info["is_success"]` was true at any step
(with the default `terminate_on_success=True` that is the step the episode ends on).

This module names no policy but "random"; `steergym.bench.evaluate.evaluate` adds the task's
scripted "expert" (the experts live in `steergym.policies`, a layer above this one).
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from steergym.registry import make_env

VIDEO_SUFFIXES = (".mp4", ".gif")
Z_95 = 1.959963984540054  # standard normal quantile for a two-sided 95% interval


@dataclass
class EvalResult:
    """Outcome of `evaluate`.

    Attributes:
        env_id: the evaluated gymnasium id.
        policy: policy name ("expert", "random") or the callable's name.
        episodes, successes: counts; success_rate = successes / episodes.
        ci_low, ci_high: Wilson score 95% interval of the success rate.
        mean_return: mean undiscounted episode return.
        mean_length: mean episode length in control steps.
        seed: episode i was reset with seed + i.
        env_kwargs: options passed to `gymnasium.make`.
        video: path of the written video, if any.
        failed_seeds: reset seeds of the episodes that did not succeed.
        returns, lengths: per-episode return and length, in seed order.
    """

    env_id: str
    policy: str
    episodes: int
    successes: int
    success_rate: float
    ci_low: float
    ci_high: float
    mean_return: float
    mean_length: float
    seed: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    video: str | None = None
    failed_seeds: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (default 95%).

    Unlike the normal approximation it stays inside [0, 1] and is not zero-width at 0/n or n/n.
    """
    if n <= 0:
        raise ValueError(f"wilson_interval: need at least one trial, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: successes={successes} must be in [0, n={n}]")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denom
    # The exact interval touches 0 at 0/n and 1 at n/n; set those ends exactly, not rounded.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def evaluate(
    env_id: str,
    policy: str | Callable[[Any], Any],
    episodes: int = 20,
    seed: int = 0,
    video: str | os.PathLike | None = None,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    video_episodes: int = 3,
    make_policy: Callable[[gym.Env, int], Any] | None = None,
) -> EvalResult:
    """Run `episodes` episodes of `policy` on `env_id` and report the success rate.

    Args:
        env_id: a registered id, e.g. "steergym/WidowXPutCarrotOnPlate-v0".
        policy: "random" (uniform actions, the action space reseeded with each episode's reset
            seed), a callable obs -> action, or an object with `act(obs)` (and optionally `reset()`
            or `reset(seed=...)`, called after every `env.reset` with the episode's reset seed);
            with `make_policy`, the name the result reports.
        episodes: number of episodes (>= 1); episode i is reset with seed + i.
        video: optional .mp4 or .gif path; the first `video_episodes` episodes are recorded from
            `render_mode="rgb_array"` at the env's `metadata["render_fps"]`, each ending with one
            second of its last frame framed green (success) or red (failure).
        env_kwargs: options for `gymnasium.make` (obs_mode, reward_type, render_size, ...).
        progress: show a tqdm progress bar on stderr.
        video_episodes: how many leading episodes the video holds.
        make_policy: builds the policy (`act(obs)`, `reset()` or `reset(seed=...)`, called after
            every `env.reset` with the episode's reset seed) from the open env and `seed`, e.g. a
            scripted expert that reads the env's simulator; `policy` is then only its name.

    Raises:
        ValueError: unknown env id or policy name, bad env option, episodes < 1, bad video path.
    """
    if int(episodes) < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    episodes = int(episodes)
    env_kwargs = dict(env_kwargs or {})
    video_path = _check_video_path(video) if video is not None else None
    if video_path is not None:
        env_kwargs.setdefault("render_mode", "rgb_array")
        if env_kwargs["render_mode"] != "rgb_array":
            raise ValueError(f"a video needs render_mode='rgb_array', got {env_kwargs['render_mode']!r}")
    if make_policy is None and isinstance(policy, str) and policy != "random":
        raise ValueError(f"unknown policy {policy!r}; valid policies: random, a callable or an object "
                         "with act(obs)")

    runner = EpisodeRunner(env_id, policy, seed, env_kwargs, make_policy)
    recorder = None
    try:
        if video_path is not None:
            recorder = _VideoRecorder(video_path, runner.env.metadata.get("render_fps", 30))
        outcomes: list[EpisodeOutcome] = []
        successes = 0
        with _progress_bar(episodes, env_id, runner.policy_name, progress) as bar:
            for i in range(episodes):
                outcomes.append(runner.run(seed + i, recorder if i < video_episodes else None))
                successes += int(outcomes[-1].success)
                bar.set_postfix(success=f"{successes}/{i + 1}", refresh=False)
                bar.update(1)
        if recorder is not None:
            recorder.finish()
            recorder = None
    finally:
        if recorder is not None:
            recorder.abort()
        runner.close()
    return summarize(env_id, runner.policy_name, seed, outcomes, env_kwargs, video_path)


@dataclass(frozen=True)
class EpisodeOutcome:
    """One evaluated episode: its reset seed, return, length and whether it succeeded."""

    seed: int
    ret: float
    length: int
    success: bool


class EpisodeRunner:
    """An open env and a resolved policy that run episodes by reset seed: what `evaluate` loops over,
    and what each worker of `steergym.distributed.evaluate_distributed` holds (same code, same results).

    `policy` and `make_policy` are as in `evaluate`; `seed` is the one `evaluate` gets (it seeds the
    policy's construction; every episode then reseeds the policy with its own reset seed).
    """

    def __init__(self, env_id: str, policy: str | Callable[[Any], Any], seed: int = 0,
                 env_kwargs: dict[str, Any] | None = None,
                 make_policy: Callable[[gym.Env, int], Any] | None = None) -> None:
        self.env = make_env(env_id, **dict(env_kwargs or {}))
        try:
            if make_policy is not None:
                built = make_policy(self.env, seed)
                self.act, self.policy_name = built.act, str(policy)
                self.reset_for_episode = lambda episode_seed: reset_policy(built, episode_seed)
            else:
                built = policy
                self.act, self.reset_for_episode, self.policy_name = _resolve_policy(policy, self.env, seed)
            self.env = with_observation_history(built, self.env)
        except BaseException:
            self.env.close()
            raise

    def run(self, seed: int, recorder: _VideoRecorder | None = None) -> EpisodeOutcome:
        """The episode from `env.reset(seed=seed)`."""
        ret, length, success = run_episode(self.env, self.act, self.reset_for_episode, seed, recorder)
        return EpisodeOutcome(int(seed), ret, length, success)

    def close(self) -> None:
        self.env.close()


def summarize(env_id: str, policy_name: str, seed: int, outcomes: list[EpisodeOutcome],
              env_kwargs: dict[str, Any] | None = None, video: str | os.PathLike | None = None) -> EvalResult:
    """The EvalResult of `outcomes` (episodes in seed order, the first reset with `seed`)."""
    if not outcomes:
        raise ValueError("summarize: no episodes")
    returns = [o.ret for o in outcomes]
    lengths = [o.length for o in outcomes]
    successes = sum(int(o.success) for o in outcomes)
    low, high = wilson_interval(successes, len(outcomes))
    return EvalResult(
        env_id=env_id,
        policy=policy_name,
        episodes=len(outcomes),
        successes=successes,
        success_rate=successes / len(outcomes),
        ci_low=low,
        ci_high=high,
        mean_return=float(np.mean(returns)),
        mean_length=float(np.mean(lengths)),
        seed=seed,
        env_kwargs={k: v for k, v in (env_kwargs or {}).items() if k != "render_mode"},
        video=str(video) if video else None,
        failed_seeds=[o.seed for o in outcomes if not o.success],
        returns=returns,
        lengths=lengths,
    )


def score_episodes(env: gym.Env, act: Callable[[Any], Any], episodes: int, seed: int = 0,
                   reset_for_episode: Callable[[int], None] | None = None) -> dict[str, float]:
    """What the trainers' periodic evaluations report: `episodes` episodes of `act(obs) -> action` on
    an open `env`, reset seeds seed + i (`reset_for_episode(seed + i)` after each reset, e.g. to
    reseed a policy's sampling); success (info["is_success"] at any step) rate and mean return."""
    results = [run_episode(env, act, reset_for_episode or _no_reset, seed + i, None) for i in range(int(episodes))]
    return {"success_rate": float(np.mean([r[2] for r in results])),
            "mean_return": float(np.mean([r[0] for r in results]))}


# ---------------------------------------------------------------------------------- internals
def _no_reset(seed: int) -> None:
    return None


def run_episode(env, act, reset_for_episode, seed: int, recorder: _VideoRecorder | None):
    obs, info = env.reset(seed=seed)
    reset_for_episode(seed)
    success = bool(info.get("is_success", False))
    ret, length = 0.0, 0
    if recorder is not None:
        recorder.add(env.render())
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(act(obs))
        ret += float(reward)
        length += 1
        success = success or bool(info.get("is_success", False))
        done = terminated or truncated
        if recorder is not None:
            recorder.add(env.render())
    if recorder is not None:
        recorder.end_episode(success)
    return ret, length, success


def with_observation_history(policy: Any, env: gym.Env) -> gym.Env:
    """`env` as `policy` reads it: `policy.wrap_env(env)` where the policy has one (a LeRobot policy with
    n_obs_steps > 1 stacks that many observations), else `env` itself."""
    wrap_env = getattr(policy, "wrap_env", None)
    return env if wrap_env is None else wrap_env(env)


def reset_policy(policy: Any, seed: int | None) -> None:
    """Call `policy.reset(seed=seed)`, or `policy.reset()` for resets that take no seed."""
    reset = getattr(policy, "reset", None)
    if not callable(reset):
        return
    try:
        params = inspect.signature(reset).parameters
    except (TypeError, ValueError):
        params = {}
    if "seed" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
        reset(seed=seed)
    else:
        reset()


def _resolve_policy(policy, env: gym.Env, seed: int):
    """(act, reset, name) for "random", a Policy-like object or a callable."""
    if policy == "random":
        # Reseeded with every episode's reset seed, so an episode's actions depend on its seed only.
        env.action_space.seed(seed)
        return (lambda obs: env.action_space.sample()), (lambda episode_seed: env.action_space.seed(episode_seed)), "random"
    if hasattr(policy, "act"):
        # Policies whose reset takes a seed get the episode's reset seed, so each episode's
        # sampling noise depends only on its seed (not on the episodes before it).
        name = getattr(policy, "name", None) or type(policy).__name__
        return policy.act, (lambda episode_seed: reset_policy(policy, episode_seed)), name
    if callable(policy):
        return policy, (lambda episode_seed: None), getattr(policy, "__name__", type(policy).__name__)
    raise ValueError(
        "policy must be 'random', a callable or an object with act(obs); "
        f"got {policy!r}"
    )


def _progress_bar(total: int, env_id: str, policy_name: str, enabled: bool):
    return tqdm(total=total, desc=f"{env_id} [{policy_name}]", unit="ep", disable=not enabled, leave=False)


def _check_video_path(video: str | os.PathLike) -> Path:
    path = Path(video)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"video path {str(video)!r} must end in one of {', '.join(VIDEO_SUFFIXES)}")
    if path.is_dir():
        raise ValueError(f"video path {str(video)!r} is a directory")
    return path


class _VideoRecorder:
    """Streams frames to a temporary file next to `path`, renamed into place by `finish()`."""

    def __init__(self, path: Path, fps: float) -> None:
        import imageio  # only videos need it

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fps = path, float(fps)
        self.tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        if path.suffix.lower() == ".gif":
            self.writer = imageio.get_writer(self.tmp, mode="I", duration=1000.0 / self.fps, loop=0)
        else:
            # Even sizes suffice for H.264 (yuv420p); the default of 16 rescales many sizes.
            self.writer = imageio.get_writer(self.tmp, fps=self.fps, macro_block_size=2)
        self.last: np.ndarray | None = None
        self.episode = 0

    def add(self, frame: np.ndarray) -> None:
        self.last = np.asarray(frame, dtype=np.uint8)
        self.writer.append_data(self.last)

    def end_episode(self, success: bool) -> None:
        """Hold the last frame for one second, framed and labelled with the outcome."""
        self.episode += 1
        if self.last is None:
            return
        label = f"episode {self.episode}: {'success' if success else 'failure'}"
        held = outcome_frame(self.last, success, label)
        for _ in range(max(1, round(self.fps))):
            self.writer.append_data(held)
        self.last = None

    def finish(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Close and delete the partial file (the evaluation failed)."""
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def outcome_frame(frame: np.ndarray, success: bool, label: str) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont  # only videos need it

    color = (40, 200, 60) if success else (220, 40, 40)
    img = Image.fromarray(frame).convert("RGB")
    draw = ImageDraw.Draw(img)
    h, w = frame.shape[:2]
    border = max(2, min(h, w) // 40)
    for k in range(border):
        draw.rectangle((k, k, w - 1 - k, h - 1 - k), outline=color)
    try:
        font = ImageFont.load_default(size=max(10, h // 16))
    except TypeError:  # Pillow < 10.1 has one bitmap size
        font = ImageFont.load_default()
    x0, y0, x1, y1 = draw.textbbox((2 * border, 2 * border), label, font=font)
    draw.rectangle((x0 - 2, y0 - 2, x1 + 2, y1 + 2), fill=color)
    draw.text((2 * border, 2 * border), label, fill=(255, 255, 255), font=font)
    return np.asarray(img)
