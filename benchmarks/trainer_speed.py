"""Gradient updates per second of steergym's Cal-QL beside a reference Cal-QL and SB3 SAC, in one run.

All at batch 256 with two 256-wide hidden layers (actor and twin critics) on the WidowX lift
spaces (17-d observations, 7-d actions), torch threads as given (default 1), CPU:

* `calql`: `CalQL.update` with the Cal-QL defaults (CQL regulariser over 3 x 10 sampled actions
  per state, max-target backup over 10 next actions; i.e. critic passes over 31 x 256 state-action
  rows with gradients and 10 x 256 target rows per update), batches drawn as `pretrain` does.
* `reference_calql`: the same update written the common single-file way
  (benchmarks/calql_reference.py: two nn.Sequential critics, one call per critic and action set,
  policy samples from the actor on 10x repeated observations, torch.distributions log-probs),
  written for this benchmark in the style of CORL's cal_ql.py (the public file is not available
  offline). Issue 5's goal: calql >= 1.5 x reference_calql.
* `cql_light`: our update with `cql_n_actions=1` and no max-target backup.
* `sb3_sac`: `SAC.train(gradient_steps=N, batch_size=256)` with `net_arch=[256, 256]` on a replay
  buffer of random transitions (a different, much lighter algorithm: no CQL term).

The machine is shared, so the trainers are timed in alternating rounds (`--rounds`, each of
`--updates` updates) and the median rate per trainer is reported, with every round's rate.

Usage (from the repository root):

    OMP_NUM_THREADS=1 python benchmarks/trainer_speed.py --updates 20 --rounds 5

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


def calql_stepper(**overrides):
    """A callable doing n `CalQL` updates on batches sampled as `pretrain` samples them."""
    from steergym.algorithms.calql import CalQL, CalQLConfig

    agent = CalQL(spaces(), CalQLConfig(batch_size=BATCH, log_every=10**9, **overrides), seed=0)
    data = synthetic()
    agent.pretrain(data, 2, progress=False)
    return lambda n: agent.pretrain(data, n, progress=False)


def reference_stepper():
    from calql_reference import ReferenceCalQL

    agent, data = ReferenceCalQL(OBS_DIM, ACTION_DIM, seed=0), synthetic()
    tensors = {k: torch.as_tensor(np.asarray(getattr(data, k), dtype=np.float32)) for k in
               ("observations", "actions", "rewards", "next_observations", "terminals", "mc_returns")}
    rng = np.random.default_rng(0)

    def run(n: int) -> None:
        for _ in range(n):
            index = torch.as_tensor(rng.integers(0, len(data.actions), BATCH))
            b = {k: v[index] for k, v in tensors.items()}
            agent.update(b["observations"], b["actions"], b["rewards"], b["next_observations"], b["terminals"],
                         b["mc_returns"])
    run(2)
    return run


def sb3_stepper():
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
    model.train(gradient_steps=2, batch_size=BATCH)
    return lambda n: model.train(gradient_steps=n, batch_size=BATCH)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=20, help="timed updates per trainer and round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (the median is reported)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "trainer_speed.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    steppers = {
        "calql": calql_stepper(),
        "reference_calql": reference_stepper(),
        "cql_light": calql_stepper(cql_n_actions=1, cql_max_target_backup=False),
        "sb3_sac": sb3_stepper(),
    }
    rounds: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(args.rounds):  # alternate, so a busy spell on the shared machine hits every trainer
        for name, run in steppers.items():
            start = time.perf_counter()
            run(args.updates)
            rounds[name].append(args.updates / (time.perf_counter() - start))
    rates = {name: float(np.median(values)) for name, values in rounds.items()}
    for name, rate in rates.items():
        print(f"{name:16s} {rate:8.2f} updates/s  (rounds: {', '.join(f'{r:.2f}' for r in rounds[name])})")
    ratio = rates["calql"] / rates["reference_calql"]
    print(f"calql / reference_calql = {ratio:.2f} (goal >= 1.5)")
    result = {
        "what": "gradient updates/s at batch 256, 2 x 256 hidden (actor and twin critics), 17-d obs, 7-d actions; "
                "median over alternating rounds",
        "updates_per_s": {k: round(v, 2) for k, v in rates.items()},
        "rounds_updates_per_s": {k: [round(x, 2) for x in v] for k, v in rounds.items()},
        "calql_over_reference_calql": round(ratio, 3),
        "calql_over_sb3_sac": round(rates["calql"] / rates["sb3_sac"], 3),
        "goal": "calql >= 1.5 x reference_calql (issue 5)",
        "goal_met": bool(ratio >= 1.5),
        "reference": "benchmarks/calql_reference.py (common single-file style, written for this benchmark)",
        "note": ("On a CPU thread both Cal-QL updates are dominated by the critics' 256x256 GEMMs over the "
                 "31 x 256 state-action rows that carry gradients (forward, input-gradient and weight-gradient "
                 "GEMMs per critic), which any implementation of the algorithm must do. Ours saves the "
                 "reference's extra work (actor passes on 10x repeated observations, the observation part of "
                 "the first layer per action, critic weight-gradients from the actor loss) and runs the critic "
                 "layers in cache-sized chunks of ~1024 rows (the ReLU and its backward ~4x faster than over "
                 "all 7936 rows at once); the GEMMs themselves are the same, which caps the gain well below "
                 "1.5x on this CPU without changing the math."),
        "command": "OMP_NUM_THREADS=1 python benchmarks/trainer_speed.py " + " ".join(argv or sys.argv[1:]),
        "updates": args.updates, "rounds": args.rounds, "torch_threads": args.threads, "torch": torch.__version__,
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
