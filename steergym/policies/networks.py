"""Torch modules of the generative policies: time embedding, residual MLP denoiser, encoders.

Shapes: B = batch, H = action chunk length, d = action dimension, F = observation feature size.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn


class SinusoidalTimeEmbedding(nn.Module):
    """t (B,) float in [0, K] (or [0, 1]) -> (B, dim) sin/cos features (Transformer / DDPM style)."""

    def __init__(self, dim: int, scale: float = 1.0) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        self.register_buffer("freqs", freqs * scale, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ResidualBlock(nn.Module):
    """x + Linear(Mish(Linear(Mish(x)))): DPPO's pre-activation two-layer residual block."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Mish(), nn.Linear(width, width), nn.Mish(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class DenoiserMLP(nn.Module):
    """(x_t (B, H*d), t (B,), cond (B, F)) -> (B, H*d): epsilon or velocity prediction.

    DPPO's `DiffusionMLP` shape: a time embedding (sinusoidal -> Linear -> Mish -> Linear) is
    concatenated with the flat noisy chunk and the conditioning, then residual Mish blocks and a
    linear head. For sampling, `context` precomputes everything that does not depend on x_t (the
    time and conditioning terms of the first layer), so each sampler step costs one pass over x_t.
    """

    def __init__(self, action_flat: int, cond_dim: int, hidden_dim: int, num_blocks: int,
                 time_dim: int, time_scale: float = 1.0) -> None:
        super().__init__()
        self.action_flat = action_flat
        self.time_embed = nn.Sequential(
            SinusoidalTimeEmbedding(time_dim, time_scale),
            nn.Linear(time_dim, 2 * time_dim),
            nn.Mish(),
            nn.Linear(2 * time_dim, time_dim),
        )
        self.inp = nn.Linear(action_flat + time_dim + cond_dim, hidden_dim)
        self.blocks = nn.Sequential(*[ResidualBlock(hidden_dim) for _ in range(num_blocks)])
        self.out = nn.Sequential(nn.Mish(), nn.Linear(hidden_dim, action_flat))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.inp(torch.cat([x, self.time_embed(t), cond], dim=-1))
        return self.out(self.blocks(h))

    def context(self, times: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """First-layer terms of the sampler's times (S,) and cond (B, F): (S, B, hidden)."""
        w = self.inp.weight
        a, tdim = self.action_flat, self.time_embed[-1].out_features
        time_term = self.time_embed(times) @ w[:, a:a + tdim].T  # (S, hidden)
        cond_term = cond @ w[:, a + tdim:].T + self.inp.bias  # (B, hidden)
        return time_term[:, None, :] + cond_term[None, :, :]

    def step(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Same as forward(x, t_k, cond) given context[k] (B, hidden) from `context`."""
        h = torch.addmm(context, x, self.inp.weight[:, : self.action_flat].T)
        return self.out(self.blocks(h))


class ConvEncoder(nn.Module):
    """uint8 image (B, H, W, C) -> (B, features): stride-2 convs, global average pool, Linear.

    Small on purpose (CPU): three 3x3 stride-2 convs with GroupNorm (PTR finds group norm matters
    for robot images) and ReLU. Pixels are scaled to [0, 1] inside.
    """

    def __init__(self, image_shape: tuple[int, ...], channels: tuple[int, ...], features: int) -> None:
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"ConvEncoder: expected an (H, W, C) image space, got shape {image_shape}")
        layers: list[nn.Module] = []
        in_ch = int(image_shape[2])
        for ch in channels:
            layers += [nn.Conv2d(in_ch, ch, 3, stride=2, padding=1), nn.GroupNorm(min(8, ch), ch), nn.ReLU()]
            in_ch = ch
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(in_ch, features)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float() / 255.0
        return self.head(self.convs(x).mean(dim=(2, 3)))


def is_image_space(space: gym.Space) -> bool:
    """An (H, W, C) uint8 Box with 1, 3 or 4 channels."""
    return (
        isinstance(space, gym.spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and space.shape[-1] in (1, 3, 4)
    )


def is_vector_space(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 1 and np.issubdtype(space.dtype, np.floating)


class ObservationEncoder(nn.Module):
    """Observation (already normalised vectors, raw uint8 images) -> features (B, F).

    Supports a 1-D float Box, an image Box, or a Dict of those (keys in sorted order). Vectors pass
    through unchanged (they are normalised by the policy); images go through a `ConvEncoder`.
    """

    def __init__(self, space: gym.Space, conv_channels: tuple[int, ...], image_features: int) -> None:
        super().__init__()
        subspaces = dict(space.spaces) if isinstance(space, gym.spaces.Dict) else {"": space}
        self.keys = sorted(subspaces)
        self.image_keys = [k for k in self.keys if is_image_space(subspaces[k])]
        self.vector_keys = [k for k in self.keys if is_vector_space(subspaces[k])]
        unsupported = [k for k in self.keys if k not in self.image_keys and k not in self.vector_keys]
        if unsupported:
            what = ", ".join(f"{k or 'observation'}: {subspaces[k]}" for k in unsupported)
            raise ValueError(
                f"unsupported observation space ({what}); generative policies take 1-D float Boxes, "
                "(H, W, C) uint8 image Boxes, or a Dict of those"
            )
        self.encoders = nn.ModuleDict(
            {_module_key(k): ConvEncoder(subspaces[k].shape, conv_channels, image_features) for k in self.image_keys}
        )
        self.out_dim = sum(int(subspaces[k].shape[0]) for k in self.vector_keys) + image_features * len(
            self.image_keys
        )

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for k in self.keys:
            if k in self.image_keys:
                parts.append(self.encoders[_module_key(k)](obs[k]))
            else:
                parts.append(obs[k].float())
        return torch.cat(parts, dim=-1)


def _module_key(key: str) -> str:
    return "image" if key == "" else f"image_{key}"
