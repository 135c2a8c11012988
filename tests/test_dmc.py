"""The dm_control adapter (`steergym/DMC-<domain>-<task>-v0`): API checkers, flat observations,
seeding, episode end, errors, rendering, and DSRL + SAC on a dm_control task."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import SAC
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from steergym.envs.dmc import HORIZON, TASKS, DMCEnv
from steergym.policies import FlowPolicy, PolicyConfig
from steergym.registry import entry, env_ids
from steergym.wrappers import NoiseActionWrapper

IDS = env_ids("dmc")
CARTPOLE = "steergym/DMC-cartpole-swingup-v0"
# dm_control observations are unbounded (velocities): gymnasium notes the infinite Box bounds
_INFINITE_BOUNDS = "Box observation space m"


def test_registry_rows_match_the_adapter_table():
    assert len(IDS) == len(TASKS) == 6
    for env_id in IDS:
        kwargs = entry(env_id).kwargs
        assert env_id == f"steergym/DMC-{kwargs['domain']}-{kwargs['task']}-v0"
        assert (kwargs["domain"], kwargs["task"]) in TASKS


@pytest.mark.parametrize("env_id", IDS, ids=lambda i: i.split("/")[1])
def test_checkers_flat_float32_obs_and_listed_shapes(env_id):
    env = gym.make(env_id, render_mode="rgb_array", render_size=(24, 32))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gym_check_env(env.unwrapped)  # incl. the render check (rgb_array only: no window)
            sb3_check_env(env.unwrapped, warn=True)
        assert not [str(w.message) for w in caught if _INFINITE_BOUNDS not in str(w.message)]
        u = env.unwrapped
        obs_dim, action_dim = TASKS[(u.domain, u.task_name)]
        assert env.observation_space.shape == (obs_dim,) == (len(u.obs_names),)
        assert env.observation_space.dtype == np.float32
        assert env.action_space.shape == (action_dim,) and env.action_space.dtype == np.float32
        obs, _ = env.reset(seed=0)
        # the flat vector is the suite's observation dict in its own key order
        raw = u.dm_env._task.get_observation(u.dm_env.physics)
        np.testing.assert_allclose(obs, np.concatenate([np.ravel(v) for v in raw.values()]), rtol=1e-6)
        frame = env.render()
        assert frame.shape == (24, 32, 3) and frame.dtype == np.uint8 and frame.std() > 1
        assert env.metadata["render_fps"] == round(1 / u.dm_env.control_timestep())
    finally:
        env.close()


def test_dict_observations_on_request():
    env = gym.make("steergym/DMC-walker-walk-v0", flat_obs=False)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"orientations", "height", "velocity"} and env.observation_space.contains(obs)
    env.close()


def test_same_seed_same_episode_other_seed_other_start():
    env, fresh = gym.make(CARTPOLE), gym.make(CARTPOLE)
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 1)).astype(np.float32)

    def rollout(e, seed):
        obs = [e.reset(seed=seed)[0]]
        return np.stack(obs + [e.step(a)[0] for a in actions])

    first = rollout(env, 3)
    rollout(env, 4)
    np.testing.assert_array_equal(first, rollout(env, 3))
    np.testing.assert_array_equal(first, rollout(fresh, 3))
    assert not np.array_equal(first[0], rollout(env, 4)[0])
    env.close()
    fresh.close()


def test_time_limit_truncates_and_a_finished_episode_needs_a_reset():
    env = gym.make("steergym/DMC-reacher-easy-v0")
    env.reset(seed=0)
    zero = np.zeros(2, np.float32)
    ends = []
    for _ in range(HORIZON):
        _, reward, terminated, truncated, _ = env.step(zero)
        ends.append((terminated, truncated))
        assert 0.0 <= reward <= 1.0
    assert ends[-1] == (False, True) and not any(any(e) for e in ends[:-1])
    with pytest.raises(gym.error.ResetNeeded, match="reacher-easy"):
        env.unwrapped.step(zero)  # dm_control would silently start a new episode here
    env.close()


@pytest.mark.parametrize(
    "action, words",
    [(np.zeros(2), ["(1,)", "(2,)"]), (np.array([np.inf]), ["finite", "inf"]), ("up", ["numeric", "'up'"])],
)
def test_bad_actions_raise_value_errors_naming_env_and_value(action, words):
    env = gym.make(CARTPOLE)
    env.reset(seed=0)
    with pytest.raises(ValueError) as err:
        env.unwrapped.step(action)
    assert "DMCEnv(cartpole-swingup)" in str(err.value)
    for word in words:
        assert word in str(err.value)
    env.close()


def test_out_of_range_actions_act_as_the_bound():
    env = gym.make("steergym/DMC-cheetah-run-v0")
    obs = []
    for scale in (1.0, 7.5):
        env.reset(seed=2)
        for _ in range(5):
            last = env.step(np.array([scale, -scale, scale, -scale, scale, -scale], np.float32))[0]
        obs.append(last)
    np.testing.assert_array_equal(*obs)
    env.close()


def test_bad_options_name_the_env():
    with pytest.raises(ValueError, match="'nope'"):
        DMCEnv("cartpole", "nope")
    with pytest.raises(TypeError, match="frame_skip.*valid options"):
        DMCEnv("cartpole", "swingup", frame_skip=2)


def test_dsrl_wrapper_and_sac_run_200_steps_on_cartpole():
    base = gym.make(CARTPOLE)
    config = PolicyConfig(kind="flow", hidden_dim=32, time_dim=8, sample_steps=4)
    policy = FlowPolicy(base.observation_space, base.action_space, config, seed=0)
    env = NoiseActionWrapper(base, policy, noise_bound=1.5)
    assert env.action_space.shape == (4,)  # chunks of 4 one-dimensional actions
    decoded = []
    for noise in (-1.5, 1.5):
        env.reset(seed=0)
        decoded.append(env.step(np.full(4, noise, np.float32))[4]["executed_actions"])
    assert not np.allclose(*decoded)  # the noise steers what is executed
    model = SAC("MlpPolicy", env, learning_starts=50, batch_size=32, policy_kwargs={"net_arch": [32, 32]},
                seed=0, device="cpu")
    model.learn(200)
    assert model.num_timesteps == 200 and model.replay_buffer.size() == 200
    rewards = model.replay_buffer.rewards[:200]
    assert np.isfinite(rewards).all() and rewards.max() > 0  # cartpole-swingup's reward is dense
    env.close()
