"""`steergym demo`: steer a shipped diffusion policy with DSRL on a CPU and show before/after.

1. Evaluate the shipped base policy (its usual Gaussian noise) on reset seeds 0..N-1.
2. Train DSRL (Stable-Baselines3 SAC in the policy's latent-noise space) for a budget in env steps,
   evaluating the steered policy on the way (the first point is the untrained noise policy).
3. Evaluate the steered policy (the actor's mean noise) on the same reset seeds as the base policy.
4. Print what was run and the before/after table, and write under `out`: results.json,
   learning_curve.png, side_by_side.mp4 (base left, steered right, same reset seeds), and the run
   folder (logs, policy/).

The defaults (`DemoSettings`) were chosen with `benchmarks/demo.py`: on 3 training seeds the steered
policy's 95% interval lies above the base policy's on 100 evaluation seeds, in under 8 minutes on 2
cores. With an env-step budget and a fixed number of torch threads the demo is deterministic given its
seed: a re-run on the same machine prints the same numbers. A `minutes` budget trades that for a
bounded wall time (how far training gets depends on how busy the machine is).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
from tqdm.auto import tqdm

from steergym.bench.plots import success_curve_plot
from steergym.bench.video import episode_frames, side_by_side
from steergym.rollout import evaluate


@dataclass(frozen=True)
class DemoSettings:
    """The demo's defaults, measured by `benchmarks/demo.py` (results in benchmarks/results/demo.json)."""

    policy: str = "widowx-lift-diffusion"  # shipped, 0.28 over seeds 0-99; DSRL lifts it fastest (steering_100k.json)
    env_steps: int = 30_000  # primitive env steps of DSRL training (a chunk of 4 counts 4)
    gradient_steps: int = 1  # SAC updates per agent step (UTD). The paper's 20-30 needs a GPU; at 2-4 with
    #   2 x 256 tanh networks lift got worse at 12-20k env steps (0.14-0.44 on 100 seeds, 4 runs)
    episodes: int = 100  # evaluation episodes, reset seeds 0..episodes-1, for base and steered policy
    eval_every: int = 3_000  # env steps between learning-curve points
    curve_episodes: int = 30  # evaluation episodes per learning-curve point
    validation_seed: int = 1_000  # curve points use reset seeds 1000.., disjoint from the final evaluation's
    keep_best: bool = True  # keep the actor of the best curve point: SAC's success swings by +-0.2 between
    #   points at this budget (steering_100k.json), so the last actor is a lottery; selecting on the
    #   validation seeds and reporting on seeds 0..99 keeps the final figure unbiased
    threads: int = 2  # torch CPU threads; fixed, so the numbers do not depend on the machine's core count


DEFAULTS = DemoSettings()
DEFAULT_POLICY = DEFAULTS.policy


@dataclass
class DemoResult:
    env_id: str
    policy: str
    base_success: float
    steered_success: float
    untrained_success: float
    episodes: int
    env_steps: int
    train_s: float
    out: str
    table: str
    separated: bool  # the steered policy's 95% interval lies entirely above the base policy's


def run_demo(
    policy: str = DEFAULTS.policy,
    env_steps: int | None = DEFAULTS.env_steps,
    minutes: float | None = None,
    episodes: int = DEFAULTS.episodes,
    out: str | os.PathLike = "steergym-demo",
    seed: int = 0,
    video_episodes: int = 3,
    progress: bool = True,
    threads: int | None = DEFAULTS.threads,
    gradient_steps: int = DEFAULTS.gradient_steps,
    eval_every: int | None = None,
    keep_best: bool = DEFAULTS.keep_best,
    config: Any = None,
    log: Any = print,
) -> DemoResult:
    """Run the demo and return its figures.

    Args:
        policy: shipped generative policy name or checkpoint folder.
        env_steps: DSRL training budget in primitive env steps (None: `minutes` alone).
        minutes: optional wall-clock training budget; training stops at whichever budget ends first.
        episodes: evaluation episodes of the base and of the steered policy (reset seeds 0..episodes-1).
        out: output folder (results.json, learning_curve.png, side_by_side.mp4).
        seed: training seed (SB3 networks and sampling, training resets).
        video_episodes: episodes in the side-by-side video.
        threads: torch CPU threads (None: torch's default, which depends on the machine).
        gradient_steps: SAC updates per agent step (UTD), unless `config` is given.
        eval_every: env steps between learning-curve points (default: a tenth of the budget).
        keep_best: steer with the actor of the best learning-curve point (on validation seeds
            1000.., never the final evaluation's seeds) instead of the last one.
    """
    # Deferred so that importing this module (the CLI reads DEFAULTS) does not import torch.
    import torch

    from steergym.algorithms.steering import SteeringConfig, train_steering
    from steergym.policies.zoo import resolve_policy, shipped_policies

    if env_steps is None and minutes is None:
        raise ValueError("give a training budget: env_steps, minutes or both")
    if env_steps is not None and (isinstance(env_steps, bool) or int(env_steps) < 1):
        raise ValueError(f"env_steps must be an integer >= 1, got {env_steps!r}")
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes!r}")
    if int(episodes) < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes!r}")
    if threads is not None:
        torch.set_num_threads(int(threads))
    out = Path(out)
    base, env_id = resolve_policy(policy, None, seed=seed)
    if not hasattr(base, "sample"):
        raise ValueError(f"policy {policy!r} is not a generative (diffusion/flow) policy; DSRL steers its noise")
    base.name = policy
    config = config or SteeringConfig(gradient_steps=int(gradient_steps))
    if eval_every is None:
        eval_every = max(1, int(env_steps) // 10) if env_steps is not None else DEFAULTS.eval_every
    noise = "x".join(map(str, base.noise_shape))
    budget = " and ".join(b for b in (f"{env_steps:,d} env steps" if env_steps is not None else "",
                                      f"{minutes:g} min" if minutes is not None else "") if b)

    log(f"[1/4] base policy {policy} on {env_id}: {episodes} episodes (reset seeds 0..{episodes - 1})")
    before = evaluate(env_id, base, episodes=episodes, seed=0, progress=progress)
    log(f"      success {before.success_rate:.2f}")
    log(f"[2/4] DSRL: SAC in the {noise} noise space, {budget}, UTD {config.gradient_steps}, seed {seed}")

    curve_episodes = min(DEFAULTS.curve_episodes, int(episodes))

    def report(row: dict[str, float]) -> None:
        line = (f"      {row['env_steps']:>7,d} env steps  {row['wall_s']:6.0f} s  "
                f"eval success {row['success_rate']:.2f} ({curve_episodes} validation episodes)")
        (tqdm.write if progress and log is print else log)(line)  # tqdm.write keeps the bar intact

    run = train_steering(env_id, "dsrl", base, config, env_steps=env_steps,
                         time_budget_s=60.0 * minutes if minutes is not None else None,
                         eval_every=int(eval_every), eval_episodes=curve_episodes,
                         eval_seed=DEFAULTS.validation_seed, seed=seed, out=out / "run", progress=progress,
                         on_eval=report, deterministic=True, keep_best=keep_best)
    steered = run.policy
    steered.name = f"DSRL-steered {policy}"
    log(f"[3/4] steered policy: {episodes} episodes on the same reset seeds")
    after = evaluate(env_id, steered, episodes=episodes, seed=0, progress=progress)

    log("[4/4] video and learning curve")
    video, plot = _video_and_plot(env_id, policy, base, steered, run.curve, before.success_rate, out,
                                  video_episodes, curve_episodes)
    separated = after.ci_low > before.ci_high
    table = _table([
        ("base policy (noise w ~ N(0, I))", before.success_rate, before.ci_low, before.ci_high, episodes),
        ("DSRL-steered (noise from SAC)", after.success_rate, after.ci_low, after.ci_high, episodes),
    ])
    header = _header(env_id, policy, noise, config, seed, run, torch.get_num_threads(), episodes, minutes,
                     curve_episodes if keep_best else None)
    verdict = ("The intervals do not overlap: steering improved the policy by more than evaluation noise."
               if separated else
               "The intervals overlap: at this budget the gain (if any) is within evaluation noise; "
               "a larger --env-steps gives DSRL more to learn from.")
    shipped = shipped_policies().get(policy)
    summary = {
        "env_id": env_id, "policy": policy, "episodes": episodes, "seeds": f"0..{episodes - 1}",
        "training_seed": seed, "threads": torch.get_num_threads(),
        "budget": {"env_steps": env_steps, "minutes": minutes},
        "config": asdict(config),
        "base": before.to_dict(), "steered": after.to_dict(), "separated": separated,
        "untrained_actor_success": run.curve[0]["success_rate"],
        "shipped_success_100_episodes": (shipped.success_rate.get(env_id) if shipped else None),
        "dsrl": {"env_steps": run.env_steps, "agent_steps": run.agent_steps, "train_s": round(run.wall_s, 1),
                 "keep_best": keep_best, "selected_env_steps": run.selected_env_steps,
                 "validation_seeds": f"{DEFAULTS.validation_seed}..{DEFAULTS.validation_seed + curve_episodes - 1}",
                 "curve": run.curve},
        "files": {"video": str(video), "plot": str(plot), "run": str(out / "run"),
                  "policy": str(out / "run" / "policy")},
    }
    tmp = out / ".results.json.partial"
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, out / "results.json")
    log("")
    log(header)
    log("")
    log(table)
    log(verdict)
    log(f"\nvideo {video}\nplot  {plot}\nsteered policy {out / 'run' / 'policy'} "
        f"(steergym eval --policy {out / 'run' / 'policy'})")
    return DemoResult(env_id, policy, before.success_rate, after.success_rate, run.curve[0]["success_rate"],
                      int(episodes), run.env_steps, run.wall_s, str(out), table, separated)


def _video_and_plot(env_id: str, policy: str, base: Any, steered: Any, curve: list[dict[str, float]],
                    base_success: float, out: Path, video_episodes: int, curve_episodes: int) -> tuple[Path, Path]:
    fps = 5.0  # the WidowX control rate
    rows = [[episode_frames(env_id, base, s), episode_frames(env_id, steered, s)] for s in range(video_episodes)]
    video = side_by_side(rows, ["base", "DSRL"], fps, out / "side_by_side.mp4")
    plot = success_curve_plot(
        {f"DSRL (actor's mean noise, {curve_episodes} validation episodes per point)": [curve]},
        out / "learning_curve.png", title=f"DSRL on {env_id.split('/')[-1]} ({policy})",
        reference_lines={"base policy": base_success},
    )
    return video, plot


def _header(env_id: str, policy: str, noise: str, config: Any, seed: int, run: Any, threads: int,
            episodes: int, minutes: float | None, selected_from: int | None) -> str:
    spec = gym.spec(env_id)
    env = gym.make(env_id)
    instruction = getattr(env.unwrapped, "instruction", "")
    env.close()
    timing = " (time budget: numbers vary with the machine's load)" if minutes is not None else ""
    return "\n".join([
        "What ran:",
        f"  task      {env_id}" + (f' "{instruction}"' if instruction else "")
        + f", at most {spec.max_episode_steps} steps at 5 Hz; success = the task's own check",
        f"  base      {policy}: a frozen diffusion policy, its initial noise w ~ N(0, I)",
        f"  steering  DSRL: SB3 SAC picks w in [-{config.noise_bound:g}, {config.noise_bound:g}]^({noise}); "
        f"{run.env_steps:,d} env steps, UTD {config.gradient_steps}, seed {seed}, {threads} threads, "
        f"{run.wall_s:.0f} s{timing}",
        *([f"  selection the actor of the best learning-curve point ({run.selected_env_steps:,d} env steps), "
           f"judged on {selected_from} validation seeds from {DEFAULTS.validation_seed}, not the seeds below"]
          if selected_from is not None else []),
        f"  eval      both policies on the same {episodes} reset seeds (0..{episodes - 1}); "
        "95% CI = Wilson interval of the success rate",
    ])


def _table(rows: list[tuple[str, float, float, float, int]]) -> str:
    head = f"{'policy':<33} {'success':>8}  {'95% CI':<15} episodes"
    lines = [head, "-" * len(head)]
    for name, rate, low, high, n in rows:
        lines.append(f"{name:<33} {rate:>8.2f}  [{low:.2f}, {high:.2f}]   {n}")
    return "\n".join(lines)
