"""Cal-QL vs CQL, offline pre-training then online fine-tuning, on WidowX tasks with mixed-quality data.

The Cal-QL paper's claim (reference/algorithms.md section 1.6): fine-tuning from a CQL
initialisation shows an initial "unlearning" dip below the offline policy's success, Cal-QL does
not, and Cal-QL reaches higher success at equal online budget. This script measures, per task, seed
and algorithm (same data, same seed, same settings; only `calibrated` differs):

    offline_success   evaluation success after pre-training (online step 0)
    dip               offline_success - the lowest success in the first quarter of the online budget
    final_success     success at the end of the online budget
    mean_success      mean of the online evaluations (area under the curve)

Data: `steergym.data.collect` with quality "mixed" (40% expert, 30% noisy, 30% failing scripted
episodes), one dataset per task, collected into a temporary folder. Rewards as Cal-QL's sparse
scripts use them: r' = 10 r - 5 (success {+5}, every other step -5) and the sparse-failure rule for
episodes that never succeed (raw failure reward 0).

Default scale is a small CPU run (state it when quoting numbers): WidowX LiftCube and PushCube,
40 mixed episodes each, 128-wide networks, batch 128, 4,000 offline steps, 6,000 online env steps,
evaluations of 20 episodes every 500 env steps, 3 seeds, runs two at a time with one torch thread
each. Observations normalised with the dataset's statistics (CalQLConfig default). The paper uses
256-512-wide networks, batch 256, 20k-1M offline steps and 0.2-1.5M online steps; this is a
small-scale check of the trend, not a reproduction.

Usage (from the repository root):

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/calql_finetune.py          # ~45 min on 2 cores

Writes benchmarks/results/calql_finetune.json and calql_finetune.png (atomically).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from run_context import cpu_name, git_state, load_average, save_figure, write_results  # benchmarks/ is on sys.path when run as a script

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
                    eval_episodes=args.eval_episodes, eval_seed=10_000, progress=not args.quiet and args.jobs == 1)
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
    """Per task and algorithm: the seeds' mean of each figure, and whether the paper's claim holds on
    that task (Cal-QL dips less than CQL and ends at least as high)."""
    out = {}
    for env_id in dict.fromkeys(r["env"] for r in runs):
        figures = {}
        for algorithm in ("calql", "cql"):
            rows = [r for r in runs if r["env"] == env_id and r["algorithm"] == algorithm]
            figures[algorithm] = {key: round(float(np.mean([r[key] for r in rows])), 4)
                                  for key in ("offline_success", "dip", "final_success", "mean_success")}
        calql, cql = figures["calql"], figures["cql"]
        figures["claim_holds"] = bool(calql["dip"] < cql["dip"] and calql["final_success"] >= cql["final_success"])
        out[env_id] = figures
    return out


def plot(runs: list[dict], path: Path, scale: str) -> None:
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r["env"] for r in runs))
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 4), squeeze=False)
    for ax, env_id in zip(axes[0], envs):
        for algorithm, color in (("calql", "tab:blue"), ("cql", "tab:red")):
            rows = [r for r in runs if r["env"] == env_id and r["algorithm"] == algorithm]
            steps = [p["env_steps"] for p in rows[0]["curve"]]
            values = np.array([[p["success_rate"] for p in r["curve"]] for r in rows])
            for r in values:
                ax.plot(steps, r, color=color, alpha=0.25, lw=1)
            ax.plot(steps, values.mean(0), color=color, lw=2,
                    label=f"{'Cal-QL' if algorithm == 'calql' else 'CQL'} (mean of {len(rows)} seeds)")
        ax.set_title(env_id.split("/")[-1], fontsize=9)
        ax.set_xlabel("online env steps (0 = after offline pre-training)")
        ax.set_ylabel("evaluation success rate")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
    fig.suptitle("\n".join(textwrap.wrap(f"Cal-QL vs CQL, offline -> online ({scale})", 120)), fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def collect_dataset(env_id: str, episodes: int, root: str, progress: bool):
    from steergym.data import collect, load_transitions

    name = f"steergym/finetune-{env_id.split('/')[-1].removesuffix('-v0')}/mixed-v0"
    collect(env_id, episodes, "mixed", name, seed=1000, root=root, progress=progress)
    return load_transitions(name, root=root)


def run_job(env_id: str, calibrated: bool, seed: int, args: argparse.Namespace, root: str) -> dict:
    """One run in a worker process with its own torch threads; the dataset is re-read from `root`."""
    torch.set_num_threads(args.threads)
    from steergym.data import load_transitions

    data = load_transitions(f"steergym/finetune-{env_id.split('/')[-1].removesuffix('-v0')}/mixed-v0", root=root)
    return {"env": env_id, **run_one(env_id, data, calibrated, seed, args)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", default=["steergym/WidowXLiftCube-v0", "steergym/WidowXPushCube-v0"])
    parser.add_argument("--episodes", type=int, default=40, help="episodes in each task's mixed dataset")
    parser.add_argument("--pretrain-steps", type=int, default=4_000)
    parser.add_argument("--env-steps", type=int, default=6_000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cql-alpha", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    parser.add_argument("--out", type=Path, default=RESULTS / "calql_finetune.json")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    started, load_start = time.perf_counter(), load_average()
    runs, datasets = [], {}
    with tempfile.TemporaryDirectory() as root:
        for env_id in args.envs:
            data = collect_dataset(env_id, args.episodes, root, progress=not args.quiet)
            datasets[env_id] = {
                "transitions": len(data),
                "episode_success": float(np.mean([data.successes[data.episode_index == k].any()
                                                  for k in np.unique(data.episode_index)]))}
        jobs = [(env_id, calibrated, seed) for env_id in args.envs for seed in args.seeds for calibrated in (True, False)]
        context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch/MuJoCo state
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
            futures = [pool.submit(run_job, *job, args, root) for job in jobs]
            for future in as_completed(futures):
                run = future.result()
                runs.append(run)
                print(f"{run['env'].split('/')[-1]} {run['algorithm']:5s} seed {run['seed']}: offline "
                      f"{run['offline_success']:.2f}, dip {run['dip']:+.2f}, final {run['final_success']:.2f}, "
                      f"mean online {run['mean_success']:.2f} ({run['wall_s']:.0f} s)", flush=True)
    runs.sort(key=lambda r: (args.envs.index(r["env"]), r["seed"], r["algorithm"] != "calql"))
    summary = summarise(runs)
    for env_id, figures in summary.items():
        for algorithm in ("calql", "cql"):
            print(f"{env_id.split('/')[-1]} {algorithm:5s} mean: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in figures[algorithm].items()))
    scale = (f"{args.episodes} mixed episodes per task, {args.hidden} nets, batch {args.batch_size}, "
             f"{args.pretrain_steps} offline steps, {args.env_steps} online env steps, eval {args.eval_episodes} "
             f"episodes every {args.eval_every} steps, seeds {args.seeds}, CPU ({args.threads} thread per run)")
    result = {
        "what": "Cal-QL vs CQL offline -> online on WidowX tasks with mixed-quality data (small CPU scale)",
        "scale": scale,
        "goal": "Cal-QL shows no initial drop below its offline success while CQL does, and reaches higher "
                "success at equal online budget (Cal-QL paper); claim_holds per task = Cal-QL's mean dip is "
                "smaller than CQL's and its mean final success is at least CQL's",
        "summary": summary,
        "datasets": datasets,
        "runs": runs,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "reward": "r' = 10 r - 5; sparse-failure rule for never-successful episodes (raw failure reward 0)",
        "command": "MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/calql_finetune.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
        "seconds": round(time.perf_counter() - started, 1), "load_average_start": load_start,
        "load_average_end": load_average(), "torch": torch.__version__, **git_state(),
    }
    out = write_results(args.out, result)
    plot(runs, out.with_suffix(".png"), scale)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
