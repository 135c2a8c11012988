"""The scripted experts: success, determinism, noise, and grasp stability.

docs/benchmarks.md claims the noiseless expert succeeds on all of seeds 0-99 of every task (100%, the
`benchmarks/env_speed.py --expert-episodes 100` column); episodes are short (8-15 steps), so CI
checks every one of those seeds (about 25 s on one core for the six tasks). Only the public API is used:
`make_expert(env, noise=..., seed=...)`, `expert.reset()` after `env.reset()`, `expert.act(obs)`.
"""

from __future__ import annotations

import numpy as np
import pytest

from steergym.policies.scripted import make_expert
from steergym.registry import env_ids

ENV_IDS = env_ids()
SEEDS = range(100)  # docs/benchmarks.md's "expert success (100 seeds)": all of them


def _short(env_id: str) -> str:
    return env_id.split("/")[-1].rsplit("-v", 1)[0]


def _episode(env, expert, seed: int, max_steps: int | None = None):
    """One expert episode; (success, actions, number of steps)."""
    obs, info = env.reset(seed=seed)
    expert.reset()
    actions = []
    while True:
        action = expert.act(obs)
        assert action.shape == (7,) and np.all(np.abs(action) <= 1.0) and np.all(np.isfinite(action))
        actions.append(action.copy())
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated or (max_steps is not None and len(actions) >= max_steps):
            return bool(info["is_success"]) and terminated, np.array(actions), len(actions)


@pytest.mark.parametrize("env_id", ENV_IDS, ids=_short)
def test_expert_succeeds(make_env, env_id):
    env = make_env(env_id)
    expert = make_expert(env, noise=0.0, seed=0)
    failed = [seed for seed in SEEDS if not _episode(env, expert, seed)[0]]
    assert not failed, f"{env_id}: the expert failed on seeds {failed} of {SEEDS}"


def test_expert_works_from_pixel_observations(make_env):
    """The expert reads the simulator, not `obs`: it must work in every obs_mode."""
    env = make_env("steergym/WidowXLiftCube-v0", obs_mode="pixels", image_size=(32, 32))
    expert = make_expert(env, seed=0)
    success, _, _ = _episode(env, expert, seed=0)
    assert success


@pytest.mark.parametrize("noise", [0.0, 0.2])
@pytest.mark.parametrize(
    "env_id", ["steergym/WidowXPutCarrotOnPlate-v0", "steergym/WidowXPushCube-v0"], ids=_short
)
def test_same_seed_same_expert_actions(make_env, env_id, noise):
    runs = []
    for _ in range(2):
        env = make_env(env_id)
        expert = make_expert(env, noise=noise, seed=3)
        runs.append(_episode(env, expert, seed=5, max_steps=25)[1])
    np.testing.assert_array_equal(runs[0], runs[1])
    # Noiseless, one expert object replays an episode exactly after reset() (no state leaks across
    # episodes; with noise its generator rightly moves on).
    if noise == 0.0:
        env = make_env(env_id)
        expert = make_expert(env, noise=noise, seed=3)
        first = _episode(env, expert, seed=5, max_steps=25)[1]
        second = _episode(env, expert, seed=5, max_steps=25)[1]
        np.testing.assert_array_equal(first, second)


def test_noise_changes_actions(make_env):
    env_id = "steergym/WidowXLiftCube-v0"
    clean_env, noisy_env, other_env = make_env(env_id), make_env(env_id), make_env(env_id)
    clean = make_expert(clean_env, noise=0.0, seed=0)
    noisy = make_expert(noisy_env, noise=0.2, seed=0)
    other = make_expert(other_env, noise=0.2, seed=1)
    obs_c, _ = clean_env.reset(seed=4)
    obs_n, _ = noisy_env.reset(seed=4)
    obs_o, _ = other_env.reset(seed=4)
    for expert in (clean, noisy, other):
        expert.reset()
    a_clean, a_noisy, a_other = clean.act(obs_c), noisy.act(obs_n), other.act(obs_o)
    assert not np.allclose(a_clean, a_noisy), "noise=0.2 left the action unchanged"
    assert not np.allclose(a_noisy, a_other), "different expert seeds gave the same noise"
    assert np.all(np.abs(a_noisy) <= 1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_grasped_cube_stays_in_gripper_while_moving(make_env, seed):
    env = make_env("steergym/WidowXLiftCube-v0", terminate_on_success=False, max_episode_steps=200)
    u = env.unwrapped
    expert = make_expert(env, seed=0)
    obs, info = env.reset(seed=seed)
    expert.reset()
    for _ in range(40):
        obs, _, _, _, info = env.step(expert.act(obs))
        if info["is_success"]:
            break
    assert info["is_success"], "the expert did not lift the cube"
    assert u.is_grasped("red_cube")
    offset = u.body_pose("red_cube")[0] - u.tcp_pose()[0]

    # Carry it around at full speed with the jaw closed: +x, +y, -y, -x, up, down, diagonal, yaw.
    moves = [(1, 0, 0), (1, 0, 0), (0, 1, 0), (0, -1, 0), (-1, 0, 0), (0, 0, 1), (0, 0, -0.6), (-1, -1, 0)]
    actions = [np.array([*m, 0.0, 0.0, 0.0, -1.0]) for m in moves]
    actions += [np.array([0, 0, 0, 0, 0, 1.0, -1.0]), np.array([0, 0, 0, 0, 0, -1.0, -1.0])]
    start_tcp = u.tcp_pose()[0]
    for step, action in enumerate(actions):
        _, _, _, truncated, info = env.step(action)
        assert not truncated
        tcp, cube = u.tcp_pose()[0], u.body_pose("red_cube")[0]
        assert u.is_grasped("red_cube"), f"dropped the cube at carry step {step} ({action[:6]})"
        assert info["is_success"], f"cube no longer lifted at carry step {step}"
        if abs(action[5]) == 0.0:  # pure translation: the cube keeps its place in the jaw
            drift = np.linalg.norm(cube - tcp - offset)
            assert drift < 0.01, f"cube slipped {drift * 1000:.1f} mm in the jaw at carry step {step}"
        else:  # rotating about the tcp: the cube stays near the tcp
            assert np.linalg.norm(cube - tcp) < np.linalg.norm(offset) + 0.01
    assert np.linalg.norm(u.tcp_pose()[0] - start_tcp) > 0.02  # the arm really moved
