"""The robosuite adapter (`steergym/Robosuite-*-v0`): API checkers, seeding, errors, rendering, the
scripted Lift and Can experts, and DSRL + SAC on Lift.

Building a robosuite env takes ~2-3 s on 2 cores, so envs are shared per module where a test does not
depend on a fresh one.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import SAC
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from steergym.envs.robosuite_tasks import RobosuiteEnv, describe
from steergym.policies import DiffusionPolicy, PolicyConfig
from steergym.policies.robosuite_expert import (
    CAN_BIN_HIGH,
    CAN_BIN_LOW,
    CAN_TARGET_XY,
    RobosuiteCanExpert,
    RobosuiteLiftExpert,
)
from steergym.registry import entry, env_ids
from steergym.wrappers import NoiseActionWrapper

LIFT = "steergym/Robosuite-Lift-v0"
# first label of each object observable -> robosuite's observable of that name
OBJECT_LABELS = {
    "Lift": [("cube_x", "cube_pos"), ("cube_qx", "cube_quat"), ("gripper_to_cube_x", "gripper_to_cube_pos")],
    "PickPlaceCan": [("can_to_eef_x", "Can_to_robot0_eef_pos"), ("can_to_eef_qx", "Can_to_robot0_eef_quat"),
                     ("can_x", "Can_pos"), ("can_qx", "Can_quat")],
    "NutAssemblySquare": [("nut_to_eef_x", "SquareNut_to_robot0_eef_pos"),
                          ("nut_to_eef_qx", "SquareNut_to_robot0_eef_quat"),
                          ("nut_x", "SquareNut_pos"), ("nut_qx", "SquareNut_quat")],
}
CAN = "steergym/Robosuite-PickPlaceCan-v0"
IDS = env_ids("robosuite")


@pytest.fixture(scope="module")
def lift():
    env = gym.make(LIFT)
    yield env
    env.close()


def _rollout(env, seed, actions):
    obs = [env.reset(seed=seed)[0]]
    for a in actions:
        obs.append(env.step(a)[0])
    return np.stack(obs)


def test_registered_ids_and_horizons():
    assert IDS == ["steergym/Robosuite-Lift-v0", "steergym/Robosuite-PickPlaceCan-v0",
                   "steergym/Robosuite-NutAssemblySquare-v0"]
    assert [entry(i).max_episode_steps for i in IDS] == [300, 300, 400]  # DPPO's episode lengths


@pytest.mark.parametrize("env_id", IDS, ids=lambda i: i.split("-")[1])
def test_checkers_and_robomimic_observation(env_id):
    env = gym.make(env_id)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gym_check_env(env.unwrapped, skip_render_check=True)
            sb3_check_env(env.unwrapped, warn=True)
        assert not [str(w.message) for w in caught], "checker warnings"
        task = env.unwrapped.task
        # robomimic low-dim layout: eef pos 3 + quat 4 + gripper 2 + object state (lift 10, can/square 14)
        assert env.observation_space.shape == (task.obs_dim,) == (19 if "Lift" in env_id else 23,)
        assert env.observation_space.dtype == np.float32 and len(env.unwrapped.state_names) == task.obs_dim
        assert env.action_space.shape == (7,) and env.metadata["render_fps"] == 20
        # the static table `steergym list` shows without building the env agrees with the env
        listed = describe(entry(env_id).kwargs["task"])
        assert (listed["obs_shape"], listed["action_shape"]) == ([task.obs_dim], [7])
        obs, info = env.reset(seed=0)
        assert obs.dtype == np.float32 and info == {"is_success": False}
        obs, reward, terminated, truncated, info = env.step(np.zeros(7, np.float32))
        assert reward == 0.0 and not (terminated or truncated) and info["is_success"] is False
        raw = env.unwrapped.robosuite_env._get_observations()
        np.testing.assert_allclose(obs[:3], raw["robot0_eef_pos"], atol=1e-6)
        np.testing.assert_allclose(obs[9:], raw["object-state"], atol=1e-6)
        for label, key in OBJECT_LABELS[task.env_name]:  # each label sits on robosuite's own value
            start = env.unwrapped.state_names.index(label)
            np.testing.assert_allclose(obs[start:start + len(raw[key])], raw[key], atol=1e-6, err_msg=label)
    finally:
        env.close()


def test_same_seed_same_episode_in_this_and_a_fresh_env_other_seed_other_layout(lift):
    actions = np.random.default_rng(0).uniform(-1, 1, (8, 7)).astype(np.float32)
    first = _rollout(lift, 3, actions)
    _rollout(lift, 11, actions)  # an episode in between must not leak into the next one
    again = _rollout(lift, 3, actions)
    np.testing.assert_array_equal(first, again)
    fresh = gym.make(LIFT)
    try:
        np.testing.assert_array_equal(first, _rollout(fresh, 3, actions))
    finally:
        fresh.close()
    cube_xy = [lift.reset(seed=s)[0][9:11] for s in range(4)]
    assert min(np.linalg.norm(a - b) for i, a in enumerate(cube_xy) for b in cube_xy[i + 1:]) > 1e-3
    # seedless resets continue the seeded stream: reproducible, and not a repeat of the first layout
    lift.reset(seed=5)
    follow = lift.reset()[0]
    lift.reset(seed=5)
    np.testing.assert_array_equal(follow, lift.reset()[0])
    assert not np.array_equal(follow[9:11], lift.reset(seed=5)[0][9:11])


def test_pickled_env_continues_the_episode_exactly_and_seedless_resets_match(lift):
    import copy
    import pickle

    actions = np.random.default_rng(1).uniform(-1, 1, (6, 7)).astype(np.float32)
    lift.reset(seed=4)
    for a in actions[:3]:
        lift.step(a)
    clone = pickle.loads(pickle.dumps(lift))  # mid-episode: rebuilt and replayed
    twin = copy.deepcopy(lift)
    try:
        for a in actions[3:]:
            step = lift.step(a)
            for other in (clone, twin):
                got = other.step(a)
                np.testing.assert_array_equal(got[0], step[0])
                assert got[1:] == step[1:]
        # the env's own generator travelled too: the next seedless episode is the same
        np.testing.assert_array_equal(clone.reset()[0], lift.reset()[0])
    finally:
        clone.close(), twin.close()
    fresh = pickle.loads(pickle.dumps(gym.make(LIFT)))  # never reset: still needs a reset
    try:
        with pytest.raises(gym.error.ResetNeeded):
            fresh.step(actions[0])
    finally:
        fresh.close()


def test_make_expert_gives_the_lift_and_can_experts_and_collect_runs_lift(tmp_path):
    from steergym.data.collect import collect
    from steergym.data.dataset import load_episodes
    from steergym.policies.scripted import make_expert

    env = gym.make(LIFT)
    try:
        expert = make_expert(env, noise=0.3, random_action_prob=0.1, seed=0)
        assert isinstance(expert, RobosuiteLiftExpert)
        assert (expert.noise, expert.random_action_prob) == (0.3, 0.1)
    finally:
        env.close()
    can = gym.make(CAN)
    try:
        expert = make_expert(can, noise=0.3, random_action_prob=0.1, seed=0)
        assert isinstance(expert, RobosuiteCanExpert)
        assert (expert.noise, expert.random_action_prob) == (0.3, 0.1)
    finally:
        can.close()
    with pytest.raises(ValueError, match="no scripted expert.*Robosuite-Lift-v0"):
        pixels = gym.make(LIFT, cameras=("agentview",))
        try:
            make_expert(pixels)
        finally:
            pixels.close()
    folder, episodes = collect(LIFT, 2, "expert", "test/rs-lift-expert-v0", seed=0, root=tmp_path,
                               progress=False)
    assert all(ep.successes[-1] and ep.terminations[-1] for ep in episodes)
    loaded, _ = load_episodes("test/rs-lift-expert-v0", root=tmp_path)
    assert len(loaded) == 2 and loaded[0].observations.shape[1] == 19
    np.testing.assert_array_equal(loaded[1].actions, episodes[1].actions)


@pytest.mark.parametrize(
    "action, words",
    [
        (np.zeros(6), ["(7,)", "(6,)"]),
        (np.array([0, 0, np.nan, 0, 0, 0, 0]), ["finite", "nan"]),
        ("up", ["numeric", "'up'"]),
    ],
)
def test_bad_actions_raise_value_errors_naming_env_and_value(lift, action, words):
    lift.reset(seed=0)
    with pytest.raises(ValueError) as err:
        lift.step(action)
    message = str(err.value)
    assert "RobosuiteEnv('Lift')" in message
    for word in words:
        assert word in message


def test_step_before_reset_and_bad_options():
    env = gym.make(LIFT).unwrapped  # fresh: never reset
    try:
        with pytest.raises(gym.error.ResetNeeded, match="Lift"):
            env.step(np.zeros(7))
    finally:
        env.close()
    # options are checked before robosuite builds anything
    with pytest.raises(TypeError, match="camera_obs.*valid options"):
        RobosuiteEnv("Lift", camera_obs=True)
    with pytest.raises(ValueError, match="Lift.*'human'.*offscreen"):
        RobosuiteEnv("Lift", render_mode="human")
    with pytest.raises(ValueError, match="'Stack'.*'Lift'"):
        RobosuiteEnv("Stack")


def test_camera_observations_and_headless_render_are_upright_uint8():
    env = gym.make(LIFT, cameras=("agentview",), camera_size=(48, 40), render_mode="rgb_array",
                   render_size=(48, 40))
    try:
        obs, _ = env.reset(seed=1)
        assert env.observation_space.contains(obs) and set(obs) == {"state", "agentview_image"}
        image = obs["agentview_image"]
        assert image.shape == (48, 40, 3) and image.dtype == np.uint8 and image.std() > 5
        frame = env.render()  # same camera, same size, same state: the same picture
        np.testing.assert_array_equal(frame, image)
        # upright: agentview looks at the table from above the robot; the top rows (background
        # wall) are not the bottom rows (table and robot)
        assert np.abs(frame[:8].astype(float).mean() - frame[-8:].astype(float).mean()) > 5
        obs2, *_ = env.step(np.array([0, 0, 1, 0, 0, 0, 0], np.float32))
        assert not np.array_equal(obs2["agentview_image"], image)  # the arm moved up
    finally:
        env.close()


def test_scripted_expert_solves_lift_and_success_is_flagged(lift):
    expert = RobosuiteLiftExpert(lift.observation_space, lift.action_space)
    for seed in (0, 1):
        obs, _ = lift.reset(seed=seed)
        expert.reset()
        rewards, successes, done = [], [], False
        while not done:
            obs, reward, terminated, truncated, info = lift.step(expert.act(obs))
            rewards.append(reward)
            successes.append(info["is_success"])
            done = terminated or truncated
        # terminated at the first success, well inside the 300-step horizon; sparse reward
        assert terminated and not truncated and len(rewards) < 80
        assert successes[-1] and not any(successes[:-1])
        assert rewards == [0.0] * (len(rewards) - 1) + [1.0]
        assert obs[11] > lift.unwrapped.robosuite_env.model.mujoco_arena.table_offset[2] + 0.04


def test_scripted_expert_puts_the_can_in_its_bin_and_success_is_flagged():
    env = gym.make(CAN)
    try:
        robosuite_env = env.unwrapped.robosuite_env
        # the expert's compartment is robosuite's (the can is object 3 of bin2's four)
        low = (*(robosuite_env.target_bin_placements[3, :2] - robosuite_env.bin_size[:2] / 4), 0.8)
        np.testing.assert_allclose(CAN_BIN_LOW, low)
        np.testing.assert_allclose(CAN_BIN_HIGH[:2], low[:2] + robosuite_env.bin_size[:2] / 2)
        np.testing.assert_allclose(CAN_TARGET_XY, robosuite_env.target_bin_placements[3, :2])
        expert = RobosuiteCanExpert(env.observation_space, env.action_space)
        for seed in (0, 1):
            obs, _ = env.reset(seed=seed)
            # the expert reads the can's world position at 16:19 (robosuite's object-state order)
            np.testing.assert_allclose(obs[RobosuiteCanExpert.CAN_POS],
                                       robosuite_env._get_observations()["Can_pos"], atol=1e-6)
            expert.reset()
            rewards, successes, done = [], [], False
            while not done:
                obs, reward, terminated, truncated, info = env.step(expert.act(obs))
                rewards.append(reward)
                successes.append(info["is_success"])
                done = terminated or truncated
            assert terminated and not truncated and len(rewards) < 200
            assert successes[-1] and not any(successes[:-1])
            assert rewards == [0.0] * (len(rewards) - 1) + [1.0]
            can = obs[RobosuiteCanExpert.CAN_POS]
            assert np.all(can > CAN_BIN_LOW) and np.all(can < CAN_BIN_HIGH)
    finally:
        env.close()


def test_dsrl_wrapper_and_sac_run_200_steps_on_lift(lift):
    config = PolicyConfig(hidden_dim=32, time_dim=8, sample_steps=4)
    policy = DiffusionPolicy(lift.observation_space, lift.action_space, config, seed=0)
    env = NoiseActionWrapper(lift, policy, noise_bound=1.5)
    assert env.action_space.shape == (28,)  # the noise of a chunk of 4 actions of 7
    obs, _ = env.reset(seed=0)
    low, high = np.full(28, -1.5, np.float32), np.full(28, 1.5, np.float32)
    decoded = []
    for noise in (low, high):
        env.reset(seed=0)
        _, _, _, _, info = env.step(noise)
        decoded.append(info["executed_actions"])
        assert info["executed_actions"].shape == (4, 7) and np.isfinite(info["executed_actions"]).all()
    assert not np.allclose(*decoded)  # the noise steers what the robot executes
    model = SAC("MlpPolicy", env, learning_starts=50, batch_size=32, policy_kwargs={"net_arch": [32, 32]},
                seed=0, device="cpu")
    model.learn(200)
    assert model.num_timesteps == 200 and model.replay_buffer.size() == 200
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (28,) and np.all(np.abs(action) <= 1.5)


def test_importing_steergym_does_not_import_robosuite_and_missing_extra_says_how_to_install():
    code = (
        "import sys, steergym, gymnasium as gym\n"
        "assert not {'robosuite', 'dm_control', 'shimmy'} & set(sys.modules), 'suites imported'\n"
        "sys.modules['robosuite'] = None  # as if the suites extra were not installed\n"
        "try:\n"
        "    gym.make('steergym/Robosuite-Lift-v0')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "RobosuiteEnv('Lift')" in out.stdout and 'pip install -e ".[suites]"' in out.stdout
