"""Per-dimension affine normalisers whose statistics live in the checkpoint (torch buffers)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Normalizer(nn.Module):
    """x -> (x - loc) / scale, per trailing dimension; `loc` and `scale` are (dim,) buffers.

    `fit_standard` sets mean / std (observations); `fit_range` maps [min, max] to [-1, 1]
    (actions, so the sampler's +-1 clip is the data's range). Scales are floored at `min_scale`
    so constant dimensions (a fixed basket, an unused gripper) stay finite.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def fit_standard(self, data: np.ndarray, min_scale: float) -> None:
        data = self._check(data)
        self.loc.copy_(torch.as_tensor(data.mean(axis=0)))
        self.scale.copy_(torch.as_tensor(np.maximum(data.std(axis=0), min_scale)))

    def fit_range(self, data: np.ndarray, min_scale: float) -> None:
        data = self._check(data)
        low, high = data.min(axis=0), data.max(axis=0)
        self.loc.copy_(torch.as_tensor((low + high) / 2.0))
        self.scale.copy_(torch.as_tensor(np.maximum((high - low) / 2.0, min_scale)))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.loc) / self.scale

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.loc

    def _check(self, data: np.ndarray) -> np.ndarray:
        data = np.asarray(data, dtype=np.float64).reshape(-1, self.loc.shape[0])
        if len(data) == 0:
            raise ValueError("Normalizer: cannot fit statistics on an empty array")
        if not np.all(np.isfinite(data)):
            raise ValueError("Normalizer: data contains NaN or inf")
        return data
