"""Pixel observations for the Q-learning trainers: which observation spaces are images, checking
observations against them, PTR's small conv encoder, and DrQ's random-shift augmentation.

    layout = observation_layout(env.observation_space)    # {"pixels": Box(uint8 H W C), "state": Box(d)}
    encoder = PixelEncoder(layout)                        # dict of (B, ...) tensors -> (B, encoder.out_dim)
    batch, single = check_pixel_obs(obs, layout, env.observation_space, "obs", "Owner")  # {key: (B, ...)}

The encoder follows PTR (Kumar et al. 2023, reference/algorithms.md section 2.3) at CPU size: conv
layers each followed by GroupNorm and ReLU (PTR: ResNet-34 with `encoder_norm group`), then PTR's
learned spatial embeddings instead of global pooling (`use_spatial_learned_embeddings 1`), then a
Dense bottleneck to `latent_dim`. Vector keys (proprioception, a task one-hot) are standardised by
the trainer and concatenated after the image features, as PTR feeds state and task features next
to the image embedding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

IMAGE_KEY = "pixels"  # the key a bare image Box observation gets inside the trainers
SHIFT_PAD = 4  # DrQ's random shift: pad 4 pixels, crop back


def is_image_space(space: gym.Space) -> bool:
    """True for a uint8 Box of shape (H, W, C)."""
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8


def observation_layout(space: gym.Space, owner: str = "observation_layout") -> dict[str, gym.spaces.Box] | None:
    """None for a flat 1-D Box; else {key: Box} in sorted key order, images uint8 (H, W, C) and
    vectors 1-D. A bare image Box gets the key IMAGE_KEY. ValueError naming the offending key."""
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return None
    if isinstance(space, gym.spaces.Box) and is_image_space(space):
        return {IMAGE_KEY: space}
    if not isinstance(space, gym.spaces.Dict):
        raise ValueError(f"{owner}: needs a flat (1-D) Box, a uint8 (H, W, C) image Box or a Dict of them, "
                         f"got {space}")
    layout = {}
    for key in sorted(space.spaces):
        sub = space.spaces[key]
        if isinstance(sub, gym.spaces.Box) and len(sub.shape) == 1:
            layout[key] = sub
        elif isinstance(sub, gym.spaces.Box) and len(sub.shape) == 3 and sub.dtype != np.uint8:
            raise ValueError(f"{owner}: Dict key {key!r} is an image Box of dtype {sub.dtype}; images must be "
                             f"uint8 (H, W, C), got {sub}")
        elif is_image_space(sub):
            layout[key] = sub
        else:
            raise ValueError(f"{owner}: Dict key {key!r} must be a uint8 (H, W, C) image Box or a 1-D Box, "
                             f"got {sub}")
    if not any(is_image_space(s) for s in layout.values()):
        raise ValueError(f"{owner}: the Dict observation space has no image key ({space}); use flat Box "
                         "observations (gymnasium.wrappers.FlattenObservation) for vectors only")
    return layout


def check_pixel_obs(value: Any, layout: Mapping[str, gym.spaces.Box], space: gym.Space, label: str, owner: str,
                    size: int | None = None) -> tuple[dict[str, np.ndarray], bool]:
    """Pixel observations (an image or a dict, as the env gives them) as ({key: array}, single):
    images uint8 (N, H, W, C) as given, vectors float32 (N, d), keys those of `layout` (a bare
    image Box's observation gets IMAGE_KEY). `size` None: one observation or a batch, whichever they
    are (a single one gets a batch axis; `single` says which); else a batch of `size` rows.
    ValueError naming `owner`, the key and its shape or dtype, for anything else."""
    bare_image = isinstance(space, gym.spaces.Box)

    def name(key: str) -> str:
        return label if bare_image else f"{label}[{key!r}]"

    if bare_image:
        if isinstance(value, dict):
            raise ValueError(f"{owner}: {label} is a dict with keys {sorted(value)}, but this agent's "
                             f"observations are images {space}")
        value = {IMAGE_KEY: value}
    elif not isinstance(value, dict):
        raise ValueError(f"{owner}: {label} must be a dict with keys {list(layout)} (Dict observations "
                         f"{space}), got {type(value).__name__} of shape {np.shape(value)}")
    missing, extra = [k for k in layout if k not in value], sorted(set(value) - set(layout))
    if missing or extra:
        raise ValueError(f"{owner}: {label} " + (f"misses the key(s) {missing}" if missing else
                                                 f"has key(s) {extra} not in the observation space")
                         + f"; expected keys {list(layout)}")
    arrays, single = {k: np.asarray(value[k]) for k in layout}, False
    if size is None:  # one observation or a batch: decided by the first key's rank
        first = next(iter(layout))
        rank = arrays[first].ndim - len(layout[first].shape)
        if rank not in (0, 1):
            raise ValueError(f"{owner}: {name(first)} has shape {arrays[first].shape}, expected "
                             f"{layout[first].shape} or (N, *{layout[first].shape})")
        single, size = rank == 0, 1 if rank == 0 else arrays[first].shape[0]
    out = {}
    for k, sub in layout.items():
        shape = tuple(sub.shape) if single else (size, *sub.shape)
        if arrays[k].shape != shape:
            raise ValueError(f"{owner}: {name(k)} has shape {arrays[k].shape}, expected {shape} "
                             f"({'uint8 images (H, W, C)' if is_image_space(sub) else 'vectors'} of {sub})")
        array = arrays[k][None] if single else arrays[k]
        if is_image_space(sub):
            if array.dtype != np.uint8:
                raise ValueError(f"{owner}: {name(k)} has dtype {array.dtype} (shape {array.shape}), expected "
                                 "uint8 images (H, W, C) in [0, 255]")
            out[k] = array
        else:
            if array.dtype.kind not in "biuf":
                raise ValueError(f"{owner}: {name(k)} has dtype {array.dtype}, expected numbers")
            bad = ~np.isfinite(array.astype(np.float64))
            if bad.any():
                raise ValueError(f"{owner}: {name(k)} holds {int(bad.sum())} non-finite values "
                                 f"(first at row {int(np.argwhere(bad)[0][0])})")
            out[k] = array.astype(np.float32)
    return out, single


@dataclass
class PixelEncoderConfig:
    """The conv encoder's settings, one base of the trainers' configs (CalQLConfig, OGPOConfig,
    DSRLNAConfig); unused for flat observations. Sources: PTR (Kumar et al. 2023) and its jaxrl2 code."""

    encoder_channels: tuple[int, ...] = (32, 32, 32)  # ours, CPU-sized (PTR: ResNet-34 `resnet_34_v1`)
    encoder_strides: tuple[int, ...] = (2, 2, 1)  # ours: 3x3 convs, padding 1
    encoder_groups: int = 4  # PTR `encoder_norm group`; 4 groups as jaxrl2's ResNetEncoder GroupNorm
    spatial_features: int = 8  # PTR `use_spatial_learned_embeddings 1`; 8 = jaxrl2 `num_spatial_blocks`
    latent_dim: int = 64  # PTR: a Dense bottleneck to `latent_dim` after the embeddings; size ours
    image_augmentation: bool = True  # ours: DrQ's random shift (pad 4) of every training batch's images

    def check_encoder(self, owner: str) -> None:
        """Normalise the tuples; ValueError naming `owner` unless the fields describe a valid `PixelEncoder`."""
        self.encoder_channels = tuple(int(c) for c in self.encoder_channels)
        self.encoder_strides = tuple(int(c) for c in self.encoder_strides)
        if (not self.encoder_channels or len(self.encoder_strides) != len(self.encoder_channels)
                or min(self.encoder_channels + self.encoder_strides) < 1):
            raise ValueError(f"{owner}: encoder_channels and encoder_strides must be non-empty, positive and of "
                             f"one length, got {self.encoder_channels}, {self.encoder_strides}")
        for name in ("encoder_groups", "spatial_features", "latent_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{owner}.{name} must be an integer >= 1, got {value!r}")
        if any(c % self.encoder_groups for c in self.encoder_channels):
            raise ValueError(f"{owner}: encoder_groups {self.encoder_groups} must divide every entry of "
                             f"encoder_channels {self.encoder_channels} (GroupNorm)")

    def make_encoder(self, layout: Mapping[str, gym.spaces.Box]) -> "PixelEncoder":
        """A fresh `PixelEncoder` of `layout` with these settings."""
        return PixelEncoder(layout, self.encoder_channels, self.encoder_strides, self.encoder_groups,
                            self.spatial_features, self.latent_dim)


def conv_output_size(size: int, stride: int, kernel: int = 3, padding: int = 1) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class SpatialLearnedEmbeddings(nn.Module):
    """PTR's pooling: a learned kernel (H', W', C, F) times the feature map, summed over H', W'.

    (B, C, H', W') -> (B, C * F). Kernel init lecun-normal (std 1 / sqrt(H' W' C)), as in jaxrl2.
    """

    def __init__(self, height: int, width: int, channels: int, features: int) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(height, width, channels, features) / math.sqrt(height * width * channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,hwcf->bcf", x, self.kernel).flatten(1)


class ConvTrunk(nn.Module):
    """uint8 images (B, H, W, C) -> (B, latent_dim): [conv 3x3 -> GroupNorm -> ReLU] per entry of
    `channels` (with `strides`), learned spatial embeddings, Dense. Pixels are scaled to [0, 1]."""

    def __init__(self, image_shape: tuple[int, int, int], channels: Sequence[int], strides: Sequence[int],
                 groups: int, spatial_features: int, latent_dim: int) -> None:
        super().__init__()
        height, width, in_channels = image_shape
        layers: list[nn.Module] = []
        for out_channels, stride in zip(channels, strides):
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride, padding=1),
                       nn.GroupNorm(groups, out_channels), nn.ReLU(inplace=True)]
            in_channels = out_channels
            height, width = conv_output_size(height, stride), conv_output_size(width, stride)
        self.convs = nn.Sequential(*layers)
        self.spatial = SpatialLearnedEmbeddings(height, width, in_channels, spatial_features)
        self.bottleneck = nn.Linear(in_channels * spatial_features, latent_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        return self.bottleneck(self.spatial(self.convs(x)))


class PixelEncoder(nn.Module):
    """Dict observations -> features: one `ConvTrunk` per image key, then the vector keys as given.

    Args:
        layout: {key: Box} from `observation_layout`.
        channels, strides: conv layers (3x3, padding 1).
        groups: GroupNorm groups (must divide every entry of `channels`).
        spatial_features: F of the learned spatial embeddings.
        latent_dim: bottleneck size per image key.

    `forward(obs)`: {key: (B, H, W, C) uint8 | (B, d) float} -> (B, out_dim) float32, out_dim =
    latent_dim * (image keys) + sum of the vector sizes, keys in sorted order (images first).
    """

    def __init__(self, layout: Mapping[str, gym.spaces.Box], channels: Sequence[int] = (32, 32, 32),
                 strides: Sequence[int] = (2, 1, 1), groups: int = 4, spatial_features: int = 8,
                 latent_dim: int = 64) -> None:
        super().__init__()
        self.image_keys = [k for k in sorted(layout) if is_image_space(layout[k])]
        self.vector_keys = [k for k in sorted(layout) if not is_image_space(layout[k])]
        self.trunks = nn.ModuleDict({k: ConvTrunk(tuple(layout[k].shape), channels, strides, groups,
                                                  spatial_features, latent_dim) for k in self.image_keys})
        self.out_dim = latent_dim * len(self.image_keys) + sum(int(layout[k].shape[0]) for k in self.vector_keys)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.trunks[k](obs[k]) for k in self.image_keys] + [obs[k] for k in self.vector_keys]
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """DrQ's augmentation: pad (B, H, W, C) images by `pad` pixels (edge replicated) and crop a
    random H x W window per image. Any dtype (uint8 stays uint8); shifts drawn from `generator`."""
    B, H, W, _ = images.shape
    device = images.device
    shift = torch.randint(0, 2 * pad + 1, (2, B), generator=generator, device=device) - pad
    rows = (torch.arange(H, device=device) + shift[0, :, None]).clamp_(0, H - 1)  # (B, H)
    cols = (torch.arange(W, device=device) + shift[1, :, None]).clamp_(0, W - 1)  # (B, W)
    return images[torch.arange(B, device=device)[:, None, None], rows[:, :, None], cols[:, None, :]]
