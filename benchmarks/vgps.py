"""V-GPS on the shipped generalist: success on the four SIMPLER-style WidowX tasks with and without
value-guided re-ranking of its samples.

The V-GPS paper's claim (reference/algorithms.md section 3.4): one value function, trained offline
on mixed-quality multi-task data, improves a frozen generalist by re-ranking K sampled actions at
test time (Octo-small on SIMPLER WidowX: 0.30 -> 0.38 average, gains concentrated on some tasks).
Our goal: V-GPS (K = 10) improves success on at least 3 of the 4 tasks.

Protocol:
1. data: `--data-episodes` episodes per task of quality "mixed" (40% expert, 30% noisy, 30% failing
   scripted episodes; reset seeds 2,000,000 + i, disjoint from the evaluation seeds), sparse 0/1
   success rewards;
2. value function: `steergym.algorithms.vgps.train_value_function` (Cal-QL with V-GPS's settings,
   task one-hot conditioning) for `--steps` offline gradient steps;
3. evaluation: the shipped `widowx-generalist-diffusion` bound to each task, alone and wrapped in
   `ValueGuidedPolicy(K, temperature)` scoring each candidate chunk's first action, `--episodes`
   episodes on the same reset seeds 0..N-1 (the index's evaluation seeds).

Usage (from the repository root):

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/vgps.py                # ~25 min on 2 CPU cores
    python benchmarks/vgps.py --value-function runs/vgps/value_function      # reuse a trained critic

Writes benchmarks/results/vgps.json and vgps.png (atomically) and keeps the value function in
--work (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from run_context import cpu_name, git_state, load_average, save_figure, write_results  # benchmarks/ is on sys.path when run as a script

RESULTS = Path(__file__).parent / "results"
GENERALIST = "widowx-generalist-diffusion"
TASKS = (
    "steergym/WidowXPutSpoonOnTowel-v0",
    "steergym/WidowXPutCarrotOnPlate-v0",
    "steergym/WidowXStackGreenOnYellowBlock-v0",
    "steergym/WidowXPutEggplantInBasket-v0",
)
DATA_SEED = 2_000_000


def train(args: argparse.Namespace, work: Path) -> tuple[object, dict]:
    from steergym.algorithms.vgps import train_value_function, vgps_calql_config
    from steergym.data import collect, load_transitions

    started = time.perf_counter()
    data = {}
    for task in args.tasks:
        name = f"vgps/{task.split('/')[1].removesuffix('-v0')}/mixed{args.data_episodes}-v0"
        if not (work / "datasets" / name).exists():
            collect(task, args.data_episodes, "mixed", name, seed=DATA_SEED, root=work / "datasets",
                    progress=not args.quiet)
        data[task] = load_transitions(name, root=work / "datasets")
    collected = time.perf_counter() - started
    hidden = tuple(args.hidden)
    config = vgps_calql_config(batch_size=args.batch_size, critic_hidden=hidden, actor_hidden=hidden,
                               log_every=max(1, args.steps // 50))
    started = time.perf_counter()
    value = train_value_function(data, args.steps, config=config, task_ids=tuple(args.tasks), seed=args.seed,
                                 progress=not args.quiet)
    value.save(work / "value_function")
    history = value.ptr.agent.history
    info = {"data": {task: {"transitions": len(t), "episodes": int(t.episode_index.max() + 1),
                            "success_episodes": int(sum(t.successes[t.episode_index == k].any()
                                                        for k in np.unique(t.episode_index)))}
                     for task, t in data.items()},
            "collect_seconds": round(collected, 1), "train_seconds": round(time.perf_counter() - started, 1),
            "updates_per_second": round(args.steps / (time.perf_counter() - started), 2),
            "config": config.to_dict(), "steps": args.steps,
            "td_loss_first_last": [history[0]["td_loss"], history[-1]["td_loss"]] if history else None,
            "path": str(work / "value_function")}
    return value, info


def evaluate_task(task: str, value, args: argparse.Namespace) -> dict:
    from steergym.bench.evaluate import evaluate
    from steergym.policies.value_guided import ValueGuidedPolicy
    from steergym.policies.zoo import load_shipped

    base = load_shipped(GENERALIST).for_task(task)
    row = {}
    for label, policy in (("base", base),
                          ("vgps", ValueGuidedPolicy(base, value.critic(task), num_samples=args.num_samples,
                                                     temperature=args.temperature, seed=args.seed,
                                                     action_steps=args.rerank_every))):
        started = time.perf_counter()
        result = evaluate(task, policy, episodes=args.episodes, seed=0, progress=not args.quiet)
        row[label] = {"success_rate": result.success_rate, "mean_length": result.mean_length, "ci95": [result.ci_low, result.ci_high],
                      "seconds": round(time.perf_counter() - started, 1)}
    row["gain"] = round(row["vgps"]["success_rate"] - row["base"]["success_rate"], 4)
    return row


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    x = np.arange(len(tasks))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for offset, label in ((-0.2, "base"), (0.2, "vgps")):
        rates = [results["tasks"][t][label]["success_rate"] for t in tasks]
        ax.bar(x + offset, rates, 0.4, label="generalist" if label == "base" else
               f"+ V-GPS (K={results['settings']['num_samples']})")
    ax.set_xticks(x, [t.split("/")[1].removeprefix("WidowX").removesuffix("-v0") for t in tasks], fontsize=8)
    ax.set_ylabel(f"success ({results['settings']['episodes']} episodes)")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("V-GPS re-ranking of the shipped generalist")
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--data-episodes", type=int, default=100, help="mixed-quality episodes per task")
    parser.add_argument("--steps", type=int, default=10_000, help="offline gradient steps of the value function")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--num-samples", type=int, default=10, help="K candidates per decision")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: argmax")
    parser.add_argument("--rerank-every", type=int, default=1,
                        help="control steps between re-rankings (1: V-GPS's setting; 4: once per chunk)")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per task and policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--value-function", default=None, metavar="DIR", help="use this trained value function")
    parser.add_argument("--work", default=None, metavar="DIR", help="keep datasets and the value function here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "vgps.json"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from steergym.algorithms.vgps import ValueFunction

    started, load_start = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        if args.value_function:
            value, training = ValueFunction.load(args.value_function), {"path": args.value_function, "reused": True}
        else:
            value, training = train(args, work)
        tasks = {}
        for task in args.tasks:
            tasks[task] = evaluate_task(task, value, args)
            print(f"{task}: base {tasks[task]['base']['success_rate']:.2f} -> V-GPS "
                  f"{tasks[task]['vgps']['success_rate']:.2f}", file=sys.stderr)
    improved = sum(row["gain"] > 0 for row in tasks.values())
    results = {
        "meta": {"command": "python benchmarks/vgps.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
                 "torch_threads": args.threads, "seconds": round(time.perf_counter() - started, 1),
                 "load_average_start": load_start, "load_average_end": load_average(), **git_state()},
        "settings": {"policy": GENERALIST, "num_samples": args.num_samples, "temperature": args.temperature,
                     "rerank_every": args.rerank_every,
                     "episodes": args.episodes, "eval_seeds": f"0..{args.episodes - 1}",
                     "scored_action": "first action of each candidate chunk (V-GPS)"},
        "value_function": training,
        "tasks": tasks,
        "summary": {"tasks_improved": improved, "of": len(tasks),
                    "mean_base": float(np.mean([r["base"]["success_rate"] for r in tasks.values()])),
                    "mean_vgps": float(np.mean([r["vgps"]["success_rate"] for r in tasks.values()])),
                    "goal": "V-GPS improves success on at least 3 of 4 tasks",
                    "goal_met": improved >= 3 and len(tasks) == 4},
    }
    out = write_results(args.out, results)
    plot(results, out.with_suffix(".png"))
    print(json.dumps(results["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
