"""Flow-matching policy: straight (rectified / CondOT) paths, Euler ODE sampling.

Convention as in OGPO's flow policies: t runs from 0 (noise x_0 = w ~ N(0, I)) to 1 (data x_1).
Training (Lipman et al. 2023; Liu et al. 2023): t ~ U[0, 1), x_t = (1 - t) w + t x1,
loss = ||(x1 - w) - v_theta(x_t, t, s)||^2. Sampling: `config.sample_steps` Euler steps of size
1 / steps; the result is clipped to +-`denoised_clip` (normalised units). Deterministic given w.
"""

from __future__ import annotations

import torch

from steergym.policies.checkpoint import register_policy_class
from steergym.policies.generative import GenerativePolicy


@register_policy_class
class FlowPolicy(GenerativePolicy):
    """Flow-matching action-chunk policy (see module docstring)."""

    kind = "flow"
    time_scale = 100.0  # t in [0, 1] -> [0, 100] before the sinusoidal embedding

    def _training_loss(self, x0, cond, generator):
        batch = x0.shape[0]
        t = torch.rand((batch,), generator=generator).to(x0.device)
        w = torch.randn(x0.shape, generator=generator).to(x0.device)
        x_t = (1 - t[:, None]) * w + t[:, None] * x0
        return torch.nn.functional.mse_loss(self.denoiser(x_t, t, cond), x0 - w)

    def _generate(self, x_init, cond):
        steps = self.config.sample_steps
        x, dt = x_init, 1.0 / steps
        context = self.denoiser.context(torch.arange(steps, dtype=torch.float32, device=cond.device) * dt, cond)
        for k in range(steps):
            x = x + dt * self.denoiser.step(x, context[k])
        clip = self.config.denoised_clip
        return x.clamp(-clip, clip)
