"""Cal-QL vs CQL, offline pre-training then online fine-tuning, on a WidowX task with mixed-quality data.

The Cal-QL paper's claim (reference/algorithms.md section 1.6): fine-tuning from a CQL
initialisation shows an initial "unlearning" dip below the offline policy's success, Cal-QL does
not, and Cal-QL reaches higher success at equal online budget. This script measures, per seed and
algorithm (same data, same seed, same settings; only `calibrated` differs):

    offline_success   evaluation success after pre-training (online step 0)
    dip               offline_success - the lowest success in the first quarter of the online budget
    final_success     success at the end of the online budget
    mean_success      mean of the online evaluations (area under the curve)

Data: `steergym.data.collect` with quality "mixed" (40% expert, 30% noisy, 30% failing scripted
episodes), collected into a temporary folder. Rewards as Cal-QL's sparse scripts use them:
r' = 10 r - 5 (success {+5}, every other step -5) and the sparse-failure rule for episodes that
never succeed (raw failure reward 0).

Default scale is a small CPU run (state it when quoting numbers): 128-wide networks, batch 128,
4,000 offline steps, 2,000 online env steps, evaluations of 10 episodes every 400 env steps,
2 seeds. Observations normalised with the dataset's statistics (CalQLConfig default). The paper uses 256-512-wide networks, batch 256, 20k-1M offline steps and 0.2-1.5M online
steps; this is a smoke-scale check of the trend, not a reproduction.

Usage (from the repository root):

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/calql_finetune.py --seeds 0 1

Writes benchmarks/results/calql_finetune.json and calql_finetune.png (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from run_context import cpu_name, git_state, load_average  # benchmarks/ is on sys.path when run as a script

RESULTS = Path(__file__).parent / "results"


def run_one(env_id: str, data, calibrated: bool, seed: int, args: argparse.Namespace) -> dict:
    import gymnasium as gym

    from steergym.algorithms.calql import CalQL, CalQLConfig

    hidden = tuple(args.hidden)
    config = CalQLConfig(calibrated=calibrated, batch_size=args.batch_size, actor_hidden=hidden,
                         critic_hidden=hidden, cql_alpha=args.cql_alpha, reward_scale=10.0, reward_bias=-5.0,
                         failure_reward=0.0, log_every=max(1, args.pretrain_steps // 20))
    env, eval_env = gym.make(env_id), gym.make(env_id)
    try:
        agent = CalQL(env, config, seed=seed)
        start = time.perf_counter()
        agent.pretrain(data, args.pretrain_steps, progress=False)
        offline_s = time.perf_counter() - start
        agent.learn(env, args.env_steps, eval_env=eval_env, eval_every=args.eval_every,
                    eval_episodes=args.eval_episodes, eval_seed=10_000, progress=not args.quiet)
        wall = time.perf_counter() - start
    finally:
        env.close()
        eval_env.close()
    curve = [{k: row[k] for k in ("env_steps", "success_rate", "mean_return", "train_success")} for row in agent.curve]
    offline = curve[0]["success_rate"]
    early = [row["success_rate"] for row in curve[1:] if row["env_steps"] <= args.env_steps // 4] or [offline]
    online = [row["success_rate"] for row in curve[1:]]
    return {"algorithm": "calql" if calibrated else "cql", "seed": seed, "offline_success": offline,
            "dip": round(offline - min(early), 4), "final_success": curve[-1]["success_rate"],
            "mean_success": float(np.mean(online)) if online else offline, "curve": curve,
            "offline_q_data": agent.history[-1]["q_data"] if agent.history else None,
            "offline_wall_s": round(offline_s, 1), "wall_s": round(wall, 1)}


def summarise(runs: list[dict]) -> dict:
    out = {}
    for algorithm in ("calql", "cql"):
        rows = [r for r in runs if r["algorithm"] == algorithm]
        out[algorithm] = {key: round(float(np.mean([r[key] for r in rows])), 4)
                          for key in ("offline_success", "dip", "final_success", "mean_success")}
    return out


def plot(runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for algorithm, color in (("calql", "tab:blue"), ("cql", "tab:red")):
        rows = [r for r in runs if r["algorithm"] == algorithm]
        steps = [p["env_steps"] for p in rows[0]["curve"]]
        values = np.array([[p["success_rate"] for p in r["curve"]] for r in rows])
        for r in values:
            ax.plot(steps, r, color=color, alpha=0.25, lw=1)
        ax.plot(steps, values.mean(0), color=color, lw=2, label=f"{'Cal-QL' if algorithm == 'calql' else 'CQL'} "
                f"(mean of {len(rows)} seeds)")
    ax.set_xlabel("online env steps")
    ax.set_ylabel("evaluation success rate")
    ax.set_ylim(-0.02, 1.02)
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=8)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.partial.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="steergym/WidowXLiftCube-v0")
    parser.add_argument("--episodes", type=int, default=40, help="episodes in the mixed dataset")
    parser.add_argument("--pretrain-steps", type=int, default=4_000)
    parser.add_argument("--env-steps", type=int, default=2_000)
    parser.add_argument("--eval-every", type=int, default=400)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cql-alpha", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "calql_finetune.json")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from steergym.data import collect, load_transitions

    with tempfile.TemporaryDirectory() as root:
        name = "steergym/finetune/mixed-v0"
        collect(args.env, args.episodes, "mixed", name, seed=1000, root=root, progress=not args.quiet)
        data = load_transitions(name, root=root)
    runs = []
    for seed in args.seeds:
        for calibrated in (True, False):
            run = run_one(args.env, data, calibrated, seed, args)
            runs.append(run)
            print(f"{run['algorithm']:5s} seed {seed}: offline {run['offline_success']:.2f}, dip {run['dip']:+.2f}, "
                  f"final {run['final_success']:.2f}, mean online {run['mean_success']:.2f} ({run['wall_s']:.0f} s)")
    summary = summarise(runs)
    for algorithm, values in summary.items():
        print(f"{algorithm:5s} mean: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
    scale = (f"{args.episodes} mixed episodes, {args.hidden} nets, batch {args.batch_size}, {args.pretrain_steps} "
             f"offline steps, {args.env_steps} online env steps, eval {args.eval_episodes} episodes every "
             f"{args.eval_every} steps, seeds {args.seeds}, CPU ({args.threads} thread)")
    result = {
        "what": f"Cal-QL vs CQL offline -> online on {args.env} with mixed-quality data (small CPU scale)",
        "scale": scale,
        "summary": summary,
        "dataset_episode_success": float(np.mean([data.successes[data.episode_index == k].any()
                                                  for k in np.unique(data.episode_index)])),
        "dataset_transitions": len(data),
        "runs": runs,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "reward": "r' = 10 r - 5; sparse-failure rule for never-successful episodes (raw failure reward 0)",
        "command": "MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/calql_finetune.py " + " ".join(argv or sys.argv[1:]),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
        "load_average": load_average(), "torch": torch.__version__, **git_state(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.partial")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, args.out)
    plot(runs, args.out.with_suffix(".png"), f"{args.env}: Cal-QL vs CQL ({scale})")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
