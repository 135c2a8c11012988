"""DSRL-NA: the distillation target, learning from executed chunks, a short run, resume, errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from steergym.algorithms.dsrl_na import DSRLNA, DSRLNAConfig
from steergym.policies.config import PolicyConfig
from steergym.policies.flow import FlowPolicy
from steergym.wrappers import NoiseActionWrapper

OPTIMUM = 0.2


class Bandit(gym.Env):
    """One-step 1-D bandit, reward -10 (a - 0.2)^2; records the actions it executes."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self) -> None:
        self.executed: list[float] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        a = float(np.asarray(action).reshape(-1)[0])
        self.executed.append(a)
        return np.zeros(1, np.float32), -10.0 * (a - OPTIMUM) ** 2, True, False, {"is_success": abs(a - OPTIMUM) < 0.05}


@pytest.fixture(scope="module")
def base():
    """A flow policy cloned on U(-0.8, 0.8): its noise w in [-1, 1] decodes to about [-0.2, 0.35]."""
    torch.manual_seed(0)
    policy = FlowPolicy(Bandit.observation_space, Bandit.action_space,
                        PolicyConfig(kind="flow", horizon=1, hidden_dim=32, time_dim=8, sample_steps=4))
    policy.fit_normalization(np.zeros((2, 1)), np.array([[-1.0], [1.0]]))
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    opt = torch.optim.Adam(policy.parameters(), lr=5e-3)
    for _ in range(150):
        acts = torch.as_tensor(rng.uniform(-0.8, 0.8, (128, 1, 1)), dtype=torch.float32)
        loss = policy.loss(np.zeros((128, 1), np.float32), acts, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy


def small_config(**overrides) -> DSRLNAConfig:
    base = dict(hidden=(64, 64), batch_size=32, utd=4, distill_steps=2, learning_starts=30, log_every=20,
                alpha_init=0.1, learning_rate=3e-3, train_freq=1)
    base.update(overrides)
    return DSRLNAConfig(**base)


def test_distillation_target_is_q_a_at_the_decoded_chunk(base):
    agent = DSRLNA(Bandit(), base, small_config(), seed=0)
    obs = np.zeros((5, 1), np.float32)
    noise = torch.linspace(-2.0, 2.0, 5)[:, None]
    chunk = base.sample(obs, noise.numpy())  # (5, 1, 1) in env units, bounds [-1, 1]
    by_hand = agent.critic_a(agent.obs_tensor(obs), torch.as_tensor(chunk.reshape(5, 1)))
    torch.testing.assert_close(agent.distillation_target(obs, noise), by_hand.detach())
    # and distillation fits Q^W(s, w) to it
    agent.learn(40, progress=False)  # fills the buffer, a few updates
    with torch.no_grad():
        agent.critic_a.weights[-1].mul_(100.0)  # a Q^A with a clear shape in the action

    def gap() -> float:
        with torch.no_grad():
            return float((agent.critic_w(agent.obs_tensor(obs), noise) - agent.distillation_target(obs, noise))
                         .pow(2).mean())

    before = gap()
    for _ in range(150):
        agent.distill_update(agent.replay.sample(agent.rng, 32)["obs"])
    assert gap() < 0.2 * before


def test_q_a_learns_from_the_chunks_the_env_executed(base):
    env = Bandit()
    agent = DSRLNA(NoiseActionWrapper(env, base, noise_bound=1.5), config=small_config(), seed=0)
    assert agent.policy is base or agent.policy.noise_shape == base.noise_shape
    agent.learn(20, progress=False)
    np.testing.assert_allclose(agent.replay.data["actions"][:20, 0], env.executed, atol=1e-6)


def test_a_short_run_steers_the_noise_toward_the_bandits_optimum(base):
    agent = DSRLNA(Bandit(), base, small_config(), seed=0)
    before = float(base.sample(np.zeros(1, np.float32), agent.predict(np.zeros(1, np.float32))[0]).ravel()[0])
    agent.learn(150, progress=False)
    noise, _ = agent.predict(np.zeros(1, np.float32))
    after = float(base.sample(np.zeros(1, np.float32), noise).ravel()[0])
    assert abs(after - OPTIMUM) < 0.5 * abs(before - OPTIMUM), (before, after)
    assert agent.metrics["distill_loss"] >= 0 and np.isfinite(agent.metrics["critic_a_loss"])


def test_resume_makes_identical_next_updates(base, tmp_path):
    agent = DSRLNA(Bandit(), base, small_config(learning_starts=10), seed=2)
    agent.learn(25, progress=False)
    agent.save(tmp_path / "ckpt")
    resumed = DSRLNA.load(tmp_path / "ckpt", env=Bandit())
    assert resumed.agent_steps == 25 and resumed.replay.size == 25
    agent.learn(10, progress=False, reset_num_timesteps=False)
    resumed.learn(10, progress=False, reset_num_timesteps=False)
    for name in ("actor", "critic_a", "critic_w", "critic_a_target"):
        for a, b in zip(getattr(agent, name).parameters(), getattr(resumed, name).parameters()):
            assert torch.equal(a, b), name
    assert torch.equal(agent.log_alpha, resumed.log_alpha)
    assert agent.metrics == resumed.metrics


def test_bad_inputs_raise_clear_errors(base):
    with pytest.raises(ValueError, match="pass the base policy"):
        DSRLNA(Bandit())
    with pytest.raises(ValueError, match="must be generative"):
        DSRLNA(Bandit(), policy=object())
    pendulum = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match="observation space"):
        DSRLNA(pendulum, base)
    pendulum.close()
    with pytest.raises(ValueError, match="backup_combine"):
        DSRLNAConfig(backup_combine="max")


def test_a_policy_that_executes_part_of_its_chunk_is_refused():
    """DSRL-NA stores whole denoised chunks: a LeRobot-style policy (chunk_length < H) gets a clear error."""
    policy = FlowPolicy(Bandit.observation_space, Bandit.action_space,
                        PolicyConfig(kind="flow", horizon=2, hidden_dim=16, time_dim=8, sample_steps=2))
    policy.chunk_length = 1
    with pytest.raises(ValueError, match=r"DSRLNA: the policy executes 1 of the 2 actions it denoises"):
        DSRLNA(Bandit(), policy, small_config())


def test_update_rounds_follow_every_train_freq_th_transition_after_learning_starts(base):
    # SB3 learn: train(utd) then noise_critic_grad_steps distillation steps after each vec-env step of n_envs
    # transitions once num_timesteps > learning_starts; DSRL: n_envs = 4
    assert DSRLNAConfig().train_freq == 4
    agent = DSRLNA(Bandit(), base, small_config(train_freq=4, learning_starts=10, utd=3, distill_steps=2), seed=0)
    sac, distill = [], []
    sac_update, distill_update = agent.sac_update, agent.distill_update
    agent.sac_update = lambda batch: sac.append(1) or sac_update(batch)
    agent.distill_update = lambda obs: distill.append(1) or distill_update(obs)
    agent.learn(30, progress=False)  # rounds after transitions 12, 16, 20, 24, 28
    assert agent.updates == 5 and len(sac) == 15 and len(distill) == 10


def test_the_noise_actor_starts_with_a_std_near_one(base):
    # the reference's actors: log_std from a linear head that starts near 0 (SB3 SAC; OGPO_public Actor)
    agent = DSRLNA(Bandit(), base, small_config(hidden=(16, 16)), seed=0)
    with torch.no_grad():
        _, log_std = agent.actor(agent.obs_tensor(np.random.default_rng(0).uniform(-1, 1, (64, 1)).astype(np.float32)))
    assert abs(float(log_std.exp().mean()) - 1.0) < 0.05
    old = DSRLNA(Bandit(), base, small_config(hidden=(16, 16), actor_log_std_init=-1.0), seed=0)
    with torch.no_grad():
        assert abs(float(old.actor(agent.obs_tensor(np.zeros((4, 1), np.float32)))[1].exp().mean()) - np.exp(-1)) < 0.05
