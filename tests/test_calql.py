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

from steergym.algorithms.calql import (
    CalQL,
    CalQLConfig,
    FusedCritics,
    calibrate,
    cql_regularizer,
    tanh_gaussian_sample,
)
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
