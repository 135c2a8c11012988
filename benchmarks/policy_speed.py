"""Speed of the generative base policies, in named sections selected with `--sections`.

Sections (each a function in `SECTIONS`, returning a JSON-able dict):

* `inference`: for `DiffusionPolicy` (DDIM, 8 steps) and `FlowPolicy` (Euler, 8 steps) with the
  default `PolicyConfig` on the WidowX state space (27-d observations, 7-d actions, chunk H = 4):
  the batch-1 latency of one `sample(obs, noise)` call (median, p10 and p90 over `--calls` calls
  after a warm-up), the throughput at batch `--batch` (chunks/s over `--batch-calls` calls) and the
  mean `act()` time per control step (one chunk every H steps), each at torch threads 1 and 2.
  Goal: batch-1 chunk latency <= 3 ms (one thread).

* `bc_training`: behaviour-cloning samples/s (`BCTrainer` steps at batch 256 on a 27-d / 7-d
  synthetic dataset, default `PolicyConfig`) for diffusion and flow, at torch threads 1 and 2.
* `shipped_success`: success of every shipped policy (steergym/assets/policies) over `--episodes`
  reset seeds from 0 (default 100, the seeds the recipe measured), with Wilson 95% intervals and
  the recorded rate and band for comparison.

Usage (from the repository root):

    python benchmarks/policy_speed.py                          # every section, ~20 s
    python benchmarks/policy_speed.py --sections inference

Results go to benchmarks/results/policy_speed.json (written atomically). Sections not measured in
this run keep their earlier results from that file; each section records when, on which commit and
under which load it was measured. Timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import steergym
from steergym.policies import DiffusionPolicy, FlowPolicy, PolicyConfig
from run_context import cpu_name, git_state, load_average  # benchmarks/ is on sys.path when run as a script

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "policy_speed.json"
GOAL_LATENCY_MS = 3.0
GOAL = f"batch-1 chunk latency <= {GOAL_LATENCY_MS:g} ms"
# The WidowX state space (PutCarrotOnPlate, PutSpoonOnTowel, ..., PushCube).
WIDOWX_OBS = gym.spaces.Box(-10.0, 10.0, (27,), np.float32)
WIDOWX_ACT = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
THREADS = (1, 2)
WARMUP_CALLS = 20


# --------------------------------------------------------------------------- section: inference
def _policy(kind: str) -> Any:
    """A default-config policy (8 sampler steps) with normalisers fitted to plausible data."""
    torch.manual_seed(0)
    cls = {"diffusion": DiffusionPolicy, "flow": FlowPolicy}[kind]
    policy = cls(WIDOWX_OBS, WIDOWX_ACT, PolicyConfig(kind=kind, sample_steps=8), seed=0)
    rng = np.random.default_rng(0)
    policy.fit_normalization(rng.normal(0, 0.3, (1000, 27)), rng.uniform(-1, 1, (1000, 7)))
    return policy


def _latency_ms(policy: Any, calls: int, rng: np.random.Generator) -> dict[str, float]:
    """Batch-1 `sample(obs, noise)` wall time, fresh observation and noise each call."""
    obs = rng.normal(0, 0.3, (calls + WARMUP_CALLS, 27)).astype(np.float32)
    noise = rng.standard_normal((calls + WARMUP_CALLS, *policy.noise_shape)).astype(np.float32)
    for i in range(WARMUP_CALLS):
        policy.sample(obs[i], noise[i])
    clock = time.perf_counter
    times = []
    for i in range(WARMUP_CALLS, WARMUP_CALLS + calls):
        t0 = clock()
        policy.sample(obs[i], noise[i])
        times.append(1e3 * (clock() - t0))
    q = np.percentile(times, [10, 50, 90])
    return {"median_ms": float(q[1]), "p10_ms": float(q[0]), "p90_ms": float(q[2]),
            "mean_ms": float(np.mean(times)), "calls": calls}


def _throughput(policy: Any, batch: int, calls: int, rng: np.random.Generator) -> dict[str, float]:
    """Chunks per second of `sample` on batches of `batch` observations."""
    obs = rng.normal(0, 0.3, (batch, 27)).astype(np.float32)
    noise = rng.standard_normal((batch, *policy.noise_shape)).astype(np.float32)
    for _ in range(3):
        policy.sample(obs, noise)
    clock = time.perf_counter
    times = []
    for _ in range(calls):
        t0 = clock()
        policy.sample(obs, noise)
        times.append(clock() - t0)
    return {"chunks_per_s": batch * calls / sum(times), "median_ms_per_call": 1e3 * statistics.median(times),
            "batch": batch, "calls": calls}


def _act_ms_per_step(policy: Any, steps: int, rng: np.random.Generator) -> float:
    """Mean `act()` time per control step (a chunk is sampled every `action_steps` calls)."""
    obs = rng.normal(0, 0.3, (steps, 27)).astype(np.float32)
    policy.reset(seed=0)
    for o in obs[:WARMUP_CALLS]:
        policy.act(o)
    policy.reset(seed=0)
    t0 = time.perf_counter()
    for o in obs:
        policy.act(o)
    return 1e3 * (time.perf_counter() - t0) / steps


def measure_inference(args: argparse.Namespace) -> dict[str, Any]:
    before = torch.get_num_threads()
    result: dict[str, Any] = {"goal": GOAL, "threads": list(THREADS), "policies": {}}
    try:
        for kind in ("diffusion", "flow"):
            policy = _policy(kind)
            cfg = policy.config
            row: dict[str, Any] = {
                "sampler": (f"DDIM eta=0, {cfg.sample_steps} of {cfg.train_steps} steps"
                            if kind == "diffusion" else f"Euler, {cfg.sample_steps} steps"),
                "policy_config": cfg.to_dict(),
                "parameters": policy.num_parameters(),
                "noise_shape": list(policy.noise_shape),
                "by_threads": {},
            }
            for threads in THREADS:
                torch.set_num_threads(threads)
                rng = np.random.default_rng(threads)
                row["by_threads"][str(threads)] = {
                    "batch1_latency": _latency_ms(policy, args.calls, rng),
                    "throughput": _throughput(policy, args.batch, args.batch_calls, rng),
                    "act_ms_per_step": _act_ms_per_step(policy, 4 * cfg.horizon * 25, rng),
                }
            result["policies"][kind] = row
    finally:
        torch.set_num_threads(before)
    result["goal_pass"] = {
        kind: {t: v["batch1_latency"]["median_ms"] <= GOAL_LATENCY_MS for t, v in r["by_threads"].items()}
        for kind, r in result["policies"].items()
    }
    result["pass"] = all(r["by_threads"]["1"]["batch1_latency"]["median_ms"] <= GOAL_LATENCY_MS
                         for r in result["policies"].values())
    return result


def print_inference(result: dict[str, Any]) -> None:
    header = (f"{'policy':10s} {'threads':>7s} {'b1 median ms':>12s} {'p10':>6s} {'p90':>6s} "
              f"{'batch':>5s} {'chunks/s':>9s} {'act ms/step':>11s}")
    print(header)
    print("-" * len(header))
    for kind, row in result["policies"].items():
        for threads, r in row["by_threads"].items():
            lat, thr = r["batch1_latency"], r["throughput"]
            print(f"{kind:10s} {threads:>7s} {lat['median_ms']:12.3f} {lat['p10_ms']:6.3f} "
                  f"{lat['p90_ms']:6.3f} {thr['batch']:5d} {thr['chunks_per_s']:9.0f} "
                  f"{r['act_ms_per_step']:11.3f}")
    print(f"\ngoal {result['goal']} (1 thread): {'PASS' if result['pass'] else 'FAIL'}")


# --------------------------------------------------------------------------- section: bc_training
def measure_bc_training(args: argparse.Namespace) -> dict[str, Any]:
    from steergym.algorithms.bc import BCConfig, BCTrainer
    from steergym.data.chunks import ChunkData

    rng = np.random.default_rng(0)
    n = 4096
    data = ChunkData(observations=rng.normal(size=(n, 27)).astype(np.float32),
                     chunks=rng.uniform(-1, 1, (n, 4, 7)).astype(np.float32),
                     task_index=np.zeros(n, np.int64), task_ids=("synthetic",),
                     actions=rng.uniform(-1, 1, (n, 7)).astype(np.float32))
    before = torch.get_num_threads()
    result: dict[str, Any] = {"batch_size": 256, "steps_timed": args.bc_steps, "policies": {}}
    try:
        for kind in ("diffusion", "flow"):
            row = {}
            for threads in THREADS:
                torch.set_num_threads(threads)
                cls = DiffusionPolicy if kind == "diffusion" else FlowPolicy
                policy = cls(WIDOWX_OBS, WIDOWX_ACT, PolicyConfig(kind=kind))
                trainer = BCTrainer(policy, data, BCConfig(steps=10 + args.bc_steps, log_every=10**9),
                                    progress=False)
                trainer.learn(10)  # warm-up
                t0 = time.perf_counter()
                trainer.learn(args.bc_steps)
                seconds = time.perf_counter() - t0
                row[str(threads)] = {"samples_per_s": 256 * args.bc_steps / seconds,
                                     "ms_per_step": 1e3 * seconds / args.bc_steps}
            result["policies"][kind] = row
    finally:
        torch.set_num_threads(before)
    return result


def print_bc_training(result: dict[str, Any]) -> None:
    print(f"{'policy':10s} {'threads':>7s} {'samples/s':>10s} {'ms/step':>8s}   (batch {result['batch_size']})")
    for kind, row in result["policies"].items():
        for threads, r in row.items():
            print(f"{kind:10s} {threads:>7s} {r['samples_per_s']:10.0f} {r['ms_per_step']:8.2f}")


# --------------------------------------------------------------------------- section: shipped_success
def measure_shipped_success(args: argparse.Namespace) -> dict[str, Any]:
    from steergym.bench.evaluate import evaluate
    from steergym.policies.zoo import resolve_policy, shipped_policies

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = {}
    try:
        for name, entry in shipped_policies().items():
            for env_id in entry.env_ids:
                policy, _ = resolve_policy(name, env_id)
                r = evaluate(env_id, policy, episodes=args.episodes, seed=0, progress=False)
                rows[f"{name} @ {env_id}"] = {
                    "policy": name, "env_id": env_id, "episodes": r.episodes, "success_rate": r.success_rate,
                    "ci95": [r.ci_low, r.ci_high], "mean_length": r.mean_length,
                    "recorded_success_rate": entry.success_rate[env_id], "band": list(entry.success_band),
                    "in_band": entry.success_band[0] <= r.success_rate <= entry.success_band[1],
                }
    finally:
        torch.set_num_threads(before)
    return {"episodes": args.episodes, "seeds": f"0..{args.episodes - 1}", "policies": rows,
            "all_in_band": all(r["in_band"] for r in rows.values())}


def print_shipped_success(result: dict[str, Any]) -> None:
    print(f"{'policy':30s} {'task':28s} {'success':>7s} {'95% CI':>13s} {'recorded':>8s} {'band':>10s}")
    for r in result["policies"].values():
        lo, hi = r["ci95"]
        print(f"{r['policy']:30s} {r['env_id'].split('/')[-1]:28s} {r['success_rate']:7.2f} "
              f"[{lo:.2f}, {hi:.2f}] {r['recorded_success_rate']:8.2f} {str(r['band']):>10s}")
    print(f"\nall in band: {result['all_in_band']}")


# --------------------------------------------------------------------------- sections
# name -> (measure(args) -> dict, print(result) -> None).
Measure = Callable[[argparse.Namespace], dict[str, Any]]
Report = Callable[[dict[str, Any]], None]
SECTIONS: dict[str, tuple[Measure, Report]] = {
    "inference": (measure_inference, print_inference),
    "bc_training": (measure_bc_training, print_bc_training),
    "shipped_success": (measure_shipped_success, print_shipped_success),
}


# --------------------------------------------------------------------------- context
def host() -> dict[str, Any]:
    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "steergym": steergym.__version__,
        "platform": platform.platform(),
    }


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=sorted(SECTIONS),
                   help="sections to measure (default: all)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to update (default: %(default)s)")
    p.add_argument("--calls", type=int, default=300,
                   help="batch-1 calls timed per setting, >= 200 (default: %(default)s)")
    p.add_argument("--batch", type=int, default=256,
                   help="batch size of the throughput figure (default: %(default)s)")
    p.add_argument("--batch-calls", type=int, default=20,
                   help="batched calls timed per setting (default: %(default)s)")
    p.add_argument("--bc-steps", type=int, default=200, help="BC steps timed per setting (default: %(default)s)")
    p.add_argument("--episodes", type=int, default=100,
                   help="evaluation episodes per shipped policy and task (default: %(default)s)")
    args = p.parse_args(argv)
    if args.calls < 200 or args.batch < 1 or args.batch_calls < 1 or args.bc_steps < 1 or args.episodes < 1:
        p.error("--calls must be >= 200; --batch, --batch-calls, --bc-steps and --episodes >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    except json.JSONDecodeError:
        previous = {}
    result: dict[str, Any] = {"host": host(), "sections": dict(previous.get("sections", {}))}
    for name in args.sections:
        measure, report = SECTIONS[name]
        start = time.perf_counter()
        meta = {**git_state(), "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "load_average_start": load_average()}
        section = measure(args)
        meta.update(load_average_end=load_average(), seconds=round(time.perf_counter() - start, 1),
                    host=result["host"])
        busy = max((meta["load_average_start"] or [0.0])[0], (meta["load_average_end"] or [0.0])[0])
        if busy >= 0.5:
            meta["note"] = (f"load average up to {busy:.1f} on {os.cpu_count()} cores from other processes: "
                            "timings include contention, multi-thread ones most (OpenMP threads wait for "
                            "a busy core)")
        result["sections"][name] = {"meta": meta, **section}
        h = result["host"]
        print(f"\n== {name} ({meta['seconds']} s; CPU {h['cpu']}, {h['cpu_count']} cores, "
              f"torch {h['torch']}, load average {meta['load_average_start']})\n")
        report(section)
        if "note" in meta:
            print(f"note: {meta['note']}")
    write_json_atomic(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
