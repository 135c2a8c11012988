"""Steering wrappers: action chunks, DSRL latent noise (single and vector), residual, V-GPS.

Small untrained generative policies and a deterministic stub policy stand in for shipped ones.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv

from steergym.policies import CallablePolicy, DiffusionPolicy, FlowPolicy, PolicyConfig
from steergym.policies.base import is_batched
from steergym.policies.value_guided import ValueGuidedPolicy
from steergym.wrappers import (
    ActionChunkWrapper,
    NoiseActionVectorWrapper,
    NoiseActionWrapper,
    ProposalWrapper,
    ResidualActionWrapper,
    make_noise_vector_env,
)

LIFT = "steergym/WidowXLiftCube-v0"  # 17-d state, 7-d actions, 40-step horizon
CARROT = "steergym/WidowXPutCarrotOnPlate-v0"  # 27-d state
H, D = 4, 7


# ----------------------------------------------------------------------------------- helpers
class StubPolicy:
    """Deterministic generative stand-in: chunk = clip(0.5 * noise + obs_coef * obs[0], bounds).

    Records the batch size of every `sample` call (None for an unbatched call).
    """

    def __init__(self, observation_space, action_space, horizon=H, obs_coef=0.0, seed=0):
        self.observation_space, self.action_space = observation_space, action_space
        self.noise_shape = (horizon, action_space.shape[0])
        self.obs_coef = obs_coef
        self.calls: list[int | None] = []
        self._rng = np.random.default_rng(seed)
        self._queue: list[np.ndarray] = []

    def sample(self, obs, noise):
        batched = is_batched(obs, self.observation_space)
        w = np.asarray(noise, np.float32).reshape(((-1,) if batched else ()) + self.noise_shape)
        self.calls.append(len(w) if batched else None)
        first = np.asarray(obs)[..., 0] if not isinstance(obs, dict) else np.zeros(w.shape[:-2])
        bias = self.obs_coef * np.asarray(first, np.float32)[..., None, None]
        return np.clip(0.5 * w + bias, self.action_space.low, self.action_space.high).astype(np.float32)

    def sample_n(self, obs, n):
        batched = is_batched(obs, self.observation_space)
        lead = (len(obs), n) if batched else (n,)
        noise = self._rng.standard_normal(lead + self.noise_shape).astype(np.float32)
        if batched:
            return np.stack([self.sample(np.repeat(o[None], n, 0), w) for o, w in zip(obs, noise)])
        return self.sample(np.repeat(np.asarray(obs)[None], n, 0), noise)

    def act(self, obs):
        if not self._queue:
            self._queue = list(self.sample_n(obs, 1)[0])
        return self._queue.pop(0)

    def reset(self, seed=None):
        self._queue = []
        if seed is not None:
            self._rng = np.random.default_rng(seed)


class LadderPolicy(StubPolicy):
    """sample_n returns n known chunks: chunk k is filled with linspace(-1, 1, n)[k]."""

    def sample_n(self, obs, n):
        batched = is_batched(obs, self.observation_space)
        ladder = np.linspace(-1.0, 1.0, n, dtype=np.float32)[:, None, None]
        ladder = ladder * np.ones(self.noise_shape, np.float32)
        return np.repeat(ladder[None], len(obs), 0) if batched else ladder


class CounterEnv(gym.Env):
    """Tiny env with seed-dependent episode lengths: obs [t, length, last action[0]], reward action[0].

    Terminates (is_success) when t reaches `length`, drawn in [2, 7] at each reset.
    """

    metadata = {"render_modes": []}
    observation_space = gym.spaces.Box(-100.0, 100.0, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.length = 0, int(self.np_random.integers(2, 8))
        return self._obs(0.0), {"is_success": False}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        return self._obs(float(action[0])), float(action[0]), done, False, {"is_success": done}

    def _obs(self, last):
        return np.array([self.t, self.length, last], np.float32)


def small_policy(env, kind="diffusion", seed=0, **overrides):
    cls = DiffusionPolicy if kind == "diffusion" else FlowPolicy
    config = PolicyConfig(kind=kind, hidden_dim=32, time_dim=8, sample_steps=4, conv_channels=(8, 8),
                          image_features=16, **overrides)
    return cls(env.observation_space, env.action_space, config, seed=seed)


def same_step(a, b, atol=0.0):
    """Two (obs, reward, terminated, truncated, info) tuples agree, incl. the chunk info arrays."""
    for key in a[0] if isinstance(a[0], dict) else [None]:
        obs_a, obs_b = (a[0], b[0]) if key is None else (a[0][key], b[0][key])
        np.testing.assert_allclose(obs_a, obs_b, atol=atol, rtol=0)
    assert a[1] == pytest.approx(b[1], abs=atol) and a[2:4] == b[2:4]
    for key in ("executed_actions", "noise", "chunk", "base_action", "executed_action"):
        if key in a[4] and key in b[4]:
            np.testing.assert_allclose(a[4][key], b[4][key], atol=atol, rtol=0)


def quiet_check_envs(env):
    """Both env checkers; the checkers' advice that is expected here is silenced, nothing else."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning not ignored below fails the test
        # DSRL's noise box is deliberately (-1.5, 1.5) (w = b * tanh(u), b = 1.5), not [-1, 1].
        warnings.filterwarnings("ignore", message=".*symmetric and normalized.*")
        # check_env is meant for bare envs; checking our wrappers is the point here.
        warnings.filterwarnings("ignore", message=".*different from the unwrapped version.*")
        # ProposalWrapper's "proposals" are (K, H*d): one row per proposal, on purpose.
        warnings.filterwarnings("ignore", message=".*unconventional shape.*")
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)


# ---------------------------------------------------------------------------- ActionChunkWrapper
def test_chunk_wrapper_space_and_step_equal_h_primitive_steps(make_env):
    env = ActionChunkWrapper(make_env(LIFT), H)
    twin = make_env(LIFT)
    assert env.action_space.shape == (H * D,) and env.action_space.dtype == np.float32
    np.testing.assert_array_equal(env.action_space.low, np.tile(twin.action_space.low, H))
    assert env.observation_space == twin.observation_space
    env.reset(seed=3), twin.reset(seed=3)
    chunk = np.random.default_rng(0).uniform(-1.2, 1.2, (H, D)).astype(np.float32)  # some out of bounds
    obs, reward, terminated, truncated, info = env.step(chunk.reshape(-1))
    rewards = []
    for a in chunk:
        twin_obs, r, *_ = twin.step(np.clip(a, -1, 1))
        rewards.append(r)
    np.testing.assert_array_equal(obs, twin_obs)
    assert reward == sum(rewards) and info["chunk_rewards"] == rewards
    assert info["steps"] == H and not (terminated or truncated)
    np.testing.assert_array_equal(info["executed_actions"], np.clip(chunk, -1, 1))
    assert info["chunk_successes"] == [False] * H and info["is_success"] is False
    env.step(chunk)  # (H, d) is accepted too


def test_chunk_stops_at_truncation(make_env):
    env = ActionChunkWrapper(make_env(LIFT, max_episode_steps=3), H)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(np.zeros(H * D, np.float32))
    assert truncated and not terminated and info["steps"] == 3 and len(info["chunk_rewards"]) == 3
    assert info["executed_actions"].shape == (H, D)
    assert np.all(np.isfinite(info["executed_actions"][:3])) and np.all(np.isnan(info["executed_actions"][3]))


def test_chunk_stops_at_termination_and_reports_any_success():
    env = ActionChunkWrapper(CounterEnv(), 3)
    env.reset(seed=0)
    length = env.unwrapped.length
    actions = np.tile([[0.5, 0.0]], (3, 1)).astype(np.float32)
    steps = 0
    while True:
        _, reward, terminated, _, info = env.step(actions)
        steps += info["steps"]
        if terminated:
            break
        assert reward == pytest.approx(0.5 * 3)
    assert steps == length and info["is_success"] and info["chunk_successes"][-1]
    assert reward == pytest.approx(0.5 * info["steps"])


# ---------------------------------------------------------------------------- NoiseActionWrapper
def test_noise_wrapper_spaces_and_step_semantics_with_stub(make_env):
    base = make_env(LIFT)
    policy = StubPolicy(base.observation_space, base.action_space)
    env = NoiseActionWrapper(base, policy, noise_bound=1.5)
    assert env.action_space == gym.spaces.Box(-1.5, 1.5, (H * D,), np.float32)
    assert env.observation_space == base.observation_space
    twin = ActionChunkWrapper(make_env(LIFT), H)
    env.reset(seed=1), twin.reset(seed=1)
    w = np.linspace(-3, 3, H * D).astype(np.float32)  # beyond the bound at both ends
    step = env.step(w)
    clipped = np.clip(w, -1.5, 1.5)
    expected_chunk = np.clip(0.5 * clipped, -1, 1).reshape(H, D)
    np.testing.assert_array_equal(step[4]["noise"], clipped)
    np.testing.assert_array_equal(step[4]["chunk"], expected_chunk)
    np.testing.assert_array_equal(step[4]["executed_actions"], expected_chunk)
    same_step(step, twin.step(expected_chunk))


class ShortChunkPolicy(StubPolicy):
    """Denoises H steps but executes the first `chunk_length` (a LeRobot diffusion policy's
    n_action_steps < horizon)."""

    chunk_length = 2

    def sample(self, obs, noise):
        return super().sample(obs, noise)[..., : self.chunk_length, :]


def test_wrappers_execute_the_policys_chunk_length_not_its_noise_horizon(make_env):
    base = make_env(LIFT)
    policy = ShortChunkPolicy(base.observation_space, base.action_space)
    env = NoiseActionWrapper(base, policy)
    assert env.action_space.shape == (H * D,)  # the agent still picks the whole (H, d) noise
    twin = ActionChunkWrapper(make_env(LIFT), 2)
    env.reset(seed=1), twin.reset(seed=1)
    w = np.linspace(-1, 1, H * D).astype(np.float32)
    step = env.step(w)
    expected = np.clip(0.5 * w, -1, 1).reshape(H, D)[:2]
    np.testing.assert_array_equal(step[4]["chunk"], expected)
    assert step[4]["steps"] == 2
    same_step(step, twin.step(expected))
    vec = make_noise_vector_env(LIFT, 2, policy)
    try:
        assert vec.env.single_action_space.shape == (2 * D,)  # sub-envs chunk to 2 actions
        vec.reset(seed=0)
        _, _, _, _, infos = vec.step(np.zeros((2, H * D), np.float32))
        assert infos["chunk"].shape == (2, 2, D)
    finally:
        vec.close()
    proposals = ProposalWrapper(make_env(LIFT), policy, num_samples=3)
    obs, _ = proposals.reset(seed=0)
    assert obs["proposals"].shape == (3, 2 * D)


def test_noise_wrapper_decodes_with_the_policy_and_truncates_chunks(make_env):
    base = make_env(LIFT, max_episode_steps=6)
    policy = small_policy(base)
    env = NoiseActionWrapper(base, policy)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    w1, w2 = rng.uniform(-1.5, 1.5, (2, H * D)).astype(np.float32)
    expected = policy.sample(obs, w1)
    obs, *_, info = env.step(w1)
    np.testing.assert_array_equal(info["executed_actions"], expected)
    expected = policy.sample(obs, w2)
    _, _, terminated, truncated, info = env.step(w2)
    assert truncated and not terminated and info["steps"] == 2  # 6 = 4 + 2
    np.testing.assert_array_equal(info["executed_actions"][:2], expected[:2])
    np.testing.assert_array_equal(info["chunk"], expected)


def test_noise_wrapper_on_pixels_state_with_a_dict_policy(make_env):
    base = make_env(LIFT, obs_mode="pixels_state", image_size=(32, 32))
    policy = small_policy(base, kind="flow")
    env = NoiseActionWrapper(base, policy)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"pixels", "state"}
    w = np.full(H * D, 0.3, np.float32)
    expected = policy.sample(obs, w)
    obs, *_, info = env.step(w)
    np.testing.assert_array_equal(info["executed_actions"], expected)
    assert env.observation_space.contains(obs)


def test_noise_vector_wrapper_equals_per_env_wrappers_with_mid_chunk_ends():
    """One batched decode per vector step; each sub-env's transitions equal a NoiseActionWrapper's
    (NEXT_STEP autoreset: the step after an episode ends resets that sub-env and ignores its noise)."""
    n, steps, seeds = 3, 8, [11, 12, 13]
    space = CounterEnv.observation_space, CounterEnv.action_space
    policy = StubPolicy(*space, horizon=3, obs_coef=0.05)
    vec = NoiseActionVectorWrapper(
        gym.vector.SyncVectorEnv([lambda: ActionChunkWrapper(CounterEnv(), 3) for _ in range(n)]), policy, 1.5
    )
    noise = np.random.default_rng(0).uniform(-2, 2, (steps, n, 6)).astype(np.float32)
    vec.reset(seed=seeds)
    policy.calls.clear()
    vec_steps = [vec.step(noise[t]) for t in range(steps)]
    assert policy.calls == [n] * steps  # one batched call per vector step

    ended_mid_chunk = 0
    for j in range(n):
        env = NoiseActionWrapper(CounterEnv(), policy, 1.5)
        obs, _ = env.reset(seed=seeds[j])
        needs_reset = False
        for t in range(steps):
            obs_v, rew_v, term_v, trunc_v, info_v = vec_steps[t]
            if needs_reset:  # NEXT_STEP autoreset
                obs, _ = env.reset()
                np.testing.assert_array_equal(obs_v[j], obs)
                assert rew_v[j] == 0.0 and not term_v[j] and not trunc_v[j] and not info_v["_noise"][j]
                needs_reset = False
                continue
            obs, reward, terminated, truncated, info = env.step(noise[t, j])
            np.testing.assert_array_equal(obs_v[j], obs)
            assert rew_v[j] == pytest.approx(reward) and (term_v[j], trunc_v[j]) == (terminated, truncated)
            assert info_v["steps"][j] == info["steps"] and info_v["_noise"][j]
            np.testing.assert_array_equal(info_v["executed_actions"][j], info["executed_actions"])
            np.testing.assert_array_equal(info_v["noise"][j], info["noise"])
            ended_mid_chunk += int(info["steps"] < 3)
            needs_reset = terminated or truncated
    assert ended_mid_chunk >= 2  # the scenario really covers episodes ending inside a chunk


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_noise_vector_wrapper_equals_vector_of_noise_wrappers_in_each_autoreset_mode(mode):
    space = CounterEnv.observation_space, CounterEnv.action_space
    policy = StubPolicy(*space, horizon=3, obs_coef=0.05)
    kwargs = {"autoreset_mode": gym.vector.AutoresetMode(mode)}
    vec = NoiseActionVectorWrapper(gym.vector.SyncVectorEnv(
        [lambda: ActionChunkWrapper(CounterEnv(), 3)] * 3, **kwargs), policy)
    ref = gym.vector.SyncVectorEnv([lambda: NoiseActionWrapper(CounterEnv(), policy)] * 3, **kwargs)
    noise = np.random.default_rng(3).uniform(-2, 2, (8, 3, 6)).astype(np.float32)
    np.testing.assert_array_equal(vec.reset(seed=[1, 2, 3])[0], ref.reset(seed=[1, 2, 3])[0])
    for w in noise:
        a, b = vec.step(w), ref.step(w)
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
        for key in ("steps", "executed_actions", "final_obs"):
            if key in b[4]:
                np.testing.assert_array_equal(a[4][f"_{key}"], b[4][f"_{key}"])
                for j in np.flatnonzero(b[4][f"_{key}"]):
                    np.testing.assert_array_equal(a[4][key][j], b[4][key][j])


def test_noise_vector_wrapper_on_widowx_equals_sync_vector_of_noise_wrappers():
    policy = small_policy(gym.make(LIFT))
    vec = make_noise_vector_env(LIFT, 2, policy, max_episode_steps=6)
    ref = gym.vector.SyncVectorEnv(
        [lambda: NoiseActionWrapper(gym.make(LIFT, max_episode_steps=6), policy)] * 2)
    assert vec.single_action_space == ref.single_action_space
    assert vec.observation_space == ref.observation_space
    noise = np.random.default_rng(1).uniform(-1.5, 1.5, (4, 2, H * D)).astype(np.float32)
    obs_v, _ = vec.reset(seed=[5, 6])
    obs_r, _ = ref.reset(seed=[5, 6])
    np.testing.assert_array_equal(obs_v, obs_r)
    for t in range(4):  # steps of 4, 2 (truncated), autoreset, 4
        a, b = vec.step(noise[t]), ref.step(noise[t])
        np.testing.assert_allclose(a[0], b[0], atol=1e-4)
        np.testing.assert_allclose(a[1], b[1], atol=1e-6)
        np.testing.assert_array_equal(a[2], b[2]), np.testing.assert_array_equal(a[3], b[3])
    assert b[4]["steps"].tolist() == [4, 4]
    vec.close(), ref.close()


def test_noise_vector_wrapper_async_matches_sync():
    policy = small_policy(gym.make(LIFT))
    noise = np.random.default_rng(2).uniform(-1.5, 1.5, (2, 2, H * D)).astype(np.float32)
    results = []
    for mode in ("sync", "async"):
        vec = make_noise_vector_env(LIFT, 2, policy, vectorization_mode=mode)
        vec.reset(seed=[0, 1])
        results.append([vec.step(w)[:2] for w in noise])
        vec.close()
    for (obs_s, rew_s), (obs_a, rew_a) in zip(*results):
        np.testing.assert_array_equal(obs_s, obs_a), np.testing.assert_array_equal(rew_s, rew_a)


# ------------------------------------------------------------------------- ResidualActionWrapper
def test_residual_wrapper_executes_clipped_base_plus_correction(make_env):
    base_env = make_env(LIFT)
    base_action = np.array([0.95, -0.5, 0.0, 0.2, 0.0, -0.99, 0.5], np.float32)
    policy = CallablePolicy(lambda obs: base_action, base_env.observation_space, base_env.action_space)
    env = ResidualActionWrapper(base_env, policy, scale=0.1)
    assert env.action_space == gym.spaces.Box(-1, 1, (D,), np.float32)
    twin = make_env(LIFT)
    env.reset(seed=2), twin.reset(seed=2)
    correction = np.array([1.0, 1.0, -1.0, 3.0, 0.0, -1.0, 0.0], np.float32)  # 3.0 is clipped to 1
    step = env.step(correction)
    expected = np.clip(base_action + 0.1 * np.clip(correction, -1, 1), -1, 1)
    np.testing.assert_array_equal(step[4]["base_action"], base_action)
    np.testing.assert_allclose(step[4]["executed_action"], expected, rtol=1e-6)
    np.testing.assert_array_equal(step[0], twin.step(step[4]["executed_action"])[0])


def test_residual_wrapper_reseeds_the_base_policy_on_reset(make_env):
    env = ResidualActionWrapper(make_env(LIFT), small_policy(make_env(LIFT)), scale=0.2)

    def base_actions(seed):
        env.reset(seed=seed)
        return np.stack([env.step(np.zeros(D))[4]["base_action"] for _ in range(6)])

    first = base_actions(7)
    np.testing.assert_array_equal(first, base_actions(7))
    assert not np.allclose(first, base_actions(8))


def test_residual_wrappers_sharing_one_loaded_policy_equal_separately_loaded_ones(make_env):
    """Each wrapper acts through its own `policy.fork()` (shared weights, own chunk queue and noise
    generator), so interleaved stepping gives what two separately loaded policies give."""
    from steergym.policies.zoo import load_shipped

    shared = load_shipped("widowx-lift-diffusion")
    pairs = {
        "shared": [ResidualActionWrapper(make_env(LIFT), shared, 0.1) for _ in range(2)],
        "separate": [ResidualActionWrapper(make_env(LIFT), load_shipped("widowx-lift-diffusion"), 0.1)
                     for _ in range(2)],
    }
    a, b = pairs["shared"]
    assert a.policy is not b.policy and a.policy is not shared
    assert a.policy.denoiser is shared.denoiser and b.policy.denoiser is shared.denoiser  # one set of weights
    corrections = np.random.default_rng(0).uniform(-1, 1, (7, 2, D)).astype(np.float32)
    results = {}
    for label, envs in pairs.items():
        for env, seed in zip(envs, (1, 2)):
            env.reset(seed=seed)
        # interleaved, with the chunk boundaries (every 4 steps) of the two envs out of phase
        results[label] = [envs[0].step(corrections[0, 0])]
        results[label] += [env.step(c[j]) for c in corrections[1:] for j, env in enumerate(envs)]
        envs[1].reset(seed=3)  # a reset of one env leaves the other's chunk in progress alone
        results[label] += [env.step(corrections[0, j]) for j, env in enumerate(envs)]
    for x, y in zip(results["shared"], results["separate"]):
        same_step(x, y)
    base = np.stack([step[4]["base_action"] for step in results["shared"]])
    assert not np.allclose(base[1::2][:6], base[2::2][:6])  # the two envs' base actions differ


# ------------------------------------------------------------------------------ ProposalWrapper
def test_proposal_wrapper_spaces_seeding_and_step(make_env):
    base = make_env(LIFT)
    policy = small_policy(base)
    env = ProposalWrapper(base, policy, num_samples=5)
    assert env.action_space == gym.spaces.Discrete(5)
    assert env.observation_space["observation"] == base.observation_space
    assert env.observation_space["proposals"].shape == (5, H * D)
    obs, _ = env.reset(seed=4)
    again, _ = env.reset(seed=4)
    np.testing.assert_array_equal(obs["proposals"], again["proposals"])
    assert len(np.unique(obs["proposals"].round(5), axis=0)) == 5
    assert env.observation_space.contains(obs)
    twin = ActionChunkWrapper(make_env(LIFT), H)
    twin.reset(seed=4)
    chosen = obs["proposals"][3]
    step = env.step(np.int64(3))
    assert step[4]["proposal_index"] == 3
    ref = twin.step(chosen)
    np.testing.assert_array_equal(step[0]["observation"], ref[0])
    np.testing.assert_array_equal(step[4]["executed_actions"], ref[4]["executed_actions"])
    assert not np.allclose(step[0]["proposals"], obs["proposals"])  # resampled for the new obs


def test_proposal_wrapper_keeps_dict_keys_flat(make_env):
    base = make_env(LIFT, obs_mode="pixels_state", image_size=(32, 32))
    env = ProposalWrapper(base, small_policy(base), num_samples=3)
    assert set(env.observation_space.spaces) == {"pixels", "state", "proposals"}
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs) and env.observation_space.contains(env.step(1)[0])


# ---------------------------------------------------------------------------- ValueGuidedPolicy
def test_value_guided_policy_picks_the_argmax_of_a_known_critic():
    obs_space, act_space = CounterEnv.observation_space, CounterEnv.action_space
    calls = []

    def critic(obs, chunks):  # prefers the chunk whose value is closest to obs[2]
        calls.append(len(chunks))
        return -np.abs(chunks[:, :, :].mean(axis=(1, 2)) - obs[:, 2])

    policy = ValueGuidedPolicy(LadderPolicy(obs_space, act_space), critic, num_samples=5)
    ladder = np.linspace(-1, 1, 5)
    obs = np.array([[0, 0, 0.45], [0, 0, -0.9], [0, 0, 1.0]], np.float32)
    chunks = policy.sample_chunk(obs)
    assert chunks.shape == (3, H, 2) and calls == [15]  # all B*K candidates in one critic call
    np.testing.assert_allclose(chunks[:, 0, 0], [ladder[3], ladder[0], ladder[4]])
    single = policy.sample_chunk(obs[1])
    assert single.shape == (H, 2) and single[0, 0] == pytest.approx(-1.0)
    # act, by default: V-GPS's setting, K fresh candidates re-ranked at every control step
    policy.reset(seed=0)
    actions = [policy.act(obs[0]) for _ in range(H)]
    assert all(a.shape == (2,) for a in actions) and len(calls) == 2 + H
    assert policy.act(obs).shape == (3, 2) and len(calls) == 3 + H
    # action_steps=None: once per chunk, its actions executed open-loop (the base policy's action_steps)
    calls.clear()
    per_chunk = ValueGuidedPolicy(LadderPolicy(obs_space, act_space), critic, num_samples=5, action_steps=None)
    actions = [per_chunk.act(obs[0]) for _ in range(H)]
    assert len(calls) == 1
    np.testing.assert_array_equal(actions, per_chunk.sample_chunk(obs[0]))  # the chosen chunk, in order
    calls.clear()
    per_chunk.reset(seed=0)
    for _ in range(H + 1):
        per_chunk.act(obs[0])
    assert len(calls) == 2  # re-planned after H actions


def test_value_guided_policy_samples_proportionally_to_softmax():
    obs_space, act_space = CounterEnv.observation_space, CounterEnv.action_space
    k = 4

    def critic(obs, chunks):  # values 0, 1, 2, 3 for the ladder's chunks
        return (chunks[:, 0, 0] + 1.0) * 1.5

    policy = ValueGuidedPolicy(LadderPolicy(obs_space, act_space), critic, num_samples=k, temperature=1.0,
                               seed=0)
    obs = np.zeros((4000, 3), np.float32)
    chosen = policy.sample_chunk(obs)[:, 0, 0]
    index = np.rint((chosen + 1.0) * 1.5).astype(int)
    freq = np.bincount(index, minlength=k) / len(index)
    expected = np.exp(np.arange(k)) / np.exp(np.arange(k)).sum()
    np.testing.assert_allclose(freq, expected, atol=0.03)
    policy.reset(seed=0)
    np.testing.assert_array_equal(policy.sample_chunk(obs)[:, 0, 0], chosen)  # seeded


def test_value_guided_policy_with_a_diffusion_base_and_a_torch_critic(make_env):
    env = make_env(LIFT)
    target = torch.full((D,), 0.3)
    def critic(obs, chunks):  # a torch critic returning (N, 1)
        return -(torch.as_tensor(chunks[:, 0]) - target).abs().sum(-1)[:, None]

    policy = ValueGuidedPolicy(small_policy(env), critic, num_samples=8)
    obs, _ = env.reset(seed=0)
    candidates, values = policy.propose(obs)
    assert candidates.shape == (8, H, D) and values.shape == (8,)
    best = candidates[values.argmax()]
    policy.reset(seed=0)
    chosen = policy.sample_chunk(obs)
    policy.reset(seed=0)
    np.testing.assert_array_equal(chosen, best)
    assert policy.act(obs).shape == (D,)
    # as the base policy of a residual wrapper (composition of policy and env wrappers)
    env2 = ResidualActionWrapper(make_env(LIFT), policy)
    env2.reset(seed=0)
    assert env2.step(np.zeros(D))[4]["base_action"].shape == (D,)


# ------------------------------------------------------------------- pickling and vector envs
@pytest.mark.parametrize("kind", ["noise", "residual", "proposal"])
def test_wrapped_env_pickle_round_trip(make_env, kind):
    base = make_env(LIFT)
    policy = small_policy(base)
    env = {"noise": lambda: NoiseActionWrapper(base, policy),
           "residual": lambda: ResidualActionWrapper(base, policy),
           "proposal": lambda: ProposalWrapper(base, policy, 3)}[kind]()
    env.reset(seed=0)
    env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env))
    assert clone.policy is not policy and getattr(clone, "chunker", clone).env is clone.env
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(3)]
    for a in actions:
        same_step(env.step(a), clone.step(a))
    clone.close()


def test_sync_vector_env_and_dummy_vec_env_of_wrappers():
    def noise_env():
        return NoiseActionWrapper(gym.make(LIFT), policy)

    def residual_env():  # each residual env owns its base policy (its chunk queue is episode state)
        return ResidualActionWrapper(gym.make(LIFT), copy.deepcopy(policy))

    policy = small_policy(gym.make(LIFT))
    for factory, dim in ((noise_env, H * D), (residual_env, D)):
        sync = gym.vector.SyncVectorEnv([factory, factory])
        dummy = DummyVecEnv([factory, factory])
        sync_obs, _ = sync.reset(seed=[0, 1])
        dummy.seed(0)
        dummy_obs = dummy.reset()
        np.testing.assert_array_equal(sync_obs, dummy_obs)
        actions = np.random.default_rng(0).uniform(-1, 1, (3, 2, dim)).astype(np.float32)
        for a in actions:
            obs_s, rew_s, *_ = sync.step(a)
            obs_d, rew_d, _, _ = dummy.step(a)
            np.testing.assert_array_equal(obs_s, obs_d), np.testing.assert_array_equal(rew_s, rew_d)
        sync.close(), dummy.close()


# ------------------------------------------------------------------------------- env checkers
@pytest.mark.parametrize("kind", ["chunk", "noise", "residual", "proposal"])
def test_wrappers_pass_gymnasium_and_sb3_check_env(make_env, kind):
    base = make_env(LIFT)
    policy = small_policy(base)
    env = {"chunk": lambda: ActionChunkWrapper(base, H),
           "noise": lambda: NoiseActionWrapper(base, policy),
           "residual": lambda: ResidualActionWrapper(base, policy),
           "proposal": lambda: ProposalWrapper(base, policy, 4)}[kind]()
    quiet_check_envs(env)


# --------------------------------------------------------------------------- SB3 learns on them
@pytest.mark.parametrize("algo", ["SAC", "PPO"])
@pytest.mark.parametrize("kind", ["noise", "residual"])
def test_sb3_runs_200_steps(make_env, algo, kind):
    base = make_env(LIFT)
    policy = small_policy(base)
    env = NoiseActionWrapper(base, policy) if kind == "noise" else ResidualActionWrapper(base, policy, 0.1)
    kwargs = dict(policy_kwargs={"net_arch": [16, 16]}, seed=0, device="cpu")
    if algo == "SAC":
        model = SAC("MlpPolicy", env, learning_starts=50, batch_size=32, buffer_size=1000, **kwargs)
    else:
        model = PPO("MlpPolicy", env, n_steps=100, batch_size=50, n_epochs=1, **kwargs)
    model.learn(200)
    assert model.num_timesteps >= 200
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action.astype(np.float32))


# ------------------------------------------------------------------------- bad configurations
def test_bad_configurations_raise_clear_errors(make_env):
    lift = make_env(LIFT)
    policy = small_policy(lift)
    with pytest.raises(ValueError, match="noise_bound"):
        NoiseActionWrapper(lift, policy, noise_bound=0.0)
    with pytest.raises(ValueError, match="noise_bound"):
        NoiseActionWrapper(lift, policy, noise_bound=float("nan"))
    mismatch = r"NoiseActionWrapper: the policy's observation space .*\(shape \(17,\) vs \(27,\)"
    with pytest.raises(ValueError, match=mismatch):
        NoiseActionWrapper(make_env(CARROT), policy)  # a 17-d LiftCube policy on a 27-d task
    with pytest.raises(ValueError, match="ResidualActionWrapper: the policy's observation space"):
        ResidualActionWrapper(make_env(CARROT), policy)
    with pytest.raises(ValueError, match="generative"):
        not_generative = CallablePolicy(lambda o: np.zeros(D), lift.observation_space, lift.action_space)
        NoiseActionWrapper(lift, not_generative)
    env = NoiseActionWrapper(lift, policy)
    env.reset(seed=0)
    bad = np.zeros(H * D, np.float32)
    bad[5] = np.nan
    with pytest.raises(ValueError, match="NoiseActionWrapper: the noise action contains NaN"):
        env.step(bad)
    with pytest.raises(ValueError, match=r"NoiseActionWrapper: the noise action must have shape \(28,\)"):
        env.step(np.zeros(D))
    with pytest.raises(ValueError, match="horizon"):
        ActionChunkWrapper(lift, 0)
    with pytest.raises(ValueError, match=r"ActionChunkWrapper: action must have shape \(28,\)"):
        ActionChunkWrapper(lift, H).step(np.zeros(5))
    with pytest.raises(ValueError, match="scale"):
        ResidualActionWrapper(lift, policy, scale=-0.1)
    residual = ResidualActionWrapper(lift, policy)
    residual.reset(seed=0)
    with pytest.raises(ValueError, match="ResidualActionWrapper: the correction must be finite"):
        residual.step(np.full(D, np.inf))
    with pytest.raises(ValueError, match="num_samples"):
        ProposalWrapper(lift, policy, 0)
    with pytest.raises(ValueError, match="out of range"):
        proposals = ProposalWrapper(lift, policy, 3)
        proposals.reset(seed=0)
        proposals.step(3)
    critic = lambda o, c: np.zeros(len(c))  # noqa: E731
    with pytest.raises(ValueError, match="ValueGuidedPolicy: num_samples"):
        ValueGuidedPolicy(policy, critic, num_samples=0)
    with pytest.raises(ValueError, match="ValueGuidedPolicy: temperature"):
        ValueGuidedPolicy(policy, critic, temperature=-1.0)
    with pytest.raises(ValueError, match="ValueGuidedPolicy: the critic must return 3 values"):
        ValueGuidedPolicy(policy, lambda o, c: np.zeros(2), num_samples=3).act(lift.reset(seed=0)[0])
    raw = gym.vector.SyncVectorEnv([lambda: gym.make(LIFT)])
    with pytest.raises(ValueError, match=r"NoiseActionVectorWrapper: .*ActionChunkWrapper\(env, 4\)"):
        NoiseActionVectorWrapper(raw, policy)
    raw.close()


def test_shared_noise_repeats_one_row_over_the_chunk(make_env):
    """NoiseActionWrapper / its gymnasium and SB3 vector forms with shared_noise: the agent's (D,) row
    gives exactly the transition of the full wrapper stepped with that row tiled over H."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from steergym.wrappers import NoiseActionVecEnvWrapper, NoiseActionVectorWrapper

    policy = small_policy(make_env(LIFT))
    row = np.linspace(-1.0, 1.0, D).astype(np.float32)
    shared, full = NoiseActionWrapper(make_env(LIFT), policy, shared_noise=True), NoiseActionWrapper(make_env(LIFT), policy)
    assert shared.action_space.shape == (D,) and full.action_space.shape == (H * D,)
    for env in (shared, full):
        env.reset(seed=0)
    a, b = shared.step(row), full.step(np.tile(row, H))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1] and np.array_equal(a[4]["chunk"], b[4]["chunk"])
    np.testing.assert_array_equal(a[4]["noise"], np.tile(row, H))
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        shared.step(np.tile(row, H))  # the whole chunk noise is not its action
    chunked = lambda: ActionChunkWrapper(gym.make(LIFT), H)
    vec = NoiseActionVectorWrapper(gym.vector.SyncVectorEnv([chunked, chunked]), policy, shared_noise=True)
    sb3 = NoiseActionVecEnvWrapper(DummyVecEnv([chunked, chunked]), policy, shared_noise=True)
    assert vec.single_action_space.shape == (D,) and sb3.action_space.shape == (D,)
    vec.reset(seed=[0, 1])
    sb3.seed(0)
    sb3.reset()
    rows = np.stack([row, -row])
    _, _, _, _, infos = vec.step(rows)
    np.testing.assert_array_equal(infos["noise"], np.tile(rows, (1, H)))
    sb3.step_async(rows)
    _, _, _, sb3_infos = sb3.step_wait()
    np.testing.assert_array_equal(sb3_infos[1]["noise"], np.tile(-row, H))
