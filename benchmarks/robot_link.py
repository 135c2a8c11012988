"""Robot link latency and throughput on loopback: `steergym serve --backend sim` and a WidowXReal client.

For each setting a server runs in a subprocess and one client steps it as fast as it answers
(control_period_s=0), random actions, episodes reset at the task's horizon:
    state   LiftCube, state observations (27 floats)
    image   LiftCube, "pixels" observations of 256x256x3 uint8 (196,608 bytes a step)
Per step it records the round trip seen by the client and the server's own execution time (the
simulated step, and rendering for images). `link` = round trip - execution: the cost of the link
itself (encode, ZeroMQ, decode, safety filter, episode journal write, the client's checks), which is
what a real robot adds on top of the arm's own 0.2 s step. It also times heartbeats (the smallest
request). Goal (issue 7): link p99 <= 5 ms state-only and <= 15 ms with the image.

    python benchmarks/robot_link.py [--steps 2000] [--out benchmarks/results/robot_link.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from run_context import cpu_name, git_state, load_average  # benchmarks/ is on sys.path when run as a script

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "robot_link.json"
TASK, REAL_TASK = "steergym/WidowXLiftCube-v0", "steergym/WidowXRealLiftCube-v0"
SETTINGS = {
    "state": {"obs_mode": "state", "image_size": (128, 128), "goal_link_p99_ms": 5.0},
    "image": {"obs_mode": "pixels", "image_size": (256, 256), "goal_link_p99_ms": 15.0},
}


def _stats_ms(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"median_ms": round(float(np.median(ms)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3), "mean_ms": round(float(ms.mean()), 3)}


def measure(setting: str, steps: int, heartbeats: int) -> dict[str, Any]:
    from steergym.robot.client import RobotClient
    from steergym.robot.launch import ServerProcess

    cfg = SETTINGS[setting]
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(TASK, tmp, args=("--obs-mode", cfg["obs_mode"], "--image-size",
                                                *map(str, cfg["image_size"]), "--max-rate-hz", "0")).start()
        try:
            env = server.make_env(REAL_TASK, control_period_s=0.0)
            rng = np.random.default_rng(0)
            round_trip, execute, obs_bytes = [], [], 0
            seed, done = 0, True
            for _ in range(50):  # warm-up: sockets, renderer, caches
                if done:
                    env.reset(seed=seed)
                    seed += 1
                *_, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
                done = terminated or truncated
            start = time.perf_counter()
            for _ in range(steps):
                if done:
                    env.reset(seed=seed)
                    seed += 1
                obs, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
                timing = env.unwrapped.last_timing
                round_trip.append(timing["round_trip_s"])
                execute.append(timing["server_exec_s"])
                obs_bytes += obs.nbytes
                done = terminated or truncated
            wall = time.perf_counter() - start
            env.close()
            client = RobotClient(port=server.port, token=server.token)
            client.connect()
            beats = []
            for _ in range(heartbeats):
                t0 = time.perf_counter()
                client.request("heartbeat")
                beats.append(time.perf_counter() - t0)
            client.close()
        finally:
            server.stop()
    link = np.asarray(round_trip) - np.asarray(execute)
    result = {
        "obs_mode": cfg["obs_mode"], "image_size": list(cfg["image_size"]) if cfg["obs_mode"] != "state" else None,
        "obs_bytes_per_step": obs_bytes // steps, "steps": steps,
        "round_trip": _stats_ms(round_trip), "server_execute": _stats_ms(execute), "link": _stats_ms(list(link)),
        "heartbeat_round_trip": _stats_ms(beats),
        "throughput_steps_per_s": round(steps / wall, 1),
        "throughput_obs_mb_per_s": round(obs_bytes / wall / 1e6, 2),
        "goal_link_p99_ms": cfg["goal_link_p99_ms"],
    }
    result["goal_met"] = result["link"]["p99_ms"] <= cfg["goal_link_p99_ms"]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    p.add_argument("--steps", type=int, default=2000, help="timed steps per setting (default 2000)")
    p.add_argument("--heartbeats", type=int, default=1000, help="timed heartbeats per setting (default 1000)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.steps < 100 or args.heartbeats < 100:
        p.error("--steps and --heartbeats must be >= 100 (a p99 needs them)")
    meta = {**git_state(), "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "cpu": cpu_name(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "load_average_start": load_average()}
    results = {}
    for setting in args.settings:
        r = results[setting] = measure(setting, args.steps, args.heartbeats)
        print(f"{setting:5s}  round trip median {r['round_trip']['median_ms']:.2f} ms p99 {r['round_trip']['p99_ms']:.2f} ms"
              f" | server execute median {r['server_execute']['median_ms']:.2f} ms"
              f" | link median {r['link']['median_ms']:.2f} ms p99 {r['link']['p99_ms']:.2f} ms"
              f" (goal <= {r['goal_link_p99_ms']} ms: {'met' if r['goal_met'] else 'MISSED'})"
              f" | heartbeat p99 {r['heartbeat_round_trip']['p99_ms']:.2f} ms"
              f" | {r['throughput_steps_per_s']} steps/s, {r['throughput_obs_mb_per_s']} MB/s of observations")
    meta["load_average_end"] = load_average()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps({"meta": meta, "settings": results}, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
