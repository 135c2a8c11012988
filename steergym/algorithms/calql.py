"""Cal-QL and CQL (conservative SAC) for continuous control: offline pre-training, then online
fine-tuning on any Gymnasium env with a Box action space (vector envs and DSRL noise envs too).

    agent = CalQL(env, CalQLConfig(), seed=0)              # CalQLConfig(calibrated=False): CQL
    data = load_transitions("steergym/lift/mixed-v0")
    agent.pretrain(data, steps=100_000)                    # offline
    agent.learn(env, total_timesteps=50_000, out="runs/lift-calql")   # online, 50/50 data mixing
    action, _ = agent.predict(obs, deterministic=True)
    agent = CalQL.load("runs/lift-calql/checkpoints/latest")          # then .learn(env, N, offline=data)

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
                  (PTR has no q_next: cql_next_state_actions=False, a logsumexp over 2N)
         Cal-QL: q_cur, q_next <- max(q, mc_return)  (random-action values are not floored)
         ood_i  = T * logsumexp([q_rand - log 0.5^|A|, q_next - log pi_next, q_cur - log pi_cur] / T)
         L_cql,i = alpha_cql * mean(clip(ood_i - Q_i(s, a_data), clip_min, clip_max))
     critic loss = sum_i [ mean((Q_i(s, a_data) - y)^2) + L_cql,i ]
  5. Polyak averaging of the target critics, tau = 5e-3.
All losses use the parameters from before the step (as the JAX code's single value_and_grad does);
one backward pass yields every gradient because each loss sees the other modules' tensors detached.

Online phase (`learn`, Cal-QL's conservative_sac_main.py): one transition of the stochastic policy,
then `utd` updates on batches mixing finished online episodes (with their returns-to-go, computed
when the episode ends: `steergym.algorithms.replay`) and offline data at `online_ratio`. The
calibration floor stays on online, as in the JAX original (the CORL port switches it off).

Pixel observations (PTR, Kumar et al. 2023): a uint8 (H, W, C) image Box, or a Dict of image
Boxes and 1-D vectors (WidowX `obs_mode="pixels_state"`, plus a task one-hot "task"). The actor
and the critics then get separate conv encoders (`steergym.algorithms.encoders.PixelEncoder`,
PTR's "encodersep"): the critic encoder, shared by the critic ensemble, is trained by the critic
loss only, the actor encoder by the actor loss only (the actor sees the critic features detached),
and the target critics have a Polyak-averaged copy of the critic encoder. Training batches get
DrQ's random shift (`image_augmentation`), drawn from the agent's generator. Images stay uint8 in
the offline data and the replay buffer; vector keys are standardised like flat observations.
Flat observations take the fused-critic path unchanged.

Scope of this module: Box action spaces (any finite bounds; the networks work in [-1, 1]), flat
Box observations and the pixel observations above.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from steergym.algorithms import state as trainer_state
from steergym.algorithms.base import TRAIN_SEED_OFFSET, OffPolicyTrainer, learn_target
from steergym.algorithms.encoders import (
    SHIFT_PAD,
    PixelEncoderConfig,
    check_pixel_obs,
    is_image_space,
    observation_layout,
    random_shift,
)
from steergym.algorithms.env_runner import EnvRunner, OnlineState, single_spaces
from steergym.algorithms.networks import (
    FusedCritics,
    PixelActor,
    PixelCritics,
    TanhGaussianActor,
    tanh_gaussian_sample,
)
from steergym.algorithms.offline_data import check_transitions, data_fingerprint, sampling_groups
from steergym.algorithms.replay import OnlineReplay, take_rows
from steergym.algorithms.run_files import write_json
from steergym.policies.config import config_from_dict
from steergym.rollout import score_episodes
from steergym.space_json import space_from_json, space_to_json

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
REPLAY_FILE = "replay.safetensors"
FORMAT = "steergym.calql-v1"

Obs = Any  # a (B, o) tensor / array, or for pixel observations a dict {key: (B, ...)} of them


@dataclass
class CalQLConfig(PixelEncoderConfig):
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
    cql_next_state_actions: bool = True  # code: the logsumexp also takes N pi(.|s') samples (3N candidates
    #   in all); PTR's critic_updater (min_q_version 3) takes only N uniform + N pi(.|s) samples at s
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
    normalize_observations: bool = True  # ours (CORL's `normalize`; JaxCQL has none): the networks see
    #   (obs - mean) / (std + 1e-3) with the offline data's statistics, fixed. Measured on WidowX lift
    #   (40 mixed episodes, 128-wide, 4k offline steps): success 0.9 with it, 0.0 without
    log_every: int = 1000  # steps between rows of `history` (ours)
    # rewards and reference values (Cal-QL replay_buffer.py / sampler.py)
    reward_scale: float = 1.0  # code default (AntMaze scripts 10, Adroit 10)
    reward_bias: float = 0.0  # code default (AntMaze scripts -5, Adroit 5)
    failure_reward: float | None = None  # code `reward_neg` (raw units): an episode whose every raw
    #   reward equals it gets the sparse-failure value r'/(1 - gamma); None: plain returns-to-go
    # online fine-tuning (conservative_sac_main.py)
    online_ratio: float = 0.5  # scripts `mixing_ratio` 0.5 = half of each batch from online data
    #   (Kitchen: 0.25 offline, i.e. 0.75 online); 1.0 = online data only
    utd: int = 1  # code `online_utd_ratio`: gradient updates per online transition
    buffer_size: int = 1_000_000  # code: online replay capacity (offline data is kept apart)

    def __post_init__(self) -> None:
        self.actor_hidden = tuple(int(h) for h in self.actor_hidden)
        self.critic_hidden = tuple(int(h) for h in self.critic_hidden)
        self.check_encoder("CalQLConfig")
        for name in ("batch_size", "cql_n_actions", "n_critics", "log_every", "utd", "buffer_size"):
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
        if not 0.0 <= self.online_ratio <= 1.0:
            raise ValueError(f"CalQLConfig: online_ratio must be in [0, 1], got {self.online_ratio}")
        for name in ("reward_scale", "reward_bias"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"CalQLConfig: {name} must be finite, got {getattr(self, name)}")
        if self.failure_reward is not None and not math.isfinite(self.failure_reward):
            raise ValueError(f"CalQLConfig: failure_reward must be finite or None, got {self.failure_reward}")

    def transform_reward(self, reward):
        """r' = reward_scale * r + reward_bias (what the critics and the returns-to-go see)."""
        return reward * self.reward_scale + self.reward_bias

    @property
    def failure_value(self) -> float | None:
        """The failure reward in transformed units (the sparse-failure rule's trigger), or None."""
        return None if self.failure_reward is None else float(self.transform_reward(self.failure_reward))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("actor_hidden", "critic_hidden", "encoder_channels", "encoder_strides"):
            data[name] = list(getattr(self, name))
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
            pi(.|s') samples (all evaluated at s; q_next may be (n, B, 0): PTR has none).
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


# ------------------------------------------------------------------------------- the agent
@dataclass
class Batch:
    """Tensors of one minibatch: obs, next_obs (B, o), or for pixel observations dicts {key: (B, H,
    W, C) uint8 | (B, d) float32}; actions (B, d) in [-1, 1]; rewards, terminals (float 0/1),
    mc_returns (B,)."""

    obs: Obs
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: Obs
    terminals: torch.Tensor
    mc_returns: torch.Tensor


class CalQL(OffPolicyTrainer):
    """Cal-QL (or CQL with `config.calibrated=False`) on a Box action space and flat Box, image Box
    or Dict (images + vectors) observations (`obs_dim` is None for the latter two).

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
            observation_space, action_space = single_spaces(env_or_spaces)
        _check_spaces(observation_space, action_space)
        self.observation_space, self.action_space = observation_space, action_space
        self.config = config or CalQLConfig()
        self.seed = int(seed)
        self.device = torch.device(device)
        self._layout = observation_layout(observation_space, "CalQL")  # None: flat observations
        self._bare_image = isinstance(observation_space, gym.spaces.Box) and self._layout is not None
        self.obs_dim = int(observation_space.shape[0]) if self._layout is None else None
        self.action_dim = int(action_space.shape[0])
        self._low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
        self._high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)
        cfg = self.config
        self.target_entropy = float(-self.action_dim if cfg.target_entropy is None or cfg.target_entropy >= 0
                                    else cfg.target_entropy)

        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global generator
            torch.manual_seed(self.seed)
            if self._layout is None:
                self.actor = TanhGaussianActor(self.obs_dim, self.action_dim, cfg.actor_hidden, cfg.orthogonal_init)
                self.critic = FusedCritics(self.obs_dim, self.action_dim, cfg.critic_hidden, cfg.n_critics,
                                           cfg.orthogonal_init)
            else:  # separate encoders for the actor and the critics (PTR's encodersep)
                encoder = self.config.make_encoder(self._layout)
                self.actor = PixelActor(encoder, TanhGaussianActor(encoder.out_dim, self.action_dim, cfg.actor_hidden,
                                                                   cfg.orthogonal_init))
                encoder = self.config.make_encoder(self._layout)
                self.critic = PixelCritics(encoder, FusedCritics(encoder.out_dim, self.action_dim, cfg.critic_hidden,
                                                                 cfg.n_critics, cfg.orthogonal_init))
        self.actor.to(self.device)
        self.critic.to(self.device)
        if self._layout is None:
            self.critic_target = FusedCritics(self.obs_dim, self.action_dim, cfg.critic_hidden, cfg.n_critics,
                                              cfg.orthogonal_init).to(self.device)
        else:
            self.critic_target = copy.deepcopy(self.critic)
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
        self.act_generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)  # online actions
        self.step = 0
        self.metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.offline_steps = 0  # gradient steps of `pretrain`
        self.obs_mean: Any = None  # input normalisation (set with the offline data): (o,), or
        self.obs_std: Any = None  # {key: (d,)} for the vector keys of dict observations
        self.online = OnlineState()
        self.replay: OnlineReplay | None = None
        self.curve: list[dict[str, Any]] = []  # evaluations of `learn`
        self._offline: dict[str, torch.Tensor] | None = None
        self._offline_fingerprint: str | None = None
        self._offline_groups: list[np.ndarray] | None = None  # row indices per mixture group
        self._offline_ratios: tuple[float, ...] = ()
        self._runner: EnvRunner | None = None

    # ------------------------------------------------------------------------- one update
    def update(self, batch: Batch, metrics: bool = True) -> dict[str, float]:
        """One gradient step of every module on `batch`; returns its metrics (floats), or `{}`
        with metrics=False (the trainers ask only on logging steps: no per-step conversions)."""
        cfg, out = self.config, self._losses(batch)
        critic_loss, actor_loss, alpha_loss, alpha_prime_loss = (out[k] for k in ("critic", "actor", "alpha",
                                                                                  "alpha_prime"))

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

        if not metrics:
            return {}
        with torch.no_grad():
            q_cur, q_next, mc_returns = out["q_cur"], out["q_next"], batch.mc_returns
            floored = torch.cat([q_cur, q_next], dim=-1) < mc_returns.reshape(1, -1, 1)
            values = torch.stack([
                out["td"].mean(), out["cql"].mean(), out["cql_diff"].mean(), actor_loss, alpha_loss, out["alpha_value"],
                out["alpha_prime_value"].detach(), out["q_data"].mean(), q_cur.mean(), out["q_rand"].mean(),
                out["y"].mean(), out["log_pi"].detach().mean(), floored.float().mean(),
            ]).tolist()
        keys = ("td_loss", "cql_loss", "cql_diff", "actor_loss", "alpha_loss", "alpha", "alpha_prime",
                "q_data", "q_policy", "q_random", "target_q", "log_pi", "bound_rate")
        self.metrics = {"step": self.step, **dict(zip(keys, values))}
        return self.metrics

    def _losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Steps 1-4 of the module docstring on `batch`, before any parameter changes: the scalar
        losses "critic", "actor", "alpha", "alpha_prime" (sharing one graph; each has a gradient
        only for its own module) and the tensors the metrics are made of. Draws the step's noise
        (and image shifts) from the agent's generator."""
        cfg, n, B, d = self.config, self.config.cql_n_actions, batch.actions.shape[0], self.action_dim
        gen = self.generator
        obs, next_obs = batch.obs, batch.next_obs
        pixels = self._layout is not None
        if pixels and cfg.image_augmentation:  # DrQ random shift, s and s' independently
            obs, next_obs = self._augment(obs), self._augment(next_obs)
        obs, next_obs = self._normalize_obs(obs), self._normalize_obs(next_obs)
        # what the critic heads see of s: the observation, or the critic encoder's features (once)
        critic_head = self.critic.head if pixels else self.critic
        critic_obs = self.critic.encode(obs) if pixels else obs

        mean, log_std = self.actor(obs)
        with torch.no_grad():  # (one actor pass on cat(s, s') would backpropagate through 2B rows)
            next_mean, next_log_std = self.actor(next_obs)
        alpha = self.log_alpha.exp().detach()

        # 1-2. entropy temperature and actor (the critics are used with detached weights)
        new_actions, log_pi = tanh_gaussian_sample(mean, log_std, None, gen)
        alpha_loss = -(self.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
        q_new = critic_head(critic_obs.detach(), new_actions, detach=True).min(dim=0).values
        actor_loss = (alpha * log_pi - q_new).mean()

        # 3. TD target from the target critics, no gradient
        with torch.no_grad():
            k = n if cfg.cql_max_target_backup else 1
            next_actions, next_log_pi = tanh_gaussian_sample(next_mean, next_log_std, k, gen)  # (B, k, d)
            q_target = self.critic_target.q_values(next_obs, next_actions).min(dim=0).values  # (B, k)
            best = q_target.argmax(dim=1, keepdim=True)
            q_target = q_target.gather(1, best).squeeze(1)
            if cfg.backup_entropy:
                q_target = q_target - alpha * next_log_pi.gather(1, best).squeeze(1)
            y = batch.rewards + (1.0 - batch.terminals) * cfg.discount * q_target

            # 4. CQL candidate actions: uniform, pi(.|s), pi(.|s') (policy samples carry no gradient)
            rand_actions = torch.rand((B, n, d), generator=gen, device=self.device) * 2.0 - 1.0
            cur_actions, logp_cur = tanh_gaussian_sample(mean.detach(), log_std.detach(), n, gen)
            if cfg.cql_next_state_actions:
                next_cql_actions, logp_next = tanh_gaussian_sample(next_mean, next_log_std, n, gen)
            else:  # PTR: no pi(.|s') candidates (empty, so the logsumexp is over 2N)
                next_cql_actions, logp_next = cur_actions[:, :0], logp_cur[:, :0]

        # Q_i(s, .) of the data actions and all 3N candidates in one pass per critic
        actions_all = torch.cat([batch.actions.unsqueeze(1), rand_actions, cur_actions, next_cql_actions], dim=1)
        q_all = critic_head.q_values(critic_obs, actions_all)  # (n_critics, B, 1 + 3N)
        q_data = q_all[:, :, 0]
        q_rand, q_cur, q_next = q_all[:, :, 1:].split([n, n, next_cql_actions.shape[1]], dim=-1)

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
        return {"critic": critic_loss, "actor": actor_loss, "alpha": alpha_loss, "alpha_prime": alpha_prime_loss,
                "td": td_loss, "cql": cql_loss, "cql_diff": cql_diff, "alpha_value": alpha,
                "alpha_prime_value": alpha_prime, "q_data": q_data, "q_rand": q_rand, "q_cur": q_cur,
                "q_next": q_next, "y": y, "log_pi": log_pi}

    # ----------------------------------------------------------------------------- offline
    def pretrain(self, transitions, steps: int, progress: bool = True) -> "CalQL":
        """`steps` offline gradient steps on batches drawn uniformly from `transitions`
        (`steergym.data.Transitions`; see `set_offline_data` for what is used), or at fixed shares
        per group for a mixture (`steergym.data.multitask.mix_transitions`, PTR's target mixing). Every
        `config.log_every` steps the current metrics are appended to `history`. The data is kept
        for `learn`, which mixes it with online data."""
        self.set_offline_data(transitions, "CalQL.pretrain")
        data = self._offline
        from tqdm.auto import tqdm

        start = self.step
        with tqdm(total=int(steps), desc="calql offline" if self.config.calibrated else "cql offline",
                  unit="step", disable=not progress, leave=False) as bar:
            for _ in range(int(steps)):
                index = self._offline_rows(self.config.batch_size)
                log = (self.step + 1) % self.config.log_every == 0 or self.step + 1 == start + int(steps)
                metrics = self.update(Batch(**{k: take_rows(v, index) for k, v in data.items()}), metrics=log)
                self.offline_steps += 1
                bar.update(1)
                if log:
                    self.history.append(metrics)
                    bar.set_postfix(td=f"{metrics['td_loss']:.3g}", q=f"{metrics['q_data']:.3g}", refresh=False)
        return self

    def set_offline_data(self, transitions, owner: str = "CalQL.set_offline_data") -> None:
        """Validate `transitions` and keep them (on the device) as the offline half of every batch.

        Rewards become reward_scale * r + reward_bias. With `episode_index` (as
        `steergym.data.load_transitions` gives) the returns-to-go are recomputed per episode from
        those rewards with `config.discount` and the failure rule, so the calibration floor always
        matches the critics' discount; without it, `mc_returns` are used as given (identity
        transform only). A checkpoint remembers a fingerprint of the data: resuming `learn` with
        other data is an error.
        """
        data = self._dataset_tensors(transitions, owner)
        groups, ratios = sampling_groups(transitions, data["actions"].shape[0], owner)
        fingerprint = data_fingerprint(data, None if groups is None else (transitions.sample_group, ratios))
        if self._offline_fingerprint is not None and fingerprint != self._offline_fingerprint:
            raise ValueError(f"{owner}: these offline transitions ({data['actions'].shape[0]} rows, fingerprint "
                             f"{fingerprint[:12]}) are not the data this agent was trained with (fingerprint "
                             f"{self._offline_fingerprint[:12]})")
        self._offline, self._offline_fingerprint = data, fingerprint
        self._offline_groups, self._offline_ratios = groups, ratios
        if self.config.normalize_observations and self.obs_mean is None:
            if self._layout is None:
                self.obs_mean = data["obs"].mean(dim=0)
                self.obs_std = data["obs"].std(dim=0, unbiased=False) + 1e-3  # CORL's eps
            elif any(not is_image_space(space) for space in self._layout.values()):
                # vector keys only; images are scaled to [0, 1] by the encoders
                vectors = [k for k, space in self._layout.items() if not is_image_space(space)]
                self.obs_mean = {k: data["obs"][k].mean(dim=0) for k in vectors}
                self.obs_std = {k: data["obs"][k].std(dim=0, unbiased=False) + 1e-3 for k in vectors}

    def _offline_rows(self, n: int) -> torch.Tensor:
        """(n,) offline row indices: uniform, or for a mixture round(n * ratio) rows per group
        (largest cumulative shares first, so the counts always sum to n), each uniform in its group."""
        if self._offline_groups is None:
            return torch.as_tensor(self.rng.integers(0, self._offline["actions"].shape[0], n), device=self.device)
        bounds = np.round(np.cumsum((0.0,) + self._offline_ratios) * n).astype(np.int64)
        parts = [rows[self.rng.integers(0, len(rows), hi - lo)]
                 for rows, lo, hi in zip(self._offline_groups, bounds[:-1], bounds[1:])]
        return torch.as_tensor(np.concatenate(parts), device=self.device)

    def _normalize_obs(self, obs: Obs) -> Obs:
        """The networks' input: (obs - mean) / std with the offline data's statistics (identity
        before any offline data is set, or with normalize_observations=False). Dict observations:
        the vector keys are standardised, images pass unchanged."""
        if self.obs_mean is None:
            return obs
        if isinstance(obs, dict):
            return {k: (v - self.obs_mean[k]) / self.obs_std[k] if k in self.obs_mean else v for k, v in obs.items()}
        return (obs - self.obs_mean) / self.obs_std

    def _augment(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Random shift of every image key (in sorted key order), from the agent's generator."""
        return {k: random_shift(obs[k], SHIFT_PAD, self.generator) if is_image_space(space) else obs[k]
                for k, space in self._layout.items()}

    def _obs_tensor(self, obs: Obs) -> Obs:
        """Numpy observations (as `EnvRunner` / `batch_obs` give) as tensors on the device."""
        if isinstance(obs, dict):
            return {k: torch.as_tensor(v, device=self.device) for k, v in obs.items()}
        return torch.as_tensor(obs, device=self.device)

    def _replay_spec(self) -> Any:
        """`OnlineReplay`'s observation spec: the flat size, or {key: (shape, dtype)}."""
        if self._layout is None:
            return self.obs_dim
        return {k: (tuple(space.shape), space.dtype if is_image_space(space) else np.float32)
                for k, space in self._layout.items()}

    # ------------------------------------------------------------------------------ online
    def learn(self, env: gym.Env, total_timesteps: int, offline=None, *, eval_env: Any = "auto",
              eval_every: int | None = 5_000, eval_episodes: int = 10, eval_seed: int = 0,
              out: str | os.PathLike | None = None, checkpoint_every: int | None = None,
              progress: bool = True, on_eval: Any = None, reset_num_timesteps: bool = True) -> "CalQL":
        """Online fine-tuning on `env` for `total_timesteps` more online transitions (SB3's meaning:
        `reset_num_timesteps=True` restarts the online counters at 0 and the training episodes afresh;
        False continues them, so a resumed agent reaches its total with
        `learn(env, total - agent.online.num_timesteps, reset_num_timesteps=False)`).

        Each transition is collected with the stochastic policy, then `config.utd` updates follow,
        each on a batch of round(batch_size * online_ratio) finished online transitions and the
        rest from the offline data (Cal-QL's 50/50 mixing; all offline until the first online
        episode ends, see `steergym.algorithms.replay`).

        Args:
            env: a Gymnasium env or vector env (any autoreset mode) with the agent's Box spaces,
                e.g. a DSRL noise-wrapped task. Single envs are reset with seeds
                TRAIN_SEED_OFFSET + seed + k for their k-th episode.
            offline: transitions to mix in (default: those of `pretrain`); not needed with
                online_ratio=1. A resumed agent must get the same data again (checked).
            eval_env: env for the evaluations; "auto" makes one from `env.spec`, None: none.
            eval_every: online transitions between deterministic evaluations (also at the start
                and the end) of `eval_episodes` episodes reset with seeds eval_seed + i.
            out: run folder: progress.csv / eval.csv / TensorBoard events in tb/, checkpoints/latest
                (agent + replay buffer, for `CalQL.load` and exact resume) and agent/ at the end.
            checkpoint_every: online transitions between checkpoints (default eval_every). With a
                single env a due checkpoint waits for the episode to end, so a resumed run
                continues bit for bit; a vector env's episodes in progress are dropped on resume.
            on_eval: optional callable(row) after each evaluation.
        """
        cfg, name = self.config, "CalQL.learn"
        total = learn_target(name, self.online.num_timesteps, total_timesteps, reset_num_timesteps)
        if eval_every is not None and int(eval_every) < 1 or int(eval_episodes) < 1:
            raise ValueError(f"{name}: eval_every and eval_episodes must be >= 1, got {eval_every}, {eval_episodes}")
        observation_space, action_space = single_spaces(env)
        if not isinstance(action_space, gym.spaces.Box):
            raise ValueError(f"{name}: needs a Box action space, the env has {action_space}")
        if observation_space != self.observation_space or action_space != self.action_space:
            raise ValueError(f"{name}: the env's spaces ({observation_space}, {action_space}) differ from the "
                             f"agent's ({self.observation_space}, {self.action_space}), i.e. the offline data's")
        if offline is not None:
            self.set_offline_data(offline, name)
        if self._offline is None and cfg.online_ratio < 1.0:
            hint = (" (this agent was trained with offline data: pass the same transitions again)"
                    if self._offline_fingerprint else "")
            raise ValueError(f"{name}: no offline data to mix in at online_ratio={cfg.online_ratio}: pass "
                             f"offline=transitions or call pretrain first, or set online_ratio=1.0{hint}")
        if self.replay is None:
            self.replay = OnlineReplay(cfg.buffer_size, self._replay_spec(), self.action_dim, cfg.discount,
                                       cfg.failure_value)
        if reset_num_timesteps and self.online.num_timesteps > 0:  # counters at 0, episodes afresh
            self.online, self._runner = OnlineState(resets=self.online.resets, recent=self.online.recent), None
        if self._runner is None or self._runner.env is not env:  # another env: its episodes start afresh
            self._runner = EnvRunner(env, TRAIN_SEED_OFFSET + self.seed, self._layout)
            self.replay.set_num_envs(self._runner.num_envs)
        own_eval_env = False
        if isinstance(eval_env, str) and eval_env == "auto":
            spec = getattr(env, "spec", None)
            eval_env, own_eval_env = (gym.make(spec), True) if spec is not None and eval_every else (None, False)
            if spec is None and eval_every:
                warnings.warn(f"{name}: the env has no spec to make an evaluation env from; pass eval_env= "
                              "to evaluate (training goes on without evaluations)", stacklevel=2)
        if eval_env is not None and isinstance(eval_env, gym.vector.VectorEnv):
            raise ValueError(f"{name}: eval_env must be a single env, got a vector env {eval_env}")
        if out is not None and not (Path(out) / "run.json").exists():
            write_json(Path(out) / "run.json", {"algorithm": self.algorithm, "config": cfg.to_dict(), "seed": self.seed,
                                                 "total_timesteps": total, "eval_every": eval_every,
                                                 "eval_episodes": int(eval_episodes), "eval_seed": int(eval_seed),
                                                 "env": getattr(getattr(env, "spec", None), "id", None)})
        try:
            self._run_loop(total, eval_env=eval_env, eval_every=eval_every, eval_episodes=eval_episodes,
                           eval_seed=eval_seed, out=out, checkpoint_every=checkpoint_every, progress=progress,
                           desc=f"{self.algorithm} online", on_eval=on_eval)
            if out is not None:
                self.save(Path(out) / "agent", replay=False)
        finally:
            if own_eval_env:
                eval_env.close()
        return self

    # ------------------------------------------------------------ the hooks of OffPolicyTrainer
    @property
    def algorithm(self) -> str:
        return "calql" if self.config.calibrated else "cql"

    @property
    def num_timesteps(self) -> int:
        """Online transitions collected (the budget of `learn`)."""
        return self.online.num_timesteps

    @num_timesteps.setter
    def num_timesteps(self, value: int) -> None:
        self.online.num_timesteps = value

    @property
    def _next_eval(self) -> int:
        return self.online.next_eval

    @_next_eval.setter
    def _next_eval(self, value: int) -> None:
        self.online.next_eval = value

    @property
    def _next_checkpoint(self) -> int:
        return self.online.next_checkpoint

    @_next_checkpoint.setter
    def _next_checkpoint(self, value: int) -> None:
        self.online.next_checkpoint = value

    def _eval_rows(self) -> list[dict[str, Any]]:
        return self.curve

    def _log_keep(self) -> dict[str, Any]:
        step, next_eval = self.step, self.online.next_eval
        return {"progress": lambda r: float(r["step"]) <= step,  # written after update `step`
                "eval": lambda r: float(r["env_steps"]) < next_eval}  # the evaluations the checkpoint had done

    def _log_purge_step(self) -> int:
        return self.step

    def _between_episodes(self) -> bool:
        # a vector env's episodes in progress are dropped on resume (documented in `learn`)
        return self.replay.pending_transitions == 0 or self._runner.num_envs > 1

    def _train_owed(self, log) -> None:
        """The `utd` updates owed for each transition collected (a checkpoint may sit just before them)."""
        cfg, state = self.config, self.online
        while state.updates_due > 0:
            state.updates_due -= 1
            batch = self._mixed_batch()
            if batch is None:  # nothing finished to learn from yet (online data only)
                continue
            logging = (self.step + 1) % cfg.log_every == 0
            metrics = self.update(batch, metrics=logging)
            if logging:
                row = {"env_steps": state.num_timesteps, **metrics}
                self.history.append(row)
                if log is not None:
                    log.write("progress", row, self.step)
                self._bar.set_postfix(td=f"{metrics['td_loss']:.3g}", q=f"{metrics['q_data']:.3g}", refresh=False)

    def _collect(self, log) -> int:
        """One step of every env with the stochastic policy; finished episodes enter the buffer.
        Returns the number of transitions collected (a vector env's autoreset steps are none)."""
        cfg, state, runner = self.config, self.online, self._runner
        obs = runner.observe(state)
        with torch.no_grad():
            mean, log_std = self.actor(self._normalize_obs(self._obs_tensor(obs)))
            action, _ = tanh_gaussian_sample(mean, log_std, None, self.act_generator)
            env_action = (self._low + (action + 1.0) * 0.5 * (self._high - self._low)).cpu().numpy()
        action = action.cpu().numpy()
        result = runner.step(env_action.astype(self.action_space.dtype))
        rewards = cfg.transform_reward(result.rewards.astype(np.float64))
        collected = 0
        for i in np.flatnonzero(result.valid):
            self.replay.add(i, take_rows(obs, i), action[i], rewards[i], take_rows(result.next_obs, i), result.terminated[i])
            state.episode_return[i] += float(result.rewards[i])
            state.episode_success[i] = state.episode_success[i] or bool(result.success[i])
            collected += 1
            if result.terminated[i] or result.truncated[i]:
                self.replay.end_episode(i)
                state.recent.append([float(state.episode_return[i]), float(state.episode_success[i])])
                del state.recent[:-50]
                state.episode_return[i], state.episode_success[i] = 0.0, False
        state.num_timesteps += collected
        state.env_steps += int(result.primitive_steps)
        state.updates_due += collected * cfg.utd
        return collected

    def _mixed_batch(self) -> Batch | None:
        """round(B * online_ratio) finished online transitions + the rest offline (all offline
        while no online episode has ended; all online without offline data)."""
        cfg, B = self.config, self.config.batch_size
        size = self.replay.size
        n_online = int(round(B * cfg.online_ratio)) if size > 0 else 0
        if self._offline is None:
            if size == 0:
                return None
            n_online = B
        parts = []
        if B - n_online > 0:
            index = self._offline_rows(B - n_online)
            parts.append({k: take_rows(v, index) for k, v in self._offline.items()})
        if n_online > 0:
            rows = self.replay.sample(self.rng.integers(0, size, n_online))
            parts.append({k: self._obs_tensor(v) for k, v in rows.items()})
        return Batch(**{k: _cat([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in parts[0]})

    def _evaluate_row(self, env: gym.Env, episodes: int, seed: int) -> dict[str, Any]:
        scores = evaluate_agent(self, env, episodes, seed)
        recent = self.online.recent
        row = {"env_steps": self.online.num_timesteps, "primitive_steps": self.online.env_steps,
               "updates": self.step, **scores,
               "train_success": float(np.mean([r[1] for r in recent])) if recent else None,
               "train_return": float(np.mean([r[0] for r in recent])) if recent else None}
        self.curve.append(row)
        return row

    def _dataset_tensors(self, transitions, name: str) -> dict[str, torch.Tensor]:
        """`offline_data.check_transitions` as tensors on the device, actions rescaled to [-1, 1]."""
        arrays = check_transitions(transitions, name, self.observation_space, self.action_space, self._layout,
                                   self.config)
        as_tensor = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), device=self.device)  # noqa: E731
        if self._layout is not None:
            obs, next_obs = self._obs_tensor(arrays["observations"]), self._obs_tensor(arrays["next_observations"])
        else:
            obs, next_obs = as_tensor(arrays["observations"]), as_tensor(arrays["next_observations"])
        return {"obs": obs, "actions": self._normalize_action(as_tensor(arrays["actions"])),
                "rewards": as_tensor(arrays["rewards"]), "next_obs": next_obs,
                "terminals": as_tensor(arrays["terminals"]), "mc_returns": as_tensor(arrays["mc_returns"])}

    def _check_obs(self, value: Any, label: str, owner: str, size: int | None) -> dict[str, np.ndarray]:
        """Pixel observations as {key: array} with a batch axis (`encoders.check_pixel_obs`)."""
        return check_pixel_obs(value, self._layout, self.observation_space, label, owner, size)[0]

    # ----------------------------------------------------------------------------- acting
    @torch.no_grad()
    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3-shaped: (action, None) for one observation (o,) or a batch (N, o); for pixel
        observations one image (H, W, C) / dict of single entries, or a batch (N, H, W, C) / dict of
        (N, ...) entries. Deterministic actions are tanh(mean) (JaxCQL), mapped to the action
        space's bounds."""
        x, single = self._network_input(obs, "CalQL.predict")
        mean, log_std = self.actor(x)
        if deterministic:
            action = torch.tanh(mean)
        else:
            action, _ = tanh_gaussian_sample(mean, log_std, None, self.generator)
        action = self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        action = action.cpu().numpy().astype(self.action_space.dtype)
        return (action[0] if single else action), None

    @torch.no_grad()
    def q_values(self, obs: Any, actions: np.ndarray, target: bool = True) -> np.ndarray:
        """(N,) float64 min over the critics of Q(obs, actions) for a batch: obs as `predict` takes
        a batch, actions (N, d) in env units. `target=True` uses the target critics (V-GPS's
        `get_q_values`)."""
        x, single = self._network_input(obs, "CalQL.q_values")
        actions = np.asarray(actions, dtype=np.float32)
        rows = 1 if single else (x[next(iter(x))] if isinstance(x, dict) else x).shape[0]
        if single or actions.shape != (rows, self.action_dim):
            raise ValueError(f"CalQL.q_values: needs a batch of N observations and actions (N, {self.action_dim}), "
                             f"got {'one observation' if single else f'{rows} observations'} and actions "
                             f"{actions.shape}")
        critic = self.critic_target if target else self.critic
        q = critic(x, self._normalize_action(torch.as_tensor(actions, device=self.device)))
        return q.min(dim=0).values.cpu().numpy().astype(np.float64)

    def _network_input(self, obs: Any, who: str) -> tuple[Any, bool]:
        """(normalised network input for a batch, whether `obs` was a single observation)."""
        if self._layout is not None:
            single = _is_single(obs, self._layout, self._bare_image)
            return self._normalize_obs(self._obs_tensor(self._check_obs(obs, "the observation", who, None))), single
        obs_arr = np.asarray(obs, dtype=np.float32)
        if obs_arr.shape[-1:] != (self.obs_dim,) or obs_arr.ndim not in (1, 2):
            raise ValueError(f"{who}: observation shape {obs_arr.shape}, expected ({self.obs_dim},) "
                             f"or (N, {self.obs_dim})")
        x = torch.as_tensor(obs_arr.reshape(-1, self.obs_dim), device=self.device)
        return self._normalize_obs(x), obs_arr.ndim == 1

    def _normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        scaled = 2.0 * (action - self._low) / (self._high - self._low) - 1.0
        return scaled.clamp(-1.0, 1.0)

    # ------------------------------------------------------------------------- persistence
    def _modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_optim": self.actor_optimizer, "critic_optim": self.critic_optimizer,
                "alpha_optim": self.alpha_optimizer, "alpha_prime_optim": self.alpha_prime_optimizer}

    def save(self, path: str | os.PathLike, replay: bool = True, extra_files: dict[str, str] | None = None) -> Path:
        """Atomically write `path/` = config.json (config, spaces, step, optimiser hyper-parameters,
        batch-order generator, online counters, evaluation curve, offline-data fingerprint) +
        model.safetensors (networks, targets, temperatures, Adam moments, sampling generators)
        + replay.safetensors (the finished online transitions, when there are some and `replay`)
        + `extra_files` ({name: text}, a wrapping trainer's own files, in the same atomic write).
        Loading it resumes training exactly (the offline data is passed to `learn` again)."""
        tensors, optim_meta = trainer_state.training_tensors(self._modules(), self._optimizers())
        tensors["log_alpha"] = self.log_alpha.detach().cpu().clone()
        tensors["log_alpha_prime"] = self.log_alpha_prime.detach().cpu().clone()
        if isinstance(self.obs_mean, dict):
            for k in self.obs_mean:
                tensors[f"obs_mean/{k}"] = self.obs_mean[k].cpu().clone()
                tensors[f"obs_std/{k}"] = self.obs_std[k].cpu().clone()
        elif self.obs_mean is not None:
            tensors["obs_mean"], tensors["obs_std"] = self.obs_mean.cpu().clone(), self.obs_std.cpu().clone()
        tensors["generator"] = self.generator.get_state().cpu()
        tensors["act_generator"] = self.act_generator.get_state().cpu()
        meta = {"format": FORMAT, "algorithm": "calql" if self.config.calibrated else "cql",
                "config": self.config.to_dict(), "seed": self.seed, "step": self.step,
                "offline_steps": self.offline_steps, "observation_space": space_to_json(self.observation_space),
                "action_space": space_to_json(self.action_space), "optimizers": optim_meta,
                "numpy_rng": trainer_state.numpy_rng_state(self.rng), "metrics": self.metrics,
                "online": self.online.to_dict(), "curve": self.curve,
                "offline_fingerprint": self._offline_fingerprint, "replay": None}
        replay_arrays = None
        if replay and self.replay is not None and self.replay.size > 0:
            replay_arrays, meta["replay"] = self.replay.state()

        def write_files(staging: Path) -> None:
            for name, text in (extra_files or {}).items():
                (staging / name).write_text(text)
        return trainer_state.write_checkpoint(path, FORMAT, meta, tensors, replay_arrays, write_files)

    @classmethod
    def load(cls, path: str | os.PathLike, env: gym.Env | None = None,
             device: str | torch.device = "cpu") -> "CalQL":
        """Rebuild an agent saved by `save`; ValueError for a folder that is not one (or is corrupt).
        With `env`, its spaces must equal the saved ones."""
        path = Path(path)
        meta, tensors, arrays = trainer_state.read_checkpoint(path, FORMAT, "Cal-QL", replay=False)
        try:
            spaces = (space_from_json(meta["observation_space"]), space_from_json(meta["action_space"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path / CONFIG_FILE}: unreadable spaces ({exc!r})") from exc
        if env is not None and (env.observation_space != spaces[0] or env.action_space != spaces[1]):
            raise ValueError(f"{path}: saved spaces {spaces} differ from the env's "
                             f"({env.observation_space}, {env.action_space})")
        agent = cls(spaces, CalQLConfig.from_dict(meta["config"]), seed=int(meta["seed"]), device=device)
        try:
            trainer_state.load_training_tensors(agent._modules(), agent._optimizers(), tensors, meta["optimizers"])
            with torch.no_grad():
                agent.log_alpha.copy_(tensors["log_alpha"])
                agent.log_alpha_prime.copy_(tensors["log_alpha_prime"])
            if "obs_mean" in tensors:
                agent.obs_mean = tensors["obs_mean"].to(agent.device)
                agent.obs_std = tensors["obs_std"].to(agent.device)
            keys = [k.split("/", 1)[1] for k in tensors if k.startswith("obs_mean/")]
            if keys:
                agent.obs_mean = {k: tensors[f"obs_mean/{k}"].to(agent.device) for k in keys}
                agent.obs_std = {k: tensors[f"obs_std/{k}"].to(agent.device) for k in keys}
            agent.generator.set_state(tensors["generator"])
            if "act_generator" in tensors:
                agent.act_generator.set_state(tensors["act_generator"])
            if meta.get("replay"):
                if arrays is None:
                    raise ValueError(f"{path}: the checkpoint lists a replay buffer but has no {REPLAY_FILE}")
                agent.replay = OnlineReplay.from_state(arrays, meta["replay"], agent._replay_spec(), agent.action_dim)
        except (KeyError, RuntimeError) as exc:
            raise ValueError(f"{path}: checkpoint does not match its config ({exc})") from exc
        trainer_state.set_numpy_rng_state(agent.rng, meta["numpy_rng"])
        agent.step = int(meta["step"])
        agent.offline_steps = int(meta.get("offline_steps", 0))
        agent.metrics = dict(meta.get("metrics", {}))
        agent.online = OnlineState.from_dict(meta.get("online", {}))
        agent.curve = list(meta.get("curve", []))
        agent._offline_fingerprint = meta.get("offline_fingerprint")
        return agent


# ------------------------------------------------------------------------------ helpers
def _repeat(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, o) -> (B * n, o), each row repeated n times consecutively."""
    return x.repeat_interleave(n, dim=0)


def _check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """ValueError unless the action space is a bounded 1-D Box (observations: `observation_layout`)."""
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        raise ValueError(f"CalQL: needs a 1-D Box action space, got {action_space}")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ValueError(f"CalQL: the action space needs finite bounds, got {action_space}")


def _cat(parts: list[Any]) -> Any:
    """Concatenate tensors (or dicts of tensors, key by key) along the batch axis."""
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def _is_single(obs: Any, layout: dict[str, gym.spaces.Box], bare_image: bool) -> bool:
    """Whether a pixel observation is one observation (not a batch), by its first key's rank."""
    key = next(iter(layout))
    value = obs if bare_image or not isinstance(obs, dict) else obs.get(key)
    return np.ndim(value) == len(layout[key].shape)


def evaluate_agent(agent: "CalQL", env: gym.Env, episodes: int, seed: int) -> dict[str, float]:
    """Deterministic episodes of `agent` on a single `env`, reset seeds seed + i: success rate
    (info["is_success"] at any step) and mean return."""
    return score_episodes(env, lambda obs: agent.predict(obs, deterministic=True)[0], episodes, seed)
