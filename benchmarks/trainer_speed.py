"""Gradient updates per second of steergym's Cal-QL beside Stable-Baselines3 SAC, in one run.

Both at batch 256 with two 256-wide hidden layers (actor and twin critics) on the WidowX lift
spaces (17-d observations, 7-d actions), torch threads as given (default 1), CPU:

* `calql`: `CalQL.update` with the Cal-QL defaults (CQL regulariser over 3 x 10 sampled actions
  per state, max-target backup over 10 next actions; i.e. critic forward passes on 31 x 256 rows
  and target passes on 10 x 256 rows per update).
* `cql_light`: the same update with `cql_n_actions=1` and no max-target backup, the closest our
  update gets to plain SAC's amount of work.
* `sb3_sac`: `SAC.train(gradient_steps=N, batch_size=256)` with `net_arch=[256, 256]` on a replay
  buffer filled with random transitions.

Issue 5's goal is Cal-QL >= 1.5x SB3 SAC updates/s. Note Cal-QL does far more work per update
than SAC (the CQL term), so the `calql` / `sb3_sac` ratio compares different algorithms.

Usage (from the repository root):

    OMP_NUM_THREADS=1 python benchmarks/trainer_speed.py --updates 100

Results go to benchmarks/results/trainer_speed.json (written atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from run_context import cpu_name, git_state, load_average  # benchmarks/ is on sys.path when run as a script

OBS_DIM, ACTION_DIM, BATCH = 17, 7, 256


def spaces():
    import gymnasium as gym

    return (gym.spaces.Box(-10.0, 10.0, (OBS_DIM,), np.float32),
            gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32))


def synthetic(n: int = 20_000, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (n, OBS_DIM)).astype(np.float32)
    return SimpleNamespace(observations=obs, next_observations=np.roll(obs, -1, 0),
                           actions=rng.uniform(-1, 1, (n, ACTION_DIM)).astype(np.float32),
                           rewards=rng.normal(size=n).astype(np.float32), terminals=rng.random(n) < 0.01,
                           mc_returns=rng.normal(size=n).astype(np.float32))


def time_calql(updates: int, warmup: int, **overrides) -> float:
    from steergym.algorithms.calql import CalQL, CalQLConfig

    agent = CalQL(spaces(), CalQLConfig(batch_size=BATCH, log_every=10**9, **overrides), seed=0)
    data = synthetic()
    agent.pretrain(data, warmup, progress=False)
    start = time.perf_counter()
    agent.pretrain(data, updates, progress=False)  # includes batch sampling, as SB3's train() does
    return updates / (time.perf_counter() - start)


def time_sb3_sac(updates: int, warmup: int) -> float:
    import gymnasium as gym
    from stable_baselines3 import SAC

    class Dummy(gym.Env):
        observation_space, action_space = spaces()

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    model = SAC("MlpPolicy", Dummy(), batch_size=BATCH, policy_kwargs={"net_arch": [256, 256]},
                learning_starts=0, buffer_size=20_000, device="cpu", seed=0, verbose=0)
    data = synthetic()
    for i in range(len(data.actions)):
        model.replay_buffer.add(data.observations[i:i + 1], data.next_observations[i:i + 1],
                                data.actions[i:i + 1], data.rewards[i:i + 1], data.terminals[i:i + 1], [{}])
    model._setup_learn(total_timesteps=1)  # creates the logger train() writes to
    model.train(gradient_steps=warmup, batch_size=BATCH)
    start = time.perf_counter()
    model.train(gradient_steps=updates, batch_size=BATCH)
    return updates / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=100, help="timed updates per trainer")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "trainer_speed.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rates = {
        "calql": time_calql(args.updates, args.warmup),
        "cql_light": time_calql(args.updates, args.warmup, cql_n_actions=1, cql_max_target_backup=False),
        "sb3_sac": time_sb3_sac(args.updates, args.warmup),
    }
    for name, rate in rates.items():
        print(f"{name:10s} {rate:8.1f} updates/s")
    result = {
        "what": "gradient updates/s at batch 256, 2 x 256 hidden (actor and twin critics), 17-d obs, 7-d actions",
        "updates_per_s": {k: round(v, 2) for k, v in rates.items()},
        "calql_over_sb3_sac": round(rates["calql"] / rates["sb3_sac"], 3),
        "cql_light_over_sb3_sac": round(rates["cql_light"] / rates["sb3_sac"], 3),
        "goal": "calql >= 1.5 x sb3_sac (issue 5)",
        "command": "OMP_NUM_THREADS=1 python benchmarks/trainer_speed.py " + " ".join(argv or sys.argv[1:]),
        "updates": args.updates, "torch_threads": args.threads, "torch": torch.__version__,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
        "load_average": load_average(), **git_state(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.partial")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
