"""The demo as a new user runs it: `steergym demo` with its defaults, once per training seed.

Goal (issue 19): on every training seed the steered policy's 95% interval lies above the base policy's
(not touching) on 100 evaluation seeds, and one run takes <= 8 minutes on 2 cores. `--repeat` runs the
first seed a second time and checks that it prints the same numbers (the demo is deterministic given
its seed on one machine).

Usage (from the repository root; each run uses both cores, so they run one after another):

    MUJOCO_GL=egl python benchmarks/demo.py                  # 3 seeds, ~20-25 min on 2 cores
    MUJOCO_GL=egl python benchmarks/demo.py --repeat         # + seed 0 again, the determinism check

Writes benchmarks/results/demo.json (per seed: the demo's results.json figures, the wall time of the
whole command) and docs/images/demo_learning_curve.png (the first seed's curve).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from run_context import REPO, cpu_name, git_state, load_average, write_results  # benchmarks/ is on sys.path

GOAL_MINUTES = 8.0


def run_once(seed: int, out: Path, extra: list[str]) -> dict:
    """`steergym demo --seed SEED --out OUT` in a fresh interpreter; its results.json plus the wall time."""
    command = [sys.executable, "-m", "steergym.cli", "demo", "--seed", str(seed), "--out", str(out), "--quiet",
               *extra]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"demo seed {seed} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    results = json.loads((out / "results.json").read_text())
    return {"seed": seed, "wall_s": round(wall, 1), "printed": proc.stdout.split("What ran:", 1)[-1].strip(),
            "base": _short(results["base"]), "steered": _short(results["steered"]),
            "separated": results["separated"], "threads": results["threads"], "budget": results["budget"],
            "config": results["config"], "untrained_actor_success": results["untrained_actor_success"],
            "dsrl": results["dsrl"], "env_id": results["env_id"], "policy": results["policy"]}


def _short(evaluation: dict) -> dict:
    keys = ("episodes", "successes", "success_rate", "ci_low", "ci_high", "failed_seeds")
    return {k: evaluation[k] for k in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeat", action="store_true", help="run the first seed twice and compare")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "demo.json"))
    parser.add_argument("--figure", default=str(REPO / "docs" / "images" / "demo_learning_curve.png"))
    parser.add_argument("demo_args", nargs="*", help="extra `steergym demo` arguments (after --)")
    args = parser.parse_args(argv)

    load_start, started = load_average(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    work = Path(tempfile.mkdtemp(prefix="steergym-demo-bench-"))
    runs: list[dict] = []
    repeat = None

    def write() -> dict:  # after every run, so a stopped benchmark keeps what it measured
        walls = [r["wall_s"] for r in runs]
        summary = {
            "seeds_done": [r["seed"] for r in runs],
            "all_separated": all(r["separated"] for r in runs),
            "base_success": runs[0]["base"]["success_rate"],
            "steered_success": {r["seed"]: r["steered"]["success_rate"] for r in runs},
            "wall_s_max": max(walls), "goal_minutes": GOAL_MINUTES,
            "within_time": max(walls) <= 60 * GOAL_MINUTES,
            "goal_met": len(runs) == len(args.seeds) and all(r["separated"] for r in runs)
            and max(walls) <= 60 * GOAL_MINUTES,
            "repeat": repeat,
        }
        write_results(args.out, {
            "what": "steergym demo with its defaults, one run per training seed (README's first command)",
            "summary": summary, "runs": runs,
            "meta": {"command": "python benchmarks/demo.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                     "date_utc": started, "cpu": cpu_name(), "cpu_count": os.cpu_count(),
                     "python": sys.version.split()[0], "load_average_start": load_start,
                     "load_average_end": load_average(), **git_state()},
        })
        return summary

    try:
        for seed in args.seeds:
            runs.append(run_once(seed, work / f"seed{seed}", args.demo_args))
            r = runs[-1]
            print(f"seed {seed}: base {r['base']['success_rate']:.2f} [{r['base']['ci_low']:.2f}, "
                  f"{r['base']['ci_high']:.2f}] -> DSRL {r['steered']['success_rate']:.2f} "
                  f"[{r['steered']['ci_low']:.2f}, {r['steered']['ci_high']:.2f}], separated {r['separated']}, "
                  f"{r['wall_s']:.0f} s", flush=True)
            if seed == args.seeds[0]:
                Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(work / f"seed{seed}" / "learning_curve.png", args.figure)
            summary = write()
        if args.repeat:
            again = run_once(args.seeds[0], work / "repeat", args.demo_args)
            same = all(again[k] == runs[0][k] for k in ("base", "steered")) and \
                [{k: v for k, v in row.items() if k != "wall_s"} for row in again["dsrl"]["curve"]] == \
                [{k: v for k, v in row.items() if k != "wall_s"} for row in runs[0]["dsrl"]["curve"]]
            repeat = {"seed": args.seeds[0], "identical": same, "wall_s": again["wall_s"],
                      "steered_success": again["steered"]["success_rate"]}
            print(f"repeat of seed {args.seeds[0]}: identical numbers {same}", flush=True)
            summary = write()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(summary, indent=1))
    return 0 if summary["goal_met"] and (repeat is None or repeat["identical"]) else 1


if __name__ == "__main__":
    sys.exit(main())
