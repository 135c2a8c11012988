"""Cost of steering a LeRobot diffusion policy on the CPU (issue 21), beside the shipped steergym policy.

A LeRobot `DiffusionPolicy` with LeRobot's default architecture (U-Net down_dims 512/1024/2048,
horizon 16, n_action_steps 8, n_obs_steps 2; DDPM training schedule of 100 steps, sampled with DDIM
eta = 0 over `--inference-steps` steps after `LeRobotPolicy.load` switches it) and random weights is
saved as lerobot-train saves it, then loaded through `LeRobotPolicy.load` for
steergym/WidowXLiftCube-v0 in two input settings: state only (7-D proprio + 10-D object state) and
state + one 96x96 camera (ResNet-18 encoder, random init). Measured, batch 1, torch on one thread:
- chunk latency: `sample(obs, noise)` median / p10 / p90;
- steering overhead: one `NoiseActionWrapper.step` (decode + the chunk's env steps) against the same
  env steps alone, per executed action;
and the same for the shipped `widowx-lift-diffusion` (an MLP denoiser, 10 DDIM steps).

    MUJOCO_GL=egl python benchmarks/lerobot_policy.py        # ~5 min on one core; needs the lerobot extra

Writes benchmarks/results/lerobot_policy.json (atomically).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from run_context import cpu_name, git_state, load_average, timings_ms, write_results  # benchmarks/ is on sys.path

RESULTS = Path(__file__).parent / "results"
ENV_ID = "steergym/WidowXLiftCube-v0"
SHIPPED = "widowx-lift-diffusion"




def save_default_diffusion(folder: Path, image: bool, inference_steps: int) -> int:
    """LeRobot's default diffusion architecture with random weights, saved with its processors."""
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from lerobot.policies.factory import make_pre_post_processors

    torch.manual_seed(0)
    inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (7,))}
    if image:
        inputs["observation.images.top"] = PolicyFeature(FeatureType.VISUAL, (3, 96, 96))
    else:
        inputs["observation.environment_state"] = PolicyFeature(FeatureType.ENV, (10,))
    config = DiffusionConfig(input_features=inputs, output_features={"action": PolicyFeature(FeatureType.ACTION, (7,))},
                             num_inference_steps=inference_steps, pretrained_backbone_weights=None,
                             use_group_norm=True, device="cpu")
    policy = DiffusionPolicy(config)

    def stats(n):
        return {"min": -torch.ones(n), "max": torch.ones(n), "mean": torch.zeros(n), "std": torch.ones(n)}
    dataset_stats = {key: stats(f.shape[0]) for key, f in inputs.items() if f.type is not FeatureType.VISUAL}
    if image:
        dataset_stats["observation.images.top"] = {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25)}
    dataset_stats["action"] = stats(7)
    pre, post = make_pre_post_processors(config, dataset_stats=dataset_stats)
    for part in (policy, pre, post):
        part.save_pretrained(folder)
    return sum(p.numel() for p in policy.parameters())


def steering_overhead(policy, env_kwargs: dict, steps: int) -> dict[str, float]:
    """ms per executed action: NoiseActionWrapper.step vs the same env stepping alone."""
    import gymnasium as gym

    from steergym.wrappers import NoiseActionWrapper

    base = gym.make(ENV_ID, **env_kwargs)
    wrap = getattr(policy, "wrap_env", lambda env: env)
    steered = NoiseActionWrapper(wrap(base), policy)
    length = getattr(policy, "chunk_length", policy.noise_shape[0])
    rng = np.random.default_rng(0)
    steered.reset(seed=0)
    start, actions = time.perf_counter(), 0
    for _ in range(steps):
        _, _, terminated, truncated, info = steered.step(rng.uniform(-1, 1, steered.action_space.shape).astype(np.float32))
        actions += int(info["steps"])
        if terminated or truncated:
            steered.reset()
    steered_ms = 1000 * (time.perf_counter() - start) / actions
    plain = gym.make(ENV_ID, **env_kwargs)
    plain.reset(seed=0)
    start = time.perf_counter()
    for _ in range(actions):
        _, _, terminated, truncated, _ = plain.step(plain.action_space.sample())
        if terminated or truncated:
            plain.reset()
    env_ms = 1000 * (time.perf_counter() - start) / actions
    base.close(), plain.close()
    return {"steered_ms_per_action": steered_ms, "env_ms_per_action": env_ms,
            "overhead_ms_per_action": steered_ms - env_ms, "chunk_length": int(length), "actions": actions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="timed sample() calls per policy")
    parser.add_argument("--steer-steps", type=int, default=10, help="NoiseActionWrapper steps per policy")
    parser.add_argument("--inference-steps", type=int, default=10,
                        help="DDIM steps for the LeRobot policy (LeRobot's default: 100, the training schedule)")
    parser.add_argument("--out", default=str(RESULTS / "lerobot_policy.json"))
    args = parser.parse_args(argv)
    import gymnasium as gym
    import lerobot
    import torch

    import steergym  # noqa: F401  (registers the ids)
    from steergym.policies.lerobot import LeRobotPolicy
    from steergym.policies.zoo import load_shipped

    torch.set_num_threads(1)
    load_start = load_average()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, image in (("lerobot diffusion, state", False), ("lerobot diffusion, state + 96x96 image", True)):
            folder = Path(tmp) / name.replace(" ", "_").replace(",", "").replace("+", "")
            params = save_default_diffusion(folder, image, args.inference_steps)
            env_kwargs = {"obs_mode": "pixels_state", "image_size": (96, 96)} if image else {}
            env = gym.make(ENV_ID, **env_kwargs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                policy = LeRobotPolicy.load(folder, env)
            obs, _ = policy.wrap_env(env).reset(seed=0)
            noise = np.random.default_rng(0).standard_normal(policy.noise_shape).astype(np.float32)
            latency = timings_ms(lambda: policy.sample(obs, noise), args.calls, warmup=3)
            rows.append({"policy": name, "parameters": params, "noise_shape": list(policy.noise_shape),
                         "denoising_steps": args.inference_steps, "sample_ms": latency,
                         **steering_overhead(policy, env_kwargs, args.steer_steps)})
            env.close()
            print(f"{name}: {params / 1e6:.1f} M parameters, sample {latency['median']:.0f} ms, "
                  f"{rows[-1]['overhead_ms_per_action']:.1f} ms steering overhead per action", flush=True)
    env = gym.make(ENV_ID)
    shipped = load_shipped(SHIPPED, env)
    obs, _ = env.reset(seed=0)
    noise = np.random.default_rng(0).standard_normal(shipped.noise_shape).astype(np.float32)
    latency = timings_ms(lambda: shipped.sample(obs, noise), max(args.calls, 100))
    rows.append({"policy": f"steergym {SHIPPED}", "parameters": shipped.num_parameters(),
                 "noise_shape": list(shipped.noise_shape), "denoising_steps": shipped.config.sample_steps,
                 "sample_ms": latency, **steering_overhead(shipped, {}, args.steer_steps * 4)})
    env.close()
    print(f"{SHIPPED}: sample {latency['median']:.2f} ms", flush=True)
    result = {
        "what": "batch-1 chunk latency and DSRL steering overhead of LeRobot's default diffusion architecture "
                "(random weights) loaded through LeRobotPolicy, beside the shipped steergym policy; torch 1 thread",
        "env_id": ENV_ID, "rows": rows, "lerobot": getattr(lerobot, "__version__", "?"), "torch": torch.__version__,
        "numpy": np.__version__,
        "command": "MUJOCO_GL=egl python benchmarks/lerobot_policy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
        "python": platform.python_version(), "load_average": [load_start, load_average()], **git_state(),
    }
    out = write_results(args.out, result)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
