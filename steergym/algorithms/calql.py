"""Cal-QL and CQL (conservative SAC) for continuous control; the offline (pre-training) phase.

    agent = CalQL(env, CalQLConfig(), seed=0)              # CalQLConfig(calibrated=False): CQL
    agent.pretrain(load_transitions("steergym/lift/expert-v0"), steps=100_000)
    action, _ = agent.predict(obs, deterministic=True)
    agent.save("runs/lift-calql"); agent = CalQL.load("runs/lift-calql")

Cal-QL (Nakamoto et al., NeurIPS 2023) is CQL whose push-down term on the current policy's
actions is floored at a reference value, the Monte-Carlo return-to-go of the dataset trajectory
(`Transitions.mc_returns`): `Q_pi <- max(Q_pi, mc_return)` inside the CQL logsumexp. With
`calibrated=False` the floor is off and this is CQL (Kumar et al. 2020) as implemented in
young-geng/JaxCQL, the code Cal-QL was built on. Every step below follows nakamotoo/Cal-QL
`JaxCQL/conservative_sac.py` (reference/algorithms.md section 1.3); one gradient step, top to bottom:

  1. entropy temperature:  L(log a) = -log a * mean(log pi(a~|s) + H_target),  H_target = -|A|
  2. actor:                L(pi)    = mean(a * log pi(a~|s) - min_i Q_i(s, a~)),  a~ ~ pi(.|s) reparameterised
  3. TD target:            y = r + (1 - terminal) * gamma * max_k min_i Qbar_i(s', a'_k),  a'_k ~ pi(.|s')
                           (max over k = 10 samples: "max-target backup"; 1 sample when it is off)
  4. CQL regulariser (per critic i), N = 10 samples of each kind:
         q_rand = Q_i(s, a_rand),  a_rand ~ U[-1, 1]^|A|,  log density log(0.5^|A|)
         q_cur  = Q_i(s, a_cur),   a_cur  ~ pi(.|s)    with log pi(a_cur|s)
         q_next = Q_i(s, a_next),  a_next ~ pi(.|s')   with log pi(a_next|s')  (evaluated at s, as in CQL)
         Cal-QL: q_cur, q_next <- max(q, mc_return)  (random-action values are not floored)
         ood_i  = T * logsumexp([q_rand - log 0.5^|A|, q_next - log pi_next, q_cur - log pi_cur] / T)
         L_cql,i = alpha_cql * mean(clip(ood_i - Q_i(s, a_data), clip_min, clip_max))
     critic loss = sum_i [ mean((Q_i(s, a_data) - y)^2) + L_cql,i ]
  5. Polyak averaging of the target critics, tau = 5e-3.
All losses use the parameters from before the step (as the JAX code's single value_and_grad does);
one backward pass yields every gradient because each loss sees the other modules' tensors detached.

Scope of this module: Box action spaces (any finite bounds; the networks work in [-1, 1]) and flat
Box observations. The online phase (`.learn`, offline/online mixing), PTR, pixel observations and
V-GPS critics are not here yet.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from steergym.algorithms import state as trainer_state
from steergym.atomic import atomic_folder
from steergym.policies.config import config_from_dict

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
FORMAT = "steergym.calql-v1"
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # JaxCQL model.py


@dataclass
class CalQLConfig:
    """Cal-QL / CQL hyper-parameters. Sources: nakamotoo/Cal-QL `ConservativeSAC.get_default_config`
    and `conservative_sac_main.py` ("code"), the released run scripts ("scripts"); see
    reference/algorithms.md sections 1.3 and 1.5.
    """

    calibrated: bool = True  # Cal-QL floor max(Q_pi, mc_return); False = CQL (Cal-QL's `enable_calql`)
    discount: float = 0.99  # code
    batch_size: int = 256  # code/scripts
    actor_lr: float = 1e-4  # code `policy_lr`
    critic_lr: float = 3e-4  # code `qf_lr`
    alpha_lr: float = 1e-4  # code: the entropy temperature uses policy_lr
    tau: float = 5e-3  # code `soft_target_update_rate`
    cql_alpha: float = 5.0  # code `cql_min_q_weight` (AntMaze scripts 5.0, Adroit 1.0)
    cql_n_actions: int = 10  # code
    cql_temp: float = 1.0  # code
    cql_importance_sample: bool = True  # code (Kitchen script: False)
    cql_max_target_backup: bool = True  # code default True (ConservativeSAC config and scripts)
    cql_clip_diff_min: float = -math.inf  # code (CORL configs use -200)
    cql_clip_diff_max: float = math.inf  # code
    cql_lagrange: bool = False  # code (AntMaze scripts: True with target_action_gap 0.8)
    cql_target_action_gap: float = 1.0  # code; used only with cql_lagrange
    backup_entropy: bool = False  # code: no -alpha log pi term in the TD target
    auto_entropy: bool = True  # code `use_automatic_entropy_tuning`
    target_entropy: float | None = None  # None: -action_dim (main overrides any value >= 0 to -|A|)
    alpha_init: float = 1.0  # code: log_alpha starts at 0; fixed alpha when auto_entropy is off
    actor_hidden: tuple[int, ...] = (256, 256)  # code `policy_arch` default / AntMaze scripts
    critic_hidden: tuple[int, ...] = (256, 256)  # code `qf_arch` default (AntMaze scripts: 4 x 256)
    n_critics: int = 2  # code: two critics, min for the actor and the target
    orthogonal_init: bool = True  # code main default (gain sqrt 2 hidden, 1e-2 output, zero bias)
    log_every: int = 1000  # steps between rows of `history` (ours)

    def __post_init__(self) -> None:
        self.actor_hidden = tuple(int(h) for h in self.actor_hidden)
        self.critic_hidden = tuple(int(h) for h in self.critic_hidden)
        for name in ("batch_size", "cql_n_actions", "n_critics", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"CalQLConfig: {name} must be >= 1, got {getattr(self, name)}")
        if not self.actor_hidden or not self.critic_hidden or min(self.actor_hidden + self.critic_hidden) < 1:
            raise ValueError(f"CalQLConfig: hidden sizes must be non-empty and positive, got "
                             f"actor {self.actor_hidden}, critic {self.critic_hidden}")
        for name in ("actor_lr", "critic_lr", "alpha_lr", "cql_alpha", "alpha_init"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"CalQLConfig: {name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.discount < 1.0:
            raise ValueError(f"CalQLConfig: discount must be in [0, 1), got {self.discount}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"CalQLConfig: tau must be in (0, 1], got {self.tau}")
        if not self.cql_temp > 0:
            raise ValueError(f"CalQLConfig: cql_temp must be > 0, got {self.cql_temp}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["actor_hidden"], data["critic_hidden"] = list(self.actor_hidden), list(self.critic_hidden)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CalQLConfig":
        return config_from_dict(cls, data)


# ----------------------------------------------------------------------------------- the math
def calibrate(q: torch.Tensor, mc_returns: torch.Tensor) -> torch.Tensor:
    """Cal-QL's floor: max(Q, mc_return), elementwise.

    Args:
        q: (n_critics, B, N) Q-values of policy actions.
        mc_returns: (B,) reference values (Monte-Carlo return-to-go of each state's trajectory).
    """
    return torch.maximum(q, mc_returns.to(q.dtype).reshape(1, -1, 1))


def cql_regularizer(
    q_data: torch.Tensor,
    q_rand: torch.Tensor,
    q_cur: torch.Tensor,
    logp_cur: torch.Tensor,
    q_next: torch.Tensor,
    logp_next: torch.Tensor,
    action_dim: int,
    *,
    mc_returns: torch.Tensor | None = None,
    temperature: float = 1.0,
    importance_sample: bool = True,
    clip_min: float = -math.inf,
    clip_max: float = math.inf,
) -> torch.Tensor:
    """CQL's push-down minus push-up term per critic, before the weight alpha.

    Args:
        q_data: (n, B) Q_i(s, a_data).
        q_rand, q_cur, q_next: (n, B, N) Q_i(s, .) of uniform actions, of pi(.|s) samples and of
            pi(.|s') samples (all evaluated at s).
        logp_cur, logp_next: (B, N) log-densities of those policy samples.
        mc_returns: (B,) Cal-QL reference values; None = CQL (no floor).

    Returns:
        (n,) mean over the batch of clip(T * logsumexp(candidates / T) - Q_i(s, a_data)).
    """
    if mc_returns is not None:  # Cal-QL: floor before the importance weights are applied
        q_cur, q_next = calibrate(q_cur, mc_returns), calibrate(q_next, mc_returns)
    if importance_sample:
        log_uniform = action_dim * math.log(0.5)  # density of U[-1, 1]^|A|
        candidates = torch.cat([q_rand - log_uniform, q_next - logp_next, q_cur - logp_cur], dim=-1)
    else:
        candidates = torch.cat([q_rand, q_data.unsqueeze(-1), q_next, q_cur], dim=-1)
    ood = temperature * torch.logsumexp(candidates / temperature, dim=-1)  # (n, B)
    return torch.clamp(ood - q_data, clip_min, clip_max).mean(dim=-1)


def tanh_gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor, n: int | None,
                         generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised a = tanh(mean + std * eps) and log pi(a) with the tanh change of variables.

    `mean`, `log_std`: (B, d). n=None: one sample, shapes (B, d) and (B,); else (B, n, d) and (B, n).
    """
    if n is not None:
        mean, log_std = mean.unsqueeze(1).expand(-1, n, -1), log_std.unsqueeze(1).expand(-1, n, -1)
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    u = mean + log_std.exp() * eps
    gaussian = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)), the numerically stable form
    squash = (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), gaussian - squash


# -------------------------------------------------------------------------------- networks
def _orthogonal_(weight: torch.Tensor, gain: float) -> None:
    """Orthogonal init of an (in, out) matrix (stored transposed w.r.t. nn.Linear's (out, in))."""
    q = torch.empty(weight.shape[1], weight.shape[0])
    nn.init.orthogonal_(q, gain=gain)
    weight.copy_(q.T)


class TanhGaussianActor(nn.Module):
    """MLP -> (mean, log_std); log_std = multiplier * raw + offset (learnable scalars, init 1 and -1,
    JaxCQL), clipped to [-20, 2]; actions tanh(N(mean, std)) in [-1, 1]^d."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...], orthogonal: bool = True) -> None:
        super().__init__()
        sizes = (obs_dim, *hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], 2 * action_dim)
        self.log_std_multiplier = nn.Parameter(torch.tensor(1.0))
        self.log_std_offset = nn.Parameter(torch.tensor(-1.0))
        if orthogonal:
            for layer in self.hidden:
                nn.init.orthogonal_(layer.weight, gain=math.sqrt(2.0))
                nn.init.zeros_(layer.bias)
            nn.init.orthogonal_(self.out.weight, gain=1e-2)
            nn.init.zeros_(self.out.bias)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs
        for layer in self.hidden:
            x = F.relu(layer(x))
        mean, raw = self.out(x).chunk(2, dim=-1)
        log_std = (self.log_std_multiplier * raw + self.log_std_offset).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std


class FusedCritics(nn.Module):
    """`n` independent Q(s, a) MLPs evaluated together: layer weights are (n, in, out) tensors and
    each layer is one batched matmul (`torch.baddbmm`), no Python loop over critics.

    forward(obs (B, o), act (B, d)) -> (n, B); with `detach=True` the weights are used detached
    (the actor's loss must not train the critics).
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...], n: int = 2,
                 orthogonal: bool = True) -> None:
        super().__init__()
        sizes = (obs_dim + action_dim, *hidden, 1)
        self.n = n
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(n, a, b)) for a, b in zip(sizes[:-1], sizes[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(n, 1, b)) for b in sizes[1:])
        for k, weight in enumerate(self.weights):
            last = k == len(self.weights) - 1
            for i in range(n):  # init only; the forward pass has no loop over critics
                if orthogonal:
                    _orthogonal_(weight.data[i], 1e-2 if last else math.sqrt(2.0))
                else:  # nn.Linear's default
                    bound = 1.0 / math.sqrt(weight.shape[1])
                    nn.init.uniform_(weight.data[i], -bound, bound)
                    nn.init.uniform_(self.biases[k].data[i], -bound, bound)

    def forward(self, obs: torch.Tensor, act: torch.Tensor, detach: bool = False) -> torch.Tensor:
        weights = [w.detach() if detach else w for w in self.weights]
        biases = [b.detach() if detach else b for b in self.biases]
        x = torch.cat([obs, act], dim=-1)
        x = torch.matmul(x, weights[0]) + biases[0]  # (B, in) @ (n, in, out) -> (n, B, out)
        for w, b in zip(weights[1:], biases[1:]):
            x = torch.baddbmm(b, F.relu(x), w)
        return x.squeeze(-1)


# ------------------------------------------------------------------------------- the agent
@dataclass
class Batch:
    """Tensors of one minibatch: obs, next_obs (B, o); actions (B, d) in [-1, 1]; rewards,
    terminals (float 0/1), mc_returns (B,)."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminals: torch.Tensor
    mc_returns: torch.Tensor


class CalQL:
    """Cal-QL (or CQL with `config.calibrated=False`) on a Box action space and flat Box observations.

    Args:
        env_or_spaces: a Gymnasium env, or an (observation_space, action_space) pair.
        config: `CalQLConfig` (defaults: Cal-QL's public code).
        seed: seeds the networks' init, the policy/CQL sampling noise and the batch order.
        device: torch device ("cpu").
    """

    def __init__(self, env_or_spaces: gym.Env | tuple[gym.Space, gym.Space], config: CalQLConfig | None = None,
                 seed: int = 0, device: str | torch.device = "cpu") -> None:
        if isinstance(env_or_spaces, (tuple, list)):
            observation_space, action_space = env_or_spaces
        else:
            observation_space, action_space = env_or_spaces.observation_space, env_or_spaces.action_space
        _check_spaces(observation_space, action_space)
        self.observation_space, self.action_space = observation_space, action_space
        self.config = config or CalQLConfig()
        self.seed = int(seed)
        self.device = torch.device(device)
        self.obs_dim = int(observation_space.shape[0])
        self.action_dim = int(action_space.shape[0])
        self._low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
        self._high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)
        cfg = self.config
        self.target_entropy = float(-self.action_dim if cfg.target_entropy is None or cfg.target_entropy >= 0
                                    else cfg.target_entropy)

        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global generator
            torch.manual_seed(self.seed)
            self.actor = TanhGaussianActor(self.obs_dim, self.action_dim, cfg.actor_hidden, cfg.orthogonal_init)
            self.critic = FusedCritics(self.obs_dim, self.action_dim, cfg.critic_hidden, cfg.n_critics,
                                       cfg.orthogonal_init)
        self.actor.to(self.device)
        self.critic.to(self.device)
        self.critic_target = FusedCritics(self.obs_dim, self.action_dim, cfg.critic_hidden, cfg.n_critics,
                                          cfg.orthogonal_init).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(cfg.alpha_init), device=self.device, requires_grad=cfg.auto_entropy)
        self.log_alpha_prime = torch.tensor(1.0, device=self.device, requires_grad=cfg.cql_lagrange)  # code: init 1.0
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, foreach=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, foreach=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.alpha_prime_optimizer = torch.optim.Adam([self.log_alpha_prime], lr=cfg.critic_lr)  # code: qf_lr
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)
        self.step = 0
        self.metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------------- one update
    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step of every module on `batch`; returns its metrics (floats)."""
        cfg, n, B, d = self.config, self.config.cql_n_actions, batch.obs.shape[0], self.action_dim
        gen = self.generator
        obs, next_obs = batch.obs, batch.next_obs

        mean, log_std = self.actor(obs)
        alpha = self.log_alpha.exp().detach()

        # 1-2. entropy temperature and actor (the critics are used with detached weights)
        new_actions, log_pi = tanh_gaussian_sample(mean, log_std, None, gen)
        alpha_loss = -(self.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
        q_new = self.critic(obs, new_actions, detach=True).min(dim=0).values
        actor_loss = (alpha * log_pi - q_new).mean()

        # 3. TD target from the target critics, no gradient
        with torch.no_grad():
            next_mean, next_log_std = self.actor(next_obs)
            k = n if cfg.cql_max_target_backup else 1
            next_actions, next_log_pi = tanh_gaussian_sample(next_mean, next_log_std, k, gen)  # (B, k, d)
            q_target = self.critic_target(_repeat(next_obs, k), next_actions.reshape(B * k, d))
            q_target = q_target.min(dim=0).values.reshape(B, k)
            best = q_target.argmax(dim=1, keepdim=True)
            q_target = q_target.gather(1, best).squeeze(1)
            if cfg.backup_entropy:
                q_target = q_target - alpha * next_log_pi.gather(1, best).squeeze(1)
            y = batch.rewards + (1.0 - batch.terminals) * cfg.discount * q_target

            # 4. CQL candidate actions: uniform, pi(.|s), pi(.|s') (policy samples carry no gradient)
            rand_actions = torch.rand((B, n, d), generator=gen, device=self.device) * 2.0 - 1.0
            cur_actions, logp_cur = tanh_gaussian_sample(mean.detach(), log_std.detach(), n, gen)
            next_cql_actions, logp_next = tanh_gaussian_sample(next_mean, next_log_std, n, gen)

        # Q_i(s, .) of the data actions and all 3N candidates in one fused forward pass
        actions_all = torch.cat([batch.actions.unsqueeze(1), rand_actions, cur_actions, next_cql_actions], dim=1)
        q_all = self.critic(_repeat(obs, 1 + 3 * n), actions_all.reshape(B * (1 + 3 * n), d))
        q_all = q_all.reshape(cfg.n_critics, B, 1 + 3 * n)
        q_data = q_all[:, :, 0]
        q_rand, q_cur, q_next = q_all[:, :, 1:].split(n, dim=-1)

        td_loss = (q_data - y).pow(2).mean(dim=1)  # (n_critics,)
        cql_diff = cql_regularizer(
            q_data, q_rand, q_cur, logp_cur, q_next, logp_next, d,
            mc_returns=batch.mc_returns if cfg.calibrated else None, temperature=cfg.cql_temp,
            importance_sample=cfg.cql_importance_sample, clip_min=cfg.cql_clip_diff_min,
            clip_max=cfg.cql_clip_diff_max,
        )
        if cfg.cql_lagrange:
            alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)
            cql_loss = alpha_prime.detach() * cfg.cql_alpha * (cql_diff - cfg.cql_target_action_gap)
            alpha_prime_loss = -(alpha_prime * cfg.cql_alpha * (cql_diff.detach() - cfg.cql_target_action_gap)).mean()
        else:
            alpha_prime = torch.ones((), device=self.device)
            cql_loss = cfg.cql_alpha * cql_diff
            alpha_prime_loss = torch.zeros((), device=self.device)
        critic_loss = (td_loss + cql_loss).sum()

        # one backward pass: each loss reaches only its own module (see the module docstring)
        optimizers = [self.actor_optimizer, self.critic_optimizer]
        total = critic_loss + actor_loss
        if cfg.auto_entropy:
            optimizers.append(self.alpha_optimizer)
            total = total + alpha_loss
        if cfg.cql_lagrange:
            optimizers.append(self.alpha_prime_optimizer)
            total = total + alpha_prime_loss
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        total.backward()
        for opt in optimizers:
            opt.step()

        # 5. Polyak averaging of the targets
        with torch.no_grad():
            target, online = list(self.critic_target.parameters()), list(self.critic.parameters())
            torch._foreach_lerp_(target, online, cfg.tau)
        self.step += 1

        with torch.no_grad():
            floored = torch.cat([q_cur, q_next], dim=-1) < batch.mc_returns.reshape(1, -1, 1)
            values = torch.stack([
                td_loss.mean(), cql_loss.mean(), cql_diff.mean(), actor_loss, alpha_loss, alpha,
                alpha_prime.detach(), q_data.mean(), q_cur.mean(), q_rand.mean(), y.mean(),
                log_pi.detach().mean(), floored.float().mean(),
            ]).tolist()
        keys = ("td_loss", "cql_loss", "cql_diff", "actor_loss", "alpha_loss", "alpha", "alpha_prime",
                "q_data", "q_policy", "q_random", "target_q", "log_pi", "bound_rate")
        self.metrics = {"step": self.step, **dict(zip(keys, values))}
        return self.metrics

    # ----------------------------------------------------------------------------- offline
    def pretrain(self, transitions, steps: int, progress: bool = True) -> "CalQL":
        """`steps` offline gradient steps on batches drawn uniformly from `transitions`
        (`steergym.data.Transitions`; needs `mc_returns`). Every `config.log_every` steps the
        current metrics are appended to `history`."""
        data = self._dataset_tensors(transitions)
        size = data["actions"].shape[0]
        from tqdm.auto import tqdm

        start = self.step
        with tqdm(total=int(steps), desc="calql offline" if self.config.calibrated else "cql offline",
                  unit="step", disable=not progress, leave=False) as bar:
            for _ in range(int(steps)):
                index = torch.as_tensor(self.rng.integers(0, size, self.config.batch_size), device=self.device)
                metrics = self.update(Batch(**{k: v[index] for k, v in data.items()}))
                bar.update(1)
                if self.step % self.config.log_every == 0 or self.step == start + int(steps):
                    self.history.append(metrics)
                    bar.set_postfix(td=f"{metrics['td_loss']:.3g}", q=f"{metrics['q_data']:.3g}", refresh=False)
        return self

    def _dataset_tensors(self, transitions) -> dict[str, torch.Tensor]:
        """Validated dataset arrays as tensors on the device, actions rescaled to [-1, 1]."""
        name = "CalQL.pretrain"
        fields = {}
        for key in ("observations", "actions", "rewards", "next_observations", "terminals", "mc_returns"):
            value = getattr(transitions, key, None)
            if value is None:
                raise ValueError(f"{name}: the transitions have no {key!r}"
                                 + (" (Cal-QL's reference values; load with steergym.data.load_transitions)"
                                    if key == "mc_returns" else ""))
            if isinstance(value, dict):
                raise ValueError(f"{name}: {key!r} is a dict (Dict observations); only flat Box observations "
                                 "are supported for now")
            fields[key] = np.asarray(value)
        size = fields["actions"].shape[0] if fields["actions"].ndim else 0
        if size == 0:
            raise ValueError(f"{name}: the transitions are empty")
        expected = {"observations": (size, self.obs_dim), "next_observations": (size, self.obs_dim),
                    "actions": (size, self.action_dim), "rewards": (size,), "terminals": (size,),
                    "mc_returns": (size,)}
        for key, shape in expected.items():
            if fields[key].shape != shape:
                raise ValueError(f"{name}: {key!r} has shape {fields[key].shape}, expected {shape} "
                                 f"(N={size}, observation dim {self.obs_dim}, action dim {self.action_dim})")
            if fields[key].dtype.kind not in "biuf":
                raise ValueError(f"{name}: {key!r} has dtype {fields[key].dtype}, expected numbers")
            bad = ~np.isfinite(fields[key].astype(np.float64))
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                raise ValueError(f"{name}: {key!r} holds {int(bad.sum())} non-finite values "
                                 f"(first at transition {row}: {fields[key][row]})")
        low, high = self.action_space.low, self.action_space.high
        outside = (fields["actions"] < low - 1e-6) | (fields["actions"] > high + 1e-6)
        if outside.any():
            row = int(np.argwhere(outside)[0][0])
            raise ValueError(f"{name}: 'actions' leave the action space [{low}, {high}] "
                             f"(first at transition {row}: {fields['actions'][row]})")
        as_tensor = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), device=self.device)  # noqa: E731
        return {"obs": as_tensor(fields["observations"]),
                "actions": self._normalize_action(as_tensor(fields["actions"])),
                "rewards": as_tensor(fields["rewards"]), "next_obs": as_tensor(fields["next_observations"]),
                "terminals": as_tensor(fields["terminals"]), "mc_returns": as_tensor(fields["mc_returns"])}

    # ----------------------------------------------------------------------------- acting
    @torch.no_grad()
    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3-shaped: (action, None) for one observation (o,) or a batch (N, o). Deterministic
        actions are tanh(mean) (JaxCQL), mapped to the action space's bounds."""
        obs_arr = np.asarray(obs, dtype=np.float32)
        single = obs_arr.ndim == 1
        if obs_arr.shape[-1:] != (self.obs_dim,) or obs_arr.ndim not in (1, 2):
            raise ValueError(f"CalQL.predict: observation shape {obs_arr.shape}, expected ({self.obs_dim},) "
                             f"or (N, {self.obs_dim})")
        x = torch.as_tensor(obs_arr.reshape(-1, self.obs_dim), device=self.device)
        mean, log_std = self.actor(x)
        if deterministic:
            action = torch.tanh(mean)
        else:
            action, _ = tanh_gaussian_sample(mean, log_std, None, self.generator)
        action = self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        action = action.cpu().numpy().astype(self.action_space.dtype)
        return (action[0] if single else action), None

    def _normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        scaled = 2.0 * (action - self._low) / (self._high - self._low) - 1.0
        return scaled.clamp(-1.0, 1.0)

    # ------------------------------------------------------------------------- persistence
    def _modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_optim": self.actor_optimizer, "critic_optim": self.critic_optimizer,
                "alpha_optim": self.alpha_optimizer, "alpha_prime_optim": self.alpha_prime_optimizer}

    def save(self, path: str | os.PathLike) -> Path:
        """Atomically write `path/` = config.json (config, spaces, step, optimiser hyper-parameters,
        batch-order generator) + model.safetensors (networks, targets, temperatures, Adam moments,
        sampling generator). Loading it resumes training exactly."""
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in self._modules().items():
            tensors.update(trainer_state.module_tensors(module, prefix))
        tensors["log_alpha"] = self.log_alpha.detach().cpu().clone()
        tensors["log_alpha_prime"] = self.log_alpha_prime.detach().cpu().clone()
        optim_meta = {}
        for prefix, opt in self._optimizers().items():
            optim_tensors, optim_meta[prefix] = trainer_state.optimizer_state(opt, prefix)
            tensors.update(optim_tensors)
        tensors["generator"] = self.generator.get_state().cpu()
        meta = {"format": FORMAT, "algorithm": "calql" if self.config.calibrated else "cql",
                "config": self.config.to_dict(), "seed": self.seed, "step": self.step,
                "observation_space": _box_to_json(self.observation_space),
                "action_space": _box_to_json(self.action_space), "optimizers": optim_meta,
                "numpy_rng": trainer_state.numpy_rng_state(self.rng), "metrics": self.metrics}
        with atomic_folder(path) as staging:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(staging / MODEL_FILE),
                      metadata={"format": FORMAT})
            (staging / CONFIG_FILE).write_text(json.dumps(meta, indent=1) + "\n")  # +-inf as Infinity
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, env: gym.Env | None = None,
             device: str | torch.device = "cpu") -> "CalQL":
        """Rebuild an agent saved by `save`; ValueError for a folder that is not one (or is corrupt).
        With `env`, its spaces must equal the saved ones."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / MODEL_FILE).is_file():
            raise ValueError(f"{path}: not a steergym Cal-QL checkpoint (needs {CONFIG_FILE} and {MODEL_FILE})")
        try:
            meta = json.loads((path / CONFIG_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path / CONFIG_FILE}: unreadable ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise ValueError(f"{path}: format {found!r} is not {FORMAT!r}; not a Cal-QL checkpoint")
        try:
            tensors = load_file(str(path / MODEL_FILE))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path / MODEL_FILE}: unreadable ({exc})") from exc
        spaces = (_box_from_json(meta["observation_space"]), _box_from_json(meta["action_space"]))
        if env is not None and (env.observation_space != spaces[0] or env.action_space != spaces[1]):
            raise ValueError(f"{path}: saved spaces {spaces} differ from the env's "
                             f"({env.observation_space}, {env.action_space})")
        agent = cls(spaces, CalQLConfig.from_dict(meta["config"]), seed=int(meta["seed"]), device=device)
        try:
            for prefix, module in agent._modules().items():
                trainer_state.load_module_tensors(module, prefix, tensors)
            with torch.no_grad():
                agent.log_alpha.copy_(tensors["log_alpha"])
                agent.log_alpha_prime.copy_(tensors["log_alpha_prime"])
            for prefix, opt in agent._optimizers().items():
                trainer_state.load_optimizer_state(opt, prefix, tensors, meta["optimizers"][prefix])
            agent.generator.set_state(tensors["generator"])
        except (KeyError, RuntimeError) as exc:
            raise ValueError(f"{path}: checkpoint does not match its config ({exc})") from exc
        trainer_state.set_numpy_rng_state(agent.rng, meta["numpy_rng"])
        agent.step = int(meta["step"])
        agent.metrics = dict(meta.get("metrics", {}))
        return agent


# ------------------------------------------------------------------------------ helpers
def _repeat(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, o) -> (B * n, o), each row repeated n times consecutively."""
    return x.repeat_interleave(n, dim=0)


def _check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        raise ValueError(f"CalQL: needs a 1-D Box action space, got {action_space}")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ValueError(f"CalQL: the action space needs finite bounds, got {action_space}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(f"CalQL: needs flat (1-D) Box observations for now, got {observation_space}; "
                         "flatten Dict observations (e.g. gymnasium.wrappers.FlattenObservation)")


def _box_to_json(space: gym.spaces.Box) -> dict[str, Any]:
    return {"low": space.low.tolist(), "high": space.high.tolist(), "shape": list(space.shape),
            "dtype": str(space.dtype)}


def _box_from_json(data: dict[str, Any]) -> gym.spaces.Box:
    dtype = np.dtype(data["dtype"])
    low = np.asarray(data["low"], dtype=np.float64).astype(dtype)
    high = np.asarray(data["high"], dtype=np.float64).astype(dtype)
    return gym.spaces.Box(low, high, shape=tuple(data["shape"]), dtype=dtype)

