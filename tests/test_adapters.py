"""Policy adapters: CallablePolicy, SB3Policy, ScriptedPolicy, as_policy, and evaluate()'s reset seeds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from steergym.bench.evaluate import evaluate
from steergym.policies import (
    CallablePolicy,
    FlowPolicy,
    Policy,
    PolicyConfig,
    SB3Policy,
    ScriptedPolicy,
    as_policy,
    make_expert,
)

LIFT = "steergym/WidowXLiftCube-v0"  # 17-d observations, 7-d actions, 40-step horizon
OBS = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


# --------------------------------------------------------------------------- CallablePolicy
def test_callable_policy_single_and_item_wise_batches():
    calls = []

    def controller(obs):
        calls.append(np.shape(obs))
        return np.array([obs[0], -obs[1]]) * 0.5

    policy = CallablePolicy(controller, OBS, ACT)
    assert isinstance(policy, Policy)
    obs = np.random.default_rng(0).uniform(-1, 1, (3, 4)).astype(np.float32)
    single = policy.act(obs[0])
    assert single.shape == (2,) and single.dtype == np.float32
    np.testing.assert_allclose(single, [obs[0, 0] / 2, -obs[0, 1] / 2], rtol=1e-6)
    calls.clear()
    batch = policy.act(obs)
    assert batch.shape == (3, 2)
    assert calls == [(4,)] * 3  # fed item by item
    np.testing.assert_allclose(batch, np.stack([policy.act(o) for o in obs]))


def test_callable_policy_batched_callable_gets_the_whole_batch():
    calls = []

    def controller(obs):
        calls.append(np.shape(obs))
        return np.tanh(obs[..., :2])

    policy = CallablePolicy(controller, OBS, ACT, batched=True)
    obs = np.zeros((5, 4), np.float32)
    assert policy.act(obs).shape == (5, 2)
    assert calls == [(5, 4)]
    assert policy.act(obs[0]).shape == (2,)


def test_callable_policy_item_wise_dict_observations():
    space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,), np.float32),
                             "b": gym.spaces.Box(-1, 1, (3,), np.float32)})
    seen = []

    def controller(obs):
        seen.append({k: np.shape(v) for k, v in obs.items()})
        return obs["a"]

    policy = CallablePolicy(controller, space, ACT)
    obs = {"a": np.ones((4, 2), np.float32), "b": np.zeros((4, 3), np.float32)}
    assert policy.act(obs).shape == (4, 2)
    assert seen == [{"a": (2,), "b": (3,)}] * 4


@pytest.mark.parametrize("batched", [False, True])
def test_callable_policy_refuses_bad_outputs_naming_the_callable(batched):
    def wrong_shape(obs):
        return np.zeros(3)

    def not_finite(obs):
        return np.array([0.0, np.nan]) if np.ndim(obs) == 1 else np.full((len(obs), 2), np.nan)

    obs = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"wrong_shape: returned an action of shape \(3,\)"):
        CallablePolicy(wrong_shape, OBS, ACT, batched=batched).act(obs)
    with pytest.raises(ValueError, match="not_finite: returned a non-finite action"):
        CallablePolicy(not_finite, OBS, ACT, batched=batched).act(obs)
    with pytest.raises(ValueError, match="my controller"):
        CallablePolicy(wrong_shape, OBS, ACT, name="my controller").act(obs[0])


def test_callable_policy_refuses_observations_of_the_wrong_shape_and_non_callables():
    policy = CallablePolicy(lambda o: np.zeros(2), OBS, ACT)
    with pytest.raises(ValueError, match="does not match the space"):
        policy.act(np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="not callable"):
        CallablePolicy(42, OBS, ACT)


def test_callable_policy_reset_forwards_the_seed():
    class Controller:
        def __init__(self):
            self.seeds = []

        def __call__(self, obs):
            return np.zeros(2)

        def reset(self, seed=None):
            self.seeds.append(seed)

    controller = Controller()
    policy = CallablePolicy(controller, OBS, ACT)
    policy.reset(seed=4)
    policy.reset()
    assert controller.seeds == [4, None]
    CallablePolicy(lambda o: np.zeros(2), OBS, ACT).reset(seed=1)  # no reset on the callable: fine


# --------------------------------------------------------------------------- SB3Policy
@pytest.fixture(scope="module")
def sb3_models():
    from stable_baselines3 import PPO, SAC

    env = gym.make(LIFT)
    models = {
        "PPO": PPO("MlpPolicy", env, n_steps=8, batch_size=8, policy_kwargs={"net_arch": [8]},
                   seed=0, device="cpu"),
        "SAC": SAC("MlpPolicy", env, buffer_size=10, policy_kwargs={"net_arch": [8]}, seed=0, device="cpu"),
    }
    yield models
    env.close()


@pytest.mark.parametrize("algo", ["PPO", "SAC"])
def test_sb3_policy_single_and_batched(sb3_models, make_env, algo):
    model = sb3_models[algo]
    env = make_env(LIFT)
    policy = as_policy(model)
    assert isinstance(policy, SB3Policy) and isinstance(policy, Policy)
    assert policy.observation_space == env.observation_space and policy.action_space == env.action_space
    obs, _ = env.reset(seed=0)
    action = policy.act(obs)
    assert action.shape == (7,) and env.action_space.contains(action.astype(np.float32))
    np.testing.assert_array_equal(policy.act(obs), action)  # deterministic by default
    batch = np.stack([obs, env.observation_space.sample(), obs])
    actions = policy.act(batch)
    assert actions.shape == (3, 7)
    np.testing.assert_allclose(actions[0], action, atol=1e-6)
    np.testing.assert_allclose(actions[2], action, atol=1e-6)
    policy.reset(seed=3)  # accepted (reseeds SB3)


def test_sb3_policy_refuses_objects_without_predict():
    with pytest.raises(TypeError, match="predict"):
        SB3Policy(object())


# --------------------------------------------------------------------------- ScriptedPolicy
def _rollout_actions(env, act, reset, seed: int, steps: int) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    reset()
    actions = []
    for _ in range(steps):
        action = act(obs)
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    return np.array(actions)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_scripted_policy_matches_make_expert(make_env, noise):
    env_a, env_b = make_env(LIFT), make_env(LIFT)
    policy = ScriptedPolicy(env_a, noise=noise, seed=2)
    expert = make_expert(env_b, noise=noise, seed=2)
    got = _rollout_actions(env_a, policy.act, policy.reset, seed=1, steps=15)
    want = _rollout_actions(env_b, expert.act, expert.reset, seed=1, steps=15)
    assert got.ndim == 2 and got.shape[1] == 7 and len(got) >= 5  # (a noiseless lift succeeds in ~9)
    np.testing.assert_array_equal(got, want)


def test_scripted_policy_reset_seed_reseeds_the_expert_noise(make_env):
    env_a, env_b = make_env(LIFT), make_env(LIFT)
    policy = ScriptedPolicy(env_a, noise=0.3)
    expert = make_expert(env_b, noise=0.3, seed=9)
    got = _rollout_actions(env_a, policy.act, lambda: policy.reset(seed=9), seed=0, steps=5)
    want = _rollout_actions(env_b, expert.act, expert.reset, seed=0, steps=5)
    np.testing.assert_array_equal(got, want)


def test_scripted_policy_refuses_batches(make_env):
    env = make_env(LIFT)
    policy = ScriptedPolicy(env)
    obs, _ = env.reset(seed=0)
    policy.reset()
    with pytest.raises(ValueError, match="batch"):
        policy.act(np.stack([obs, obs]))


# --------------------------------------------------------------------------- as_policy
def test_as_policy_dispatch(make_env):
    env = make_env(LIFT)
    flow = FlowPolicy(env.observation_space, env.action_space, PolicyConfig(kind="flow", hidden_dim=16))
    assert as_policy(flow) is flow
    assert isinstance(as_policy("expert", env), ScriptedPolicy)

    def controller(obs):
        return np.zeros(7)

    adapted = as_policy(controller, env)
    assert isinstance(adapted, CallablePolicy) and adapted.name == "controller"
    assert adapted.observation_space == env.observation_space
    with pytest.raises(ValueError, match="needs an env"):
        as_policy(controller)
    with pytest.raises(ValueError, match="needs the env"):
        as_policy("expert")
    with pytest.raises(ValueError, match="unknown policy name 'random_walk'"):
        as_policy("random_walk", env)
    with pytest.raises(TypeError, match="int"):
        as_policy(3, env)


# --------------------------------------------------------------------------- evaluate()
class RecordingPolicy:
    """Zero actions; records every reset seed."""

    def __init__(self, space: gym.Space):
        self.action_space = space
        self.seeds: list[int | None] = []
        self.acts = 0

    def act(self, obs):
        self.acts += 1
        return np.zeros(self.action_space.shape, np.float32)

    def reset(self, seed=None):
        self.seeds.append(seed)


def test_evaluate_resets_the_policy_with_each_episode_seed():
    policy = RecordingPolicy(gym.spaces.Box(-1.0, 1.0, (7,), np.float32))
    result = evaluate(LIFT, policy, episodes=2, seed=5, progress=False)
    assert policy.seeds == [5, 6]
    assert policy.acts == result.mean_length * 2
    assert result.policy == "RecordingPolicy"


def test_evaluate_calls_a_seedless_reset_too():
    class SeedlessReset(RecordingPolicy):
        def reset(self):
            self.seeds.append("reset")

    policy = SeedlessReset(gym.spaces.Box(-1.0, 1.0, (7,), np.float32))
    evaluate(LIFT, policy, episodes=2, progress=False)
    assert policy.seeds == ["reset", "reset"]


def test_evaluate_of_a_generative_policy_is_reproducible(make_env):
    """Episode i's sampling noise depends only on its seed, so a re-run gives the same returns."""
    env = make_env(LIFT)
    torch.manual_seed(0)
    policy = FlowPolicy(env.observation_space, env.action_space, PolicyConfig(kind="flow", hidden_dim=16))
    first = evaluate(LIFT, policy, episodes=2, seed=3, progress=False)
    policy.act(env.observation_space.sample())  # leave a half-used chunk and a moved generator
    second = evaluate(LIFT, policy, episodes=2, seed=3, progress=False)
    assert first.mean_return == second.mean_return
    # The last episode alone (seed 4) reproduces too: it does not depend on episode 0.
    third = evaluate(LIFT, policy, episodes=1, seed=4, progress=False)
    policy.reset(seed=4)
    fourth = evaluate(LIFT, policy, episodes=1, seed=4, progress=False)
    assert third.mean_return == fourth.mean_return
