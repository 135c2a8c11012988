"""Shared machinery of the generative base policies (`DiffusionPolicy`, `FlowPolicy`).

A generative policy maps an observation and an initial noise chunk w ~ N(0, I) of shape
`noise_shape = (H, d)` to an action chunk (H, d) through a deterministic sampler (DDIM with eta = 0,
or an Euler ODE), which is what lets DSRL steer it through w. Subclasses implement two methods on
*normalised* flat chunks (B, H*d): `_training_loss` and `_generate`.

Observation handling: single observations (the space's shape) and batches (a leading B axis) are
both accepted; the result has the same batching. Vector observations are standardised and actions
mapped from the dataset's [min, max] to [-1, 1] with statistics stored in the checkpoint.

Task conditioning (generalist policies): `config.task_ids` lists the tasks; the one-hot of the
current task is appended to the features. `for_task(env_id)` returns a view bound to one task.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from steergym.policies.checkpoint import save_policy
from steergym.policies.config import PolicyConfig
from steergym.policies.networks import DenoiserMLP, ObservationEncoder
from steergym.policies.normalization import Normalizer


class GenerativePolicy(nn.Module):
    """Base class: spaces, normalisation, conditioning, batching, noise, `act` chunk queue.

    Args:
        observation_space: a 1-D float Box, an (H, W, C) uint8 image Box, or a Dict of those.
        action_space: a 1-D float Box (the env's action space; sampled actions are clipped to it).
        config: architecture and sampler (`PolicyConfig`); its `kind` must match the class.
        seed: seed of the policy's own noise generator (used by `act` and `sample_n`).
    """

    kind: str = ""
    time_scale: float = 1.0  # multiplies t before the sinusoidal embedding

    def __init__(self, observation_space: gym.Space, action_space: gym.Space,
                 config: PolicyConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        config = config if config is not None else PolicyConfig(kind=self.kind)
        if config.kind != self.kind:
            raise ValueError(f"{type(self).__name__}: config.kind is {config.kind!r}, expected {self.kind!r}")
        if not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
            raise ValueError(f"{type(self).__name__}: action space must be a 1-D Box, got {action_space}")
        low, high = np.asarray(action_space.low, np.float64), np.asarray(action_space.high, np.float64)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low <= high)):
            # sampled actions are clipped to these bounds: inf or low > high would give inf or nonsense
            raise ValueError(f"{type(self).__name__}: action space bounds must be finite with low <= high, got "
                             f"low {action_space.low.tolist()}, high {action_space.high.tolist()}")
        self.config = config
        self.observation_space = observation_space
        self.action_space = action_space
        self.action_dim = int(action_space.shape[0])
        self.noise_shape = (config.horizon, self.action_dim)
        self.encoder = ObservationEncoder(observation_space, config.conv_channels, config.image_features)
        self.obs_normalizers = nn.ModuleDict(
            {_key(k): Normalizer(int(_subspace(observation_space, k).shape[0])) for k in self.encoder.vector_keys}
        )
        self.action_normalizer = Normalizer(self.action_dim)
        cond_dim = self.encoder.out_dim + len(config.task_ids)
        self.denoiser = DenoiserMLP(config.horizon * self.action_dim, cond_dim, config.hidden_dim,
                                    config.num_blocks, config.time_dim, self.time_scale)
        self.register_buffer("_low", torch.as_tensor(action_space.low, dtype=torch.float32), persistent=False)
        self.register_buffer("_high", torch.as_tensor(action_space.high, dtype=torch.float32), persistent=False)
        self.task: str | None = None
        self._generator = torch.Generator().manual_seed(int(seed))
        self._queue: np.ndarray | None = None  # (B, steps_left, d) or None
        self._queue_batched = False
        self.eval()

    # ----------------------------------------------------------------------------- public API
    @property
    def device(self) -> torch.device:
        """Where the weights live (`policy.to("cuda")` moves them; inputs follow, outputs are numpy)."""
        return self._low.device

    @property
    def task_ids(self) -> tuple[str, ...]:
        return self.config.task_ids

    def fork(self, seed: int | None = None) -> "GenerativePolicy":
        """A view sharing the weights with its own chunk queue and noise generator.

        Use one per env when several envs act through the same policy (e.g. residual wrappers in
        a vector env), so they do not consume each other's action chunks.
        """
        view = copy.copy(self)
        view._generator = torch.Generator().manual_seed(
            int(self._generator.initial_seed() if seed is None else seed))
        view._queue = None
        return view

    def for_task(self, task: str) -> "GenerativePolicy":
        """A view of this policy conditioned on `task` (an id in `task_ids`); shares the weights."""
        if task not in self.task_ids:
            raise ValueError(f"{type(self).__name__}: task {task!r} is not one of its tasks {list(self.task_ids)}")
        view = self.fork()
        view.task = task
        return view

    def reset(self, seed: int | None = None) -> None:
        """Forget the action chunk in progress (call at episode start); optionally reseed the noise."""
        self._queue = None
        if seed is not None:
            self._generator.manual_seed(int(seed))

    def act(self, obs: Any) -> np.ndarray:
        """One action (d,) for a single observation, or (B, d) for a batch.

        Samples a chunk with fresh noise, then returns its first `config.action_steps` actions on
        successive calls (open loop) before sampling again. Batched calls replan all B together.
        """
        obs_t, batched = self._obs_to_tensors(obs)
        batch = _batch_size(obs_t)
        if self._queue is None or self._queue.shape[1] == 0 or self._queue.shape[0] != batch \
                or self._queue_batched != batched:
            noise = torch.randn((batch, *self.noise_shape), generator=self._generator).to(self.device)
            chunk = self._sample_tensors(obs_t, noise)
            self._queue = chunk[:, : self.config.action_steps]
            self._queue_batched = batched
        action, self._queue = self._queue[:, 0], self._queue[:, 1:]
        return action if batched else action[0]

    def sample(self, obs: Any, noise: Any) -> np.ndarray:
        """Deterministic action chunk for `noise`: (H, d) for a single obs, (B, H, d) for a batch.

        `noise` is (H, d) or flat (H*d,) per item, with a leading B axis when `obs` is batched.
        """
        obs_t, batched = self._obs_to_tensors(obs)
        noise_t = self._noise_to_tensor(noise, batched, _batch_size(obs_t))
        chunk = self._sample_tensors(obs_t, noise_t)
        return chunk if batched else chunk[0]

    def sample_n(self, obs: Any, n: int) -> np.ndarray:
        """`n` chunks with fresh noise: (n, H, d) for a single obs, (B, n, H, d) for a batch."""
        if int(n) < 1:
            raise ValueError(f"{type(self).__name__}.sample_n: n must be >= 1, got {n}")
        n = int(n)
        obs_t, batched = self._obs_to_tensors(obs)
        batch = _batch_size(obs_t)
        repeated = {k: v.repeat_interleave(n, dim=0) for k, v in obs_t.items()}
        noise = torch.randn((batch * n, *self.noise_shape), generator=self._generator).to(self.device)
        chunks = self._sample_tensors(repeated, noise).reshape(batch, n, *self.noise_shape)
        return chunks if batched else chunks[0]

    def fit_normalization(self, observations: Any, actions: np.ndarray) -> None:
        """Set the normalisers from a dataset: observations (N, ...) (dict for Dict spaces), actions (N, d)."""
        for key in self.encoder.vector_keys:
            data = observations[key] if key else observations
            self.obs_normalizers[_key(key)].fit_standard(np.asarray(data), self.config.min_scale)
        self.action_normalizer.fit_range(np.asarray(actions), self.config.min_scale)

    def loss(self, obs: Any, actions: Any, task: Any = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Training loss (scalar) on a batch: obs (B, ...) raw, actions (B, H, d) raw units.

        `task`: for a conditioned policy, (B,) task indices into `task_ids` (or one id for all).
        """
        obs_t, batched = self._obs_to_tensors(obs)
        if not batched:
            raise ValueError(f"{type(self).__name__}.loss: expects a batch of observations")
        act = torch.as_tensor(np.asarray(actions) if not torch.is_tensor(actions) else actions,
                              dtype=torch.float32, device=self.device)
        batch = _batch_size(obs_t)
        if act.shape != (batch, *self.noise_shape):
            raise ValueError(
                f"{type(self).__name__}.loss: actions must have shape {(batch, *self.noise_shape)}, "
                f"got {tuple(act.shape)}"
            )
        x0 = self.action_normalizer.normalize(act).reshape(batch, -1)
        cond = self._condition(obs_t, task, batch)
        return self._training_loss(x0, cond, generator)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, path, metadata: dict[str, Any] | None = None):
        """Write the checkpoint folder `path` (config.json + model.safetensors), atomically."""
        return save_policy(self, path, metadata)

    # ------------------------------------------------------------------- subclass interface
    def _training_loss(self, x0: torch.Tensor, cond: torch.Tensor,
                       generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def _generate(self, x_init: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Normalised flat chunk (B, H*d) from the initial noise (B, H*d); deterministic."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- internals
    @torch.inference_mode()
    def _sample_tensors(self, obs_t: dict[str, torch.Tensor], noise: torch.Tensor) -> np.ndarray:
        batch = noise.shape[0]
        cond = self._condition(obs_t, None, batch)
        x0 = self._generate(noise.reshape(batch, -1).float(), cond)
        chunk = self.action_normalizer.unnormalize(x0.reshape(batch, *self.noise_shape))
        chunk = torch.maximum(torch.minimum(chunk, self._high), self._low)
        return chunk.cpu().numpy().astype(np.float32)

    def _condition(self, obs_t: dict[str, torch.Tensor], task: Any, batch: int) -> torch.Tensor:
        normed = {
            k: (self.obs_normalizers[_key(k)].normalize(v.float()) if k in self.encoder.vector_keys else v)
            for k, v in obs_t.items()
        }
        feats = self.encoder(normed)
        if not self.task_ids:
            return feats
        index = self._task_index(task, batch)
        return torch.cat([feats, nn.functional.one_hot(index, len(self.task_ids)).float()], dim=-1)

    def _task_index(self, task: Any, batch: int) -> torch.Tensor:
        if task is None:
            task = self.task
        if task is None:
            raise ValueError(
                f"{type(self).__name__} is conditioned on tasks {list(self.task_ids)}; bind one with "
                "policy.for_task(env_id)"
            )
        if isinstance(task, str):
            if task not in self.task_ids:
                raise ValueError(f"unknown task {task!r}; this policy knows {list(self.task_ids)}")
            return torch.full((batch,), self.task_ids.index(task), dtype=torch.long, device=self.device)
        index = torch.as_tensor(task, dtype=torch.long, device=self.device).reshape(-1)
        if index.numel() == 1:
            index = index.expand(batch)
        if index.shape != (batch,) or index.min() < 0 or index.max() >= len(self.task_ids):
            raise ValueError(f"task indices must be (B={batch},) in [0, {len(self.task_ids)}), got {task!r}")
        return index

    def _obs_to_tensors(self, obs: Any) -> tuple[dict[str, torch.Tensor], bool]:
        """Raw observation(s) -> ({key: (B, ...) tensor}, batched); validates shapes and values."""
        name = type(self).__name__
        space = self.observation_space
        if isinstance(space, gym.spaces.Dict):
            if not isinstance(obs, dict) or set(obs) != set(space.spaces):
                got = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
                raise ValueError(f"{name}: observation must be a dict with keys {sorted(space.spaces)}, got {got}")
            items = {k: obs[k] for k in self.encoder.keys}
        else:
            items = {"": obs}
        tensors, batched_flags = {}, set()
        for key, value in items.items():
            sub = _subspace(space, key)
            arr = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
            if arr.shape == sub.shape:
                batched_flags.add(False)
                arr = arr[None]
            elif arr.ndim == len(sub.shape) + 1 and arr.shape[1:] == sub.shape:
                batched_flags.add(True)
            else:
                label = f"observation[{key!r}]" if key else "observation"
                raise ValueError(f"{name}: {label} must have shape {sub.shape} or (B, *{sub.shape}), got {arr.shape}")
            if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}: observation{f'[{key!r}]' if key else ''} contains NaN or inf")
            tensors[key] = torch.as_tensor(arr if sub.dtype == np.uint8 else arr.astype(np.float32, copy=False),
                                           device=self.device)
        if len(batched_flags) != 1 or len({t.shape[0] for t in tensors.values()}) != 1:
            raise ValueError(f"{name}: Dict observation entries disagree on batching")
        return tensors, batched_flags.pop()

    def _noise_to_tensor(self, noise: Any, batched: bool, batch: int) -> torch.Tensor:
        arr = noise.detach().cpu().numpy() if torch.is_tensor(noise) else np.asarray(noise, dtype=np.float32)
        flat = int(np.prod(self.noise_shape))
        per_item = arr.shape[1:] if batched else arr.shape
        expected_lead = (batch,) if batched else ()
        if per_item not in (self.noise_shape, (flat,)) or (batched and arr.shape[0] != batch):
            raise ValueError(
                f"{type(self).__name__}.sample: noise must have shape {(*expected_lead, *self.noise_shape)} "
                f"or {(*expected_lead, flat)}, got {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{type(self).__name__}.sample: noise contains NaN or inf")
        return torch.as_tensor(arr, dtype=torch.float32, device=self.device).reshape(batch, *self.noise_shape)

    def __repr__(self) -> str:
        tasks = f", tasks={list(self.task_ids)}" if self.task_ids else ""
        return (f"{type(self).__name__}(obs={self.observation_space}, action_dim={self.action_dim}, "
                f"horizon={self.config.horizon}, steps={self.config.sample_steps}, "
                f"params={self.num_parameters()}{tasks})")


def _subspace(space: gym.Space, key: str) -> gym.Space:
    return space[key] if key else space


def _key(key: str) -> str:
    return "obs" if key == "" else f"obs_{key}"


def _batch_size(obs_t: dict[str, torch.Tensor]) -> int:
    return int(next(iter(obs_t.values())).shape[0])
