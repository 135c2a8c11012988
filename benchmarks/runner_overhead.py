"""What `steergym run` (Ray Tune) costs per trial on top of calling the run function directly.

One small trial (SAC on widowx-lift-diffusion's task, 64x64 networks, `--env-steps` env steps, an
evaluation every `--eval-every` on `--eval-episodes` seeds) is timed four ways:

    direct (in process)   run_steering(...) in an interpreter that has already imported everything
    direct (cold process) `python -c "run_steering(...)"`: imports + the run, as `steergym train` does
    runner (cold)         `steergym run SPEC --out DIR` for that one trial: Ray start, Tune, a worker
                          process and its imports, results.json, best_config.json, the plot
    runner (warm cluster) run_experiment for `--trials` such trials (different seeds), one at a time, on
                          Ray already started: (total - the trials' own wall time) / trials

Overheads are absolute seconds; the issue's goal is < 5% of a 10-minute trial, so each is also given as a
fraction of 600 s. Usage (from the repository root):

    python benchmarks/runner_overhead.py                 # -> benchmarks/results/runner_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from run_context import REPO, cpu_name, git_state, load_average, write_results  # benchmarks/ is on sys.path

TASK, METHOD = "widowx-lift-diffusion", "sac"
CONFIG = {"hidden": [64, 64], "learning_starts": 100, "batch_size": 64}
TEN_MINUTES = 600.0


def spec(name: str, budget: dict, seeds: list[int]) -> dict:
    return {"name": name, "tasks": [TASK], "methods": [METHOD], "seeds": seeds, "budget": budget,
            "config": {METHOD: CONFIG}, "resources": {"cpus": 1}, "max_failures": 0}


DIRECT = """
import sys, time, json, torch
torch.set_num_threads(1)
from steergym.algorithms.runs import run_steering
from steergym.algorithms.steering import SteeringConfig
budget, config, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
run_steering("sac", out=out, policy=None, env="steergym/WidowXLiftCube-v0", normalize_like="widowx-lift-diffusion",
             config=SteeringConfig(**config), seed=0, progress=False, **budget)
"""


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="cold runs of each kind")
    parser.add_argument("--trials", type=int, default=4, help="trials of the warm-cluster measurement")
    parser.add_argument("--num-cpus", type=int, default=2, help="local Ray's CPUs")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "runner_overhead.json"))
    args = parser.parse_args()
    budget = {"env_steps": args.env_steps, "eval_every": args.eval_every, "eval_episodes": args.eval_episodes}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    os.environ.update({k: env[k] for k in ("PYTHONPATH", "MUJOCO_GL")})
    load_start = load_average()
    work = Path(tempfile.mkdtemp(prefix="runner_overhead_"))

    import torch

    torch.set_num_threads(1)
    from steergym.algorithms.runs import run_steering
    from steergym.algorithms.steering import SteeringConfig

    in_process = []
    for k in range(args.repeats + 1):  # the first one warms the caches (policy file, imports): not counted
        start = time.perf_counter()
        run_steering(METHOD, out=work / f"direct-{k}", policy=None, env="steergym/WidowXLiftCube-v0",
                     normalize_like=TASK, config=SteeringConfig(**CONFIG), seed=0, progress=False, **budget)
        in_process.append(time.perf_counter() - start)
        print(f"direct in process: {in_process[-1]:.1f} s", flush=True)
    in_process = in_process[1:]

    cold_direct, cold_runner = [], []
    spec_path = work / "one.json"
    spec_path.write_text(json.dumps(spec("overhead-one", budget, [0])))
    for k in range(args.repeats):
        cold_direct.append(timed([sys.executable, "-c", DIRECT, json.dumps(budget), json.dumps(CONFIG),
                                  str(work / f"cold-direct-{k}")], env))
        cold_runner.append(timed([sys.executable, "-m", "steergym.cli", "run", str(spec_path), "--out",
                                  str(work / f"cold-runner-{k}"), "--num-cpus", str(args.num_cpus)], env))
        print(f"cold: direct process {cold_direct[-1]:.1f} s, steergym run {cold_runner[-1]:.1f} s", flush=True)
    trial_wall = [json.loads((work / f"cold-runner-{k}" / "results.json").read_text())["trials"][0]["wall_s"]
                  for k in range(args.repeats)]

    import io

    from steergym.experiments.runner import run_experiment
    from steergym.experiments.spec import parse_spec
    from steergym.ray_support import init_ray

    start = time.perf_counter()
    init_ray(num_cpus=args.num_cpus)
    ray_start = time.perf_counter() - start
    warm_spec = parse_spec(spec("overhead-warm", budget, list(range(args.trials))))
    start = time.perf_counter()
    results = run_experiment(warm_spec, work / "warm", max_concurrent=1, stream=io.StringIO())
    warm_total = time.perf_counter() - start
    warm_trials = [r["wall_s"] for r in results["trials"]]
    per_trial_warm = (warm_total - sum(warm_trials)) / args.trials

    med = statistics.median
    cold_overhead = med(cold_runner) - med(cold_direct)
    results_json = {
        "what": "steergym run (Ray Tune) overhead per trial against calling the run function directly",
        "trial": {"task": TASK, "method": METHOD, "config": CONFIG, "budget": budget, "torch_threads": 1},
        "direct_in_process_s": [round(x, 2) for x in in_process],
        "direct_cold_process_s": [round(x, 2) for x in cold_direct],
        "runner_cold_s": [round(x, 2) for x in cold_runner],
        "runner_cold_trial_wall_s": trial_wall,
        "ray_init_s": round(ray_start, 2),
        "runner_warm": {"trials": args.trials, "max_concurrent": 1, "total_s": round(warm_total, 2),
                        "trials_wall_s": warm_trials, "overhead_per_trial_s": round(per_trial_warm, 2)},
        "overhead": {
            "cold_one_trial_s": round(cold_overhead, 2),
            "cold_one_trial_fraction_of_600s": round(cold_overhead / TEN_MINUTES, 4),
            "in_worker_s": round(med(trial_wall) - med(in_process), 2),
            "warm_per_trial_s": round(per_trial_warm, 2),
            "warm_per_trial_fraction_of_600s": round(per_trial_warm / TEN_MINUTES, 4),
            "goal": "< 5% of a 10-minute trial (30 s)",
            "goal_met": bool(cold_overhead < 0.05 * TEN_MINUTES and per_trial_warm < 0.05 * TEN_MINUTES),
            "notes": "cold: a whole `steergym run` process for one trial (Ray start, Tune, a worker and its "
                     "imports, results/plot) minus a whole direct process; in_worker: the trial's wall time "
                     "in the Ray worker minus the same run in process (run folder, eval tail, result file); "
                     "warm: Ray already up, trials one after another on a reused actor",
        },
        "meta": {**git_state(), "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "command": "python " + " ".join(sys.argv), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
                 "python": sys.version.split()[0], "load_average_start": load_start,
                 "load_average_end": load_average()},
    }
    path = write_results(args.out, results_json)
    print(json.dumps(results_json["overhead"], indent=1))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
