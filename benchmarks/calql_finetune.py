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
evaluations of 20 episodes (reset seeds 10000+) every 500 env steps, 3 seeds. Observations normalised
with the dataset's statistics (CalQLConfig default). The paper uses 256-512-wide networks, batch 256,
20k-1M offline steps and 0.2-1.5M online steps; this is a small-scale check of the trend, not a
reproduction.

The runs are one experiment spec (`spec_of`; with the defaults, benchmarks/specs/calql_finetune.json)
executed by the Ray Tune runner (`steergym run`): the datasets are collected once into
`--trials`/datasets, then one trial per task x algorithm x seed, one torch thread each, `--jobs` at
once. A re-run of the same command skips finished trials and resumes the others from their last
checkpoint. Needs the `ray` extra.

Usage (from the repository root):

    MUJOCO_GL=egl python benchmarks/calql_finetune.py            # ~45 min on 2 cores
    MUJOCO_GL=egl python benchmarks/calql_finetune.py --address auto --jobs 32   # on a Ray cluster

Writes benchmarks/results/calql_finetune.json and calql_finetune.png (atomically).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from run_context import cpu_name, difference_interval, git_state, load_average, save_figure, write_results  # benchmarks/ is on sys.path when run as a script

RESULTS = Path(__file__).parent / "results"
EVAL_SEED = 10_000  # evaluation reset seeds, disjoint from the datasets' collection seeds (1000+)
DATA_SEED = 1000


def dataset_name(env_id: str) -> str:
    return f"steergym/finetune-{env_id.split('/')[-1].removesuffix('-v0')}/mixed-v0"


def spec_of(args: argparse.Namespace):
    """This benchmark's runs as an experiment spec: the mixed datasets declared (collected by the runner),
    Cal-QL and CQL with the same settings (only `calibrated` differs)."""
    from steergym.experiments.spec import parse_spec

    hidden = list(args.hidden)
    config = {"batch_size": args.batch_size, "actor_hidden": hidden, "critic_hidden": hidden,
              "cql_alpha": args.cql_alpha, "reward_scale": 10.0, "reward_bias": -5.0, "failure_reward": 0.0,
              "log_every": max(1, args.pretrain_steps // 20)}
    tasks = [dataset_name(env_id) for env_id in args.envs]
    return parse_spec({
        "name": "calql_finetune",
        "tasks": tasks, "methods": ["calql", "cql"], "seeds": list(args.seeds),
        "datasets": {dataset_name(env_id): {"env": env_id, "episodes": args.episodes, "quality": "mixed",
                                            "seed": DATA_SEED} for env_id in args.envs},
        "budget": {"env_steps": args.env_steps, "eval_every": args.eval_every, "eval_episodes": args.eval_episodes,
                   "pretrain_steps": args.pretrain_steps, "eval_seed": EVAL_SEED},
        "config": {"calql": dict(config), "cql": dict(config)},
        "resources": {"cpus": args.threads, "gpus": 0}, "max_failures": 2})


def early_rates(curve: list[dict], env_steps: int) -> list[float]:
    """The success rates the dip is measured over: the online evaluations in the first quarter of
    the online budget (the offline rate itself when there are none)."""
    return [p["success_rate"] for p in curve[1:] if p["env_steps"] <= env_steps // 4] or [curve[0]["success_rate"]]


def run_row(trial: dict[str, Any], env_steps: int, folder: Path) -> dict[str, Any]:
    """A runner trial record as one of this benchmark's runs, with the dip (the paper's measure)."""
    curve = [{k: row.get(k) for k in ("env_steps", "success_rate", "mean_return", "train_success")}
             for row in trial["curve"]]
    offline, early = curve[0]["success_rate"], early_rates(curve, env_steps)
    online = [row["success_rate"] for row in curve[1:]]
    q_data = None
    if (folder / "offline.csv").is_file():
        with open(folder / "offline.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        q_data = float(rows[-1]["q_data"]) if rows and rows[-1].get("q_data") not in (None, "") else None
    return {"env": trial["env_id"], "algorithm": trial["method"], "seed": trial["seed"], "offline_success": offline,
            "dip": round(offline - min(early), 4), "final_success": curve[-1]["success_rate"],
            "mean_success": float(np.mean(online)) if online else offline, "curve": curve,
            "offline_q_data": q_data, "wall_s": round(trial["wall_s"], 1), "attempt": trial.get("attempt")}


def redrawn_dips(runs: list[dict], env_steps: int, episodes: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, runs): each run's dip recomputed with every success rate it is built from (the
    offline one and the early online ones) redrawn from its binomial over `episodes` episodes."""
    columns = []
    for run in runs:
        curve, early = run["curve"], early_rates(run["curve"], env_steps)
        draws = rng.binomial(episodes, np.array([curve[0]["success_rate"], *early]), (resamples, 1 + len(early))) / episodes
        columns.append(draws[:, 0] - draws[:, 1:].min(1))
    return np.stack(columns, 1)


def summarise(runs: list[dict], env_steps: int, eval_episodes: int, resamples: int = 10_000) -> dict:
    """Per task and algorithm: the seeds' mean of each figure, and whether the paper's claim holds on
    that task (Cal-QL dips less than CQL and ends at least as high). The CQL-minus-Cal-QL intervals
    hold the evaluation noise (success rates over `eval_episodes` episodes) as well as the seeds'."""
    out = {}
    for env_id in dict.fromkeys(r["env"] for r in runs):
        groups = {a: [r for r in runs if r["env"] == env_id and r["algorithm"] == a] for a in ("calql", "cql")}
        figures = {a: {key: round(float(np.mean([r[key] for r in rows])), 4)
                       for key in ("offline_success", "dip", "final_success", "mean_success")}
                   for a, rows in groups.items()}
        calql, cql = figures["calql"], figures["cql"]
        figures["claim_holds"] = bool(calql["dip"] < cql["dip"] and calql["final_success"] >= cql["final_success"])
        episodes = (eval_episodes, eval_episodes)
        rng = np.random.default_rng(1)
        figures["dip_cql_minus_calql"] = difference_interval(
            *([r["dip"] for r in groups[a]] for a in ("cql", "calql")), resamples=resamples, episodes=episodes,
            redrawn=tuple(redrawn_dips(groups[a], env_steps, eval_episodes, resamples, rng) for a in ("cql", "calql")))
        figures["final_success_cql_minus_calql"] = difference_interval(
            *([r["final_success"] for r in groups[a]] for a in ("cql", "calql")), resamples=resamples, episodes=episodes)
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
    fig.suptitle("\n".join(textwrap.wrap(f"Cal-QL vs CQL, offline -> online ({scale})", 24 * len(envs) + 40)), fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--threads", type=int, default=1, help="torch threads (Ray CPUs) per trial")
    parser.add_argument("--jobs", type=int, default=2, help="CPUs of the local Ray (trials at once = jobs / threads)")
    parser.add_argument("--address", default=None, help="a Ray cluster (auto or HOST:PORT) instead of a local Ray")
    parser.add_argument("--trials", type=Path, default=Path("runs/calql_finetune"),
                        help="the runner's folder: datasets/, trials/<task>/<algorithm>/seed<k>/")
    parser.add_argument("--out", type=Path, default=RESULTS / "calql_finetune.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from steergym.data import load_transitions
    from steergym.experiments.runner import run_experiment, trial_folder
    from steergym.experiments.spec import expand

    spec = spec_of(args)  # validated before anything starts
    command = "MUJOCO_GL=egl python benchmarks/calql_finetune.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started, load_start = time.perf_counter(), load_average()
    ran = run_experiment(spec, args.trials, address=args.address, num_cpus=None if args.address else args.jobs,
                         command=command)
    folders = {t.id: trial_folder(args.trials, t) for t in expand(spec, args.trials)}
    runs = [run_row(trial, args.env_steps, folders[trial["id"]]) for trial in ran["trials"]]
    runs.sort(key=lambda r: (args.envs.index(r["env"]), r["seed"], r["algorithm"] != "calql"))
    for run in runs:
        print(f"{run['env'].split('/')[-1]} {run['algorithm']:5s} seed {run['seed']}: offline "
              f"{run['offline_success']:.2f}, dip {run['dip']:+.2f}, final {run['final_success']:.2f}, "
              f"mean online {run['mean_success']:.2f} ({run['wall_s']:.0f} s)")
    datasets = {}
    for env_id in args.envs:
        data = load_transitions(dataset_name(env_id), root=Path(args.trials) / "datasets")
        datasets[env_id] = {"transitions": len(data), "episode_success": float(np.mean(
            [data.successes[data.episode_index == k].any() for k in np.unique(data.episode_index)]))}
    summary = summarise(runs, args.env_steps, args.eval_episodes) if runs and not ran["failed"] else {}
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
        "failed": ran["failed"],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "reward": "r' = 10 r - 5; sparse-failure rule for never-successful episodes (raw failure reward 0)",
        "command": command,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
        "seconds": round(time.perf_counter() - started, 1), "load_average_start": load_start,
        "load_average_end": load_average(), "torch": torch.__version__, **git_state(),
    }
    out = write_results(args.out, result)
    if summary:
        plot(runs, out.with_suffix(".png"), scale)
    print(f"wrote {out}" + (f" and {out.with_suffix('.png')}" if summary else f"; {len(ran['failed'])} trials failed"))
    return 0 if not ran["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
