"""Cal-QL / CQL core: the regulariser and calibration against hand computation, the fused critics,
offline training on a real collected dataset, exact resume, and clear errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from steergym.algorithms.calql import CalQL, CalQLConfig, calibrate, cql_regularizer
from steergym.algorithms.networks import FusedCritics, tanh_gaussian_sample
from steergym.data import collect, load_transitions, monte_carlo_returns

LIFT = "steergym/WidowXLiftCube-v0"
TINY = dict(batch_size=32, actor_hidden=(32, 32), critic_hidden=(32, 32), log_every=1)


def spaces(obs_dim=4, action_dim=2):
    return (gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
            gym.spaces.Box(-2.0, 2.0, (action_dim,), np.float32))


def synthetic(n=200, obs_dim=4, action_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    return SimpleNamespace(
        observations=obs, next_observations=np.roll(obs, -1, axis=0),
        actions=rng.uniform(-2, 2, (n, action_dim)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32), terminals=rng.random(n) < 0.1,
        mc_returns=rng.normal(size=n).astype(np.float32),
    )


def agent_state(agent: CalQL) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, module in agent._modules().items():
        out.update({f"{prefix}/{k}": v.clone() for k, v in module.state_dict().items()})
    out["log_alpha"] = agent.log_alpha.detach().clone()
    return out


# ------------------------------------------------------------------------------------ the math
def test_cql_regularizer_matches_hand_computation():
    # 2 critics, batch 2, 2 samples of each kind, |A| = 3; arbitrary fixed "network outputs"
    q_data = torch.tensor([[1.0, -0.5], [0.3, 2.0]])
    q_rand = torch.tensor([[[0.2, -1.0], [0.0, 0.4]], [[1.5, 0.1], [-0.3, 0.7]]])
    q_cur = torch.tensor([[[0.9, 0.1], [1.1, -2.0]], [[0.4, 0.6], [2.2, 0.0]]])
    q_next = torch.tensor([[[-0.7, 0.3], [0.5, 0.2]], [[0.8, -0.1], [1.0, 1.3]]])
    logp_cur = torch.tensor([[-1.2, 0.4], [-0.3, -2.5]])
    logp_next = torch.tensor([[0.1, -0.9], [-1.7, 0.6]])
    mc = torch.tensor([0.5, 1.2])
    d, temp = 3, 0.7

    def hand(calibrated: bool, importance: bool) -> list[float]:
        out = []
        for i in range(2):
            total = 0.0
            for b in range(2):
                cur = [max(q, float(mc[b])) if calibrated else q for q in q_cur[i, b].tolist()]
                nxt = [max(q, float(mc[b])) if calibrated else q for q in q_next[i, b].tolist()]
                if importance:
                    cands = ([q - d * math.log(0.5) for q in q_rand[i, b].tolist()]
                             + [q - lp for q, lp in zip(nxt, logp_next[b].tolist())]
                             + [q - lp for q, lp in zip(cur, logp_cur[b].tolist())])
                else:
                    cands = q_rand[i, b].tolist() + [float(q_data[i, b])] + nxt + cur
                ood = temp * math.log(sum(math.exp(c / temp) for c in cands))
                total += ood - float(q_data[i, b])
            out.append(total / 2)
        return out

    for calibrated in (True, False):
        for importance in (True, False):
            got = cql_regularizer(q_data, q_rand, q_cur, logp_cur, q_next, logp_next, d,
                                  mc_returns=mc if calibrated else None, temperature=temp,
                                  importance_sample=importance)
            assert got.shape == (2,)
            np.testing.assert_allclose(got.numpy(), hand(calibrated, importance), rtol=1e-6, atol=1e-6)
    # clipping bounds the per-state difference before the mean
    clipped = cql_regularizer(q_data, q_rand, q_cur, logp_cur, q_next, logp_next, d, clip_min=-0.1, clip_max=0.1)
    assert torch.all(clipped.abs() <= 0.1 + 1e-7)


def test_calibration_clamps_exactly_where_q_is_below_the_mc_return():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 16, 5, generator=gen)
    mc = torch.randn(16, generator=gen)
    out = calibrate(q, mc)
    below = q < mc.reshape(1, -1, 1)
    assert below.any() and (~below).any()
    assert torch.equal(out[below], mc.reshape(1, -1, 1).expand_as(q)[below])
    assert torch.equal(out[~below], q[~below])  # untouched, bit for bit


def test_calibration_floors_policy_actions_but_not_random_ones():
    q_data = torch.zeros(2, 3)
    low = torch.full((2, 3, 4), -10.0)
    logp = torch.zeros(3, 4)
    mc = torch.full((3,), 1.0)
    # policy-action values far below the floor: Cal-QL lifts them to mc, CQL does not
    cal = cql_regularizer(q_data, low, low, logp, low, logp, 2, mc_returns=mc)
    cql = cql_regularizer(q_data, low, low, logp, low, logp, 2)
    assert torch.all(cal > cql)
    # only the random-action values below the floor: the floor changes nothing
    high = torch.full((2, 3, 4), 5.0)
    same_cal = cql_regularizer(q_data, low, high, logp, high, logp, 2, mc_returns=mc)
    same_cql = cql_regularizer(q_data, low, high, logp, high, logp, 2)
    assert torch.equal(same_cal, same_cql)


def test_calibrated_false_disables_only_the_clamp():
    data = synthetic()
    # a floor far below every Q-value is inactive: Cal-QL and CQL then take bit-identical steps
    unreachable = SimpleNamespace(**vars(data))
    unreachable.mc_returns = np.full_like(data.mc_returns, -1e6)
    cal = CalQL(spaces(), CalQLConfig(calibrated=True, **TINY), seed=3).pretrain(unreachable, 5, progress=False)
    cql = CalQL(spaces(), CalQLConfig(calibrated=False, **TINY), seed=3).pretrain(unreachable, 5, progress=False)
    for key, value in agent_state(cal).items():
        assert torch.equal(value, agent_state(cql)[key]), key
    # a floor above every Q-value is active: the critics now differ
    reachable = SimpleNamespace(**vars(data))
    reachable.mc_returns = np.full_like(data.mc_returns, 50.0)
    cal = CalQL(spaces(), CalQLConfig(calibrated=True, **TINY), seed=3).pretrain(reachable, 5, progress=False)
    cql = CalQL(spaces(), CalQLConfig(calibrated=False, **TINY), seed=3).pretrain(reachable, 5, progress=False)
    assert cal.history[-1]["bound_rate"] == 1.0
    assert cal.history[-1]["cql_diff"] > cql.history[-1]["cql_diff"]
    assert not torch.equal(cal.critic.weights[0], cql.critic.weights[0])


def test_fused_critics_equal_separate_mlps():
    critics = FusedCritics(3, 2, (8, 8), n=2)
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    fused = critics(obs, act)
    assert fused.shape == (2, 5)
    for i in range(2):
        x = torch.cat([obs, act], dim=-1)
        for k, (w, b) in enumerate(zip(critics.weights, critics.biases)):
            x = x @ w[i] + b[i, 0]
            if k < len(critics.weights) - 1:
                x = torch.relu(x)
        torch.testing.assert_close(fused[i], x.squeeze(-1))


def test_fused_critics_on_many_actions_per_state_equal_one_call_per_pair(monkeypatch):
    critics = FusedCritics(3, 2, (8, 8), n=2)
    obs, actions = torch.randn(5, 3), torch.randn(5, 7, 2)
    pairs = critics(obs.repeat_interleave(7, dim=0), actions.reshape(35, 2)).reshape(2, 5, 7)
    for chunk_rows in (1, 10, 35, 1000):  # 1 column per chunk ... everything in one chunk
        monkeypatch.setattr(FusedCritics, "CHUNK_ROWS", chunk_rows)
        torch.testing.assert_close(critics.q_values(obs, actions), pairs)


def test_tanh_gaussian_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)  # seeded: the global RNG's state depends on test order
    mean, log_std = torch.randn(4, 3, generator=g) * 0.5, torch.randn(4, 3, generator=g) * 0.2 - 0.5
    actions, logp = tanh_gaussian_sample(mean, log_std, 6, torch.Generator().manual_seed(0))
    assert actions.shape == (4, 6, 3) and logp.shape == (4, 6)
    # torch's reference inverts tanh, which float32 cannot do near +-1: keep the samples away from it
    assert actions.abs().max() < 0.999
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean.unsqueeze(1), log_std.exp().unsqueeze(1)),
        [torch.distributions.TanhTransform()])
    expected = dist.log_prob(actions.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1)
    torch.testing.assert_close(logp, expected, rtol=1e-3, atol=1e-3)


# -------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def lift_transitions(tmp_path_factory):
    """A real collected WidowX lift dataset (expert, noisy, failing episodes) with Cal-QL's reward
    transform (r' = 10 r - 5, the AntMaze scripts') and its Monte-Carlo returns at gamma 0.9."""
    root = tmp_path_factory.mktemp("calql-data")
    collect(LIFT, 3, "mixed", "steergym/lift/calql-v0", seed=0, root=root, progress=False)
    data = load_transitions("steergym/lift/calql-v0", root=root)
    rewards = (10.0 * data.rewards - 5.0).astype(np.float32)
    mc = np.concatenate([monte_carlo_returns(rewards[data.episode_index == k], data.terminals[data.episode_index == k],
                                             0.9) for k in np.unique(data.episode_index)]).astype(np.float32)
    return dataclasses.replace(data, rewards=rewards, mc_returns=mc)


def test_offline_pretraining_reduces_the_td_loss(lift_transitions, make_env):
    env = make_env(LIFT)
    agent = CalQL(env, CalQLConfig(discount=0.9, critic_lr=1e-3, actor_lr=1e-3, **TINY), seed=0)
    agent.pretrain(lift_transitions, 300, progress=False)
    td = [row["td_loss"] for row in agent.history]
    assert len(td) == 300 and agent.step == 300
    assert np.mean(td[-20:]) < 0.25 * np.mean(td[:20])
    assert all(np.isfinite(list(row.values())).all() for row in agent.history)
    obs, _ = env.reset(seed=0)
    action, _ = agent.predict(obs)
    assert env.action_space.contains(action)
    batch, _ = agent.predict(np.stack([obs, obs]), deterministic=False)
    assert batch.shape == (2, 7) and np.all(np.abs(batch) <= 1.0)


def test_save_load_resumes_exactly(tmp_path):
    data = synthetic()
    config = CalQLConfig(cql_lagrange=True, **TINY)  # every module and optimiser in play
    straight = CalQL(spaces(), config, seed=1).pretrain(data, 4, progress=False)
    interrupted = CalQL(spaces(), config, seed=1).pretrain(data, 3, progress=False)
    interrupted.save(tmp_path / "agent")
    assert sorted(p.name for p in (tmp_path / "agent").iterdir()) == ["config.json", "model.safetensors"]
    resumed = CalQL.load(tmp_path / "agent")
    assert resumed.step == 3
    resumed.pretrain(data, 1, progress=False)
    for key, value in agent_state(straight).items():
        assert torch.equal(value, agent_state(resumed)[key]), key
    assert torch.equal(straight.log_alpha_prime, resumed.log_alpha_prime)
    assert straight.metrics == resumed.metrics
    obs = data.observations[:3]
    np.testing.assert_array_equal(straight.predict(obs)[0], resumed.predict(obs)[0])
    # saving again replaces the folder atomically (no staging leftovers)
    resumed.save(tmp_path / "agent")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent"]


def test_observations_are_normalised_with_the_offline_statistics(tmp_path):
    data = synthetic()
    data.observations = data.observations * 5.0 + 3.0
    agent = CalQL(spaces(), CalQLConfig(**TINY), seed=0).pretrain(data, 2, progress=False)
    torch.testing.assert_close(agent.obs_mean, torch.as_tensor(data.observations.mean(0)))
    torch.testing.assert_close(agent.obs_std, torch.as_tensor(data.observations.std(0) + 1e-3))
    obs = data.observations[:4]
    with torch.no_grad():  # the actor sees normalised observations
        mean, _ = agent.actor((torch.as_tensor(obs) - agent.obs_mean) / agent.obs_std)
    np.testing.assert_allclose(agent.predict(obs)[0], 2.0 * torch.tanh(mean).numpy(), rtol=1e-5, atol=1e-6)
    loaded = CalQL.load(agent.save(tmp_path / "agent"))
    assert torch.equal(loaded.obs_mean, agent.obs_mean) and torch.equal(loaded.obs_std, agent.obs_std)
    np.testing.assert_array_equal(loaded.predict(obs)[0], agent.predict(obs)[0])
    plain = CalQL(spaces(), CalQLConfig(normalize_observations=False, **TINY)).pretrain(data, 1, progress=False)
    assert plain.obs_mean is None


def test_cql_is_the_same_class_and_round_trips(tmp_path):
    agent = CalQL(spaces(), CalQLConfig(calibrated=False, **TINY), seed=0)
    agent.save(tmp_path / "cql")
    meta = json.loads((tmp_path / "cql" / "config.json").read_text())
    assert meta["algorithm"] == "cql" and meta["config"]["calibrated"] is False
    assert CalQL.load(tmp_path / "cql").config == agent.config


def test_defaults_follow_the_reference_code():
    cfg = CalQLConfig()
    assert (cfg.discount, cfg.batch_size, cfg.actor_lr, cfg.critic_lr, cfg.tau) == (0.99, 256, 1e-4, 3e-4, 5e-3)
    assert (cfg.cql_alpha, cfg.cql_n_actions, cfg.cql_temp) == (5.0, 10, 1.0)
    assert cfg.cql_importance_sample and not cfg.cql_lagrange and cfg.calibrated and cfg.auto_entropy
    assert CalQL(spaces(action_dim=3)).target_entropy == -3.0


# ----------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("field, value, message", [
    ("mc_returns", None, "no 'mc_returns'"),
    ("observations", np.zeros((200, 5), np.float32), r"'observations' has shape \(200, 5\), expected \(200, 4\)"),
    ("actions", np.zeros((200,), np.float32), r"'actions' has shape \(200,\), expected \(200, 2\)"),
    ("rewards", np.zeros((199,), np.float32), r"'rewards' has shape \(199,\), expected \(200,\)"),
    ("rewards", np.where(np.arange(200) == 7, np.nan, 0.0), "'rewards' holds 1 non-finite values .*transition 7"),
    ("next_observations", {"state": np.zeros((200, 4))}, "Dict observations"),
    ("actions", np.full((200, 2), 3.0, np.float32), "'actions' leave the action space"),
])
def test_bad_datasets_raise_clear_errors(field, value, message):
    data = synthetic()
    setattr(data, field, value)
    with pytest.raises(ValueError, match=message):
        CalQL(spaces(), CalQLConfig(**TINY)).pretrain(data, 1, progress=False)
    missing = synthetic()
    del missing.terminals
    with pytest.raises(ValueError, match="no 'terminals'"):
        CalQL(spaces(), CalQLConfig(**TINY)).pretrain(missing, 1, progress=False)


def test_bad_spaces_and_configs_raise():
    with pytest.raises(ValueError, match="Box action space"):
        CalQL((spaces()[0], gym.spaces.Discrete(3)))
    with pytest.raises(ValueError, match="flat"):
        CalQL((gym.spaces.Dict({"a": spaces()[0]}), spaces()[1]))
    with pytest.raises(ValueError, match="discount"):
        CalQLConfig(discount=1.0)
    with pytest.raises(ValueError, match="unknown fields"):
        CalQLConfig.from_dict({"cql_weight": 1.0})


def test_loading_a_foreign_or_corrupt_folder_raises(tmp_path):
    with pytest.raises(ValueError, match="not a steergym Cal-QL checkpoint"):
        CalQL.load(tmp_path)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"format": "steergym.trainer-state"}))
    (foreign / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not a Cal-QL checkpoint"):
        CalQL.load(foreign)
    good = CalQL(spaces(), CalQLConfig(**TINY)).save(tmp_path / "good")
    (good / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:100])
    with pytest.raises(ValueError, match="unreadable"):
        CalQL.load(good)
    (good / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        CalQL.load(good)
    # weights of another architecture under a valid config
    small = CalQL(spaces(), CalQLConfig(**TINY)).save(tmp_path / "small")
    meta = json.loads((small / "config.json").read_text())
    meta["config"]["critic_hidden"] = [16, 16]
    (small / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match its config"):
        CalQL.load(small)
    # an env with other spaces
    other = CalQL(spaces(), CalQLConfig(**TINY)).save(tmp_path / "other")
    env = SimpleNamespace(observation_space=spaces(obs_dim=9)[0], action_space=spaces()[1])
    with pytest.raises(ValueError, match="differ from the env"):
        CalQL.load(other, env=env)


# ------------------------------------------------------------------------------ online phase
class Chain(gym.Env):
    """A deterministic 5-step toy task: reward t at step t (0..4); the episode terminates after the
    5th step (or is truncated there with terminate=False); obs 4-d, actions Box(-2, 2)^2."""

    observation_space, action_space = spaces()

    def __init__(self, terminate: bool = True, reward_offset: float = 0.0) -> None:
        self.terminate, self.reward_offset, self.t = terminate, reward_offset, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.state = 0, self.np_random.normal(size=4).astype(np.float32)
        return self.state.copy(), {}

    def step(self, action):
        reward = float(self.t) + self.reward_offset
        self.state = (0.5 * self.state + np.tile(np.asarray(action, np.float32), 2)).astype(np.float32)
        self.t += 1
        end = self.t == 5
        return self.state.copy(), reward, end and self.terminate, end and not self.terminate, {"is_success": end}


ONLINE = dict(TINY, batch_size=16, log_every=1)


def test_online_batches_mix_offline_and_online_at_the_configured_ratio():
    offline = synthetic(n=64)
    offline.rewards = np.full(64, -100.0, np.float32)  # tells offline rows from online ones (rewards 0..4)
    for ratio in (0.5, 0.25):
        agent = CalQL(spaces(), CalQLConfig(online_ratio=ratio, **ONLINE), seed=0)
        seen = []
        update = agent.update
        agent.update = lambda batch, **kw: (seen.append(batch.rewards.clone()), update(batch, **kw))[1]
        agent.learn(Chain(), 15, offline=offline, eval_env=None, progress=False)
        assert len(seen) == 15 and agent.replay.size == 15 and agent.replay.episodes == 3
        online_rows = [int((rewards > -100).sum()) for rewards in seen]
        # all offline until the first episode has ended (its returns-to-go are known only then)
        assert online_rows[:4] == [0] * 4
        assert online_rows[4:] == [round(16 * ratio)] * 11
    # online data only
    agent = CalQL(spaces(), CalQLConfig(online_ratio=1.0, **ONLINE), seed=0)
    agent.learn(Chain(), 10, eval_env=None, progress=False)
    assert agent.step == 6  # updates start once the first episode (5 transitions) is finished


def test_online_episodes_get_their_mc_returns_when_they_end():
    config = CalQLConfig(online_ratio=1.0, discount=0.9, reward_scale=2.0, reward_bias=-1.0, **ONLINE)
    agent, env = CalQL(spaces(), config, seed=0), Chain()
    agent.learn(env, 3, eval_env=None, progress=False)
    assert agent.replay.size == 0 and agent.replay.pending_transitions == 3  # episode still running
    agent.learn(env, 2, eval_env=None, progress=False, reset_num_timesteps=False)  # the same episode to its end
    rewards = [2.0 * t - 1.0 for t in range(5)]  # transformed: -1, 1, 3, 5, 7
    expected = [sum(0.9 ** (k - t) * rewards[k] for k in range(t, 5)) for t in range(5)]
    np.testing.assert_allclose(agent.replay.rewards[:5], rewards)
    np.testing.assert_allclose(agent.replay.mc_returns[:5], expected, rtol=1e-6)
    np.testing.assert_array_equal(agent.replay.terminals[:5], [0, 0, 0, 0, 1])
    # a truncated episode has no tail either (as in Cal-QL); an all-failure episode gets r/(1-gamma)
    failing = CalQL(spaces(), CalQLConfig(online_ratio=1.0, discount=0.9, failure_reward=-1.0, **ONLINE), seed=0)
    failing.learn(gym.wrappers.TransformReward(Chain(terminate=False), lambda r: -1.0), 5, eval_env=None,
                  progress=False)
    np.testing.assert_allclose(failing.replay.mc_returns[:5], -10.0)
    np.testing.assert_array_equal(failing.replay.terminals[:5], 0)


def test_killed_online_run_resumes_exactly(tmp_path):
    offline = synthetic(n=64)
    config = CalQLConfig(online_ratio=0.5, cql_lagrange=True, **ONLINE)

    def run(out, stop_at=None, agent=None, data=offline):
        agent = agent or CalQL(spaces(), config, seed=2).pretrain(data, 3, progress=False)

        def on_eval(row):
            if stop_at is not None and row["env_steps"] >= stop_at:
                raise KeyboardInterrupt  # the process is killed here
        agent.learn(Chain(), 30 - agent.online.num_timesteps, offline=data, eval_env=Chain(), eval_every=5,
                    eval_episodes=1, checkpoint_every=10, out=out, progress=False, on_eval=on_eval,
                    reset_num_timesteps=False)  # to 30 in all, as a resumed CLI run does
        return agent

    straight = run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", stop_at=17)
    saved = tmp_path / "killed" / "checkpoints" / "latest"
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors", "replay.safetensors"]
    resumed = CalQL.load(saved)
    assert resumed.online.num_timesteps == 20 and resumed.replay.size == 20 and resumed.online.updates_due == 1
    with pytest.raises(ValueError, match="not the data this agent was trained with"):
        run(tmp_path / "killed", agent=CalQL.load(saved), data=synthetic(n=64, seed=5))
    with pytest.raises(ValueError, match="pass the same transitions again"):
        CalQL.load(saved).learn(Chain(), 30, eval_env=None, progress=False)
    # the next update after resume equals the uninterrupted run's; so does everything after it
    reference = CalQL(spaces(), config, seed=2).pretrain(offline, 3, progress=False)
    reference.learn(Chain(), 21, offline=offline, eval_env=None, progress=False)
    first = CalQL.load(saved).learn(Chain(), 1, offline=offline, eval_env=None, progress=False,
                                    reset_num_timesteps=False)  # the owed update, then one more transition
    assert first.step == reference.step == 3 + 21 and first.metrics == reference.metrics
    for key, value in agent_state(reference).items():
        assert torch.equal(value, agent_state(first)[key]), key
    run(tmp_path / "killed", agent=resumed)
    for key, value in agent_state(straight).items():
        assert torch.equal(value, agent_state(resumed)[key]), key
    assert straight.step == resumed.step == 3 + 30
    np.testing.assert_array_equal(straight.replay.mc_returns, resumed.replay.mc_returns)
    assert straight.curve == resumed.curve
    # the killed run's log rows after its checkpoint were dropped on resume, not duplicated
    for name in ("eval.csv", "progress.csv"):
        assert (tmp_path / "killed" / name).read_text() == (tmp_path / "straight" / name).read_text()


def test_learn_runs_on_a_vector_env_and_a_dsrl_noise_env():
    for mode in gym.vector.AutoresetMode:
        vec = gym.vector.SyncVectorEnv([Chain, Chain], autoreset_mode=mode)
        agent = CalQL(vec, CalQLConfig(online_ratio=1.0, **ONLINE), seed=0)
        agent.learn(vec, 20, eval_env=None, progress=False)
        # two envs, 5-step episodes; a next-step autoreset's reset step is not a transition
        assert agent.online.num_timesteps == 20 and agent.replay.episodes == 4 and agent.replay.size == 20, mode
        np.testing.assert_allclose(np.sort(agent.replay.rewards[:20])[::4], [0, 1, 2, 3, 4])
        assert agent.replay.terminals[:20].sum() == 4 and agent.online.recent == [[10.0, 1.0]] * 4
    dsrl = gym.make("steergym/WidowXLiftCube-DSRL-v0")
    try:
        agent = CalQL(dsrl, CalQLConfig(online_ratio=1.0, **ONLINE), seed=0)
        agent.learn(dsrl, 12, eval_every=10, eval_episodes=1, progress=False)
        assert agent.action_dim == 28 and agent.replay.episodes >= 1  # 10 chunks of 4 steps per episode
        assert agent.online.env_steps == 4 * agent.online.num_timesteps
        assert [row["env_steps"] for row in agent.curve] == [0, 10, 12]
    finally:
        dsrl.close()


def test_learn_rejects_discrete_actions_and_mismatched_spaces():
    agent = CalQL(spaces(), CalQLConfig(online_ratio=1.0, **ONLINE))
    with pytest.raises(ValueError, match="needs a Box action space.*Discrete"):
        agent.learn(gym.make("CartPole-v1"), 10, eval_env=None, progress=False)
    other = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match=r"env's spaces .*\(3,\).* differ from the agent's"):
        agent.learn(other, 10, eval_env=None, progress=False)
    with pytest.raises(ValueError, match="no offline data to mix in at online_ratio=0.5"):
        CalQL(spaces(), CalQLConfig(**ONLINE)).learn(Chain(), 10, eval_env=None, progress=False)
    with pytest.raises(ValueError, match="total_timesteps must be an integer >= 1"):
        agent.learn(Chain(), 0, progress=False)


def test_cli_trains_calql_offline_then_online_and_resumes(tmp_path, capsys, monkeypatch):
    from steergym.cli import main

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "data"))
    collect(LIFT, 2, "mixed", "steergym/lift/cli-v0", seed=0, progress=False)
    out = tmp_path / "run"
    common = ["train", "calql", "--dataset", "steergym/lift/cli-v0", "--out", str(out), "--pretrain-steps", "5",
              "--eval-every", "40", "--eval-episodes", "1", "--hidden", "16", "16", "--batch-size", "16",
              "--reward-scale", "10", "--reward-bias", "-5", "--failure-reward", "0", "--quiet"]
    assert main([*common, "--env-steps", "45"]) == 0
    text = capsys.readouterr().out
    assert f"{out}: calql on {LIFT}, 5 offline steps + 45 env steps (50 updates)" in text
    assert "eval success (1 episodes)" in text
    for name in ("run.json", "offline.csv", "progress.csv", "eval.csv", "tb", "pretrained", "agent",
                 "checkpoints"):
        assert (out / name).exists(), name
    agent = CalQL.load(out / "checkpoints" / "latest")
    assert agent.config.reward_scale == 10.0 and agent.replay.episodes == 1 and agent.replay.size == 40
    assert agent.replay.rewards[:40].min() == -5.0  # the transform reached the online rewards too
    assert main([*common, "--env-steps", "50"]) == 2  # the folder holds a run: --resume or another --out
    assert "pass --resume" in capsys.readouterr().err
    assert main([*common, "--env-steps", "50", "--resume"]) == 0
    assert "5 offline steps + 50 env steps (55 updates)" in capsys.readouterr().out
    assert main(["train", "cql", *common[2:], "--resume"]) == 2  # a calql run is not resumed as cql
    assert "is a calql run, not cql" in capsys.readouterr().err


def test_q_values_are_the_min_over_the_target_critics():
    agent = CalQL(spaces(), CalQLConfig(**TINY), seed=0)
    agent.set_offline_data(synthetic())
    agent.pretrain(synthetic(), 5, progress=False)
    obs = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    actions = np.random.default_rng(2).uniform(-2, 2, (6, 2)).astype(np.float32)
    with torch.no_grad():
        x = agent._normalize_obs(torch.as_tensor(obs))
        a = torch.as_tensor(actions) / 2.0  # the action space is [-2, 2]
        target = agent.critic_target(x, a).min(dim=0).values.numpy()
        online = agent.critic(x, a).min(dim=0).values.numpy()
    np.testing.assert_allclose(agent.q_values(obs, actions), target, rtol=1e-6)
    np.testing.assert_allclose(agent.q_values(obs, actions, target=False), online, rtol=1e-6)
    assert not np.allclose(target, online)  # 5 updates moved the critics away from their targets
    with pytest.raises(ValueError, match="needs a batch"):
        agent.q_values(obs[0], actions[:1])
    with pytest.raises(ValueError, match="needs a batch"):
        agent.q_values(obs, actions[:3])


def _cql_terms(config: CalQLConfig, next_obs_shift: float) -> dict[str, torch.Tensor]:
    """The losses of one batch, with s' moved by `next_obs_shift` (same seed, same draws)."""
    from steergym.algorithms.calql import Batch

    agent = CalQL(spaces(), config, seed=5)
    rng = np.random.default_rng(0)
    obs = torch.as_tensor(rng.normal(size=(16, 4)), dtype=torch.float32)
    batch = Batch(obs=obs, actions=torch.as_tensor(rng.uniform(-1, 1, (16, 2)), dtype=torch.float32),
                  rewards=torch.zeros(16), next_obs=obs + next_obs_shift, terminals=torch.zeros(16),
                  mc_returns=torch.zeros(16))
    return agent._losses(batch)


def test_ptr_regulariser_takes_uniform_and_current_state_actions_only():
    """PTR's CQL (critic_updater, min_q_version 3): logsumexp over 4 uniform + 4 pi(.|s) actions, so the
    regulariser does not move with s'; Cal-QL's code also takes pi(.|s') samples, so it does."""
    from steergym.algorithms.ptr import ptr_calql_config

    small = dict(batch_size=16, actor_hidden=(8,), critic_hidden=(8,), normalize_observations=False)
    ptr = ptr_calql_config(**small)
    assert ptr.cql_n_actions == 4 and ptr.cql_next_state_actions is False
    near, far = _cql_terms(ptr, 0.0), _cql_terms(ptr, 3.0)
    assert near["q_next"].shape == (2, 16, 0) and near["q_rand"].shape == near["q_cur"].shape == (2, 16, 4)
    assert torch.equal(near["cql_diff"], far["cql_diff"])
    assert not torch.equal(near["y"], far["y"])  # s' still drives the TD target
    calql_near, calql_far = _cql_terms(CalQLConfig(**small), 0.0), _cql_terms(CalQLConfig(**small), 3.0)
    assert calql_near["q_next"].shape == (2, 16, 10)
    assert not torch.equal(calql_near["cql_diff"], calql_far["cql_diff"])
