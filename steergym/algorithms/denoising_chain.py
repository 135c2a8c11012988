"""The denoising chain of a diffusion or flow policy as a stochastic inner MDP (OGPO, DPPO).

A `GenerativePolicy` maps initial noise x_0 ~ N(0, I) to an action chunk through K deterministic
sampler steps (`policy._generate`). Policy-gradient fine-tuning needs a *stochastic* chain whose
every step has a Gaussian density:

    x_{k+1} = mu_theta(x_k, k, s) + std_k * z,   z ~ N(0, I) clipped to +-noise_clip
    log pi_theta(x_{k+1} | x_k, s) = log N(x_{k+1}; mu_theta(x_k, k, s), std_k^2 I)

The chain's log-probability is the sum of its K step log-probabilities (the initial N(0, I) term is
the same under every policy and cancels in ratios, so it is left out). Everything here works on the
policy's *normalised* flat chunks (B, H*d); `chain_action` maps the chain's last state to the chunk
in env units. The std schedule has no parameters, so the ratio of two policies on one chain depends
only on their means.

Flow policies ("SDE-fied flow", OGPO pg_helper.sample_flow_actions_sde; reference/algorithms.md 5.3):
t_k = k / K, dt = 1 / K, v = v_theta(x_k, t_k, s);
    std_k = sigma * sqrt(1 - t_k)  (tapered; `taper=False`: std_k = sigma)
    mu    = clip(x_k + dt * (v + (std_k^2 / 2) * score), +-clip),  score = (t_k v - x_k) / (1 - t_k)
as OGPO's pg_helper.sample_flow_actions_sde (drift = v + sde_drift_correction, mean = x + drift * dt:
the correction is scaled by dt as well; with tapered noise it is dt (sigma^2 / 2)(t_k v - x_k)).
`ChainNoise.correction_dt=False` keeps steergym's earlier scaling by the per-step variance alone,
x_k + v dt + (std_k^2 / 2) score (checkpoints from before the field). Intermediate means are
clipped as OGPO does.

Diffusion policies (DDIM with eta > 0, as DPPO fine-tunes DDIM policies; reference 5.7): at the
policy's DDIM timesteps t -> t' (the last step goes to abar' = 1), with x0_hat clipped and epsilon
recomputed exactly as `DiffusionPolicy._generate` does,
    sigma_eta = eta * sqrt((1 - abar') / (1 - abar)) * sqrt(1 - abar / abar')
    mu        = sqrt(abar') x0_hat + sqrt(max(1 - abar' - sigma_eta^2, 0)) eps_hat
    std       = max(sigma_eta, min_std)     (DPPO's min_sampling_denoising_std floor, 0.1)

`stochastic=False` drops the noise and returns the chain of means; for diffusion with eta = 0 that
is exactly the deterministic sampler `policy._generate` (tests check it); for flow it still carries
the score correction. Evaluation therefore calls the policy's own `_generate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class ChainNoise:
    """Noise of the stochastic chain. Sources in `OGPOConfig`, which builds one from its fields."""

    flow_sigma: float = 0.05  # OGPO scripts/ogpo/square.sh constant_noise_std (tapered)
    flow_taper: bool = True  # sigma * sqrt(1 - t) (scripts); False: constant sigma
    diffusion_eta: float = 1.0  # DPPO fine-tuning of DDIM policies: eta = 1
    diffusion_min_std: float = 0.1  # DPPO min_sampling_denoising_std
    noise_clip: float = 3.0  # OGPO randn_clip_value: z clipped to +-3
    clip_intermediate: bool = True  # OGPO clip_intermediate_actions (flow means clipped to +-denoised_clip)
    # code: pg_helper.sample_flow_actions_sde, mean = x + (v + (std^2 / 2) score) * dt; False: the score term
    # not multiplied by dt (steergym before this field)
    correction_dt: bool = True

    def __post_init__(self) -> None:
        for name in ("flow_sigma", "diffusion_min_std", "noise_clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"ChainNoise.{name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(self.diffusion_eta) and self.diffusion_eta >= 0):
            raise ValueError(f"ChainNoise.diffusion_eta must be >= 0, got {self.diffusion_eta!r}")


def num_steps(policy) -> int:
    """K, the number of denoising steps of `policy`'s sampler."""
    if policy.kind == "diffusion":
        return len(policy.timesteps)
    return int(policy.config.sample_steps)


def _times(policy, device) -> torch.Tensor:
    if policy.kind == "diffusion":
        return torch.tensor(policy.timesteps, dtype=torch.float32, device=device)
    steps = int(policy.config.sample_steps)
    return torch.arange(steps, dtype=torch.float32, device=device) / steps


def _step_mean_std(policy, k: int, x: torch.Tensor, context_k: torch.Tensor,
                   noise: ChainNoise) -> tuple[torch.Tensor, float]:
    """Mean (B, D) and std (a float) of step k from x_k."""
    clip = float(policy.config.denoised_clip)
    if policy.kind == "diffusion":
        sa, s1a, sa_next, s1a_next = policy._ddim_coefs[k]
        abar, abar_next = sa * sa, sa_next * sa_next
        eps = policy.denoiser.step(x, context_k)
        x0_hat = ((x - s1a * eps) / sa).clamp(-clip, clip)
        eps = (x - sa * x0_hat) / s1a
        if k == len(policy._ddim_coefs) - 1:
            return x0_hat, float(noise.diffusion_min_std)
        sigma = noise.diffusion_eta * math.sqrt((1.0 - abar_next) / (1.0 - abar)) * math.sqrt(
            max(1.0 - abar / abar_next, 0.0))
        direction = math.sqrt(max(1.0 - abar_next - sigma * sigma, 0.0))
        return sa_next * x0_hat + direction * eps, max(sigma, float(noise.diffusion_min_std))
    if policy.kind == "flow":
        steps = int(policy.config.sample_steps)
        t, dt = k / steps, 1.0 / steps
        std = noise.flow_sigma * (math.sqrt(1.0 - t) if noise.flow_taper else 1.0)
        v = policy.denoiser.step(x, context_k)
        correction = 0.5 * std * std * (t * v - x) / (1.0 - t)
        mean = x + dt * (v + correction) if noise.correction_dt else x + dt * v + correction
        if noise.clip_intermediate:
            mean = mean.clamp(-clip, clip)
        return mean, std
    raise ValueError(f"denoising chain: unknown policy kind {policy.kind!r} (expected 'diffusion' or 'flow')")


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """log N(x; mean, std^2 I) summed over the last axis: (B, D) -> (B,)."""
    z = (x - mean) / std
    return (-0.5 * z.pow(2) - math.log(std) - LOG_SQRT_2PI).sum(-1)


def sample_chain(policy, cond: torch.Tensor, x_init: torch.Tensor, noise: ChainNoise,
                 generator: torch.Generator | None = None,
                 stochastic: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the chain from x_init (B, D) under conditioning cond (B, F).

    Returns (xs, log_prob): xs (K+1, B, D) every state x_0 (= x_init) .. x_K, and the chain's
    log-probability (B,) under `policy` (zeros when `stochastic=False`). Gradients flow if the
    caller enables them; samplers call it under `torch.no_grad()`.
    """
    times = _times(policy, cond.device)
    context = policy.denoiser.context(times, cond)
    xs, log_prob, x = [x_init], torch.zeros(x_init.shape[0], device=x_init.device), x_init
    for k in range(len(times)):
        mean, std = _step_mean_std(policy, k, x, context[k], noise)
        if stochastic:
            z = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = z.clamp(-noise.noise_clip, noise.noise_clip)
            x = mean + std * z
            log_prob = log_prob + (-0.5 * z.pow(2) - math.log(std) - LOG_SQRT_2PI).sum(-1)
        else:
            x = mean
        xs.append(x)
    return torch.stack(xs), log_prob


def chain_log_prob(policy, cond: torch.Tensor, xs: torch.Tensor, noise: ChainNoise,
                   per_step: bool = False) -> torch.Tensor:
    """log pi(x_1..x_K | x_0, s) (B,) of a given chain xs (K+1, B, D) under `policy` (differentiable);
    `per_step=True` returns the (K, B) step terms instead of their sum."""
    times = _times(policy, cond.device)
    if xs.shape[0] != len(times) + 1:
        raise ValueError(f"chain_log_prob: the chain has {xs.shape[0] - 1} steps, the policy's sampler "
                         f"{len(times)}")
    context = policy.denoiser.context(times, cond)
    terms = []
    for k in range(len(times)):
        mean, std = _step_mean_std(policy, k, xs[k], context[k], noise)
        terms.append(gaussian_log_prob(xs[k + 1], mean, std))
    stacked = torch.stack(terms)
    return stacked if per_step else stacked.sum(0)


def chain_action(policy, x_last: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The chunk in env units (B, H, d) of the chain's last state (B, H*d): clipped to
    +-denoised_clip in normalised units (the sampler's final clip), unnormalised, clipped to the
    action bounds `low`/`high` (d,)."""
    clip = float(policy.config.denoised_clip)
    batch = x_last.shape[0]
    chunk = policy.action_normalizer.unnormalize(x_last.clamp(-clip, clip).reshape(batch, *policy.noise_shape))
    return torch.maximum(torch.minimum(chunk, high), low)
