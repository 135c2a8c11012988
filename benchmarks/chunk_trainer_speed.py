"""Wall time per env step of OGPO and DSRL-NA at benchmarks/finetune_generative.py's `--scale cpu`
settings or at the papers' own (`--scale paper`), one torch thread, and what a 100k-env-step trial of
each costs on this CPU: the numbers that say whether issue 22's fine-tuning protocol (2 tasks x 3
seeds x 100k env steps per method) fits a CPU session, and why the paper-scale runs need a GPU.

Each trainer starts from the shipped `widowx-lift-flow` policy on LiftCube, learns `--warmup` env
steps and then on until its first update has run (OGPO updates only once the replay holds
batch_size * H primitive transitions), so every timed env step carries its update round; then
`--steps` more, timed (acting, env stepping, updates and replay bookkeeping; no evaluation). At paper
scale `learning_starts` is lowered to 100 for the timing alone (it sets when updates begin, not what
one costs).

    MUJOCO_GL=egl python benchmarks/chunk_trainer_speed.py                 # ~2 min
    MUJOCO_GL=egl python benchmarks/chunk_trainer_speed.py --scale paper   # ~10 min

Writes benchmarks/results/chunk_trainer_speed.json (`_paper.json` at paper scale), atomically.
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
    parser.add_argument("--scale", choices=("cpu", "paper"), default="cpu",
                        help="finetune_generative.py's settings to time (paper: the trainers' defaults)")
    parser.add_argument("--warmup", type=int, default=400, help="env steps before the timed part (at least "
                        "until the first update)")
    parser.add_argument("--steps", type=int, default=None, help="timed env steps (default 400 cpu, 40 paper)")
    parser.add_argument("--out", default=None, help="default benchmarks/results/chunk_trainer_speed[_paper].json")
    args = parser.parse_args(argv)
    steps = args.steps or (400 if args.scale == "cpu" else 40)
    out_path = args.out or str(RESULTS / ("chunk_trainer_speed.json" if args.scale == "cpu"
                                          else "chunk_trainer_speed_paper.json"))
    import torch

    torch.set_num_threads(1)
    from steergym.algorithms.dsrl_na import DSRLNA, DSRLNAConfig
    from steergym.algorithms.ogpo import OGPO, OGPOConfig
    from steergym.algorithms.steering import SteeringConfig, make_task_env
    from steergym.policies.zoo import load_shipped

    policy, env_id = load_shipped("widowx-lift-flow"), "steergym/WidowXLiftCube-v0"
    load_start, trainers = load_average(), {}
    for name, cls, config_cls in (("ogpo", OGPO, OGPOConfig), ("dsrl-na", DSRLNA, DSRLNAConfig)):
        overrides = configs(args.scale)[name] if args.scale == "cpu" else {"learning_starts": 100}
        config = config_cls(**overrides)
        env = make_task_env(env_id, SteeringConfig())
        try:
            agent = cls(env, policy, config, seed=0)
            agent.learn(args.warmup, progress=False)
            while agent.updates == 0:  # OGPO's replay gate (batch_size * H rows) can lie past the warm-up
                agent.learn(100, progress=False, reset_num_timesteps=False)
            warmup, start = agent.num_timesteps, time.perf_counter()
            agent.learn(steps, progress=False, reset_num_timesteps=False)
            seconds, timed = time.perf_counter() - start, agent.num_timesteps - warmup
        finally:
            env.close()
        trainers[name] = {"config": config.to_dict(), "warmup_env_steps": warmup, "env_steps": timed,
                          "seconds": round(seconds, 2), "ms_per_env_step": round(1000 * seconds / timed, 1),
                          "hours_per_100k_env_steps": round(seconds / timed * 100_000 / 3600, 2)}
        print(f"{name}: {trainers[name]['ms_per_env_step']} ms per env step, "
              f"{trainers[name]['hours_per_100k_env_steps']} h per 100k env steps", flush=True)
    scale = ("finetune_generative.py's cpu scale" if args.scale == "cpu" else
             "the papers' settings (the trainers' defaults; learning_starts 100 for the timing)")
    out = write_results(out_path, {
        "what": f"wall time per env step (one torch thread) of OGPO and DSRL-NA at {scale}, once updates run",
        "scale": args.scale, "policy": "widowx-lift-flow", "env_id": env_id, "trainers": trainers,
        "command": "MUJOCO_GL=egl python benchmarks/chunk_trainer_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
        "load_average": [load_start, load_average()], **git_state()})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
