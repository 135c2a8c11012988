"""The whole loop a LeRobot user runs (docs/steer_your_own_policy.md): collect a steergym dataset, export
it with `--proprio-dim 7`, train a (tiny) diffusion policy with LeRobot's own `lerobot-train`, load the
checkpoint it writes with `LeRobotPolicy.load` and steer it with DSRL. Offline: HF_HUB_OFFLINE=1."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np

from steergym.data import collect
from steergym.data.lerobot_format import export_to_lerobot
from steergym.policies.lerobot import LeRobotPolicy
from steergym.wrappers import NoiseActionWrapper

LIFT = "steergym/WidowXLiftCube-v0"


def test_collect_export_lerobot_train_then_steer_the_checkpoint(tmp_path):
    root = tmp_path / "minari"
    collect(LIFT, 3, "expert", "steergym/lift/expert-v0", seed=0, root=root, progress=False)
    exported = export_to_lerobot("steergym/lift/expert-v0", tmp_path / "lift_expert", datasets_root=root,
                                 proprio_dim=7)
    out = tmp_path / "train"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(tmp_path / "home"), "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "lerobot.scripts.lerobot_train", "--dataset.repo_id=steergym/lift_expert",
               f"--dataset.root={exported}", "--policy.type=diffusion", "--policy.device=cpu",
               "--policy.push_to_hub=false", f"--output_dir={out}", "--steps=2", "--batch_size=4",
               "--num_workers=0", "--save_freq=2", "--eval_freq=0", "--wandb.enable=false",
               "--policy.down_dims=[16,32]", "--policy.kernel_size=3", "--policy.n_groups=4",
               "--policy.diffusion_step_embed_dim=16", "--policy.num_inference_steps=5"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = out / "checkpoints" / "000002" / "pretrained_model"
    assert (checkpoint / "model.safetensors").is_file()

    task = gym.make(LIFT)
    policy = LeRobotPolicy.load(checkpoint, task)
    # the export's state split is what the default observation map gives a WidowX state task
    assert policy.obs_map == {"observation.state": "obs[0:7]", "observation.environment_state": "obs[7:]"}
    assert policy.noise_shape == (16, 7) and policy.chunk_length == 8  # LeRobot's defaults
    steered = NoiseActionWrapper(policy.wrap_env(task), policy)
    steered.reset(seed=0)
    _, _, _, _, info = steered.step(np.zeros(steered.action_space.shape, np.float32))
    assert info["chunk"].shape == (8, 7) and np.all(np.isfinite(info["chunk"]))
    task.close()
