"""Throughput of evaluation sharded over Ray actors (`steergym eval --workers N`) against one process.

Evaluates the shipped `widowx-lift-diffusion` on steergym/WidowXLiftCube-v0 for `--episodes`
episodes (default 200, reset seeds 0..199) in one process (`steergym.bench.evaluate.evaluate`, at
torch's default threads and at one thread, what each actor uses) and
with `steergym.distributed.evaluate_distributed` at 1, 2 and 4 workers on a local Ray of
`--num-cpus` CPUs (default 2, this machine's cores). With more workers than CPUs each actor gets an
equal share of a CPU: the 4-worker run on 2 cores is oversubscribed (it simulates a 4-worker setup,
it cannot be faster than 2). Every run is checked to give the single-process result (same success
rate, failed seeds, per-episode returns and lengths).

Recorded per run: wall time (actor start-up included), episodes/s, the start-up alone (a run of one
episode per worker), speed-up over one worker and efficiency against linear scaling (goal of issue
18: within 15% of linear up to the machine's cores). Timings depend on the machine and its load
(recorded before and after).

    python benchmarks/distributed_eval.py                      # ~3 min on 2 loaded cores
    python benchmarks/distributed_eval.py --episodes 40 --workers 1 2

Results: benchmarks/results/distributed_eval.json (written atomically).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from run_context import cpu_name, git_state, load_average, write_results  # benchmarks/ is on sys.path

import steergym  # noqa: F401  (registers the envs)
from steergym.bench.catalog import eval_policy
from steergym.bench.evaluate import evaluate
from steergym.distributed import evaluate_distributed

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "distributed_eval.json"
ENV_ID = "steergym/WidowXLiftCube-v0"
POLICY = "widowx-lift-diffusion"
GOAL = "within 15% of linear scaling in workers up to the machine's cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (default: 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)
    import ray

    load_before = load_average()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")

    import torch

    default_threads = torch.get_num_threads()
    t = time.perf_counter()
    policy, _ = eval_policy(POLICY, ENV_ID, args.seed)
    single = evaluate(ENV_ID, policy, episodes=args.episodes, seed=args.seed, progress=False)
    single_s = time.perf_counter() - t
    print(f"single process ({default_threads} torch threads): {single_s:.1f} s, {args.episodes / single_s:.2f} "
          f"episodes/s, success {single.success_rate:.3f}", flush=True)
    # Ray runs each actor with one thread (OMP_NUM_THREADS=1); the same in one process, for a fair baseline.
    torch.set_num_threads(1)
    t = time.perf_counter()
    policy, _ = eval_policy(POLICY, ENV_ID, args.seed)
    single_1 = evaluate(ENV_ID, policy, episodes=args.episodes, seed=args.seed, progress=False)
    single_1_s = time.perf_counter() - t
    torch.set_num_threads(default_threads)
    print(f"single process (1 torch thread): {single_1_s:.1f} s, {args.episodes / single_1_s:.2f} episodes/s", flush=True)

    ray.init(num_cpus=args.num_cpus, log_to_driver=False, include_dashboard=False, configure_logging=False)
    runs = []
    try:
        for workers in args.workers:
            t = time.perf_counter()
            evaluate_distributed(ENV_ID, POLICY, episodes=workers, seed=args.seed, workers=workers, progress=False)
            startup_s = time.perf_counter() - t
            t = time.perf_counter()
            result = evaluate_distributed(ENV_ID, POLICY, episodes=args.episodes, seed=args.seed, workers=workers,
                                          progress=False)
            wall = time.perf_counter() - t
            runs.append({"workers": workers, "wall_s": round(wall, 2), "episodes_per_s": round(args.episodes / wall, 3),
                         "startup_plus_one_episode_each_s": round(startup_s, 2),
                         # rough: the start-up run's own episode(s) are counted as start-up
                         "episodes_per_s_after_startup_est": round(args.episodes / max(wall - startup_s, 1e-9), 3),
                         "oversubscribed": workers > args.num_cpus,
                         "cpus_per_actor": min(1.0, args.num_cpus / workers),
                         "identical_to_single_process": result.to_dict() == single.to_dict()})
            print(f"{workers} worker(s): {wall:.1f} s, {args.episodes / wall:.2f} episodes/s "
                  f"(start-up ~{startup_s:.1f} s), identical={runs[-1]['identical_to_single_process']}", flush=True)
    finally:
        ray.shutdown()

    base = next((r["episodes_per_s"] for r in runs if r["workers"] == 1), None)
    for r in runs:
        if base:
            r["speedup_over_1_worker"] = round(r["episodes_per_s"] / base, 3)
            r["efficiency_vs_linear"] = round(r["episodes_per_s"] / (base * min(r["workers"], args.num_cpus)), 3)
            r["within_15pct_of_linear"] = r["efficiency_vs_linear"] >= 0.85
    results = {
        "benchmark": "distributed_eval",
        "goal": GOAL,
        "env_id": ENV_ID,
        "policy": POLICY,
        "episodes": args.episodes,
        "seed": args.seed,
        "single_process": {"torch_threads": default_threads, "wall_s": round(single_s, 2),
                           "episodes_per_s": round(args.episodes / single_s, 3),
                           "success_rate": single.success_rate, "ci": [single.ci_low, single.ci_high],
                           "mean_length": single.mean_length},
        "single_process_1_thread": {"torch_threads": 1, "wall_s": round(single_1_s, 2),
                                    "episodes_per_s": round(args.episodes / single_1_s, 3),
                                    "identical_to_default_threads": single_1.to_dict() == single.to_dict()},
        "ray": {"num_cpus": args.num_cpus, "runs": runs},
        "notes": ("Wall times include starting the actors (each imports torch and MuJoCo and loads the policy). "
                  "The single process runs at torch's default threads (what `steergym eval` does); on 2 shared cores "
                  "two threads contend and batch-1 sampling is several times slower than with one, so the 1-thread "
                  "single process is the fair baseline for the actors (one thread each). "
                  f"Workers beyond the {args.num_cpus} Ray CPUs share them (fractional CPUs): the 4-worker run is "
                  "oversubscribed on this machine and simulates a 4-worker setup; it cannot beat 2 workers here. "
                  "Efficiency vs linear uses min(workers, cpus) as the ideal speed-up."),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "ray": ray.__version__, "load_average_before": load_before, "load_average_after": load_average(),
                    "otherwise_idle": bool(load_before and load_before[0] < 1.0)},  # 1-min load at the start
        "command": " ".join(["python", "benchmarks/distributed_eval.py", *(argv if argv is not None else sys.argv[1:])]),
        "date_utc": started,
        **git_state(),
    }
    print(f"results: {write_results(args.out, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
