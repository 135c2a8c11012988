"""`NoiseActionVecEnvWrapper` / `make_noise_vec_env`: DSRL over Stable-Baselines3 vector envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import SAC
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
from test_wrappers import CounterEnv, StubPolicy, small_policy

from steergym.policies.zoo import load_shipped
from steergym.wrappers import (
    ActionChunkWrapper,
    NoiseActionVecEnvWrapper,
    NoiseActionWrapper,
    make_noise_vec_env,
)

LIFT = "steergym/WidowXLiftCube-v0"
CARROT = "steergym/WidowXPutCarrotOnPlate-v0"


class CountingPolicy:
    """Delegates to a policy and counts its `sample` calls."""

    def __init__(self, policy):
        self.inner, self.calls = policy, 0

    def sample(self, obs, noise):
        self.calls += 1
        return self.inner.sample(obs, noise)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def reference_vec_env(factories, seed):
    """The reference: an SB3 DummyVecEnv of per-env `NoiseActionWrapper`s, seeded like make_vec_env
    (which also puts a Monitor under each env)."""
    ref = DummyVecEnv(factories)
    ref.seed(seed)
    return ref


def assert_same_vec_step(a, b, atol=0.0):
    """Two SB3 (obs, rewards, dones, infos) agree, incl. the chunk infos and final observations."""
    obs_a, obs_b = a[0], b[0]
    for key in obs_a if isinstance(obs_a, dict) else [None]:
        x, y = (obs_a, obs_b) if key is None else (obs_a[key], obs_b[key])
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)
    np.testing.assert_allclose(a[1], b[1], atol=atol, rtol=0)
    np.testing.assert_array_equal(a[2], b[2])
    for info_a, info_b in zip(a[3], b[3]):
        assert info_a["steps"] == info_b["steps"] and info_a.keys() == info_b.keys()
        for key in ("noise", "chunk", "executed_actions", "terminal_observation"):
            if key in info_b:
                x, y = info_a[key], info_b[key]
                for k in x if isinstance(x, dict) else [None]:
                    np.testing.assert_allclose(x if k is None else x[k], y if k is None else y[k],
                                               atol=atol, rtol=0)


def test_equals_dummy_vec_env_of_noise_wrappers_with_one_policy_call_per_step():
    n, steps, h = 3, 10, 3
    space = CounterEnv.observation_space, CounterEnv.action_space
    policy = StubPolicy(*space, horizon=h, obs_coef=0.05)
    vec = NoiseActionVecEnvWrapper(DummyVecEnv([lambda: ActionChunkWrapper(CounterEnv(), h)] * n), policy)
    ref_policy = StubPolicy(*space, horizon=h, obs_coef=0.05)
    ref = reference_vec_env([lambda: NoiseActionWrapper(CounterEnv(), ref_policy)] * n, seed=11)
    assert vec.action_space == ref.action_space and vec.observation_space == ref.observation_space
    vec.seed(11)
    np.testing.assert_array_equal(vec.reset(), ref.reset())
    policy.calls.clear()
    noise = np.random.default_rng(0).uniform(-2, 2, (steps, n, h * 2)).astype(np.float32)
    ended_mid_chunk = 0
    for w in noise:
        a, b = vec.step(w), ref.step(w)
        assert_same_vec_step(a, b)
        ended_mid_chunk += sum(info["steps"] < h for info in b[3])
        np.testing.assert_array_equal(np.stack([i["noise"] for i in a[3]]), np.clip(w, -1.5, 1.5))
    assert policy.calls == [n] * steps  # ONE batched decode per vector step
    assert ended_mid_chunk >= 2  # episodes really ended inside chunks (and were autoreset)


def test_widowx_with_a_shipped_policy_equals_dummy_vec_env_of_noise_wrappers():
    shipped = load_shipped("widowx-lift-diffusion")
    policy = CountingPolicy(shipped)
    vec = make_noise_vec_env(LIFT, 3, policy, seed=5, env_kwargs={"max_episode_steps": 6})
    ref = reference_vec_env(
        [lambda: NoiseActionWrapper(Monitor(gym.make(LIFT, max_episode_steps=6)), shipped)] * 3, seed=5)
    try:
        assert vec.action_space == gym.spaces.Box(-1.5, 1.5, (28,), np.float32)
        np.testing.assert_array_equal(vec.reset(), ref.reset())
        noise = np.random.default_rng(1).uniform(-1.5, 1.5, (5, 3, 28)).astype(np.float32)
        steps = []
        for w in noise:
            a, b = vec.step(w), ref.step(w)
            assert_same_vec_step(a, b, atol=1e-5)  # batched vs single decode: float rounding only
            steps.append([i["steps"] for i in a[3]])
        # 4, then 2 (truncated mid-chunk; SB3 resets in the same step), 4, 2, 4 primitive steps
        assert steps == [[4] * 3, [2] * 3, [4] * 3, [2] * 3, [4] * 3] and policy.calls == 5
        infos = vec.step(noise[0])[3]  # 2 more steps: the third episodes end
        assert [i["episode"]["l"] for i in infos] == [6, 6, 6]  # Monitor counts control steps
    finally:
        vec.close(), ref.close()


def test_dict_observations_reach_the_policy_as_a_dict_of_batches():
    env = gym.make(LIFT, obs_mode="pixels_state", image_size=(32, 32))
    policy = small_policy(env, kind="flow")
    env.close()
    kwargs = {"obs_mode": "pixels_state", "image_size": (32, 32)}
    vec = make_noise_vec_env(LIFT, 2, policy, seed=0, env_kwargs=kwargs)
    ref = reference_vec_env(
        [lambda: NoiseActionWrapper(Monitor(gym.make(LIFT, **kwargs)), policy)] * 2, seed=0)
    try:
        obs = vec.reset()
        assert set(obs) == {"pixels", "state"} and obs["pixels"].shape == (2, 32, 32, 3)
        ref.reset()
        for w in np.random.default_rng(2).uniform(-1.5, 1.5, (2, 2, 28)).astype(np.float32):
            assert_same_vec_step(vec.step(w), ref.step(w), atol=1e-5)
    finally:
        vec.close(), ref.close()


def test_subproc_vec_env_matches_dummy_vec_env():
    policy = load_shipped("widowx-lift-diffusion")
    noise = np.random.default_rng(3).uniform(-1.5, 1.5, (3, 2, 28)).astype(np.float32)
    results = []
    for cls in (DummyVecEnv, SubprocVecEnv):
        vec = make_noise_vec_env(LIFT, 2, policy, vec_env_cls=cls, seed=0)
        try:
            results.append([vec.reset()] + [vec.step(w)[:3] for w in noise])
        finally:
            vec.close()
    np.testing.assert_array_equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1:], results[1][1:]):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_sac_runs_200_steps_on_it():
    vec = make_noise_vec_env(LIFT, 2, load_shipped("widowx-lift-diffusion"), seed=0)
    try:
        model = SAC("MlpPolicy", vec, learning_starts=50, batch_size=32, buffer_size=1000, seed=0,
                    device="cpu", policy_kwargs={"net_arch": [16, 16]})
        model.learn(200)
        assert model.num_timesteps >= 200
        actions, _ = model.predict(vec.reset(), deterministic=True)
        assert actions.shape == (2, 28) and np.all(np.abs(actions) <= 1.5)
    finally:
        vec.close()


def test_a_task_conditioned_policy_is_bound_to_the_sub_envs_task():
    generalist = load_shipped("widowx-generalist-diffusion")
    chunked = DummyVecEnv([lambda: ActionChunkWrapper(gym.make(CARROT), 4)])
    # bound by make_noise_vec_env from its env id, by the wrapper from the sub-envs' spec
    for vec in (make_noise_vec_env(CARROT, 1, generalist, seed=0),
                NoiseActionVecEnvWrapper(chunked, generalist)):
        try:
            assert vec.policy.task == CARROT
            vec.reset()
            vec.step(np.zeros((1, 28), np.float32))
        finally:
            vec.close()


def test_bad_configurations_raise_clear_errors():
    policy = load_shipped("widowx-lift-diffusion")  # horizon 4
    wrong = DummyVecEnv([lambda: ActionChunkWrapper(gym.make(LIFT), 3)])
    message = r"NoiseActionVecEnvWrapper: .*chunk length.*\(28,\).*ActionChunkWrapper\(env, 4\)"
    with pytest.raises(ValueError, match=message):
        NoiseActionVecEnvWrapper(wrong, policy)
    raw = DummyVecEnv([lambda: gym.make(LIFT)])
    with pytest.raises(ValueError, match=r"ActionChunkWrapper\(env, 4\)"):
        NoiseActionVecEnvWrapper(raw, policy)
    carrot = DummyVecEnv([lambda: ActionChunkWrapper(gym.make(CARROT), 4)])
    with pytest.raises(ValueError, match="observation space"):
        NoiseActionVecEnvWrapper(carrot, policy)
    with pytest.raises(ValueError, match="noise_bound"):
        make_noise_vec_env(LIFT, 1, policy, noise_bound=-1)
    vec = make_noise_vec_env(LIFT, 2, policy)
    try:
        with pytest.raises(gym.error.ResetNeeded):
            vec.step(np.zeros((2, 28), np.float32))
        vec.reset()
        with pytest.raises(ValueError, match=r"noise action must have shape \(2, 28\)"):
            vec.step(np.zeros((1, 28), np.float32))
        bad = np.zeros((2, 28), np.float32)
        bad[1, 3] = np.nan
        with pytest.raises(ValueError, match="NoiseActionVecEnvWrapper: the noise action contains NaN"):
            vec.step(bad)
    finally:
        vec.close(), wrong.close(), raw.close(), carrot.close()
