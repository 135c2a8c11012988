"""OGPO vs DSRL-SAC vs DSRL-NA vs residual SAC, fine-tuning a weak generative policy at equal env steps.

For each task (the shipped policy's task), method and seed, the method trains for `--env-steps`
primitive env steps on the task with DSRL's reward shaping (-1 per step until success,
`SteeringConfig.reward_offset`) and is evaluated every `--eval-every` env steps on reset seeds
0..`--eval-episodes`-1 (OGPO: the fine-tuned policy's deterministic sampler; DSRL-NA: the noise
actor's mean; DSRL-SAC: seeded noise samples, as DSRL evaluates; residual: the mean correction).

    python benchmarks/finetune_generative.py                           # the issue's protocol (GPU-sized)
    python benchmarks/finetune_generative.py --scale cpu --env-steps 2000 --seeds 0

`--scale cpu` shrinks networks, batches, groups and update ratios so that a run fits a 2-core CPU;
`--scale paper` keeps every trainer's paper defaults (OGPOConfig, DSRLNAConfig; SteeringConfig for the
SB3 methods, already CPU-sized) and needs a GPU for useful budgets. The scale and every config used
are written into the JSON, so a result always states what ran.

Results: benchmarks/results/finetune_generative.json (rewritten atomically after every finished run;
`--resume` skips finished runs) and finetune_generative_<task>.png when matplotlib is installed.
Issue 6's goal: OGPO reaches >= 0.9 success with no expert data online and beats the steering and
residual methods at equal budget; DSRL-NA is more sample-efficient than DSRL-SAC.

Policies: the default is the issue's "poorly initialised" pair, `weak:widowx-lift-flow-weak` (3
demos, 0.10 over seeds 0-99) and `weak:widowx-push-flow-weak` (10 demos, 0.18), flow policies made
by `recipes/shipped_policies.py`'s WEAK_RECIPES into `--work` on first use (about a minute each,
deterministic on one machine; a recipe whose success leaves the 0.05-0.2 band stops the run).
A shipped policy's name (e.g. `widowx-lift-diffusion`, 0.28) works too.
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

METHODS = ("ogpo", "dsrl-na", "dsrl-sac", "residual")
WEAK = "weak:"  # a policy name with this prefix is made by recipes/shipped_policies.py's WEAK_RECIPES
DEFAULT_POLICIES = ("weak:widowx-lift-flow-weak", "weak:widowx-push-flow-weak")
RESULTS = REPO / "benchmarks" / "results"


def weak_policy(policy_name: str, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The checkpoint folder and recipe entry of a `weak:NAME` policy, made once under `--work`."""
    if str(REPO / "recipes") not in sys.path:
        sys.path.insert(0, str(REPO / "recipes"))
    from shipped_policies import make_weak

    return make_weak(policy_name.removeprefix(WEAK), Path(args.work))


def configs(scale: str) -> dict[str, dict[str, Any]]:
    """Per-method config overrides for `scale` ('paper': none)."""
    if scale == "paper":
        return {"ogpo": {}, "dsrl-na": {}, "steering": {}}
    return {
        "ogpo": dict(critic_hidden=(256, 256), batch_size=128, group_size=8, ppo_batch_size=32,
                     learning_starts=100, success_batch_size=64, log_every=50),
        "dsrl-na": dict(hidden=(256, 256), batch_size=128, utd=2, distill_steps=2, learning_starts=100,
                        log_every=50),
        "steering": dict(learning_starts=100),
    }


def run_one(policy_name: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from steergym.algorithms.dsrl_na import DSRLNA, DSRLNAConfig
    from steergym.algorithms.ogpo import OGPO, OGPOConfig
    from steergym.algorithms.steering import SteeringConfig, make_task_env, train_steering
    from steergym.policies.zoo import load_shipped, shipped_policies

    overrides = configs(args.scale)
    steering_cfg = SteeringConfig(**overrides["steering"])
    if policy_name.startswith(WEAK):
        from steergym.policies.checkpoint import load_policy

        folder, entry = weak_policy(policy_name, args)
        env_id, policy = entry["env_ids"][0], load_policy(folder, seed=seed)
    else:
        env_id, policy = shipped_policies()[policy_name].env_ids[0], load_shipped(policy_name, seed=seed)
    start = time.perf_counter()
    if method in ("dsrl-sac", "residual"):
        result = train_steering(env_id, "dsrl" if method == "dsrl-sac" else "residual", policy=policy,
                                config=steering_cfg, env_steps=args.env_steps, eval_every=args.eval_every,
                                eval_episodes=args.eval_episodes, seed=seed, progress=False)
        curve, used = result.curve, {k: v for k, v in vars(steering_cfg).items()}
    else:
        train_env = make_task_env(env_id, steering_cfg)
        eval_env = make_task_env(env_id, steering_cfg)
        if method == "ogpo":
            cfg = OGPOConfig(**overrides["ogpo"])
            agent = OGPO(train_env, policy, cfg, seed=seed)
        else:
            cfg = DSRLNAConfig(**overrides["dsrl-na"])
            agent = DSRLNA(train_env, policy, cfg, seed=seed)
        agent.learn(args.env_steps, eval_env=eval_env, eval_every=args.eval_every,
                    eval_episodes=args.eval_episodes, progress=False)
        curve, used = agent.eval_history, cfg.to_dict()
        train_env.close()
        eval_env.close()
    return {"policy": policy_name, "env_id": env_id, "method": method, "seed": seed,
            "wall_s": round(time.perf_counter() - start, 1), "curve": curve,
            "final_success": curve[-1]["success_rate"] if curve else None,
            "config": json.loads(json.dumps(used, default=list))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--env-steps", type=int, default=200_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--scale", choices=("paper", "cpu"), default="paper")
    parser.add_argument("--out", default=str(RESULTS / "finetune_generative.json"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--work", default=str(REPO / "runs" / "finetune_generative"),
                        help="where weak:NAME policies and their demos are made (reused when present)")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    initial = {}
    for policy_name in args.policies:  # made up front, so every run starts from the same checkpoint
        if policy_name.startswith(WEAK):
            folder, entry = weak_policy(policy_name, args)
            initial[policy_name] = entry["success_rate"]
            print(f"{policy_name}: {folder} (success {entry['success_rate']} over {entry['episodes']} seeds)")

    out = Path(args.out)
    runs: list[dict[str, Any]] = []
    if args.resume and out.exists():
        runs = json.loads(out.read_text()).get("runs", [])
    done = {(r["policy"], r["method"], r["seed"]) for r in runs}
    header = {
        "benchmark": "finetune_generative", "scale": args.scale, "env_steps": args.env_steps,
        "eval_every": args.eval_every, "eval_episodes": args.eval_episodes, "seeds": args.seeds,
        "cpu": cpu_name(), "python": platform.python_version(), **git_state(),
        "initial_success": initial,
        "note": ("cpu scale: networks, batches and update ratios shrunk to fit a 2-core CPU; not the "
                 "paper's settings" if args.scale == "cpu" else "each trainer's paper defaults"),
    }
    for policy_name in args.policies:
        for method in args.methods:
            for seed in args.seeds:
                if (policy_name, method, seed) in done:
                    continue
                print(f"{policy_name} {method} seed {seed} ...", flush=True)
                row = run_one(policy_name, method, seed, args)
                print(f"  final success {row['final_success']} in {row['wall_s']} s", flush=True)
                runs.append(row)
                data = {**header, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "load_average": load_average(), "runs": runs}
                tmp = out.with_name(f".{out.name}.tmp")
                tmp.write_text(json.dumps(data, indent=1) + "\n")
                os.replace(tmp, out)
    try:
        from steergym.bench.plots import success_curve_plot

        for policy_name in args.policies:
            curves = {m: [r["curve"] for r in runs if r["policy"] == policy_name and r["method"] == m]
                      for m in args.methods}
            path = out.with_name(f"{out.stem}_{policy_name.removeprefix(WEAK)}.png")
            success_curve_plot(curves, path, title=f"{policy_name}: fine-tuning at equal env steps")
            print(f"plot: {path}")
    except ImportError as exc:
        print(f"no plot ({exc}); the JSON has every curve", file=sys.stderr)


if __name__ == "__main__":
    main()
