"""PTR: a new WidowX task from 10 demonstrations, with and without multi-task offline pre-training.

The PTR paper's claim (reference/algorithms.md section 2.4): multi-task offline RL pre-training on
prior robot data lets offline RL learn a new task from about 10 demonstrations, where methods that
see only the new task's demos do worse. Compared here, all on the same 10 target demos and the same
evaluation seeds:

    ptr       task-conditioned CQL (PTR's settings) pre-trained on the prior tasks' mixed-quality
              data, then adapted with the 10 demos in 10% of every batch (`steergym train ptr`)
    cql       the same CQL settings, single task, on the 10 demos only, as many gradient steps
    bc        a diffusion policy behaviour-cloned on the 10 demos (`steergym train bc` recipe)

Tasks (all 27-D state observations, so one agent covers them): prior = spoon on towel, stack
blocks, eggplant in basket, push cube (`--prior-episodes` mixed-quality episodes each: 40% expert,
30% noisy, 30% failing scripted episodes); target = carrot on plate (`--demos` expert episodes).
Data reset seeds start at 3,000,000, disjoint from the evaluation seeds 0..N-1.

Default scale is a CPU run (state it when quoting numbers): PTR's networks and batch (64), 10,000
pre-training + 5,000 adaptation steps (the paper: 160k + more on a TPU pod), 50 evaluation
episodes, seeds 0 and 1. Usage (from the repository root):

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/ptr.py                 # ~40 min on 2 CPU cores

A long budget spreads over several stops (and processes) with `--work DIR`: each method's result per
seed is kept in DIR/results/ with the settings it ran under and read back by a re-run with the same
settings; PTR and single-task CQL checkpoint their offline training every `--save-every` steps and
resume from there (bit for bit: the checkpoints carry the samplers' states). Two processes can share
DIR, one seed each (`--seeds 0`, `--seeds 1`), and a last run with all seeds gathers the results:

    python benchmarks/ptr.py --work /work/ptr_work --pretrain-steps 80000 --adapt-steps 20000 --seeds 0
    python benchmarks/ptr.py --work /work/ptr_work --pretrain-steps 80000 --adapt-steps 20000 --seeds 1
    python benchmarks/ptr.py --work /work/ptr_work --pretrain-steps 80000 --adapt-steps 20000   # gathers

Writes benchmarks/results/ptr.json and ptr.png (atomically).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from run_context import cpu_name, difference_interval, git_state, load_average, save_figure, write_results  # benchmarks/ is on sys.path when run as a script

RESULTS = Path(__file__).parent / "results"
PRIOR = (
    "steergym/WidowXPutSpoonOnTowel-v0",
    "steergym/WidowXStackGreenOnYellowBlock-v0",
    "steergym/WidowXPutEggplantInBasket-v0",
    "steergym/WidowXPushCube-v0",
)
TARGET = "steergym/WidowXPutCarrotOnPlate-v0"
DATA_SEED = 3_000_000


def dataset_name(task: str, kind: str) -> str:
    return f"ptr/{task.split('/')[1].removesuffix('-v0')}/{kind}-v0"


def collect_data(args: argparse.Namespace, root: Path) -> None:
    from steergym.data import collect

    for k, task in enumerate(args.prior):
        if not (root / dataset_name(task, "mixed")).exists():
            collect(task, args.prior_episodes, "mixed", dataset_name(task, "mixed"), seed=DATA_SEED + 10_000 * k,
                    root=root, progress=not args.quiet)
    if not (root / dataset_name(args.target, "demos")).exists():
        collect(args.target, args.demos, "expert", dataset_name(args.target, "demos"), seed=DATA_SEED + 90_000,
                root=root, progress=not args.quiet)


def run_ptr_method(args, root: Path, work: Path, seed: int) -> dict:
    from steergym.algorithms.multitask_runs import OFFLINE, run_ptr
    from steergym.algorithms.ptr import ptr_calql_config

    started = time.perf_counter()
    folder = work / f"ptr-{seed}"
    resume = (folder / OFFLINE / "config.json").is_file()
    if folder.exists() and not resume:  # a run killed before its first checkpoint: start clean
        shutil.rmtree(folder)
    ptr = run_ptr([dataset_name(t, "mixed") for t in args.prior], dataset_name(args.target, "demos"),
                  folder, pretrain_steps=args.pretrain_steps, adapt_steps=args.adapt_steps,
                  demos=args.demos, calql=ptr_calql_config(log_every=500), seed=seed,
                  eval_episodes=args.episodes, save_every=args.save_every, root=root, resume=resume,
                  progress=not args.quiet)
    run = json.loads((folder / "run.json").read_text())
    return {"success_rate": run["offline_eval"]["success_rate"], "ci95": run["offline_eval"]["ci95"],
            "updates": ptr.agent.offline_steps, "seconds": round(time.perf_counter() - started, 1),
            "resumed": resume, "td_loss_last": ptr.agent.history[-1]["td_loss"] if ptr.agent.history else None}


def run_cql_method(args, root: Path, work: Path, seed: int) -> dict:
    import gymnasium as gym

    from steergym.algorithms.calql import CalQL
    from steergym.algorithms.multitask_runs import load_task_datasets
    from steergym.algorithms.ptr import ptr_calql_config
    from steergym.bench.evaluate import evaluate

    started = time.perf_counter()
    (_, demos), = load_task_datasets([dataset_name(args.target, "demos")], root, max_episodes=args.demos).items()
    latest = work / f"cql-{seed}" / "latest"
    resume = (latest / "config.json").is_file()
    if resume:
        agent = CalQL.load(latest)
    else:
        env = gym.make(args.target)
        agent = CalQL(env, ptr_calql_config(log_every=500), seed=seed)
        env.close()
    total = args.pretrain_steps + args.adapt_steps
    while agent.offline_steps < total:  # in slices, each checkpointed (without a replay: offline only)
        agent.pretrain(demos, min(args.save_every, total - agent.offline_steps), progress=not args.quiet)
        agent.save(latest, replay=False)
    result = evaluate(args.target, lambda obs: agent.predict(obs)[0], episodes=args.episodes, seed=0,
                      progress=False)
    return {"success_rate": result.success_rate, "ci95": [result.ci_low, result.ci_high],
            "updates": agent.offline_steps, "seconds": round(time.perf_counter() - started, 1), "resumed": resume}


def run_bc_method(args, root: Path, work: Path, seed: int) -> dict:
    from steergym.algorithms.bc import BCConfig, train_bc
    from steergym.bench.evaluate import evaluate

    started = time.perf_counter()
    shutil.rmtree(work / f"bc-{seed}", ignore_errors=True)  # a few minutes: a killed run starts again
    trainer = train_bc([dataset_name(args.target, "demos")], "diffusion", work / f"bc-{seed}",
                       config=BCConfig(steps=args.bc_steps, seed=seed), max_episodes=args.demos, root=root,
                       progress=not args.quiet)
    result = evaluate(args.target, trainer.ema, episodes=args.episodes, seed=0, progress=False)
    return {"success_rate": result.success_rate, "ci95": [result.ci_low, result.ci_high],
            "updates": args.bc_steps, "seconds": round(time.perf_counter() - started, 1)}


def cached(path: Path, settings: dict, compute) -> dict:
    """`compute()`'s result, kept at `path` with the settings it ran under; a later run with the same
    settings reads it back instead of computing again (another setting computes and replaces it)."""
    from steergym.algorithms.run_files import write_json

    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("settings") == settings:
            return saved["result"]
    result = compute()
    write_json(path, {"settings": settings, "result": result})
    return result


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results["summary"]["mean_success"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    means = [results["summary"]["mean_success"][m] for m in methods]
    ax.bar(methods, means, color=["tab:blue", "tab:red", "tab:gray"][: len(methods)])
    for i, m in enumerate(methods):
        rates = [run[m]["success_rate"] for run in results["runs"]]
        ax.scatter([i] * len(rates), rates, color="black", zorder=3, s=12)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"success on the new task ({results['settings']['episodes']} episodes)")
    ax.set_title(f"{results['settings']['target'].split('/')[1]} from {results['settings']['demos']} demos",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prior", nargs="+", default=list(PRIOR))
    parser.add_argument("--target", default=TARGET)
    parser.add_argument("--prior-episodes", type=int, default=50, help="mixed-quality episodes per prior task")
    parser.add_argument("--demos", type=int, default=10, help="expert demos of the target task")
    parser.add_argument("--pretrain-steps", type=int, default=10_000)
    parser.add_argument("--adapt-steps", type=int, default=5_000)
    parser.add_argument("--bc-steps", type=int, default=3_000)
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=["ptr", "cql", "bc"], choices=["ptr", "cql", "bc"])
    parser.add_argument("--work", default=None, metavar="DIR",
                        help="keep datasets, runs and per-seed results here (a re-run resumes; default: a temporary folder)")
    parser.add_argument("--save-every", type=int, default=5_000, help="offline steps between PTR/CQL checkpoints")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "ptr.json"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    started, load_start = time.perf_counter(), load_average()
    settings = {"prior": args.prior, "target": args.target, "prior_episodes": args.prior_episodes,
                "demos": args.demos, "pretrain_steps": args.pretrain_steps, "adapt_steps": args.adapt_steps,
                "bc_steps": args.bc_steps, "episodes": args.episodes, "eval_seeds": f"0..{args.episodes - 1}"}
    tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]  # runs of these settings
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        root = work / "datasets"
        collect_data(args, root)
        runs_dir = work / f"runs-{tag}"
        for seed in args.seeds:
            row = {"seed": seed}
            for method in args.methods:
                compute = {"ptr": lambda: run_ptr_method(args, root, runs_dir, seed),
                           "cql": lambda: run_cql_method(args, root, runs_dir, seed),
                           "bc": lambda: run_bc_method(args, root, runs_dir, seed)}[method]
                row[method] = cached(runs_dir / "results" / f"{method}-seed{seed}.json", {**settings, "seed": seed},
                                     compute)
                print(f"seed {seed} {method}: {row[method]['success_rate']:.2f}", file=sys.stderr)
            runs.append(row)
    mean = {m: float(np.mean([r[m]["success_rate"] for r in runs])) for m in args.methods}
    # PTR minus each other method, over seeds and each rate's binomial over the evaluation episodes
    ptr_minus = {m: difference_interval([r["ptr"]["success_rate"] for r in runs], [r[m]["success_rate"] for r in runs],
                                        episodes=(args.episodes, args.episodes))
                 for m in args.methods if "ptr" in args.methods and m != "ptr"}
    results = {
        "meta": {"command": "python benchmarks/ptr.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
                 "torch_threads": args.threads, "seconds": round(time.perf_counter() - started, 1),
                 "load_average_start": load_start, "load_average_end": load_average(), **git_state()},
        "settings": settings,
        "runs": runs,
        "summary": {"mean_success": mean,
                    "goal": "PTR beats BC and single-task CQL on the same 10 demos",
                    "goal_met": "ptr" in mean and all(mean["ptr"] > v for m, v in mean.items() if m != "ptr"),
                    "ptr_minus": ptr_minus,
                    "goal_decided": bool(ptr_minus) and all(d["decided"] and d["mean"] > 0 for d in ptr_minus.values())},
    }
    out = write_results(args.out, results)
    plot(results, out.with_suffix(".png"))
    print(json.dumps(results["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
