"""Is DSRL's plateau on a task compute or the base policy's support? (issue 22)

DSRL can only reach what some choice of the frozen policy's initial noise reaches. This measures that
directly: for each evaluation seed DSRL is scored on (0..29 in benchmarks/specs/steering.json), roll
the base policy out through `NoiseActionWrapper` K times with random noise per chunk and count the
seed as reachable when any of the K episodes succeeds (pass@K). Two noise laws: "gaussian", N(0, I)
clipped to DSRL's box (the base policy's own law), and "box", uniform over the box [-b, b] DSRL's
agent acts in (b = 1.5), which reaches the noise the base policy rarely samples.

Reading: pass@K far above DSRL's final success means successful noise sequences exist for most seeds
and random search finds them, so the plateau is the learner's (compute: updates, UTD); pass@K that
levels off near DSRL's success means the seeds DSRL fails on are out of the base policy's reach.

    MUJOCO_GL=egl python benchmarks/dsrl_support.py                 # carrot, K up to 64: ~10 min, 1 core

Writes benchmarks/results/dsrl_support.json (atomically).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from run_context import cpu_name, git_state, load_average, write_results  # benchmarks/ is on sys.path

RESULTS = Path(__file__).parent / "results"


def rollout_success(env, rng: np.random.Generator, law: str, bound: float, seed: int) -> bool:
    """One episode from reset seed `seed` with random noise per chunk; True when it succeeds."""
    env.reset(seed=seed)
    shape = env.action_space.shape
    while True:
        if law == "box":
            noise = rng.uniform(-bound, bound, shape)
        else:
            noise = np.clip(rng.standard_normal(shape), -bound, bound)
        _, _, terminated, truncated, info = env.step(noise.astype(np.float32))
        if info.get("is_success"):
            return True
        if terminated or truncated:
            return False


def pass_at(successes: np.ndarray, ks: list[int]) -> dict[str, float]:
    """successes (seeds, K) bool -> {k: fraction of seeds with a success among the first k tries}."""
    return {str(k): float(successes[:, :k].any(axis=1).mean()) for k in ks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="widowx-carrot-diffusion")
    parser.add_argument("--seeds", type=int, default=30, help="evaluation reset seeds 0..N-1 (DSRL's)")
    parser.add_argument("--tries", type=int, default=64, help="K: random-noise episodes per seed and law")
    parser.add_argument("--noise-bound", type=float, default=1.5)
    parser.add_argument("--dsrl-results", default=str(RESULTS / "steering_100k.json"),
                        help="the DSRL run to compare with (its summary's final success)")
    parser.add_argument("--out", default=str(RESULTS / "dsrl_support.json"))
    args = parser.parse_args(argv)
    import gymnasium as gym
    import torch

    import steergym  # noqa: F401  (registers the ids)
    from steergym.policies.zoo import load_shipped, shipped_policies
    from steergym.wrappers import NoiseActionWrapper

    torch.set_num_threads(1)
    env_id = shipped_policies()[args.policy].env_ids[0]
    policy = load_shipped(args.policy)
    env = NoiseActionWrapper(gym.make(env_id), policy, noise_bound=args.noise_bound)
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256) if k <= args.tries]
    started, load_start = time.perf_counter(), load_average()
    laws = {}
    for law in ("gaussian", "box"):
        successes = np.zeros((args.seeds, args.tries), dtype=bool)
        for seed in range(args.seeds):
            rng = np.random.default_rng([seed, 0 if law == "gaussian" else 1])
            for k in range(args.tries):
                successes[seed, k] = rollout_success(env, rng, law, args.noise_bound, seed)
        laws[law] = {"pass_at": pass_at(successes, ks), "success_per_try": float(successes.mean()),
                     "per_seed_successes": successes.sum(axis=1).tolist()}
        print(f"{law}: per-try success {successes.mean():.2f}; "
              + ", ".join(f"pass@{k} {v:.2f}" for k, v in laws[law]["pass_at"].items()), flush=True)
    env.close()
    dsrl = None
    path = Path(args.dsrl_results)
    if path.is_file():
        summary = json.loads(path.read_text()).get("summary", {}).get(args.policy, {})
        if "dsrl" in summary:
            dsrl = {"final_mean": summary["dsrl"]["final_mean"], "best_mean": summary["dsrl"]["best_mean"],
                    "base": summary.get("base"), "source": str(path.name)}
    reach = laws["box"]["pass_at"][str(ks[-1])]
    verdict = None
    if dsrl is not None:
        verdict = ("compute: successful noise exists for far more seeds than DSRL solves"
                   if reach >= dsrl["final_mean"] + 0.2 else
                   "support: random noise reaches about as many seeds as DSRL solves")
    result = {
        "what": "pass@K of the frozen base policy under random noise per chunk, on DSRL's evaluation seeds: the "
                "share of seeds some noise sequence solves (a lower bound on what DSRL can reach)",
        "policy": args.policy, "env_id": env_id, "seeds": args.seeds, "tries": args.tries,
        "noise_bound": args.noise_bound, "laws": laws, "dsrl": dsrl, "verdict": verdict,
        "command": "MUJOCO_GL=egl python benchmarks/dsrl_support.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
        "python": platform.python_version(), "seconds": round(time.perf_counter() - started, 1),
        "load_average": [load_start, load_average()], **git_state(),
    }
    out = write_results(args.out, result)
    print(f"verdict: {verdict} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
