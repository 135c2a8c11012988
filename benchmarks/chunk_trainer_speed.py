"""Wall time per env step of OGPO and DSRL-NA at benchmarks/finetune_generative.py's `--scale cpu`
settings (one torch thread), and what a 100k-env-step trial of each costs on this CPU: the number
that says whether issue 22's fine-tuning protocol (2 tasks x 3 seeds x 100k env steps per method)
fits a CPU session.

Each trainer starts from the shipped `widowx-lift-flow` policy on LiftCube, learns `--warmup` env
steps (past `learning_starts`, so every later env step carries its update round), then `--steps`
more, timed (acting, env stepping, updates and replay bookkeeping; no evaluation).

    MUJOCO_GL=egl python benchmarks/chunk_trainer_speed.py           # ~1 min

Writes benchmarks/results/chunk_trainer_speed.json (atomically).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from finetune_generative import configs  # benchmarks/ is on sys.path when run as a script
from run_context import cpu_name, git_state, load_average, write_results

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=int, default=400, help="env steps before the timed part")
    parser.add_argument("--steps", type=int, default=400, help="timed env steps")
    parser.add_argument("--out", default=str(RESULTS / "chunk_trainer_speed.json"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from steergym.algorithms.dsrl_na import DSRLNA, DSRLNAConfig
    from steergym.algorithms.ogpo import OGPO, OGPOConfig
    from steergym.algorithms.steering import SteeringConfig, make_task_env
    from steergym.policies.zoo import load_shipped

    policy, env_id = load_shipped("widowx-lift-flow"), "steergym/WidowXLiftCube-v0"
    load_start, trainers = load_average(), {}
    for name, cls, config_cls in (("ogpo", OGPO, OGPOConfig), ("dsrl-na", DSRLNA, DSRLNAConfig)):
        config = config_cls(**configs("cpu")[name])
        env = make_task_env(env_id, SteeringConfig())
        try:
            agent = cls(env, policy, config, seed=0)
            agent.learn(args.warmup, progress=False)
            start, before = time.perf_counter(), agent.num_timesteps
            agent.learn(args.steps, progress=False, reset_num_timesteps=False)
            seconds, steps = time.perf_counter() - start, agent.num_timesteps - before
        finally:
            env.close()
        trainers[name] = {"config": config.to_dict(), "env_steps": steps, "seconds": round(seconds, 2),
                          "ms_per_env_step": round(1000 * seconds / steps, 1),
                          "hours_per_100k_env_steps": round(seconds / steps * 100_000 / 3600, 2)}
        print(f"{name}: {trainers[name]['ms_per_env_step']} ms per env step, "
              f"{trainers[name]['hours_per_100k_env_steps']} h per 100k env steps", flush=True)
    out = write_results(args.out, {
        "what": "wall time per env step (one torch thread) of OGPO and DSRL-NA at finetune_generative.py's cpu "
                "scale, after learning_starts", "policy": "widowx-lift-flow", "env_id": env_id, "trainers": trainers,
        "command": "MUJOCO_GL=egl python benchmarks/chunk_trainer_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
        "load_average": [load_start, load_average()], **git_state()})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
