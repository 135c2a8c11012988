"""REFERENCE ONLY (benchmarks): a straightforward single-file Cal-QL update, written the common way.

This is *not* steergym's trainer. It is the yardstick of `benchmarks/trainer_speed.py`: the same
algorithm and sizes as `steergym.algorithms.calql.CalQL.update`, written the way the public
single-file PyTorch ports are (CORL's `algorithms/finetune/cal_ql.py` style, written here from its
well-known structure, not copied; the public file itself is not available offline):

* two separate critics, each an `nn.Sequential` of `nn.Linear`s on concat(s, a), plus two target
  copies; every action set (data, uniform, pi(.|s), pi(.|s'), target) is a separate call per critic;
* policy samples for the CQL term and the max-target backup come from running the actor on
  observations repeated 10 times (`obs.repeat_interleave`), as those ports do;
* log-probabilities from `torch.distributions` (Normal + TanhTransform);
* three optimisers, each loss backpropagated on its own (the actor loss also through the critics).

The math matches reference/algorithms.md section 1.3 (importance-sampled CQL(H), Cal-QL floor on
policy-action values, max-target backup over 10 samples, automatic entropy, Polyak tau).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal, TanhTransform, TransformedDistribution


def mlp(inp: int, out: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers, last = [], inp
    for h in hidden:
        layers += [nn.Linear(last, h), nn.ReLU()]
        last = h
    layers.append(nn.Linear(last, out))
    return nn.Sequential(*layers)


class QFunction(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp(obs_dim + action_dim, 1, hidden)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """obs (B, o) with actions (B, d) -> (B,); or actions (B, N, d) -> (B, N) (obs repeated)."""
        if actions.ndim == 3:
            n = actions.shape[1]
            obs = obs.unsqueeze(1).expand(-1, n, -1).reshape(-1, obs.shape[-1])
            return self.net(torch.cat([obs, actions.reshape(-1, actions.shape[-1])], -1)).reshape(-1, n)
        return self.net(torch.cat([obs, actions], -1)).squeeze(-1)


class TanhGaussianPolicy(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp(obs_dim, 2 * action_dim, hidden)
        self.log_std_multiplier = nn.Parameter(torch.tensor(1.0))
        self.log_std_offset = nn.Parameter(torch.tensor(-1.0))

    def forward(self, obs: torch.Tensor, repeat: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if repeat is not None:
            obs = obs.repeat_interleave(repeat, dim=0)
        mean, raw = self.net(obs).chunk(2, -1)
        log_std = (self.log_std_multiplier * raw + self.log_std_offset).clamp(-20.0, 2.0)
        dist = TransformedDistribution(Normal(mean, log_std.exp()), TanhTransform(cache_size=1))
        actions = dist.rsample()
        log_prob = dist.log_prob(actions).sum(-1)
        if repeat is not None:
            return actions.reshape(-1, repeat, actions.shape[-1]), log_prob.reshape(-1, repeat)
        return actions, log_prob


class ReferenceCalQL:
    """One `update(batch)` = one Cal-QL gradient step, the common single-file way."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...] = (256, 256), n_actions: int = 10,
                 cql_alpha: float = 5.0, discount: float = 0.99, tau: float = 5e-3, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.actor = TanhGaussianPolicy(obs_dim, action_dim, hidden)
        self.q1, self.q2 = QFunction(obs_dim, action_dim, hidden), QFunction(obs_dim, action_dim, hidden)
        self.q1_target, self.q2_target = QFunction(obs_dim, action_dim, hidden), QFunction(obs_dim, action_dim, hidden)
        self.q1_target.load_state_dict(self.q1.state_dict())
        self.q2_target.load_state_dict(self.q2.state_dict())
        self.log_alpha = torch.zeros((), requires_grad=True)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=1e-4)
        self.critic_optim = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=3e-4)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=1e-4)
        self.action_dim, self.n, self.cql_alpha, self.discount, self.tau = action_dim, n_actions, cql_alpha, discount, tau
        self.target_entropy = -float(action_dim)

    def update(self, obs, actions, rewards, next_obs, terminals, mc_returns) -> dict[str, float]:
        B, n, d = obs.shape[0], self.n, self.action_dim
        new_actions, log_pi = self.actor(obs)
        alpha_loss = -(self.log_alpha * (log_pi + self.target_entropy).detach()).mean()
        alpha = self.log_alpha.exp().detach()
        q_new = torch.min(self.q1(obs, new_actions), self.q2(obs, new_actions))
        policy_loss = (alpha * log_pi - q_new).mean()

        q1_data, q2_data = self.q1(obs, actions), self.q2(obs, actions)
        with torch.no_grad():  # max-target backup over n next actions
            next_actions, _ = self.actor(next_obs, repeat=n)
            target_q = torch.min(self.q1_target(next_obs, next_actions), self.q2_target(next_obs, next_actions))
            target_q = target_q.max(dim=1).values
            y = rewards + (1.0 - terminals) * self.discount * target_q
        td_loss = ((q1_data - y) ** 2).mean() + ((q2_data - y) ** 2).mean()

        rand_actions = torch.empty(B, n, d).uniform_(-1, 1)
        with torch.no_grad():
            cur_actions, cur_logp = self.actor(obs, repeat=n)
            next_cql_actions, next_logp = self.actor(next_obs, repeat=n)
        q1_rand, q2_rand = self.q1(obs, rand_actions), self.q2(obs, rand_actions)
        q1_cur, q2_cur = self.q1(obs, cur_actions), self.q2(obs, cur_actions)
        q1_next, q2_next = self.q1(obs, next_cql_actions), self.q2(obs, next_cql_actions)
        lb = mc_returns.unsqueeze(-1)  # Cal-QL: floor the policy-action values
        q1_cur, q2_cur = torch.maximum(q1_cur, lb), torch.maximum(q2_cur, lb)
        q1_next, q2_next = torch.maximum(q1_next, lb), torch.maximum(q2_next, lb)
        random_density = math.log(0.5 ** d)
        cat1 = torch.cat([q1_rand - random_density, q1_next - next_logp, q1_cur - cur_logp], 1)
        cat2 = torch.cat([q2_rand - random_density, q2_next - next_logp, q2_cur - cur_logp], 1)
        cql1 = (torch.logsumexp(cat1, 1) - q1_data).mean()
        cql2 = (torch.logsumexp(cat2, 1) - q2_data).mean()
        critic_loss = td_loss + self.cql_alpha * (cql1 + cql2)

        self.alpha_optim.zero_grad()
        alpha_loss.backward()
        self.alpha_optim.step()
        self.actor_optim.zero_grad()
        policy_loss.backward()
        self.actor_optim.step()
        self.critic_optim.zero_grad()
        critic_loss.backward()
        self.critic_optim.step()
        with torch.no_grad():
            for target, online in ((self.q1_target, self.q1), (self.q2_target, self.q2)):
                for tp, p in zip(target.parameters(), online.parameters()):
                    tp.mul_(1.0 - self.tau).add_(p, alpha=self.tau)
        return {"td_loss": td_loss.item(), "cql1": cql1.item(), "policy_loss": policy_loss.item()}


def rate(obs_dim: int, action_dim: int, batch: int, updates: int, warmup: int, seed: int = 0) -> float:
    """Updates/s of the reference on random data (batches sampled from a 20k-row array, as ours)."""
    import time

    rng = np.random.default_rng(seed)
    size = 20_000
    data = {"obs": torch.as_tensor(rng.uniform(-1, 1, (size, obs_dim)), dtype=torch.float32),
            "actions": torch.as_tensor(rng.uniform(-1, 1, (size, action_dim)), dtype=torch.float32),
            "rewards": torch.as_tensor(rng.normal(size=size), dtype=torch.float32),
            "terminals": torch.as_tensor(rng.random(size) < 0.01, dtype=torch.float32),
            "mc_returns": torch.as_tensor(rng.normal(size=size), dtype=torch.float32)}
    data["next_obs"] = data["obs"].roll(-1, 0)
    agent = ReferenceCalQL(obs_dim, action_dim, seed=seed)

    def step() -> None:
        index = torch.as_tensor(rng.integers(0, size, batch))
        b = {k: v[index] for k, v in data.items()}
        agent.update(b["obs"], b["actions"], b["rewards"], b["next_obs"], b["terminals"], b["mc_returns"])

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(updates):
        step()
    return updates / (time.perf_counter() - start)
