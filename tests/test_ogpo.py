"""OGPO: the stochastic denoising chain, the clipped objective, each stabiliser, a bandit run, resume."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from steergym.algorithms.chunk_rl import ObsActionRing, StepReplay
from steergym.algorithms.denoising_chain import ChainNoise, chain_log_prob, sample_chain
from steergym.algorithms.ogpo import (
    OGPO,
    OGPOConfig,
    chi2_advantages,
    clipped_objective,
    group_advantages,
)
from steergym.policies.config import PolicyConfig
from steergym.policies.diffusion import DiffusionPolicy
from steergym.policies.flow import FlowPolicy

OPTIMUM = 0.6


class Bandit(gym.Env):
    """One-step 1-D bandit: reward -(a - 0.6)^2, success within 0.1 of the optimum."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        a = float(np.asarray(action).reshape(-1)[0])
        return np.zeros(1, np.float32), -(a - OPTIMUM) ** 2, True, False, {"is_success": abs(a - OPTIMUM) < 0.1}


def tiny_policy(cls, steps: int = 4, seed: int = 0, action_dim: int = 1):
    torch.manual_seed(seed)
    space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
    policy = cls(Bandit.observation_space, space,
                 PolicyConfig(kind=cls.kind, horizon=1, hidden_dim=32, time_dim=8, sample_steps=steps, train_steps=8))
    policy.fit_normalization(np.zeros((2, 1)), np.stack([-np.ones(action_dim), np.ones(action_dim)]))
    return policy


@pytest.fixture(scope="module")
def bc_flow():
    """A flow policy behaviour-cloned onto actions N(-0.3, 0.1^2): far from the bandit's optimum."""
    policy = tiny_policy(FlowPolicy)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(policy.parameters(), lr=5e-3)
    rng = np.random.default_rng(0)
    obs = np.zeros((128, 1), np.float32)
    for _ in range(150):
        acts = torch.as_tensor(-0.3 + 0.1 * rng.standard_normal((128, 1, 1)), dtype=torch.float32)
        loss = policy.loss(obs, acts, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy


def small_config(**overrides) -> OGPOConfig:
    base = dict(n_critics=2, critic_hidden=(32, 32), batch_size=32, group_size=8, ppo_batch_size=8,
                learning_starts=20, actor_lr=1e-3, tau_actor=0.2, clip_epsilon=0.2, critic_lr=3e-3, tau_critic=0.2,
                log_every=10, success_batch_size=16)
    base.update(overrides)
    return OGPOConfig(**base)


def _cond(policy, batch=3):
    obs_t, _ = policy._obs_to_tensors(np.zeros((batch, 1), np.float32))
    return policy._condition(obs_t, None, batch)


# ------------------------------------------------------------------------- the chain
def test_one_step_flow_chain_log_prob_is_the_hand_computed_gaussian():
    policy = tiny_policy(FlowPolicy, steps=1, action_dim=2)
    noise = ChainNoise(flow_sigma=0.3)
    cond = _cond(policy)
    x0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    xs, logp = sample_chain(policy, cond, x0, noise, torch.Generator().manual_seed(2))
    with torch.no_grad():
        v = policy.denoiser(x0, torch.zeros(3), cond)
        # t = 0, dt = 1, std = sigma; score correction (sigma^2 / 2) (0 * v - x0)
        mean = (x0 + v - 0.5 * 0.3 ** 2 * x0).clamp(-1, 1)
        expected = (-(xs[1] - mean) ** 2 / (2 * 0.3 ** 2) - math.log(0.3) - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert xs.shape == (2, 3, 2) and torch.equal(xs[0], x0)
    torch.testing.assert_close(logp, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chain_log_prob(policy, cond, xs, noise).detach(), expected, rtol=1e-5, atol=1e-5)


def test_one_step_diffusion_chain_log_prob_is_the_hand_computed_gaussian():
    policy = tiny_policy(DiffusionPolicy, steps=1)
    noise = ChainNoise(diffusion_min_std=0.2)
    cond = _cond(policy)
    x0 = torch.randn(3, 1, generator=torch.Generator().manual_seed(3))
    xs, logp = sample_chain(policy, cond, x0, noise, torch.Generator().manual_seed(4))
    with torch.no_grad():
        abar = float(policy.alphas_cumprod[policy.timesteps[0]])
        eps = policy.denoiser(x0, torch.full((3,), float(policy.timesteps[0])), cond)
        mean = ((x0 - math.sqrt(1 - abar) * eps) / math.sqrt(abar)).clamp(-1, 1)  # the last step: x0_hat
        expected = (-(xs[1] - mean) ** 2 / (2 * 0.2 ** 2) - math.log(0.2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(logp, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chain_log_prob(policy, cond, xs, noise).detach(), expected, rtol=1e-5, atol=1e-5)


def test_noise_free_ddim_chain_is_the_policys_own_sampler():
    policy = tiny_policy(DiffusionPolicy, steps=4)
    cond = _cond(policy, 5)
    x0 = torch.randn(5, 1, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        xs, _ = sample_chain(policy, cond, x0, ChainNoise(diffusion_eta=0.0), stochastic=False)
        torch.testing.assert_close(xs[-1], policy._generate(x0, cond))


def test_chain_log_prob_of_a_sampled_multi_step_chain_matches_the_sampler():
    policy = tiny_policy(FlowPolicy, steps=4)
    cond = _cond(policy, 6)
    noise = ChainNoise()
    xs, logp = sample_chain(policy, cond, torch.randn(6, 1), noise, torch.Generator().manual_seed(6))
    per_step = chain_log_prob(policy, cond, xs, noise, per_step=True)
    assert per_step.shape == (4, 6)
    torch.testing.assert_close(per_step.sum(0).detach(), logp, rtol=1e-5, atol=1e-4)



def test_two_step_tapered_flow_chain_scales_the_score_correction_by_dt():
    # OGPO pg_helper.sample_flow_actions_sde: mean = x + dt * (v + (std_t^2 / 2) (t v - x) / (1 - t))
    policy = tiny_policy(FlowPolicy, steps=2, action_dim=2)
    cond = _cond(policy)
    xs = torch.randn(3, 3, 2, generator=torch.Generator().manual_seed(7)) * 0.5
    sigma, dt = 0.3, 0.5
    with torch.no_grad():
        v1 = policy.denoiser(xs[1], torch.full((3,), 0.5), cond)
        std1 = sigma * math.sqrt(0.5)
        corr = 0.5 * std1 ** 2 * (0.5 * v1 - xs[1]) / 0.5
        means = {True: (xs[1] + dt * (v1 + corr)).clamp(-1, 1), False: (xs[1] + dt * v1 + corr).clamp(-1, 1)}
        for with_dt, mean in means.items():
            expected = (-(xs[2] - mean) ** 2 / (2 * std1 ** 2) - math.log(std1) - 0.5 * math.log(2 * math.pi)).sum(-1)
            got = chain_log_prob(policy, cond, xs, ChainNoise(flow_sigma=sigma, correction_dt=with_dt), per_step=True)[1]
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(means[True], means[False])


def test_the_log_ratio_is_divided_by_k_plus_one_steps_times_the_chunk_dimension():
    # OGPO pg_helper.compute_flow_log_prob: logprob_steps = 1 (x_0) + K; then / act_dim
    policy = tiny_policy(FlowPolicy, steps=2, action_dim=2)
    agent = OGPO(None, policy, small_config(), seed=0)
    with torch.no_grad():
        for p in agent.policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(8)))
    obs = np.zeros((2, 1), np.float32)
    G = agent.config.group_size
    xs, logp_old, _ = agent.sample_chains(agent.actor_target, obs, repeat=G)
    q = torch.zeros(agent.config.n_critics, 2, G)
    terms = agent.actor_losses(obs, chains=(xs, logp_old), q=q)
    logp_new = chain_log_prob(agent.policy, agent._cond(agent.policy, obs, G), xs, agent.noise).detach()
    expected = ((logp_new - logp_old) / ((2 + 1) * 2)).reshape(2, G)
    torch.testing.assert_close(terms["log_ratio"].detach(), expected, rtol=1e-5, atol=1e-6)
    assert agent.log_prob_scale() == 6.0


def test_training_acts_with_the_target_actors_stochastic_chain(bc_flow):
    agent = OGPO(Bandit(), bc_flow, small_config(), seed=0)
    with torch.no_grad():
        for p in agent.policy.parameters():
            p.add_(1.0)  # the online actor far from its EMA target
    state = agent.generator.get_state()
    acted = agent._act(np.zeros(1, np.float32))
    agent.generator.set_state(state)
    target = agent.sample_chains(agent.actor_target, np.zeros((1, 1), np.float32))[2][0].numpy()
    agent.generator.set_state(state)
    online = agent.sample_chains(agent.policy, np.zeros((1, 1), np.float32))[2][0].numpy()
    np.testing.assert_array_equal(acted, target)
    assert not np.allclose(acted, online)


# --------------------------------------------------------------------- the objective
def test_clipped_objective_equals_the_hand_computed_value():
    log_ratio = torch.log(torch.tensor([1.5, 0.5, 1.005, 0.9])).requires_grad_(True)
    adv = torch.tensor([1.0, 1.0, -2.0, -1.0])
    # min(rA, clip(r, 0.8, 1.2) A): 1.2, 0.5, -2.01, -0.9
    loss = clipped_objective(log_ratio, adv, 0.2)
    assert loss.item() == pytest.approx(-(1.2 + 0.5 - 2.01 - 0.9) / 4, abs=1e-6)
    loss.backward()
    assert log_ratio.grad[0] == 0.0  # clipped: no gradient pushes the ratio further up
    assert log_ratio.grad[1] != 0.0
    # a lower upper clip (chi^2 regularisation) caps the gain of the first sample at 1.1
    assert clipped_objective(log_ratio.detach(), adv, 0.2, upper=1.1).item() == pytest.approx(
        -(1.1 + 0.5 - 2.01 - 0.9) / 4, abs=1e-6)


# --------------------------------------------------------------------- the stabilisers
def test_conservative_advantages_keep_only_agreed_signs_with_the_smallest_magnitude():
    # 3 critics, 1 state, 3 chains: chain 0 all critics above their group mean, chain 1 disputed,
    # chain 2 all below
    q = torch.tensor([[[3.0, 1.0, 0.0]], [[2.0, 3.0, 0.5]], [[4.0, 0.5, -1.5]]])
    plain, cons = group_advantages(q, False), group_advantages(q, True)
    per_critic = q - q.mean(-1, keepdim=True)
    assert cons[0, 0] == per_critic[:, 0, 0].min() > 0
    assert cons[0, 1] == 0.0 and plain[0, 1] != 0.0
    assert cons[0, 2] == per_critic[:, 0, 2].max() < 0
    assert torch.all(cons.abs() <= plain.abs() + 1e-6)
    # so the objective does not push the disputed chain at all
    log_ratio = torch.zeros(1, 3, requires_grad=True)
    clipped_objective(log_ratio, cons, 0.01).backward()
    assert log_ratio.grad[0, 1] == 0.0 and log_ratio.grad[0, 0] < 0 < log_ratio.grad[0, 2]


def test_chi2_regularisation_lowers_the_advantage_of_chains_that_drift_from_the_slow_policy():
    q = torch.tensor([[[1.0, 1.0, 0.0]], [[1.2, 1.2, 0.1]]])  # chains 0 and 1 have equal values
    log_rho = torch.tensor([[0.0, 0.5, 0.0]])  # chain 1 is more likely under the current policy
    adv, upper = chi2_advantages(q, log_rho, 0.01, alpha=5.0, beta_base=0.1, q_std_target=1.0, r_max=10.0)
    plain = group_advantages(q, False)
    assert adv[0, 1] < adv[0, 0]  # equal values, the drifted chain is penalised
    assert adv[0, 1] - adv[0, 0] < plain[0, 1] - plain[0, 0]
    assert torch.all(upper <= 1.01)
    # with no drift and no ensemble spread the chi^2 advantages are the plain ones
    flat = torch.tensor([[[1.0, 2.0, 0.0]], [[1.0, 2.0, 0.0]]])
    same, _ = chi2_advantages(flat, torch.zeros(1, 3), 0.01, 5.0, 0.1, 1.0, 10.0)
    torch.testing.assert_close(same, group_advantages(flat, False))



def test_chi2_beta_is_one_scalar_from_the_mean_ensemble_std():
    # pg_helper.compute_chi_po_beta: beta = beta_base * mean over chains and states of std over the ensemble
    q = torch.tensor([[[1.0, 3.0]], [[3.0, 3.0]]])  # (M=2, B=1, G=2): population stds 1 and 0, mean 0.5
    adv, upper = chi2_advantages(q, torch.zeros(1, 2), 0.01, alpha=5.0, beta_base=0.4, q_std_target=2.0, r_max=0.001)
    beta = 0.4 * 0.5 / 2.0
    w = torch.sigmoid(torch.tensor(0.0))  # rho = 1
    values = (1 - w) * torch.tensor([2.0, 3.0]) + w * torch.tensor([1.0, 3.0]) - beta
    torch.testing.assert_close(adv[0], values - values.mean())
    assert upper.shape == () and float(upper) == pytest.approx(1.0 + 0.001 / beta)  # below 1 + eps


def _td_by_hand(agent, batch, reduce_heads):
    """(sampled next values (M, B, n) -> the TD target) with the agent's generator replayed."""
    cfg = agent.config
    n = cfg.q_vr_samples if cfg.q_variance_reduction else 1
    with torch.no_grad():
        _, _, chunk = agent.sample_chains(agent.actor_target, batch["next_obs"], repeat=n)
        q = agent.critic_values(agent.critic_target, agent.obs_tensor(batch["next_obs"]), agent.critic_action(chunk), n)
        q_next = reduce_heads(q.reshape(q.shape[0], -1, n))
    discount = cfg.gamma ** torch.as_tensor(batch["steps"], dtype=torch.float32)
    return torch.as_tensor(batch["rewards"]) + discount * (1 - torch.as_tensor(batch["terminals"])) * q_next


def test_q_variance_reduction_takes_each_heads_median_then_the_mean_over_heads(bc_flow):
    agent = _filled_agent(bc_flow, steps=40, q_variance_reduction=True, q_vr_reduce="median", flow_sigma=0.6,
                          n_critics=3, critic_layer_norm=False)
    with torch.no_grad():  # heads that rank the next actions differently: the order of the reductions matters
        for head, scale in enumerate((300.0, -300.0, 100.0)):
            agent.critic_target.weights[-1][head].mul_(scale)
    batch = agent.sample_batch()
    batch["terminals"][:] = 0.0  # bandit episodes end at once: bootstrap anyway
    state = agent.generator.get_state()
    y = agent.td_target(batch)
    agent.generator.set_state(state)
    expected = _td_by_hand(agent, batch, lambda q: q.median(-1).values.mean(0))
    torch.testing.assert_close(y, expected)
    agent.generator.set_state(state)
    other_order = _td_by_hand(agent, batch, lambda q: q.mean(0).median(-1).values)
    assert not torch.allclose(y, other_order)


def test_chi2_td_target_blends_mean_and_min_by_the_actors_drift(bc_flow):
    agent = _filled_agent(bc_flow, steps=40, chi2=True, conservative_advantages=False, n_critics=3)
    batch = agent.sample_batch()
    batch["terminals"][:] = 0.0  # bandit episodes end at once: bootstrap anyway
    state = agent.generator.get_state()
    plain = agent.td_target(batch)
    agent.generator.set_state(state)
    torch.testing.assert_close(plain, _td_by_hand(agent, batch, lambda q: q[..., 0].mean(0)))  # before any actor step
    agent.chi2_drift = 1.2
    w = float(torch.sigmoid(torch.tensor(5.0 * 0.2)))
    agent.generator.set_state(state)
    y = agent.td_target(batch)
    agent.generator.set_state(state)
    expected = _td_by_hand(agent, batch, lambda q: (1 - w) * q[..., 0].mean(0) + w * q[..., 0].min(0).values)
    torch.testing.assert_close(y, expected)
    assert not torch.allclose(y, plain)
    # the actor step sets the drift (mean chain ratio to the slow policy), and a checkpoint keeps it
    agent.actor_update(batch)
    assert agent.chi2_drift is not None and agent.chi2_drift > 0


def _filled_agent(policy, steps=40, **overrides):
    agent = OGPO(Bandit(), policy, small_config(learning_starts=10_000, **overrides), seed=0)
    agent.learn(steps, progress=False)  # collection only (learning_starts not reached)
    return agent


def _replace_success_buffer(agent, obs, chunks):
    agent.success = ObsActionRing(agent.config.buffer_size, agent._obs_spec, agent.chunk_dim)
    for obs_row, chunk in zip(obs, chunks):
        agent.success.add(obs=obs_row, actions=chunk)


def test_success_buffer_keeps_the_newest_chunks_in_a_ring_and_resumes_with_its_position(bc_flow, tmp_path):
    agent = OGPO(Bandit(), bc_flow, small_config(learning_starts=10_000, buffer_size=8), seed=0)
    agent.learn(5, progress=False)
    chunks = np.linspace(-1, 1, 11, dtype=np.float32)[:, None]
    _replace_success_buffer(agent, np.arange(11, dtype=np.float32)[:, None], chunks)
    assert agent.success.size == 8 and agent.success.pos == 3  # 11 rows through a ring of 8: 3 overwritten
    assert sorted(agent.success_actions[:, 0]) == sorted(chunks[3:, 0])
    assert sorted(agent.success_obs[:, 0]) == list(range(3, 11))  # each chunk keeps its own observation
    agent.save(tmp_path / "ckpt")
    resumed = OGPO.load(tmp_path / "ckpt", env=Bandit())
    assert (resumed.success.size, resumed.success.pos) == (8, 3)
    np.testing.assert_array_equal(resumed.success_actions, agent.success_actions)
    resumed.success.add(obs=np.full(1, 99, np.float32), actions=np.full(1, 0.5, np.float32))
    assert resumed.success_obs[3, 0] == 99 and 3.0 not in resumed.success_obs[:, 0]  # the oldest goes next


def test_a_checkpoint_from_before_the_success_ring_still_loads(bc_flow, tmp_path):
    agent = OGPO(Bandit(), bc_flow, small_config(learning_starts=10_000), seed=0)
    agent.learn(5, progress=False)
    _replace_success_buffer(agent, np.zeros((4, 1), np.float32), np.full((4, 1), 0.5, np.float32))
    agent.save(tmp_path / "ckpt")
    from safetensors.numpy import load_file

    saved = load_file(tmp_path / "ckpt" / "replay.safetensors")
    old_format = {k: v for k, v in saved.items() if k != "success/meta"}  # what earlier versions wrote,
    (tmp_path / "ckpt" / "replay.safetensors").unlink()  # in a replay.npz
    replay_file = tmp_path / "ckpt" / "replay.npz"
    np.savez(replay_file, **old_format)
    resumed = OGPO.load(tmp_path / "ckpt", env=Bandit())
    assert (resumed.success.size, resumed.success.pos) == (4, 4)
    np.testing.assert_array_equal(resumed.success_actions, agent.success_actions)
    np.savez(replay_file, **{**old_format, "success/actions": np.zeros((4, 3), np.float32)})  # foreign width
    with pytest.raises(ValueError, match=r"success buffer.*success/actions has shape \(4, 3\)"):
        OGPO.load(tmp_path / "ckpt", env=Bandit())


def test_success_buffer_bc_adds_the_bc_loss_and_raises_the_likelihood_of_successes(bc_flow):
    agent_on = _filled_agent(bc_flow, success_buffer_bc=True, bc_coef=1.0)
    agent_off = _filled_agent(bc_flow, success_buffer_bc=False)
    success = (np.zeros((16, 1), np.float32), np.full((16, 1), OPTIMUM, np.float32))
    obs = np.zeros((8, 1), np.float32)
    torch.manual_seed(0)
    chains = agent_on.sample_chains(agent_on.actor_target, np.repeat(obs, 8, axis=0))[:2]
    q = torch.zeros(2, 8, 8)
    on = agent_on.actor_losses(obs, success, chains=chains, q=q)
    off = agent_off.actor_losses(obs, success, chains=chains, q=q)
    assert on["bc"] > 0 and off["bc"] == 0
    torch.testing.assert_close(on["loss"], off["loss"] + on["bc"])

    def bc_loss(policy):
        gen = torch.Generator().manual_seed(9)
        chunks = torch.full((64, 1, 1), OPTIMUM)
        return float(policy.loss(np.zeros((64, 1), np.float32), chunks, generator=gen).detach())

    before = bc_loss(agent_on.policy)
    _replace_success_buffer(agent_on, *success)
    for _ in range(15):
        agent_on.actor_update(agent_on.sample_batch())
        agent_off.actor_update(agent_off.sample_batch())
    assert bc_loss(agent_on.policy) < before
    assert bc_loss(agent_on.policy) < bc_loss(agent_off.policy)


@pytest.mark.parametrize("reduce", ["median", "mean"])
def test_q_variance_reduction_lowers_the_variance_of_the_td_target(reduce):
    policy = tiny_policy(FlowPolicy)  # untrained: its chain spreads next actions widely

    def targets(vr: bool) -> np.ndarray:
        # no LayerNorm: the bandit's standardised observation is exactly 0, so an untrained LayerNorm
        # critic is a step function of the 1-D action (two values) and no reduction can lower its spread
        agent = _filled_agent(policy, steps=8, q_variance_reduction=vr, q_vr_reduce=reduce, flow_sigma=0.6,
                              critic_layer_norm=False)
        with torch.no_grad():  # a critic whose value depends strongly on the action
            agent.critic_target.weights[-1].mul_(300.0)
        batch = agent.sample_batch()
        batch["terminals"][:] = 0.0
        return np.stack([agent.td_target(batch).numpy() for _ in range(60)])

    single, reduced = targets(False), targets(True)
    assert reduced.var(0).mean() < 0.5 * single.var(0).mean()


# ------------------------------------------------------------------------------ training
def test_a_short_run_moves_the_policy_toward_the_bandits_optimum(bc_flow, tmp_path):
    before = float(bc_flow.sample_n(np.zeros(1, np.float32), 200).mean())
    agent = OGPO(Bandit(), bc_flow, small_config(success_buffer_bc=False, conservative_advantages=False), seed=0)
    agent.learn(200, eval_env=Bandit(), eval_every=100, eval_episodes=5, out=tmp_path / "run", progress=False)
    after = float(agent.policy.sample_n(np.zeros(1, np.float32), 200).mean())
    assert abs(before - OPTIMUM) > 0.8
    assert abs(after - OPTIMUM) < 0.35, (before, after)
    assert float(bc_flow.sample_n(np.zeros(1, np.float32), 200).mean()) == pytest.approx(before, abs=0.05)  # untouched
    assert agent.eval_history[-1]["mean_return"] > agent.eval_history[0]["mean_return"]
    for name in ("run.json", "progress.csv", "eval.csv", "checkpoints/latest/config.json"):
        assert (tmp_path / "run" / name).exists(), name


def test_resume_makes_identical_next_updates(bc_flow, tmp_path):
    cfg = small_config(learning_starts=15)
    agent = OGPO(Bandit(), bc_flow, cfg, seed=3)
    agent.learn(30, progress=False)
    _replace_success_buffer(agent, np.zeros((5, 1), np.float32), np.full((5, 1), 0.5, np.float32))
    agent.save(tmp_path / "ckpt")
    resumed = OGPO.load(tmp_path / "ckpt", env=Bandit())
    assert resumed.num_timesteps == agent.num_timesteps == 30 and resumed.replay.size == 30
    agent.learn(12, progress=False, reset_num_timesteps=False)
    resumed.learn(12, progress=False, reset_num_timesteps=False)
    for (name, a), (_, b) in zip(agent.policy.state_dict().items(), resumed.policy.state_dict().items()):
        assert torch.equal(a, b), name
    for a, b in zip(agent.critic.parameters(), resumed.critic.parameters()):
        assert torch.equal(a, b)
    assert agent.metrics == resumed.metrics
    np.testing.assert_array_equal(agent.replay.data["actions"], resumed.replay.data["actions"])


def test_cosine_actor_schedule_warms_up_decays_and_resumes_exactly(bc_flow, tmp_path):
    cfg = small_config(actor_lr_schedule="cosine", actor_lr=1e-3, actor_lr_end=1e-4, actor_lr_warmup=4,
                       actor_lr_decay=10, learning_starts=15, batch_size=8)
    assert cfg.actor_lr_at(0) == pytest.approx(2.5e-4)  # linear warm-up from 0
    assert cfg.actor_lr_at(3) == pytest.approx(1e-3)  # ... reaching actor_lr
    assert cfg.actor_lr_at(4 + 5) == pytest.approx(5.5e-4)  # half way down the cosine: the mean of both ends
    assert cfg.actor_lr_at(4 + 10) == cfg.actor_lr_at(10**6) == pytest.approx(1e-4)  # then flat at the end
    assert small_config().actor_lr_at(5) == small_config().actor_lr  # the default stays constant
    agent = OGPO(Bandit(), bc_flow, cfg, seed=3)
    agent.learn(24, progress=False)  # an update round after each env step 15..24 (actor steps 0..9)
    assert agent.updates == 10
    assert agent.metrics["actor_lr"] == agent.actor_optimizer.param_groups[0]["lr"] == pytest.approx(cfg.actor_lr_at(9))
    agent.save(tmp_path / "ckpt")
    resumed = OGPO.load(tmp_path / "ckpt", env=Bandit())
    agent.learn(6, progress=False, reset_num_timesteps=False)
    resumed.learn(6, progress=False, reset_num_timesteps=False)
    assert agent.metrics == resumed.metrics and agent.metrics["actor_lr"] == pytest.approx(cfg.actor_lr_at(15))
    for a, b in zip(agent.policy.parameters(), resumed.policy.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="actor_lr_schedule"):
        small_config(actor_lr_schedule="linear")
    with pytest.raises(ValueError, match="actor_lr_end"):
        small_config(actor_lr_end=1.0)



class Counter(gym.Env):
    """Obs t / 10 after t steps, reward 1 per step, terminated after 10 steps."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(1, self.t / 10, np.float32), 1.0, self.t == 10, False, {}


def chunk_policy(horizon=4):
    torch.manual_seed(0)
    policy = FlowPolicy(Counter.observation_space, Counter.action_space,
                        PolicyConfig(kind="flow", horizon=horizon, hidden_dim=16, time_dim=8, sample_steps=2,
                                     train_steps=8))
    policy.fit_normalization(np.zeros((2, 1)), np.stack([-np.ones(1), np.ones(1)]))
    return policy


def _count_calls(agent, name):
    calls = []
    method = getattr(agent, name)
    setattr(agent, name, lambda *a, **k: calls.append(1) or method(*a, **k))
    return calls


def test_updates_run_per_primitive_env_step_after_learning_starts_env_steps():
    # run_online_rl: after env step i >= start_training, one batch_update once the replay (whole episodes,
    # added when they end) holds batch_size * utd * H transitions. H = 4, 10-step episodes (chunks 4, 4, 2).
    cfg = dict(n_critics=2, critic_hidden=(16,), batch_size=2, group_size=2, ppo_batch_size=2, learning_starts=5,
               success_buffer_bc=False, conservative_advantages=False)
    agent = OGPO(Counter(), chunk_policy(), OGPOConfig(**cfg), seed=0)
    critic_calls, actor_calls = _count_calls(agent, "critic_update"), _count_calls(agent, "actor_update")
    agent.learn(20, progress=False)
    # gate 2 * 1 * 4 = 8 rows: the replay is empty until step 10 ends episode 1 (10 rows), so rounds at
    # env steps 10..20: 11 critic and 11 actor updates (6 chunks executed)
    assert agent.agent_steps == 6 and agent.updates == 11 and len(critic_calls) == len(actor_calls) == 11
    assert agent.replay.size == 20  # primitive transitions
    np.testing.assert_allclose(agent.replay.data["obs"][:10, 0], np.arange(10) / 10, atol=1e-6)
    np.testing.assert_allclose(agent.replay.data["next_obs"][:10, 0], np.arange(1, 11) / 10, atol=1e-6)
    np.testing.assert_array_equal(np.nonzero(agent.replay.data["terminals"][:20])[0], [9, 19])
    # utd_critic 2 > utd_actor 1: gate 16 rows, reached when episode 2 ends at step 20: one round, 2 + 1 updates
    agent = OGPO(Counter(), chunk_policy(), OGPOConfig(**cfg, utd_critic=2), seed=0)
    critic_calls, actor_calls = _count_calls(agent, "critic_update"), _count_calls(agent, "actor_update")
    agent.learn(20, progress=False)
    assert agent.updates == 1 and len(critic_calls) == 2 and len(actor_calls) == 1
    # per env step on chunk rows (no windows, no replay-size gate): rounds at env steps 5..20
    agent = OGPO(Counter(), chunk_policy(), OGPOConfig(**cfg, critic_windows=False), seed=0)
    agent.learn(20, progress=False)
    assert agent.updates == 16 and agent.replay.size == 6
    # the earlier behaviour (what checkpoints without the fields load with): a round per chunk after 5 chunks
    agent = OGPO(Counter(), chunk_policy(), OGPOConfig(**cfg, updates_per_env_step=False, critic_windows=False),
                 seed=0)
    agent.learn(20, progress=False)
    assert agent.updates == 1 and agent.replay.size == 6



class SuccessCounter(Counter):
    """Counter whose episodes succeed at their last step."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, {"is_success": terminated}


def test_success_windows_feed_the_critic_a_second_step_once_enough_successes_are_stored():
    # ogpo.py critic_update_sb after each critic step, once successful episodes hold success_batch * utd + H rows
    cfg = dict(n_critics=2, critic_hidden=(16,), batch_size=2, group_size=2, ppo_batch_size=2, learning_starts=5,
               success_buffer_bc=False, conservative_advantages=False, success_batch_size=2)
    counts = {}
    for env, sb_q in ((SuccessCounter(), True), (SuccessCounter(), False), (Counter(), True)):
        agent = OGPO(env, chunk_policy(), OGPOConfig(**cfg, use_success_buffer_q=sb_q), seed=0)
        calls = _count_calls(agent, "critic_update")
        agent.learn(20, progress=False)
        counts[type(env).__name__, sb_q] = (agent.updates, len(calls))
    # 11 rounds (env steps 10..20); with successes (10 rows >= 2 * 1 + 4 from step 10) each adds a step
    assert counts == {("SuccessCounter", True): (11, 22), ("SuccessCounter", False): (11, 11),
                      ("Counter", True): (11, 11)}
    assert OGPOConfig().use_success_buffer_q  # square.sh


def test_success_only_windows_start_in_successful_episodes():
    replay = StepReplay(8, 1, 1)
    for t in range(6):  # episode of rows 0..2 failed, rows 3..5 succeeded; a full ring afterwards
        replay.add(obs=np.full(1, t, np.float32), actions=np.zeros(1, np.float32), rewards=0.0,
                   next_obs=np.full(1, t + 1, np.float32), terminals=0.0, dones=float(t in (2, 5)), success=float(t >= 3))
    starts = replay.sample_windows(np.random.default_rng(0), 100, 2, 0.9, success_only=True)["obs"][:, 0]
    assert set(starts.astype(int)) == {3, 4}  # 5 starts no window that fits
    assert replay.success_rows() == 3
    for t in range(6, 10):  # a failed episode wraps the ring: rows 0, 1 (t = 0, 1) overwritten, t = 2 the oldest
        replay.add(obs=np.full(1, t, np.float32), actions=np.zeros(1, np.float32), rewards=0.0,
                   next_obs=np.full(1, t + 1, np.float32), terminals=0.0, dones=float(t == 9), success=0.0)
    batch = replay.sample_windows(np.random.default_rng(1), 100, 2, 0.9, success_only=True)
    assert set(batch["obs"][:, 0].astype(int)) == {3, 4, 5}  # 5 now starts the window (5, 6)
    everything = replay.sample_windows(np.random.default_rng(2), 400, 2, 0.9)["obs"][:, 0].astype(int)
    assert set(everything) == set(range(2, 9))  # never the window (9, 2) across the write position


def test_critic_windows_hold_the_discounted_in_window_reward_and_mask_early_episode_ends():
    # a hand-made 3-step episode (rewards 1, 2, 4; terminated at its last step), then one step of the next
    replay = StepReplay(16, 1, 1)
    for t, r in enumerate([1.0, 2.0, 4.0, 8.0]):
        replay.add(obs=np.full(1, t, np.float32), actions=np.full(1, t / 10, np.float32), rewards=r,
                   next_obs=np.full(1, t + 1, np.float32), terminals=float(t == 2), dones=float(t == 2), success=0.0)
    batch = replay.sample_windows(np.random.default_rng(0), 200, horizon=2, gamma=0.5)
    starts = batch["obs"][:, 0].astype(int)
    assert set(starts) == {0, 1, 2}  # every primitive step starts a window that fits
    expected = {  # start: (sum_j gamma^j r_j, terminal, valid, next obs, actions)
        0: (1 + 0.5 * 2, 0.0, 1.0, 2, [0.0, 0.1]),
        1: (2 + 0.5 * 4, 1.0, 1.0, 3, [0.1, 0.2]),
        2: (4 + 0.5 * 8, 1.0, 0.0, 4, [0.2, 0.3]),  # the episode ends inside: no TD loss
    }
    for i, start in enumerate(starts):
        reward, terminal, valid, next_obs, actions = expected[start]
        assert batch["rewards"][i] == pytest.approx(reward)
        assert batch["terminals"][i] == terminal and batch["valid"][i] == valid
        assert batch["next_obs"][i, 0] == next_obs and batch["steps"][i] == 2
        np.testing.assert_allclose(batch["actions"][i], actions, atol=1e-6)


def test_td_loss_ignores_windows_in_which_the_episode_ended_early(bc_flow):
    agent = _filled_agent(bc_flow, steps=40)
    batch = agent.sample_batch()
    assert agent.critic_update(batch)["td_loss"] > 0
    batch["valid"] = np.zeros_like(batch["valid"])
    assert agent.critic_update(batch)["td_loss"] == 0.0



def test_a_checkpoint_without_the_reference_fields_resumes_with_chunk_rows_and_per_chunk_updates(tmp_path):
    import json

    old = dict(n_critics=2, critic_hidden=(16,), batch_size=2, group_size=2, ppo_batch_size=2, learning_starts=2,
               success_buffer_bc=False, conservative_advantages=False, updates_per_env_step=False,
               critic_windows=False, flow_correction_dt=False)
    agent = OGPO(Counter(), chunk_policy(), OGPOConfig(**old), seed=0)
    agent.learn(10, progress=False)
    agent.save(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    for key in ("updates_per_env_step", "critic_windows", "flow_correction_dt"):
        del meta["config"][key]  # what a checkpoint from before these fields holds
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(meta))
    resumed = OGPO.load(tmp_path / "ckpt", env=Counter())
    cfg = resumed.config
    assert not (cfg.updates_per_env_step or cfg.critic_windows or cfg.flow_correction_dt)
    assert resumed.replay.size == agent.replay.size == 3 and resumed.replay.data["actions"].shape[1] == 4
    agent.learn(10, progress=False, reset_num_timesteps=False)
    resumed.learn(10, progress=False, reset_num_timesteps=False)
    assert agent.updates == resumed.updates == 4  # chunks 3..6 (learning_starts = 2 chunks)
    for a, b in zip(agent.critic.parameters(), resumed.critic.parameters()):
        assert torch.equal(a, b)


def test_bad_inputs_raise_clear_errors(bc_flow, tmp_path):
    with pytest.raises(ValueError, match="DiffusionPolicy or FlowPolicy.*str"):
        OGPO(Bandit(), "not a policy")
    other = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match="observation space"):
        OGPO(other, bc_flow, small_config())
    other.close()
    with pytest.raises(ValueError, match="conservative_advantages=False"):
        OGPOConfig(chi2=True)
    with pytest.raises(ValueError, match="group_size"):
        OGPOConfig(group_size=1)
    (tmp_path / "junk").mkdir()
    with pytest.raises(ValueError, match="not a steergym ogpo checkpoint"):
        OGPO.load(tmp_path / "junk")
    with pytest.raises(ValueError, match="no training env"):
        OGPO(None, bc_flow, small_config()).learn(10)


def test_chi2_run_keeps_a_slow_policy_and_round_trips(bc_flow, tmp_path):
    cfg = small_config(chi2=True, conservative_advantages=False, learning_starts=5, batch_size=8)
    agent = OGPO(Bandit(), bc_flow, cfg, seed=1)
    agent.learn(10, progress=False)
    assert np.isfinite(agent.metrics["actor_loss"])
    agent.save(tmp_path / "c")
    resumed = OGPO.load(tmp_path / "c")
    assert resumed.chi2_drift == agent.chi2_drift is not None
    for a, b in zip(agent.actor_slow.parameters(), resumed.actor_slow.parameters()):
        assert torch.equal(a, b)
    action, _ = resumed.predict(np.zeros(1, np.float32))
    assert action.shape == (1,) and -1.0 <= action[0] <= 1.0


def test_cli_trains_resumes_to_the_total_budget_and_the_policy_evaluates(tmp_path, capsys):
    import csv

    from steergym.cli import main

    out = tmp_path / "run"
    tiny = ["--eval-every", "40", "--eval-episodes", "1", "--learning-starts", "4", "--batch-size", "8",
            "--hidden", "16", "16", "--quiet", "--threads", "1"]
    config = '{"ppo_batch_size": 4, "success_batch_size": 4, "n_critics": 2, "group_size": 2}'
    base = ["train", "ogpo", "--policy", "widowx-lift-flow", "--out", str(out)]
    assert main([*base, "--env-steps", "40", "--config", config, *tiny]) == 0
    assert main([*base, "--env-steps", "40", "--config", config, *tiny]) == 2  # no silent overwrite
    assert "--resume" in capsys.readouterr().err
    assert main([*base, "--env-steps", "80", "--resume", *tiny]) == 0  # continues to 80 in total
    with open(out / "eval.csv") as handle:
        steps = [int(row["env_steps"]) for row in csv.DictReader(handle)]
    assert steps[0] == 0 and steps[-1] >= 80 and len(steps) == len(set(steps))  # no repeated evaluation
    assert "steergym/WidowXLiftCube-v0" in capsys.readouterr().out
    # the fine-tuned policy is a plain checkpoint that knows its task
    assert main(["eval", "--policy", str(out / "agent" / "policy"), "--episodes", "1", "--quiet"]) == 0
    assert main([*base, "--env-steps", "80", "--config", "[1]", "--resume"]) == 2
    assert "JSON object" in capsys.readouterr().err
