"""`steergym demo`: steer a shipped diffusion policy with DSRL on a CPU and show before/after.

1. Evaluate the shipped base policy (its usual Gaussian noise) on seeds 0..N-1.
2. Train DSRL (Stable-Baselines3 SAC in the policy's latent-noise space) for a time budget,
   evaluating the steered policy on the way (the first point is the untrained noise policy).
   The noise policy is sampled, seeded per episode, as the DSRL code evaluates it.
3. Evaluate the steered policy on the same seeds as the base policy.
4. Print the table and write, under `out`: results.json, learning_curve.png, side_by_side.mp4
   (base left, steered right, same reset seeds), and the run folder (logs, policy/).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_POLICY = "widowx-carrot-diffusion"


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


def run_demo(
    policy: str = DEFAULT_POLICY,
    minutes: float = 6.0,
    episodes: int = 50,
    out: str | os.PathLike = "steergym-demo",
    seed: int = 0,
    video_episodes: int = 3,
    progress: bool = True,
    threads: int | None = None,
    config: Any = None,
    log: Any = print,
) -> DemoResult:
    """Run the demo; `minutes` is the DSRL training budget (evaluations during training included).

    The whole command takes about `minutes` + 1.5 minutes at the defaults on 2 CPU cores.
    """
    import torch

    from steergym.algorithms.steering import SteeringConfig, train_steering
    from steergym.bench.evaluate import evaluate
    from steergym.bench.plots import success_curve_plot
    from steergym.bench.video import episode_frames, side_by_side
    from steergym.policies.zoo import resolve_policy, shipped_policies

    if not minutes > 0:
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
    log(f"[1/4] base policy {policy} on {env_id}: {episodes} episodes (seeds 0..{episodes - 1})")
    before = evaluate(env_id, base, episodes=episodes, seed=0, progress=progress)
    log(f"      success {before.success_rate:.2f}")

    budget_s = 60.0 * float(minutes)
    log(f"[2/4] DSRL (SAC in the {'x'.join(map(str, base.noise_shape))} noise space), {minutes:g} min budget")
    config = config or SteeringConfig()
    eval_every = 2_000

    def report(row: dict[str, float]) -> None:
        from tqdm.auto import tqdm

        line = (f"      {row['env_steps']:>7,d} env steps  {row['wall_s']:6.0f} s  "
                f"eval success {row['success_rate']:.2f} (20 episodes)")
        (tqdm.write if progress and log is print else log)(line)  # tqdm.write keeps the bar intact

    run = train_steering(env_id, "dsrl", base, config, env_steps=None, time_budget_s=budget_s,
                         eval_every=eval_every, eval_episodes=20, eval_seed=0, seed=seed, out=out / "run",
                         progress=progress, on_eval=report)
    steered = run.policy
    steered.name = f"DSRL-steered {policy}"
    log(f"[3/4] steered policy: {episodes} episodes on the same seeds")
    after = evaluate(env_id, steered, episodes=episodes, seed=0, progress=progress)

    log("[4/4] video and learning curve")
    shipped = shipped_policies().get(policy)
    fps = 5.0
    rows = [[episode_frames(env_id, base, s), episode_frames(env_id, steered, s)] for s in range(video_episodes)]
    video = side_by_side(rows, ["base", "DSRL"], fps, out / "side_by_side.mp4")
    plot = success_curve_plot(
        {"DSRL (noise policy sampled, 20 episodes per point)": [run.curve]}, out / "learning_curve.png",
        title=f"DSRL on {env_id.split('/')[-1]} ({policy})",
        reference_lines={"base policy": before.success_rate},
    )
    untrained = run.curve[0]["success_rate"]
    table = _table([
        ("base policy (w ~ N(0, I))", before.success_rate, before.ci_low, before.ci_high, episodes),
        ("DSRL, after training", after.success_rate, after.ci_low, after.ci_high, episodes),
    ])
    result = DemoResult(env_id, policy, before.success_rate, after.success_rate, untrained, int(episodes),
                        run.env_steps, run.wall_s, str(out), table)
    summary = {
        "env_id": env_id, "policy": policy, "episodes": episodes, "seeds": f"0..{episodes - 1}",
        "base": before.to_dict(), "steered": after.to_dict(),
        "untrained_actor_success_20_episodes": untrained,
        "shipped_success_100_episodes": (shipped.success_rate.get(env_id) if shipped else None),
        "dsrl": {"env_steps": run.env_steps, "agent_steps": run.agent_steps, "train_s": round(run.wall_s, 1),
                 "curve": run.curve},
        "files": {"video": str(video), "plot": str(plot), "run": str(out / "run"),
                  "policy": str(out / "run" / "policy")},
    }
    tmp = out / ".results.json.partial"
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, out / "results.json")
    log("")
    log(table)
    log(f"(the untrained noise policy scored {untrained:.2f} on the first 20 seeds; the noise policy is "
        "sampled with a per-episode seed, as DSRL evaluates it)")
    log(f"DSRL: {run.env_steps:,d} env steps in {run.wall_s:.0f} s")
    log(f"video {video}\nplot  {plot}\nsteered policy {out / 'run' / 'policy'} "
        f"(steergym eval --policy {out / 'run' / 'policy'})")
    return result


def _table(rows: list[tuple[str, float, float, float, int]]) -> str:
    head = f"{'policy':<28} {'success':>8}  {'95% CI':<15} episodes"
    lines = [head, "-" * len(head)]
    for name, rate, low, high, n in rows:
        lines.append(f"{name:<28} {rate:>8.2f}  [{low:.2f}, {high:.2f}]   {n}")
    return "\n".join(lines)
