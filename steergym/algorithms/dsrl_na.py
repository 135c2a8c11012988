"""DSRL-NA: noise-aliased diffusion steering, SAC in the latent-noise space of a frozen policy.

    env = NoiseActionWrapper(gymnasium.make("steergym/WidowXLiftCube-v0"), load_shipped("widowx-lift-flow"))
    agent = DSRLNA(env, config=DSRLNAConfig(), seed=0)
    agent.learn(100_000)
    noise, _ = agent.predict(obs)            # the env decodes it: policy.sample(obs, noise)

Wagenmaker, Nakamoto et al. 2025 (DSRL), the `DSRL` class of the authors' SB3 fork
(reference/algorithms.md section 4.4). The base policy pi_dp(s, w) is a black box, only called
through `sample(obs, noise)`; the agent acts through a `NoiseActionWrapper` and learns from the
*executed action chunks* in its `info`. After `learning_starts` warm-up chunks with w ~ N(0, I),
one update round per `train_freq` agent steps (SB3's train_freq = 1 vec-env step of DSRL's 4 envs):

  utd times:
    Q^A (twin, on flat action chunks in [-1, 1]):
        y = r + gamma (1 - terminal) (min_i Qbar^A_i(s', pi_dp(s', w')) - alpha log pi^W(w'|s')),
        w' ~ pi^W(.|s');  L = sum_i 1/2 MSE(Q^A_i(s, a), y);  Polyak targets (tau)
    actor pi^W(w|s) = noise_scale * tanh(N(mu, sigma)):  L = mean(alpha log pi^W(w|s) - min_i Q^W_i(s, w))
    temperature:  L = -log alpha * mean(log pi^W + target_entropy)
  distill_steps times (fresh replay states each):
    Q^W (twin, no target):  w ~ N(0, I) (unclipped), a = pi_dp(s, w),
        L = sum_i 1/2 MSE(Q^W_i(s, w), Q^A_i(s, a))        (the "distillation target", no gradient)

Because Q^A sees actions, it can learn from any executed chunk (also off-manifold ones), and Q^W,
fitted on the whole Gaussian noise distribution each step, gives the actor a landscape over noises
it never tried in the env ("noise aliasing": many w decode to similar a).

The discount is gamma per agent step (per chunk), as DSRL. Networks: `FusedCritics` and
`TanhGaussianActor` from calql.py (ReLU MLPs; DSRL uses Tanh + LayerNorm 3 x 2048 on a GPU;
`critic_layer_norm` adds the LayerNorm to the critics).

Pixel observations (a uint8 image Box, or a Dict of images and vectors such as WidowX
`obs_mode="pixels_state"`; chunk_rl.py): Q^A, Q^W and the noise actor each get their own conv
`PixelEncoder` (Cal-QL's `PixelCritics` / `PixelActor`; the target Q^A its own encoder copy), the
actor loss reaches only the actor's encoder, and the SAC and distillation batches get DrQ random
shifts (`image_augmentation`). The base policy always sees the raw observations.
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

from steergym.algorithms.chunk_rl import ChunkTrainer, Obs, _primitive, num_rows
from steergym.algorithms.encoders import PixelEncoderConfig
from steergym.algorithms.networks import PixelActor, TanhGaussianActor, tanh_gaussian_sample
from steergym.policies.config import config_from_dict
from steergym.wrappers.chunk import check_generative
from steergym.wrappers.noise import NoiseActionWrapper

FORMAT = "steergym.dsrl-na-v1"


@dataclass
class DSRLNAConfig(PixelEncoderConfig):
    """DSRL-NA hyper-parameters. Sources: ajwagen/dsrl configs and the DSRL class of its SB3 fork
    (reference/algorithms.md sections 4.2-4.4); "ours" where a CPU or this library needs its own."""

    gamma: float = 0.99  # DSRL robomimic configs (per chunk)
    learning_rate: float = 3e-4  # configs: actor, both critic families and alpha share it
    batch_size: int = 256  # configs
    tau: float = 0.005  # configs / SB3
    utd: int = 20  # configs utd (can/square; lift 30): Q^A + actor steps per update round
    distill_steps: int = 10  # noise_critic_grad_steps: Q^W steps per update round
    # transitions (chunks) between update rounds: DSRL steps n_envs = 4 envs and SB3's train_freq = 1 vec-env
    # step calls train(utd) once per 4 transitions (OffPolicyAlgorithm.learn; reference/algorithms.md 4.2-4.4);
    # 1 = a round after every transition (steergym before the field; what checkpoints without it load with)
    train_freq: int = 4
    # initial log-std of the noise actor: 0 (std ~ 1) as the reference's actors (SB3 SAC's log_std Linear head;
    # OGPO_public networks/actors.Actor, log_std Dense with init scale 1e-2); -1 (std ~ 0.37) is JaxCQL's, which
    # steergym used before the field (a loaded checkpoint restores its learned offset either way)
    actor_log_std_init: float = 0.0
    hidden: tuple[int, ...] = (2048, 2048, 2048)  # configs layer_size 2048 x num_layers 3 (robomimic)
    n_critics: int = 2  # configs
    critic_layer_norm: bool = False  # ours: off (ReLU MLPs as before); DSRL's own networks use LayerNorm
    backup_combine: str = "min"  # critic_backup_combine_type (alternative "mean")
    target_entropy: float = 0.0  # configs target_ent
    alpha_init: float = 1.0  # SB3 ent_coef "auto" starts at 1.0
    noise_scale: float = 1.0  # NA: the actor's tanh output is used unscaled, w in [-1, 1] (dsrl issue #6)
    noise_bound: float = 1.5  # b of the NoiseActionWrapper built around a bare env (clips warm-up noise)
    learning_starts: int = 1501  # init_rollout_steps (can/lift): warm-up chunks with w ~ N(0, I)
    buffer_size: int = 1_000_000  # DSRL: 2e7, more than any run here fills
    normalize_observations: bool = True  # ours: critics and actor see the base policy's standardised states
    log_every: int = 1000  # ours: updates between progress rows

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        self.check_encoder("DSRLNAConfig")
        for name in ("batch_size", "utd", "distill_steps", "n_critics", "buffer_size", "log_every", "train_freq"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"DSRLNAConfig.{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.learning_starts, bool) or not isinstance(self.learning_starts, int) or self.learning_starts < 0:
            raise ValueError(f"DSRLNAConfig.learning_starts must be an integer >= 0, got {self.learning_starts!r}")
        for name in ("learning_rate", "alpha_init", "noise_scale", "noise_bound"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"DSRLNAConfig.{name} must be a finite number > 0, got {value!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"DSRLNAConfig.gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"DSRLNAConfig.tau must be in (0, 1], got {self.tau}")
        if self.backup_combine not in ("min", "mean"):
            raise ValueError(f"DSRLNAConfig.backup_combine must be 'min' or 'mean', got {self.backup_combine!r}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"DSRLNAConfig.hidden must be positive widths, got {self.hidden}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("hidden", "encoder_channels", "encoder_strides"):
            data[name] = list(getattr(self, name))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DSRLNAConfig":
        return config_from_dict(cls, data)


class DSRLNA(ChunkTrainer):
    """DSRL-NA on a `NoiseActionWrapper` (or a bare env plus `policy`, wrapped here), flat Box or pixel
    observations (an image Box, or a Dict of images and vectors).

    Args:
        env: a `NoiseActionWrapper` around the task (its policy is the base policy), or the task env
            itself with `policy=`; None for an agent that only predicts.
        policy: the frozen generative base policy (anything with `sample(obs, noise)`, `noise_shape`
            and spaces, e.g. a shipped DiffusionPolicy / FlowPolicy); defaults to `env.policy`.
        config: `DSRLNAConfig`.
        seed: seeds the networks' init, the sampling, the batch order and training resets.

    Actions: `predict` returns noise w (H*d,) in [-noise_scale, noise_scale] for the noise env.
    """

    algorithm = "dsrl-na"
    FORMAT = FORMAT

    def __init__(self, env: gym.Env | None, policy: Any = None, config: DSRLNAConfig | None = None,
                 seed: int = 0, device: str | torch.device = "cpu") -> None:
        config = config or DSRLNAConfig()
        if not isinstance(config, DSRLNAConfig):
            raise ValueError(f"DSRLNA: config must be a DSRLNAConfig, got {type(config).__name__}")
        if policy is None:
            policy = getattr(env, "policy", None) if isinstance(env, NoiseActionWrapper) else None
            if policy is None:
                raise ValueError("DSRLNA: pass the base policy (policy=) or a NoiseActionWrapper env that holds it")
        check_generative("DSRLNA", policy)
        self.policy = policy
        policy = self._setup_common(env, policy, config, seed, device, "DSRLNA")
        self.policy = policy
        d = self.chunk_dim
        critic_shape = (config.hidden, config.n_critics, config.critic_layer_norm)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            if self._layout is None:
                self.actor = TanhGaussianActor(self.obs_dim, d, config.hidden,
                                               log_std_init=config.actor_log_std_init).to(self.device)
            else:  # its own encoder (PTR's encodersep), as Cal-QL's pixel actor
                encoder = self.config.make_encoder(self._layout)
                head = TanhGaussianActor(encoder.out_dim, d, config.hidden, log_std_init=config.actor_log_std_init)
                self.actor = PixelActor(encoder, head).to(self.device)
            self.critic_a = self.make_critics(*critic_shape)
            self.critic_w = self.make_critics(*critic_shape)
        self.critic_a_target = self.target_critics(self.critic_a, *critic_shape)
        self.log_alpha = torch.tensor(math.log(config.alpha_init), device=self.device, requires_grad=True)
        lr = config.learning_rate
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_a_optimizer = torch.optim.Adam(self.critic_a.parameters(), lr=lr)
        self.critic_w_optimizer = torch.optim.Adam(self.critic_w.parameters(), lr=lr)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=lr)
        self._log_scale = d * math.log(config.noise_scale)  # log-density change of w = scale * tanh(u)

    # ------------------------------------------------------------------------- the env
    def _wrap_env(self, env: gym.Env, policy: Any) -> gym.Env:
        if isinstance(env, NoiseActionWrapper):
            if tuple(env.noise_shape) != tuple(int(n) for n in policy.noise_shape):
                raise ValueError(f"DSRLNA: the env's noise shape {env.noise_shape} differs from the policy's "
                                 f"{policy.noise_shape}")
            return env
        return NoiseActionWrapper(_primitive(env), policy, self.config.noise_bound)

    def _executed_chunk(self, action: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        chunk = np.asarray(info["chunk"], dtype=np.float32)  # the decoded chunk, clipped to the bounds
        steps = int(info["steps"])
        executed = np.asarray(info["executed_actions"], dtype=np.float32)[:steps]
        if not np.allclose(executed, np.clip(chunk[:steps], self.primitive_action_space.low,
                                             self.primitive_action_space.high), atol=1e-5):
            raise RuntimeError("DSRLNA: the env's executed actions differ from its decoded chunk")
        return np.clip(chunk, self.primitive_action_space.low, self.primitive_action_space.high)

    # ----------------------------------------------------------------------------- acting
    def noise_sample(self, obs: Any, deterministic: bool = False,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(w (B, H*d), log pi^W(w|s) (B,)) at standardised states (`obs_tensor`); reparameterised."""
        mean, log_std = self.actor(obs)
        if deterministic:
            return self.config.noise_scale * torch.tanh(mean), torch.zeros(mean.shape[0], device=self.device)
        w, logp = tanh_gaussian_sample(mean, log_std, None, generator or self.generator)
        return self.config.noise_scale * w, logp - self._log_scale

    def _act(self, obs: Any) -> np.ndarray:
        with torch.no_grad():
            if self.agent_steps < self.config.learning_starts:  # warm-up: the base policy, w ~ N(0, I)
                w = torch.randn((1, self.chunk_dim), generator=self.generator, device=self.device)
            else:
                w, _ = self.noise_sample(self.obs_tensor(self.single_batch(obs)))
        return w[0].cpu().numpy()

    def _predict_actions(self, obs: Obs, deterministic: bool) -> torch.Tensor:
        """Noise (N, H*d): tanh(mean) scaled when deterministic, else a sample (eval generator)."""
        with torch.no_grad():
            return self.noise_sample(self.obs_tensor(obs), deterministic, self.eval_generator)[0]

    def decode(self, obs: Obs, noise: torch.Tensor) -> torch.Tensor:
        """pi_dp(s, w) as critic actions: raw obs (B rows), noise (B, H*d) -> (B, H*d) in [-1, 1]."""
        chunk = np.asarray(self.policy.sample(self.policy_obs(obs), noise.detach().cpu().numpy()))
        return self.critic_action(torch.as_tensor(chunk, dtype=torch.float32, device=self.device))

    # ------------------------------------------------------------------------ the updates
    def _update_rounds(self, env_steps_before: int, steps: int) -> int:
        """One round (utd SAC steps, then distill_steps) after every `train_freq`-th transition once more
        than `learning_starts` were collected, as SB3's learn: train when num_timesteps > learning_starts,
        num_timesteps counting the transitions of all n_envs = train_freq envs."""
        cfg = self.config
        return int(self.agent_steps > cfg.learning_starts and self.agent_steps % cfg.train_freq == 0)

    def _update(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for _ in range(self.config.utd):
            metrics.update(self.sac_update(self.replay.sample(self.rng, self.config.batch_size)))
        for _ in range(self.config.distill_steps):
            metrics.update(self.distill_update(self.replay.sample(self.rng, self.config.batch_size)["obs"]))
        return metrics

    def _combine(self, q: torch.Tensor) -> torch.Tensor:
        return q.min(0).values if self.config.backup_combine == "min" else q.mean(0)

    def sac_update(self, batch: dict[str, Any]) -> dict[str, float]:
        """One step of Q^A (TD through the decoded next noise), the noise actor and the temperature
        (pixels: s and s' randomly shifted, independently; the base policy decodes the raw s')."""
        cfg = self.config
        obs, next_obs = self.critic_input(batch["obs"]), self.critic_input(batch["next_obs"])
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            w_next, logp_next = self.noise_sample(next_obs)
            q_next = self._combine(self.critic_a_target(next_obs, self.decode(batch["next_obs"], w_next)))
            reward = torch.as_tensor(batch["rewards"], device=self.device)
            mask = 1.0 - torch.as_tensor(batch["terminals"], device=self.device)
            y = reward + cfg.gamma * mask * (q_next - alpha * logp_next)
        q = self.critic_a(obs, torch.as_tensor(batch["actions"], device=self.device))
        critic_loss = 0.5 * (q - y).pow(2).mean(1).sum()
        w, logp = self.noise_sample(obs)
        actor_loss = (alpha * logp - self._combine(self.critic_w(obs, w, detach=True))).mean()
        alpha_loss = -(self.log_alpha * (logp.detach() + cfg.target_entropy)).mean()
        optimizers = (self.critic_a_optimizer, self.actor_optimizer, self.alpha_optimizer)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        (critic_loss + actor_loss + alpha_loss).backward()
        for opt in optimizers:
            opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.critic_a_target.parameters()), list(self.critic_a.parameters()), cfg.tau)
        return {"critic_a_loss": float(critic_loss.detach()), "actor_loss": float(actor_loss.detach()),
                "alpha": float(alpha), "log_pi": float(logp.detach().mean()), "q_a": float(q.detach().mean())}

    def distillation_target(self, obs: Obs, noise: torch.Tensor, obs_t: Any = None) -> torch.Tensor:
        """Q^A_i(s, pi_dp(s, w)) (n_critics, B), no gradient: what Q^W_i(s, w) is fitted to. `obs` raw
        (decoded by the base policy); `obs_t` the critics' input (default `obs_tensor(obs)`)."""
        with torch.no_grad():
            return self.critic_a(self.obs_tensor(obs) if obs_t is None else obs_t, self.decode(obs, noise))

    def distill_update(self, obs: Obs) -> dict[str, float]:
        """One step of Q^W towards Q^A at the decoded chunks of fresh Gaussian noise (unclipped);
        pixels: both critics see the same random shift of the images."""
        noise = torch.randn((num_rows(obs), self.chunk_dim), generator=self.generator, device=self.device)
        obs_t = self.critic_input(obs)
        target = self.distillation_target(obs, noise, obs_t)
        pred = self.critic_w(obs_t, noise)
        loss = 0.5 * (pred - target).pow(2).mean(1).sum()
        self.critic_w_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_w_optimizer.step()
        return {"distill_loss": float(loss.detach()), "q_w": float(pred.detach().mean())}

    # ------------------------------------------------------------------------- persistence
    def _modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic_a": self.critic_a, "critic_a_target": self.critic_a_target,
                "critic_w": self.critic_w}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_optim": self.actor_optimizer, "critic_a_optim": self.critic_a_optimizer,
                "critic_w_optim": self.critic_w_optimizer, "alpha_optim": self.alpha_optimizer}

    def _extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"log_alpha": self.log_alpha.detach().cpu().clone()}

    def _restore_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.log_alpha.copy_(tensors["log_alpha"])

    @classmethod
    def load(cls, path: str | Any, env: gym.Env | None = None, policy: Any = None,
             device: str | torch.device = "cpu") -> "DSRLNA":
        """Rebuild an agent saved by `save`; training resumes exactly. The base policy comes from the
        checkpoint's policy/ folder (steergym generative policies), else from `policy=` or the env."""
        path = Path(path)
        meta, tensors, arrays, saved_policy = cls._read_checkpoint(path)
        policy = policy if policy is not None else saved_policy
        # (checkpoints from before `critic_layer_norm` existed: the default, False, is what they had; before
        # `train_freq`: a round after every transition)
        config = DSRLNAConfig.from_dict({"train_freq": 1, **meta["config"]})
        agent = cls(env, policy, config, seed=int(meta["seed"]), device=device)
        agent._restore(path, meta, tensors, arrays)
        return agent
