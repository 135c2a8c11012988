"""DSRL vs residual SAC vs SAC from scratch vs the base policy, at equal env-step budgets.

For each task (a shipped single-task diffusion policy's task), method and seed, `train_steering`
runs Stable-Baselines3 SAC for `--env-steps` primitive env steps and evaluates the steered policy
(DSRL: the noise policy sampled with per-episode seeds, as DSRL evaluates; residual and SAC: the
mean action) every `--eval-every` env steps on reset seeds 0..`--eval-episodes`-1. The base
policy (its usual Gaussian noise) is evaluated on the same seeds. Also measured: the wrappers'
overhead per env step against the bare env (`--sections overhead`).

The runs are one experiment spec (`spec_of`; the same as benchmarks/specs/steering.json) executed by
the Ray Tune runner (`steergym run`, `steergym.experiments`): one trial per policy x method x seed,
one torch thread each, `--jobs` at once; the trials' run folders go to `--trials` (default
runs/steering), and a re-run skips the trials that finished there. Needs the `ray` extra.

Usage (from the repository root):

    python benchmarks/steering.py                                    # 2 tasks x 3 seeds, 100k steps
    python benchmarks/steering.py --env-steps 20000 --seeds 0 --jobs 2
    python benchmarks/steering.py --sections overhead
    python benchmarks/steering.py --sections report --out benchmarks/results/steering_100k.json  # re-plot

Results: benchmarks/results/steering.json (written atomically when the runs end; an interrupted
benchmark resumes by running the same command: the runner skips finished trials) and
benchmarks/results/steering_<task>.png (<out stem>_<task>.png; success curves, mean and min-max band over seeds).
Goal (DSRL paper's claim on our tasks): DSRL reaches >= 0.9 success within 100k env steps and
beats residual SAC and SAC from scratch at the same budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from run_context import REPO, cpu_name, git_state, load_average  # benchmarks/ is on sys.path as a script

DEFAULT_POLICIES = ("widowx-carrot-diffusion", "widowx-lift-diffusion")
METHODS = ("dsrl", "residual", "sac")
LABELS = {"dsrl": "DSRL (SAC on noise)", "residual": "residual SAC", "sac": "SAC from scratch"}
RESULTS = REPO / "benchmarks" / "results"


def spec_of(args: argparse.Namespace, config: dict[str, Any]):
    """The runs of this benchmark as an experiment spec (`steergym run` executes it: one Ray Tune trial
    per policy x method x seed, one torch thread each, finished trials skipped on a re-run)."""
    from steergym.experiments.spec import parse_spec

    return parse_spec({"name": "steering", "tasks": list(args.policies), "methods": list(args.methods),
                       "seeds": list(args.seeds), "budget": {"env_steps": args.env_steps, "eval_every": args.eval_every,
                                                             "eval_episodes": args.eval_episodes},
                       "config": {m: dict(config) for m in args.methods}, "resources": {"cpus": 1, "gpus": 0}})


def run_row(trial: dict[str, Any]) -> dict[str, Any]:
    """A runner trial record as one of this benchmark's runs (its results-file schema)."""
    curve = trial["curve"]
    return {"policy": trial["task"], "env_id": trial["env_id"], "method": trial["method"], "seed": trial["seed"],
            "env_steps": curve[-1]["env_steps"], "agent_steps": curve[-1].get("agent_steps"),
            "wall_s": round(trial["wall_s"], 1), "final_success": trial["final_success"],
            "best_success": trial["best_success"], "curve": curve}


def base_success(policy_name: str, episodes: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from steergym.bench.evaluate import evaluate
    from steergym.policies.zoo import load_shipped, shipped_policies

    entry = shipped_policies()[policy_name]
    env_id = entry.env_ids[0]
    result = evaluate(env_id, load_shipped(policy_name), episodes=episodes, seed=0, progress=False)
    return {"env_id": env_id, "success_rate": result.success_rate, "episodes": episodes,
            "ci": [result.ci_low, result.ci_high], "recorded_100_seeds": entry.success_rate[env_id]}


def wrapper_overhead(steps: int, repeats: int = 5) -> dict[str, Any]:
    """ms per primitive env step (median of `repeats`): bare env, ActionChunkWrapper,
    NoiseActionWrapper, ResidualActionWrapper, on random actions of each one's action space."""
    import gymnasium as gym
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import steergym  # noqa: F401
    from steergym.policies.zoo import load_shipped
    from steergym.wrappers import ActionChunkWrapper, NoiseActionWrapper, ResidualActionWrapper

    env_id = "steergym/WidowXPutCarrotOnPlate-v0"
    policy = load_shipped("widowx-carrot-diffusion")
    makers = {
        "bare": lambda inner: inner,
        "ActionChunkWrapper(H=4)": lambda inner: ActionChunkWrapper(inner, 4),
        "NoiseActionWrapper (DSRL, decode included)": lambda inner: NoiseActionWrapper(inner, policy),
        "ResidualActionWrapper (base act included)": lambda inner: ResidualActionWrapper(inner, policy.fork(0)),
    }

    class Timed(gym.Wrapper):  # time spent in the task itself, to subtract from the wrapper's total
        seconds = 0.0

        def step(self, action):
            start = time.perf_counter()
            try:
                return self.env.step(action)
            finally:
                self.seconds += time.perf_counter() - start

    out: dict[str, Any] = {"env_id": env_id, "steps": steps, "repeats": repeats,
                           "note": "overhead = (time in the wrapper's step - time in the task's step) per env step"}
    timings: dict[str, list[float]] = {name: [] for name in makers}
    overheads: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(repeats):  # interleaved, so a burst of load hits every wrapper alike
        for name, make in makers.items():
            inner = Timed(gym.make(env_id))
            env = make(inner)
            env.action_space.seed(0)
            env.reset(seed=0)
            done_steps, start = 0, time.perf_counter()
            while done_steps < steps:
                _, _, terminated, truncated, info = env.step(env.action_space.sample())
                done_steps += int(info.get("steps", 1))
                if terminated or truncated:
                    env.reset()
            total = time.perf_counter() - start
            timings[name].append(1000 * total / done_steps)
            overheads[name].append(1000 * (total - inner.seconds) / done_steps)
            env.close()
    for name in makers:
        out[name] = {"ms_per_env_step": float(np.median(timings[name])),
                     "overhead_ms_per_env_step": float(np.median(overheads[name])), "raw_ms": timings[name]}
    return out


def plot(results: dict[str, Any], out: Path) -> list[str]:
    """One success-curve figure per task beside `out`: <out stem>_<task>.png."""
    sys.path.insert(0, str(REPO))
    from steergym.bench.plots import success_curve_plot

    paths = []
    for policy_name, base in results["base"].items():
        curves = {method: [r["curve"] for r in results["runs"] if r["policy"] == policy_name and r["method"] == method]
                  for method in METHODS}
        curves = {k: v for k, v in curves.items() if v}
        if not curves:
            continue
        task = base["env_id"].split("/")[-1].removesuffix("-v0")
        path = out.with_name(f"{out.stem}_{task}.png")
        success_curve_plot({LABELS[k]: v for k, v in curves.items()}, path,
                           title=f"{task}: success over {results['settings']['eval_episodes']} seeds",
                           reference_lines={f"base {policy_name}": base["success_rate"]})
        path = path.resolve()
        paths.append(str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path))
    return paths


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    goal = results["settings"]["goal_success"]
    for policy_name, base in results["base"].items():
        rows = {}
        for method in METHODS:
            runs = [r for r in results["runs"] if r["policy"] == policy_name and r["method"] == method]
            if runs:
                finals = [r["final_success"] for r in runs]
                # mean success over a run's evaluations (0 to the budget): sample efficiency in one number
                curve_means = [sum(row["success_rate"] for row in r["curve"]) / len(r["curve"]) for r in runs]
                rows[method] = {"seeds": len(runs), "final_mean": sum(finals) / len(finals),
                                "final_per_seed": finals, "best_mean": sum(r["best_success"] for r in runs) / len(runs),
                                "curve_mean": sum(curve_means) / len(runs), "curve_mean_per_seed": curve_means}
        seeds = {rows[m]["seeds"] if m in rows else 0 for m in METHODS}
        complete = len(seeds) == 1 and seeds != {0}  # every method run on the same number of seeds
        dsrl = rows.get("dsrl", {}).get("final_mean")
        others = [rows[m]["final_mean"] for m in ("residual", "sac") if m in rows]
        summary[policy_name] = {
            "base": base["success_rate"], **rows,
            "goal_dsrl_at_least": goal,
            # None until all three methods have the same seeds: a partial protocol decides nothing
            "goal_met": bool(dsrl >= goal and all(dsrl > o for o in others)) if complete else None,
        }
    return summary


def write(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES), help="shipped single-task policies")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--env-steps", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=30)
    parser.add_argument("--base-episodes", type=int, default=100)
    parser.add_argument("--config", default="{}", help="SteeringConfig overrides as JSON, e.g. '{\"gradient_steps\": 2}'")
    parser.add_argument("--jobs", type=int, default=2, help="trials at once (Ray CPUs; one torch thread each)")
    parser.add_argument("--trials", default="runs/steering", help="the runner's folder of trial run folders")
    parser.add_argument("--sections", nargs="+", default=["runs", "overhead"], choices=["runs", "overhead", "report"],
                        help="report: only redo the summary and plots of --out's finished runs")
    parser.add_argument("--overhead-steps", type=int, default=2000)
    parser.add_argument("--out", default=str(RESULTS / "steering.json"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    config = json.loads(args.config)
    settings = {"env_steps": args.env_steps, "eval_every": args.eval_every, "eval_episodes": args.eval_episodes,
                "config": config, "goal_success": 0.9}
    results: dict[str, Any] = {}
    if out.exists():
        results = json.loads(out.read_text())
    if "report" in args.sections:
        if args.sections != ["report"]:
            parser.error("--sections report redraws finished runs; give it alone (runs already ends with a report)")
        if not results.get("runs"):
            parser.error(f"--sections report: {out} holds no finished runs")
        results["summary"], results["plots"] = summarise(results), plot(results, out)
        write(results, out)
        print(json.dumps(results["summary"], indent=1))
        return 0
    if results.get("settings") != settings or "runs" in args.sections:  # the runs come from the runner
        results = {"overhead": results.get("overhead")} if "runs" in args.sections else results
        results.update(settings=settings, base={}, runs=[])
    results["meta"] = {
        **git_state(), "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/" + " ".join([Path(__file__).name, *sys.argv[1:]]),
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "load_average_start": load_average(), "jobs": args.jobs,
    }
    from steergym.algorithms.steering import SteeringConfig

    SteeringConfig.from_dict(config)  # fail before spawning anything
    if "overhead" in args.sections:
        results["overhead"] = wrapper_overhead(args.overhead_steps)
        print(json.dumps(results["overhead"], indent=1))
        write(results, out)
    if "runs" in args.sections:
        from steergym.experiments.runner import run_experiment

        spec = spec_of(args, config)  # validated before anything starts
        for policy_name in args.policies:
            results["base"][policy_name] = base_success(policy_name, args.base_episodes)
            write(results, out)
        ran = run_experiment(spec, args.trials, num_cpus=args.jobs, command=results["meta"]["command"])
        results["runs"] = [run_row(trial) for trial in ran["trials"]]
        results["failed"] = ran["failed"]
        results["meta"]["trials"] = str(args.trials)
        results["plots"] = plot(results, out)
        results["summary"] = summarise(results)
    results["meta"]["load_average_end"] = load_average()
    write(results, out)
    print(json.dumps(results.get("summary", {}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
