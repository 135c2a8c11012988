"""OGPO: off-policy generative policy optimisation (full fine-tuning of a diffusion or flow policy).

    agent = OGPO(env, load_shipped("widowx-lift-flow"), OGPOConfig(), seed=0)
    agent.learn(200_000, eval_env=eval_env, out="runs/lift-ogpo")
    agent.policy                      # the fine-tuned GenerativePolicy (act / sample as usual)
    agent.save("runs/lift-ogpo/final"); agent = OGPO.load("runs/lift-ogpo/final", env=env)

Patil, Nakamoto et al., ICML 2026 (arXiv 2605.03065); every step below follows the public code
(simchowitzlabpublic/OGPO_public, reference/algorithms.md section 5). The policy's K-step sampler is
a stochastic inner MDP (`denoising_chain`: DDIM with eta = 1 for diffusion, the "SDE-fied" flow for
flow policies) whose only reward is the critics' value of the final action. One agent step = one
executed action chunk (H primitive steps). As OGPO's online_rl_runner, training counts primitive env
steps: after every env step i >= `learning_starts` (once the replay holds batch_size * utd * H
transitions) comes one update round of max(utd_critic, utd_actor) steps, each on a fresh batch: the
actor step (2.) and then the critic step (1.) on that batch (`updates_per_env_step`):

  1. critics (ensemble of M = 10, off-policy; `critic_windows`: the replay holds primitive transitions,
     whole episodes added when they end, and a batch holds windows of H steps starting at any step):
       y = R + gamma^H (1 - terminal) agg_m Qbar_m(s', a'),   a' ~ target actor's stochastic chain
       (R = sum_j gamma^j r_j over the window, s' after its last step, terminal if any step terminated;
       agg = mean over the ensemble; windows in which the episode ends before the last step get no loss)
       Q-variance reduction (flag): n = 8 next actions, each Qbar_m reduced over them (median/mean/trimmed
         mean), then agg over the heads; under chi^2 agg = (1 - w) mean_m + w min_m, w = sigmoid(alpha
         (drift - 1)), drift the mean chain ratio rho of the last actor step
       L_Q = sum_m mean_B valid (Q_m(s, a) - y)^2;  Polyak targets with tau_critic
       (without critic_windows: one row per executed chunk, R its undiscounted sum, gamma^k, k its steps)
  2. actor (PPO inside the denoising MDP, from replay states, the EMA "target" actor as pi_old):
       G chains per state from pi_old with their log-probs; a_0 = the chain's chunk
       advantages  A_i = Qbar(s, a_0^i) - mean_j Qbar(s, a_0^j)   (group mean baseline, no value net)
         conservative advantages (flag): per critic A_im; min_m if all > 0, max_m if all < 0, else 0
         chi^2 regularisation (flag): values (1 - w) mean_m Q + w min_m Q - beta * rho, rho the chain
           ratio to a slow EMA policy, w = sigmoid(alpha (rho - 1)), one beta = beta0 mean_{s,i} std_m Q /
           q_std_target per batch; the PPO upper clip becomes min(1 + eps, 1 + R_max / beta)
       log omega = (log pi_theta(chain) - log pi_old(chain)) / ((K + 1) * H * d)   (x_0 counts as a step)
       L_PPO = -mean min(omega A, clip(omega, 1 - eps, 1 + eps) A)
       success-buffer regularisation (flag, "OGPO+"): + lambda_BC * the policy's own BC loss
         (DDPM / flow matching) on chunks from successful episodes (the replay batch while none yet)
       Polyak: target actor with tau_actor (slow actor with tau_slow under chi^2)

Acting during training samples the stochastic chain of the target (EMA) actor, as OGPO's
`sample_actions` (use_target=True) does; `predict(...,
deterministic=True)` and evaluation use the policy's deterministic sampler (DDIM eta = 0 / Euler
ODE). Critics have a LayerNorm before each hidden ReLU as the public code's (`critic_layer_norm`).

Observations: flat float Boxes, or pixels (a uint8 image Box, or a Dict of images and vectors such as
WidowX `obs_mode="pixels_state"`; chunk_rl.py). On pixels the critics are a conv `PixelEncoder`
with the fused ensemble head (the target critics with their own encoder copy), trained on DrQ
random shifts of the replay images (`image_augmentation`); the actor is the generative policy
itself, which encodes the images with its own encoder, fine-tuned with the rest of the chain.
The group's G chains per state share one encoding of the state (the policy's condition and the
critic features are computed per state, then repeated).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from steergym.algorithms.chunk_rl import (
    ChunkTrainer,
    Obs,
    ObsActionRing,
    StepReplay,
    num_rows,
    take_rows,
)
from steergym.algorithms.denoising_chain import (
    ChainNoise,
    chain_action,
    chain_log_prob,
    num_steps,
    sample_chain,
)
from steergym.algorithms.encoders import PixelEncoderConfig
from steergym.policies.config import config_from_dict
from steergym.policies.generative import GenerativePolicy

FORMAT = "steergym.ogpo-v1"
# fields a checkpoint written before they existed loads with (the behaviour it was trained under)
OLD_CHECKPOINT_DEFAULTS: dict[str, Any] = {"critic_layer_norm": False, "flow_correction_dt": False,
                                           "updates_per_env_step": False, "critic_windows": False,
                                           "use_success_buffer_q": False}
Q_REDUCTIONS = ("median", "mean", "trimmed_mean")
LR_SCHEDULES = ("constant", "cosine")
TARGET_AGGS = ("mean", "min")


@dataclass
class OGPOConfig(PixelEncoderConfig):
    """OGPO hyper-parameters. Sources (reference/algorithms.md section 5): "yaml" =
    OGPO_public ogpo/configs/algos/{common,ogpo}.yaml, "square.sh" = scripts/ogpo/square.sh (taken
    as the paper's default where they differ), "site" = the project page, "DPPO" = irom-lab/dppo.
    """

    # --- critics
    gamma: float = 0.99  # yaml; windows: R = sum_j gamma^j r_j, bootstrap gamma^H (code: q_helper.compute_td_target)
    n_critics: int = 10  # yaml num_qs
    critic_hidden: tuple[int, ...] = (512, 512, 512, 512)  # yaml 4 x 512
    critic_layer_norm: bool = True  # yaml/OGPO_public critic LayerNorm (after each hidden linear, before ReLU)
    critic_lr: float = 3e-4  # yaml, constant
    critic_weight_decay: float = 1e-5  # yaml (AdamW)
    tau_critic: float = 0.05  # square.sh critic EMA
    target_agg: str = "mean"  # yaml q_agg: "mean targets outperform pessimism" (site); "min" available
    batch_size: int = 256  # yaml
    utd_critic: int = 1  # yaml utd_q
    buffer_size: int = 2_000_000  # yaml (primitive transitions under critic_windows, else chunks)
    learning_starts: int = 10_000  # yaml start_training: env steps (agent steps, i.e. chunks, if not updates_per_env_step)
    # code: online_rl_runner.run_online_rl, one batch_update (utd_pi actor then critic steps, utd_q critic steps in
    # all) after every primitive env step i >= start_training once the replay holds batch_size * utd * H
    # transitions. False: one update round per executed chunk after learning_starts chunks (steergym before the
    # field; what checkpoints without it load with)
    updates_per_env_step: bool = True
    # code: datasets.ReplayBuffer.sample_sequence + q_helper.compute_td_target: the critics learn on windows of
    # H primitive steps starting at every step (reward sum_j gamma^j r_j, bootstrap gamma^H, windows in which the
    # episode ends before the last step masked out of the TD loss by `valid`); episodes enter the replay when
    # they end (run_online_rl's trajectory_buffer). False: one replay row per executed chunk, its undiscounted
    # reward sum, gamma^k (steergym before the field; what checkpoints without it load with)
    critic_windows: bool = True
    # --- actor (PPO in the denoising MDP)
    utd_actor: int = 1  # yaml utd_pi
    group_size: int = 32  # yaml group_num_samples G: chains per state
    ppo_batch_size: int = 256  # yaml: states per actor step (a subset of the critic batch)
    clip_epsilon: float = 0.01  # yaml clip_epsilon (multipliers 1.0)
    actor_lr: float = 4.5e-5  # yaml ppo_lr
    # yaml actor scheduler "cosine" (warmup 2000, decay 50000, end 2e-5); whether it drives ppo_lr was not
    # verified (reference/algorithms.md 5.4), so the default stays constant; "cosine" follows the yaml
    actor_lr_schedule: str = "constant"
    actor_lr_warmup: int = 2_000  # yaml: actor updates of linear warm-up from 0
    actor_lr_decay: int = 50_000  # yaml: actor updates of cosine decay after the warm-up
    actor_lr_end: float = 2e-5  # yaml: the learning rate after the decay
    tau_actor: float = 0.005  # yaml actor EMA; the EMA actor is PPO's pi_old
    max_grad_norm: float = 1000.0  # yaml
    # ogpo.yaml normalize_denoising_horizon + normalize_act_space_dimension: log-probs divided by (K + 1) * D
    # (code: pg_helper.compute_flow_log_prob counts the initial N(0, I) draw as a step: logprob_steps = 1 + K)
    normalize_log_prob: bool = True
    # --- the stochastic chain
    flow_sigma: float = 0.05  # square.sh constant_noise_std, tapered sigma * sqrt(1 - t)
    flow_taper: bool = True  # square.sh (yaml: constant 0.005)
    # code: pg_helper.sample_flow_actions_sde, mean = x + dt * (v + (std^2 / 2) score); False: the score term
    # without dt (steergym before this field; what checkpoints without it load with)
    flow_correction_dt: bool = True
    diffusion_eta: float = 1.0  # DPPO DDIM fine-tuning (the public OGPO code is flow-only)
    diffusion_min_std: float = 0.1  # DPPO min_sampling_denoising_std
    noise_clip: float = 3.0  # yaml randn_clip_value
    # --- stabilisers
    success_buffer_bc: bool = True  # "OGPO+": use_bc_regularization + use_success_buffer (square.sh)
    bc_coef: float = 1.0  # square.sh bc_coeff (yaml default 0.1)
    success_batch_size: int = 256  # yaml
    # square.sh use_success_buffer_q (yaml false): after each critic step a second one (with its target update) on
    # success_batch_size windows starting in successful episodes, once those hold success_batch_size * utd + H
    # transitions (code: ogpo.py _update -> critic_update_sb, online_rl_runner._sample_success_batch). Needs
    # critic_windows; False for checkpoints without the field (what they ran)
    use_success_buffer_q: bool = True
    conservative_advantages: bool = True  # square.sh adv_strategy: conservative ("OGPO-CA")
    chi2: bool = False  # yaml chi_po (off by default)
    chi2_tau_slow: float = 5e-4  # yaml tau_slow
    chi2_alpha: float = 5.0  # yaml pessimism sharpness alpha_e
    chi2_beta: float = 0.1  # yaml beta_base
    chi2_q_std_target: float = 1.0  # yaml
    chi2_r_max: float = 10.0  # yaml (square.sh 100; ~ 1 / (1 - gamma))
    q_variance_reduction: bool = False  # yaml (off by default)
    q_vr_samples: int = 8  # yaml q_vr_num_samples
    q_vr_reduce: str = "median"  # script default; "mean" | "trimmed_mean" (drops lowest/highest quarter)
    # --- ours
    normalize_observations: bool = True  # critics see observations standardised by the policy's statistics
    log_every: int = 1000  # updates between rows of progress.csv / `history`

    def __post_init__(self) -> None:
        self.critic_hidden = tuple(int(h) for h in self.critic_hidden)
        self.check_encoder("OGPOConfig")
        ints = ("n_critics", "batch_size", "utd_critic", "buffer_size", "utd_actor", "group_size",
                "ppo_batch_size", "success_batch_size", "q_vr_samples", "log_every")
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"OGPOConfig.{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.learning_starts, bool) or not isinstance(self.learning_starts, int) or self.learning_starts < 0:
            raise ValueError(f"OGPOConfig.learning_starts must be an integer >= 0, got {self.learning_starts!r}")
        if self.group_size < 2:
            raise ValueError(f"OGPOConfig.group_size must be >= 2 (the baseline is the group mean), got {self.group_size}")
        positive = ("critic_lr", "actor_lr", "clip_epsilon", "max_grad_norm", "flow_sigma", "diffusion_min_std",
                    "noise_clip", "chi2_alpha", "chi2_q_std_target", "chi2_r_max")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"OGPOConfig.{name} must be a finite number > 0, got {value!r}")
        for name in ("critic_weight_decay", "bc_coef", "chi2_beta", "diffusion_eta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"OGPOConfig.{name} must be a finite number >= 0, got {value!r}")
        for name in ("gamma",):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"OGPOConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("tau_critic", "tau_actor", "chi2_tau_slow"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"OGPOConfig.{name} must be in (0, 1], got {getattr(self, name)}")
        if not self.critic_hidden or min(self.critic_hidden) < 1:
            raise ValueError(f"OGPOConfig.critic_hidden must be positive widths, got {self.critic_hidden}")
        if self.q_vr_reduce not in Q_REDUCTIONS:
            raise ValueError(f"OGPOConfig.q_vr_reduce must be one of {Q_REDUCTIONS}, got {self.q_vr_reduce!r}")
        if self.actor_lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"OGPOConfig.actor_lr_schedule must be one of {LR_SCHEDULES}, got {self.actor_lr_schedule!r}")
        for name in ("actor_lr_warmup", "actor_lr_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"OGPOConfig.{name} must be an integer >= 0, got {value!r}")
        if not (isinstance(self.actor_lr_end, (int, float)) and 0 <= self.actor_lr_end <= self.actor_lr):
            raise ValueError(f"OGPOConfig.actor_lr_end must be in [0, actor_lr = {self.actor_lr}], got "
                             f"{self.actor_lr_end!r}")
        if self.target_agg not in TARGET_AGGS:
            raise ValueError(f"OGPOConfig.target_agg must be one of {TARGET_AGGS}, got {self.target_agg!r}")
        if self.chi2 and self.conservative_advantages:
            raise ValueError("OGPOConfig: chi2=True computes its own (penalised, group-centred) advantages; "
                             "set conservative_advantages=False with it")

    def actor_lr_at(self, step: int) -> float:
        """The actor's learning rate at its `step`-th update (0-based): `actor_lr` ("constant"), or a
        linear warm-up from 0 over `actor_lr_warmup` updates, then a half-cosine from `actor_lr` to
        `actor_lr_end` over `actor_lr_decay` updates, then `actor_lr_end` ("cosine")."""
        if self.actor_lr_schedule == "constant":
            return self.actor_lr
        if step < self.actor_lr_warmup:
            return self.actor_lr * (step + 1) / self.actor_lr_warmup
        progress = min(1.0, (step - self.actor_lr_warmup) / max(1, self.actor_lr_decay))
        return self.actor_lr_end + (self.actor_lr - self.actor_lr_end) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def chain_noise(self) -> ChainNoise:
        return ChainNoise(flow_sigma=self.flow_sigma, flow_taper=self.flow_taper, diffusion_eta=self.diffusion_eta,
                          diffusion_min_std=self.diffusion_min_std, noise_clip=self.noise_clip,
                          correction_dt=self.flow_correction_dt)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("critic_hidden", "encoder_channels", "encoder_strides"):
            data[name] = list(getattr(self, name))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OGPOConfig":
        return config_from_dict(cls, data)


# ----------------------------------------------------------------------------------- the math
def clipped_objective(log_ratio: torch.Tensor, advantages: torch.Tensor, epsilon: float,
                      upper: torch.Tensor | float | None = None) -> torch.Tensor:
    """PPO's clipped surrogate as a loss: -mean(min(omega A, clip(omega, 1 - eps, upper) A)),
    omega = exp(log_ratio); `upper` defaults to 1 + eps (chi^2 regularisation lowers it)."""
    ratio = log_ratio.exp()
    high = 1.0 + epsilon if upper is None else upper
    clipped = torch.minimum(torch.clamp(ratio, min=1.0 - epsilon), torch.as_tensor(high, dtype=ratio.dtype))
    return -torch.minimum(ratio * advantages, clipped * advantages).mean()


def group_advantages(q: torch.Tensor, conservative: bool) -> torch.Tensor:
    """Advantages (B, G) of G chains per state from ensemble values q (M, B, G).

    Plain: mean_m Q minus its group mean. Conservative (OGPO "safeMax"): per-critic advantages
    A_m = Q_m - group mean of Q_m; min_m A_m where all M are > 0, max_m A_m where all are < 0, 0 where
    the critics disagree on the sign.
    """
    if not conservative:
        mean_q = q.mean(0)
        return mean_q - mean_q.mean(-1, keepdim=True)
    per_critic = q - q.mean(-1, keepdim=True)
    positive, negative = (per_critic > 0).all(0), (per_critic < 0).all(0)
    zero = torch.zeros_like(per_critic[0])
    return torch.where(positive, per_critic.min(0).values, torch.where(negative, per_critic.max(0).values, zero))


def chi2_advantages(q: torch.Tensor, log_ratio_slow: torch.Tensor, epsilon: float, alpha: float, beta_base: float,
                    q_std_target: float, r_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """chi^2-regularised advantages (B, G) and the PPO upper clip (a scalar) (OGPO's chi_po).

    q (M, B, G) ensemble values; log_ratio_slow (B, G) log rho, rho the (normalised) chain ratio of
    the current policy to the slow reference. Values (1 - w) mean_m Q + w min_m Q - beta rho with
    w = sigmoid(alpha (rho - 1)) and one beta for the batch, beta = beta_base * mean over states and
    chains of the ensemble's std (population std) / q_std_target (pg_helper.compute_chi_po_beta);
    advantages are centred on the group mean; upper = min(1 + eps, 1 + r_max / beta)
    (compute_chi_po_ppo_loss).
    """
    rho = log_ratio_slow.exp()
    w = torch.sigmoid(alpha * (rho - 1.0))
    blended = (1.0 - w) * q.mean(0) + w * q.min(0).values
    beta = beta_base * q.std(0, unbiased=False).mean() / q_std_target
    values = blended - beta * rho
    upper = torch.clamp(1.0 + r_max / beta.clamp_min(1e-12), max=1.0 + epsilon)
    return values - values.mean(-1, keepdim=True), upper


def reduce_samples(q: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce (..., n) next-action values over the last axis, the n samples: median, mean or trimmed
    mean (the middle half)."""
    if how == "mean":
        return q.mean(-1)
    if how == "median":
        return q.median(-1).values
    if how == "trimmed_mean":
        n = q.shape[-1]
        drop = n // 4
        return q.sort(-1).values[..., drop:n - drop].mean(-1)
    raise ValueError(f"unknown reduction {how!r}; valid: {Q_REDUCTIONS}")


# ------------------------------------------------------------------------------- the agent
class OGPO(ChunkTrainer):
    """OGPO on any Gymnasium env with a Box action space, flat Box or pixel observations (an image
    Box, or a Dict of images and vectors), and a diffusion or flow `GenerativePolicy` on the same
    observations (a copy of it is fine-tuned; the argument is left untouched).

    Args:
        env: the task env (primitive actions (d,)) or an `ActionChunkWrapper` of the policy's horizon
            around it; None for an agent that only predicts (attach one later with `set_env`).
        policy: a `steergym.policies.DiffusionPolicy` or `FlowPolicy` whose spaces equal the env's.
        config: `OGPOConfig` (defaults: the paper's code and scripts).
        seed: seeds the critics' init, every sampling generator, the batch order and training resets.
        device: torch device.
    """

    algorithm = "ogpo"
    FORMAT = FORMAT

    def __init__(self, env: gym.Env | None, policy: Any, config: OGPOConfig | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        if not isinstance(policy, GenerativePolicy) or policy.kind not in ("diffusion", "flow"):
            raise ValueError(f"OGPO: the policy must be a steergym DiffusionPolicy or FlowPolicy (OGPO updates "
                             f"the denoising chain's weights), got {type(policy).__name__}")
        config = config or OGPOConfig()
        if not isinstance(config, OGPOConfig):
            raise ValueError(f"OGPO: config must be an OGPOConfig, got {type(config).__name__}")
        policy = self._setup_common(env, policy, config, seed, device, "OGPO")
        self.noise = config.chain_noise()
        self.policy = _clone(policy, self.device)
        self.actor_target = _clone(policy, self.device).requires_grad_(False)
        self.actor_slow = _clone(policy, self.device).requires_grad_(False) if config.chi2 else None
        self.steps = num_steps(self.policy)
        critic_shape = (config.critic_hidden, config.n_critics, config.critic_layer_norm)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.critic = self.make_critics(*critic_shape)
        self.critic_target = self.target_critics(self.critic, *critic_shape)
        self.critic_optimizer = torch.optim.AdamW(self.critic.parameters(), lr=config.critic_lr,
                                                  weight_decay=config.critic_weight_decay)
        self.actor_optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.actor_lr)
        self.success = ObsActionRing(config.buffer_size, self._obs_spec, self.chunk_dim)
        if config.critic_windows:  # primitive transitions; critics read H-step windows
            self.replay = StepReplay(config.buffer_size, self._obs_spec, self.action_dim)
        self._episode_chunks: list[tuple[Any, np.ndarray]] = []  # (obs row, chunk) of the episode so far
        self._pending: list[dict[str, Any]] = []  # the episode's primitive transitions (critic_windows)
        self._replay_size_before_flush = 0
        self.chi2_drift: float | None = None  # mean chain ratio to the slow policy at the last actor step (chi2)

    # ----------------------------------------------------------------------------- sampling
    def _cond(self, policy, obs: Obs, repeat: int = 1) -> torch.Tensor:
        """The policy's condition (B * repeat, F) at raw observations (B rows), each row repeated
        `repeat` times consecutively (the policy encodes each state once)."""
        obs_t, _ = policy._obs_to_tensors(self.policy_obs(obs))
        cond = policy._condition(obs_t, None, obs_t[next(iter(obs_t))].shape[0])
        return cond.repeat_interleave(repeat, dim=0) if repeat > 1 else cond

    def _initial_noise(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn((batch, self.chunk_dim), generator=generator, device=self.device)

    def sample_chains(self, policy, obs: Obs, generator: torch.Generator | None = None,
                      stochastic: bool = True, repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Chains of `policy` (the actor, or its target) at raw observations obs (B rows), no gradient:
        (xs (K+1, N, D), log-probs (N,), chunks in env units (N, H, d)), N = B * repeat chains, the
        `repeat` chains of a state consecutive."""
        generator = generator or self.generator
        with torch.no_grad():
            cond = self._cond(policy, obs, repeat)
            xs, logp = sample_chain(policy, cond, self._initial_noise(cond.shape[0], generator), self.noise,
                                    generator, stochastic)
            return xs, logp, chain_action(policy, xs[-1], self._low, self._high)

    def _act(self, obs: Any) -> np.ndarray:
        # the target (EMA) actor's stochastic chain, as OGPO's sample_actions (use_target=True)
        _, _, chunk = self.sample_chains(self.actor_target, self.single_batch(obs))
        return chunk[0].cpu().numpy()

    def critic_values(self, critic: nn.Module, obs_t: Any, actions: torch.Tensor, n: int = 1) -> torch.Tensor:
        """(M, B * n) values of n actions per state: obs_t the critic inputs of B states
        (`obs_tensor` / `critic_input`), actions (B * n, A) in [-1, 1], a state's n consecutive.
        Pixel critics encode each state once (`q_values` over the n actions)."""
        if self._layout is None:
            return critic(obs_t.repeat_interleave(n, dim=0) if n > 1 else obs_t, actions)
        B = num_rows(obs_t)
        return critic.q_values(obs_t, actions.reshape(B, n, -1)).reshape(-1, B * n)

    def _predict_actions(self, obs: Obs, deterministic: bool) -> torch.Tensor:
        """Chunks (N, H, d) for `predict` (flattened there to the chunked env's (N, H*d) actions).

        `deterministic=True` runs the policy's deterministic sampler (no per-step noise; the initial
        noise still comes from the agent's evaluation generator, seeded by `reset_eval_noise`);
        False samples the stochastic chain as in training."""
        if not deterministic:  # the training-time behaviour policy: the target actor's chain (OGPO's SDE eval)
            return self.sample_chains(self.actor_target, obs, self.eval_generator)[2]
        with torch.no_grad():  # the policy's own deterministic sampler (DDIM eta = 0 / Euler ODE)
            cond = self._cond(self.policy, obs)
            x = self.policy._generate(self._initial_noise(cond.shape[0], self.eval_generator), cond)
            return chain_action(self.policy, x, self._low, self._high)

    # ------------------------------------------------------------------------ the updates
    def sample_batch(self) -> dict[str, Any]:
        """A replay batch of `batch_size`: H-step windows (`critic_windows`) or chunk rows."""
        cfg = self.config
        if cfg.critic_windows:
            return self.replay.sample_windows(self.rng, cfg.batch_size, self.horizon, cfg.gamma)
        return self.replay.sample(self.rng, cfg.batch_size)

    def _update(self) -> dict[str, float]:
        """One update round, as OGPO's batch_update (a scan over the UTD axis): max(utd_critic, utd_actor)
        steps, each on a fresh batch, the actor step first and then the critic step on the same batch; the
        actor skips the steps past utd_actor when utd_actor < utd_critic (batch_critic_only_update)."""
        cfg = self.config
        metrics: dict[str, float] = {}
        rounds = max(cfg.utd_critic, cfg.utd_actor)
        actor_steps = cfg.utd_actor if cfg.utd_actor < cfg.utd_critic else rounds
        # the success windows feed the critic once successful episodes hold success_batch_size * utd + H rows
        success_q = (cfg.use_success_buffer_q and cfg.critic_windows
                     and self.replay.success_rows() >= cfg.success_batch_size * rounds + self.horizon)
        for j in range(rounds):
            batch = self.sample_batch()
            if j < actor_steps:
                lr = cfg.actor_lr_at(self.updates * actor_steps + j)  # a function of the counters: resumes exactly
                for group in self.actor_optimizer.param_groups:
                    group["lr"] = lr
                metrics.update(self.actor_update(batch), actor_lr=lr)
            metrics.update(self.critic_update(batch))
            if success_q:  # critic_update_sb: a second TD step on windows from successful episodes
                success = self.replay.sample_windows(self.rng, cfg.success_batch_size, self.horizon, cfg.gamma,
                                                     success_only=True)
                metrics["td_loss_success"] = self.critic_update(success)["td_loss"]
        return metrics

    def update_gate(self) -> int:
        """Replay rows needed before updates run: batch_size * max(utd) * H primitive transitions under
        `critic_windows` (run_online_rl), else 1."""
        cfg = self.config
        return cfg.batch_size * max(cfg.utd_critic, cfg.utd_actor) * self.horizon if cfg.critic_windows else 1

    def _update_rounds(self, env_steps_before: int, steps: int) -> int:
        """One round per primitive env step i (1-based) >= learning_starts while the replay holds
        `update_gate()` rows (run_online_rl; the chunk's last step sees the episode flushed into the
        replay when it ended there), or the per-chunk default without `updates_per_env_step`."""
        cfg = self.config
        if not cfg.updates_per_env_step:
            return super()._update_rounds(env_steps_before, steps)
        gate, last = self.update_gate(), env_steps_before + steps
        rounds = 0
        for i in range(env_steps_before + 1, last + 1):
            size = self.replay.size if i == last or not cfg.critic_windows else self._replay_size_before_flush
            rounds += int(i >= cfg.learning_starts and size >= gate)
        return rounds

    def td_target(self, batch: dict[str, Any], next_obs_t: Any = None) -> torch.Tensor:
        """y (B,) = r + gamma^k (1 - terminal) agg_m Qbar_m(s', a') with a' from the target actor's chain,
        k = batch["steps"] (H for windows; r their discounted sum) (n = q_vr_samples of them, each head
        reduced over them by q_vr_reduce, under Q-variance reduction; agg blended by the drift under
        chi2). `next_obs_t`:
        the target critics' input for s' (default `obs_tensor(batch["next_obs"])`); the chain sees
        the raw s'."""
        cfg = self.config
        n = cfg.q_vr_samples if cfg.q_variance_reduction else 1
        next_obs = batch["next_obs"]
        size = num_rows(next_obs)
        with torch.no_grad():
            _, _, chunk = self.sample_chains(self.actor_target, next_obs, repeat=n)
            next_obs_t = self.obs_tensor(next_obs) if next_obs_t is None else next_obs_t
            q = self.critic_values(self.critic_target, next_obs_t, self.critic_action(chunk), n)  # (M, B*n)
            q = q.reshape(q.shape[0], size, n)
            # each head reduced over its n next actions, then the heads aggregated (OGPO critic_loss:
            # reduce_q_over_samples, then aggregate_q_values)
            q = reduce_samples(q, cfg.q_vr_reduce) if n > 1 else q[..., 0]  # (M, B)
            if cfg.chi2 and n == 1 and self.chi2_drift is not None:
                # pessimistic blend driven by the actor's latest mean chain ratio to the slow policy
                # (critic_loss with chi_po_drift): (1 - w) mean_m + w min_m, w = sigmoid(alpha (drift - 1))
                w = torch.sigmoid(torch.as_tensor(cfg.chi2_alpha * (self.chi2_drift - 1.0)))
                q_next = (1.0 - w) * q.mean(0) + w * q.min(0).values
            else:
                q_next = q.mean(0) if cfg.target_agg == "mean" else q.min(0).values
            reward = torch.as_tensor(batch["rewards"], device=self.device)
            discount = cfg.gamma ** torch.as_tensor(batch["steps"], dtype=torch.float32, device=self.device)
            mask = 1.0 - torch.as_tensor(batch["terminals"], device=self.device)
            return reward + discount * mask * q_next

    def critic_update(self, batch: dict[str, Any]) -> dict[str, float]:
        """One TD step of the ensemble on `batch` (a replay sample) and the Polyak update of its targets
        (pixels: s and s' randomly shifted, independently)."""
        obs_t, next_obs_t = self.critic_input(batch["obs"]), self.critic_input(batch["next_obs"])
        y = self.td_target(batch, next_obs_t)
        q = self.critic(obs_t, torch.as_tensor(batch["actions"], device=self.device))
        sq = (q - y).pow(2)
        if "valid" in batch:  # windows in which the episode ended early: no loss (q_helper.compute_td_loss)
            sq = sq * torch.as_tensor(batch["valid"], device=self.device)
        td = sq.mean(1)
        loss = td.sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()),
                                 self.config.tau_critic)
        return {"td_loss": float(td.detach().mean()), "q_data": float(q.detach().mean()), "target_q": float(y.mean())}

    def log_prob_scale(self) -> float:
        """The divisor of chain log-probabilities: (K + 1) * D under `normalize_log_prob` (OGPO's
        pg_helper.compute_flow_log_prob / ogpo.py sample_actions_with_noise count the initial draw x_0 as
        one of K + 1 log-prob terms; it cancels in every ratio, the divisor stays), else 1."""
        return float((self.steps + 1) * self.chunk_dim) if self.config.normalize_log_prob else 1.0

    def actor_losses(self, obs: Obs, success: tuple[Obs, np.ndarray] | None = None,
                     chains: tuple[torch.Tensor, torch.Tensor] | None = None,
                     q: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The actor's loss terms at raw states obs (P rows: (P, o), or a dict for pixels).

        G chains per state are drawn from the target actor (or given: `chains` = (xs (K+1, P*G, D),
        old log-probs (P*G,)), states repeated G times consecutively); their ensemble values come from
        the target critics (or `q` (M, P, G)). `success` = (obs, chunks in [-1, 1] units) for the
        BC term. Returns loss (to minimise), ppo, bc, advantages (P, G), log_ratio (P, G), ratio stats.
        """
        cfg = self.config
        P, G = num_rows(obs), cfg.group_size
        if chains is None:
            xs, logp_old, chunk = self.sample_chains(self.actor_target, obs, repeat=G)
        else:
            xs, logp_old = chains
            with torch.no_grad():
                chunk = chain_action(self.actor_target, xs[-1], self._low, self._high)
        if q is None:
            with torch.no_grad():
                q = self.critic_values(self.critic_target, self.obs_tensor(obs), self.critic_action(chunk), G)
        q = q.reshape(q.shape[0], P, G)
        scale = self.log_prob_scale()
        logp_new = chain_log_prob(self.policy, self._cond(self.policy, obs, G), xs, self.noise)
        log_ratio = ((logp_new - logp_old) / scale).reshape(P, G)
        upper = None
        if cfg.chi2:
            with torch.no_grad():
                logp_slow = chain_log_prob(self.actor_slow, self._cond(self.actor_slow, obs, G), xs, self.noise)
                log_rho = ((logp_new.detach() - logp_slow) / scale).reshape(P, G)
                advantages, upper = chi2_advantages(q, log_rho, cfg.clip_epsilon, cfg.chi2_alpha, cfg.chi2_beta,
                                                    cfg.chi2_q_std_target, cfg.chi2_r_max)
                drift = float(log_rho.exp().mean())
        else:
            advantages = group_advantages(q, cfg.conservative_advantages)
        ppo = clipped_objective(log_ratio, advantages.detach(), cfg.clip_epsilon, upper)
        bc = torch.zeros((), device=self.device)
        if cfg.success_buffer_bc and success is not None:
            s_obs, s_act = success
            chunks = self.env_chunk(torch.as_tensor(s_act, device=self.device))
            bc = self.policy.loss(self.policy_obs(s_obs), chunks, generator=self.generator)
        terms = {"loss": ppo + cfg.bc_coef * bc, "ppo": ppo, "bc": bc, "advantages": advantages,
                 "log_ratio": log_ratio}
        if cfg.chi2:
            terms["chi2_drift"] = drift
        return terms

    def actor_update(self, batch: dict[str, Any]) -> dict[str, float]:
        """One PPO step of the whole generative chain on states of `batch`, then the EMA updates."""
        cfg = self.config
        obs = take_rows(batch["obs"], slice(0, cfg.ppo_batch_size))
        success = self._success_batch(batch) if cfg.success_buffer_bc else None
        terms = self.actor_losses(obs, success)
        if "chi2_drift" in terms:  # the critic's pessimism driver (OGPO _update: chi_po_drift)
            self.chi2_drift = terms["chi2_drift"]
        self.actor_optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_norm = nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
        self.actor_optimizer.step()
        with torch.no_grad():
            params = list(self.policy.parameters())
            torch._foreach_lerp_(list(self.actor_target.parameters()), params, cfg.tau_actor)
            if self.actor_slow is not None:
                torch._foreach_lerp_(list(self.actor_slow.parameters()), params, cfg.chi2_tau_slow)
            ratio = terms["log_ratio"].exp()
            clipped = ((ratio - 1.0).abs() > cfg.clip_epsilon).float().mean()
        return {"actor_loss": float(terms["loss"].detach()), "ppo_loss": float(terms["ppo"].detach()),
                "bc_loss": float(terms["bc"].detach()),
                "adv_abs": float(terms["advantages"].abs().mean()),
                "adv_zero": float((terms["advantages"] == 0).float().mean()),
                "clip_frac": float(clipped), "grad_norm": float(grad_norm),
                "success_buffer": float(self.success.size)}

    @property
    def success_obs(self) -> Obs:
        """Observations of the success buffer's chunks, (N, o) or {key: (N, *shape)} (a view)."""
        return self.success.filled()[0]

    @property
    def success_actions(self) -> np.ndarray:
        """The success buffer's chunks (N, H * d) in [-1, 1] units (a view)."""
        return self.success.filled()[1]

    def _success_batch(self, batch: dict[str, Any]) -> tuple[Obs, np.ndarray]:
        """(obs, chunks) for the BC term: from the success buffer, or the replay batch while it is empty."""
        size = self.success.size
        if size == 0:
            n = min(self.config.success_batch_size, len(batch["actions"]))
            return take_rows(batch["obs"], slice(0, n)), batch["actions"][:n]
        index = self.rng.integers(0, size, self.config.success_batch_size)
        return take_rows(self.success.data["obs"], index), self.success.data["actions"][index]

    # ------------------------------------------------------------------ replay and success buffer
    def _store_chunk(self, obs: Any, action: np.ndarray, reward: float, next_obs: Any, terminated: bool,
                     done: bool, steps: int, info: dict[str, Any]) -> int | None:
        """Remember the chunk for the success buffer; store it as one chunk row, or (`critic_windows`)
        its `steps` primitive transitions, held until the episode ends and then written in order."""
        self._episode_chunks.append((_copy_obs(self.obs_row(obs)), np.array(action, np.float32)))
        if not self.config.critic_windows:
            return super()._store_chunk(obs, action, reward, next_obs, terminated, done, steps, info)
        observations = info.get("chunk_observations")
        if observations is None or len(observations) != steps:
            raise ValueError("OGPO (critic_windows=True): the env's info has no `chunk_observations` of the chunk's "
                             "primitive steps (steergym's ActionChunkWrapper gives them)")
        rewards, rows = info["chunk_rewards"], action.reshape(self.horizon, self.action_dim)
        before = obs
        for j in range(steps):
            last = j == steps - 1
            self._pending.append({"obs": _copy_obs(self.obs_row(before)), "actions": rows[j].copy(),
                                  "rewards": float(rewards[j]), "next_obs": _copy_obs(self.obs_row(observations[j])),
                                  "terminals": float(terminated and last), "dones": float(done and last)})
            before = observations[j]
        self._replay_size_before_flush = self.replay.size
        if done:  # the episode enters the replay, its rows marked successful or not
            success = float(self._episode_success or bool(info.get("is_success", False)))
            for row in self._pending:
                self.replay.add(**row, success=success)
            self._pending = []
        return None

    def _episode_start(self) -> None:
        self._episode_chunks, self._pending = [], []

    def _episode_end(self, success: bool) -> None:
        if success:
            for obs, chunk in self._episode_chunks:
                self.success.add(obs=obs, actions=chunk)
        self._episode_chunks = []

    # ------------------------------------------------------------------------- persistence
    def _modules(self) -> dict[str, nn.Module]:
        modules = {"actor_target": self.actor_target, "critic": self.critic, "critic_target": self.critic_target}
        if self.actor_slow is not None:
            modules["actor_slow"] = self.actor_slow
        return modules

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_optim": self.actor_optimizer, "critic_optim": self.critic_optimizer}

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return self.success.arrays("success")

    def _extra_tensors(self) -> dict[str, torch.Tensor]:
        return {} if self.chi2_drift is None else {"chi2_drift": torch.tensor(self.chi2_drift, dtype=torch.float64)}

    def _restore_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.chi2_drift = float(tensors["chi2_drift"]) if "chi2_drift" in tensors else None

    def _restore_extra_arrays(self, arrays: dict[str, np.ndarray], where: str) -> None:
        if "success/meta" not in arrays:  # checkpoints before the ring: rows oldest first, none overwritten
            size, capacity = len(arrays["success/actions"]), self.success.capacity
            arrays = {**arrays, "success/meta": np.array([size, size % capacity, capacity], np.int64)}
        self.success.restore(arrays, "success", f"{where} (success buffer)")

    @classmethod
    def load(cls, path: str | Any, env: gym.Env | None = None, device: str | torch.device = "cpu") -> "OGPO":
        """Rebuild an agent saved by `save` (the fine-tuned policy, targets, critics, optimisers,
        buffers, generators and counters): training resumes exactly. ValueError for a folder that is
        not an OGPO checkpoint or an env whose spaces differ from the saved policy's."""
        path = Path(path)
        meta, tensors, arrays, policy = cls._read_checkpoint(path)
        if policy is None:
            raise ValueError(f"{path}: not a steergym ogpo checkpoint (no policy/ folder)")
        # checkpoints from before `critic_layer_norm` existed have critics without LayerNorm
        config = OGPOConfig.from_dict({**OLD_CHECKPOINT_DEFAULTS, **meta["config"]})
        agent = cls(env, policy, config, seed=int(meta["seed"]), device=device)
        agent._restore(path, meta, tensors, arrays)
        return agent


def _copy_obs(obs: Any) -> Any:
    """A copy of one observation row (an array, or a dict of arrays)."""
    return {k: np.array(v) for k, v in obs.items()} if isinstance(obs, dict) else np.array(obs)


def _clone(policy, device: torch.device):
    """An independent copy of a GenerativePolicy (same class, config, weights and task binding)."""
    import copy

    twin = type(policy)(policy.observation_space, policy.action_space, copy.deepcopy(policy.config))
    twin.load_state_dict(policy.state_dict())
    twin.task = policy.task
    return twin.to(device)
