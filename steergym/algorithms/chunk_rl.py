"""What the action-chunk trainers (OGPO, DSRL-NA) share: a chunk replay buffer, the env loop, logs,
evaluation and exact-resume checkpoints. The algorithms themselves live in ogpo.py and dsrl_na.py.

A trainer acts on an `ActionChunkWrapper` around the task env: one agent step = one chunk of H
primitive actions, its reward the sum of the k <= H rewards. Budgets (`learn(total_timesteps)`) and
logs count *primitive* env steps, so methods are compared at equal robot time.

Critics see observations standardised with the base policy's statistics (fixed, clipped to +-10)
and action chunks scaled from the env's bounds to [-1, 1]^(H*d) (flat).

Observations: a flat (1-D) float Box, or pixels as Cal-QL takes them (`encoders.observation_layout`):
a uint8 (H, W, C) image Box, or a Dict of image Boxes and 1-D float vectors (WidowX
`obs_mode="pixels_state"`). Inside the trainers pixel observations are dicts {key: (B, ...)} (a bare
image gets the key IMAGE_KEY); the replay keeps each key in its dtype (images uint8), only the
vector keys are standardised, and the critics are a `PixelEncoder` + `FusedCritics` head
(`networks.PixelCritics`; a target critic has its own Polyak-averaged encoder copy). Critic training
batches get DrQ's random shift (`image_augmentation`), drawn from the agent's generator.

Run folder (`learn(..., out=RUN)`):
    run.json             algorithm, config, seed, budget
    progress.csv         training metrics every `config.log_every` agent steps (also in tb/ when
                         tensorboard is installed)
    eval.csv             env_steps, agent_steps, wall_s, success_rate, mean_return, train_success
    checkpoints/latest   the full trainer state every `checkpoint_every` env steps (default
                         eval_every) at the end of a training episode, and at the end of `learn`

Checkpoint folder (`save(path)`, atomic): config.json (config, spaces, counters, optimiser
hyper-parameters, numpy generator state), model.safetensors (networks, Adam moments, torch
generator states), replay.safetensors (buffers, dict observations one array per key; checkpoints
from before it hold replay.npz, still read with allow_pickle=False), policy/ (the generative policy
as a steergym policy checkpoint). Nothing is pickled; `steergym.algorithms.state.write_checkpoint`
writes the folder for every off-policy trainer.

Resume semantics (SB3's): `learn(n, reset_num_timesteps=False)` continues the training episode in
progress, `reset_num_timesteps=True` (the default) or a loaded agent starts a new one (seeded by the
episode counter). A checkpoint holds no env state, so checkpoints written by `learn` wait for an
episode's end (they also keep the evaluation and checkpoint schedules): a killed run resumed from
one continues exactly as the uninterrupted run would have (`OffPolicyTrainer._run_loop`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from steergym.algorithms import state as trainer_state
from steergym.algorithms.base import TRAIN_SEED_OFFSET, OffPolicyTrainer, learn_target
from steergym.algorithms.encoders import (
    IMAGE_KEY,
    SHIFT_PAD,
    check_pixel_obs,
    is_image_space,
    observation_layout,
    random_shift,
)
from steergym.algorithms.networks import FusedCritics, PixelCritics
from steergym.algorithms.replay import ObsSpec, empty_obs, grow_rows, ring_rows, take_rows
from steergym.algorithms.run_files import write_json
from steergym.policies.checkpoint import load_policy, save_policy
from steergym.policies.generative import GenerativePolicy
from steergym.rollout import score_episodes
from steergym.space_json import space_to_json
from steergym.wrappers.chunk import ActionChunkWrapper, bind_task, check_policy_spaces, chunk_length

POLICY_DIR = "policy"
CLIP_OBS = 10.0

Obs = Any  # a batch of observations: (B, o) float32, or {key: (B, *shape)} arrays / tensors for pixels


# ------------------------------------------------------------------------- observation batches
def num_rows(obs: Obs) -> int:
    """B of a batch (arrays or tensors, or a dict of them)."""
    return int((next(iter(obs.values())) if isinstance(obs, dict) else obs).shape[0])


def obs_arrays(prefix: str, obs: Obs) -> dict[str, np.ndarray]:
    """A batch as named arrays for a checkpoint's replay file: `prefix` (flat), or `prefix/key` per key."""
    if isinstance(obs, dict):
        return {f"{prefix}/{k}": np.ascontiguousarray(v) for k, v in obs.items()}
    return {prefix: obs}


def obs_from_arrays(arrays: dict[str, np.ndarray], prefix: str, spec: ObsSpec, where: str,
                    rows: int | None = None) -> Obs:
    """Inverse of `obs_arrays`, checked against `spec` (and `rows` when given): ValueError naming
    the array and both shapes; KeyError for a missing one."""
    parts = ({f"{prefix}/{k}": (k, tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in spec.items()}
             if isinstance(spec, dict) else {prefix: (None, (int(spec),), np.dtype(np.float32))})
    out = {}
    for name, (key, shape, dtype) in parts.items():
        value = arrays[name]
        n = len(value) if rows is None else rows
        if value.shape != (n, *shape) or value.dtype != dtype:
            raise ValueError(f"{where}: {name} has shape {value.shape} and dtype {value.dtype}, expected "
                             f"({n}, *{shape}) {dtype}")
        out[key] = value
    return out if isinstance(spec, dict) else out[None]


class ChunkReplay:
    """Ring buffer of chunk transitions (numpy), grown as transitions arrive (powers of two from
    MIN_ROWS up to `capacity`, as Cal-QL's `OnlineReplay`: a large image ring is never allocated up
    front). Fields: obs, next_obs raw, (N, o) float32 or, for pixel observations, {key: (N, *shape)}
    in each key's dtype (images uint8); actions (N, A) in the critics' [-1, 1] units; rewards (N,)
    chunk sums; terminals (N,) 0/1; steps (N,) primitive steps k.

    Args:
        capacity: transitions kept (the oldest are overwritten past it).
        obs_spec: the flat observation size, or {key: (shape, dtype)} of dict observations.
        action_dim: A = H * d.
    """

    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminals", "steps")

    def __init__(self, capacity: int, obs_spec: ObsSpec, action_dim: int) -> None:
        self.capacity = int(capacity)
        self.obs_spec: ObsSpec = ({k: (tuple(int(n) for n in shape), np.dtype(dtype))
                                   for k, (shape, dtype) in obs_spec.items()}
                                  if isinstance(obs_spec, dict) else int(obs_spec))
        self.action_dim = int(action_dim)
        self.data: dict[str, Any] = self._empty(0)
        self.size = 0
        self.pos = 0

    def _empty(self, rows: int) -> dict[str, Any]:
        return {"obs": empty_obs(self.obs_spec, rows), "actions": np.zeros((rows, self.action_dim), np.float32),
                "rewards": np.zeros(rows, np.float32), "next_obs": empty_obs(self.obs_spec, rows),
                "terminals": np.zeros(rows, np.float32), "steps": np.zeros(rows, np.int64)}

    @property
    def rows(self) -> int:
        """Rows allocated so far (<= capacity)."""
        return len(self.data["actions"])

    def _reserve(self, rows: int) -> None:
        """Grow every array to hold at least `rows` rows (see `ring_rows`)."""
        if rows <= self.rows:
            return
        size = ring_rows(rows, self.capacity)
        self.data = {key: grow_rows(value, size) for key, value in self.data.items()}

    def add(self, **row: Any) -> int:
        """Store one transition (obs / next_obs: one observation, a dict for pixels); returns its slot."""
        slot = self.pos
        self._reserve(slot + 1)  # before the ring wraps, pos == size
        for key in self.FIELDS:
            store = self.data[key]
            if isinstance(store, dict):
                for k in store:
                    store[k][slot] = row[key][k]
            else:
                store[slot] = row[key]
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return slot

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, Any]:
        index = rng.integers(0, self.size, int(n))
        return {k: take_rows(v, index) for k, v in self.data.items()}

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for key, value in self.data.items():
            out.update(obs_arrays(f"{prefix}/{key}", take_rows(value, slice(0, self.size))))
        out[f"{prefix}/meta"] = np.array([self.size, self.pos, self.capacity], np.int64)
        return out

    def restore(self, arrays: dict[str, np.ndarray], prefix: str, where: str) -> None:
        size, pos, capacity = (int(x) for x in arrays[f"{prefix}/meta"])
        if capacity != self.capacity or size > capacity:
            raise ValueError(f"{where}: buffer {prefix!r} holds capacity {capacity}, the config says {self.capacity}")
        self._reserve(size)
        for key in self.FIELDS:
            store = self.data[key]
            if key in ("obs", "next_obs"):
                value = obs_from_arrays(arrays, f"{prefix}/{key}", self.obs_spec, where, size)
            else:
                value = arrays[f"{prefix}/{key}"]
                if value.shape[1:] != store.shape[1:] or len(value) != size:
                    raise ValueError(f"{where}: buffer {prefix}/{key} has shape {value.shape}, expected "
                                     f"({size}, *{store.shape[1:]})")
            for saved, target in _pairs(value, store):
                target[:size] = saved
        self.size, self.pos = size, pos


class StepReplay(ChunkReplay):
    """A ring of *primitive* transitions from which critics read action-chunk windows (OGPO's
    `ReplayBuffer.sample_sequence`, ogpo/utils/datasets.py). Fields: obs, next_obs raw (as
    `ChunkReplay`); actions (N, d) the executed primitive action in [-1, 1] units; rewards (N,);
    terminals (N,) 1 where the env terminated; dones (N,) 1 where the episode ended (terminated or
    truncated); success (N,) 1 on the rows of successful episodes. `sample_windows` gives windows of H
    consecutive rows starting at any row (or, `success_only`, at rows of successful episodes).
    """

    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminals", "dones", "success")

    def _empty(self, rows: int) -> dict[str, Any]:
        return {"obs": empty_obs(self.obs_spec, rows), "actions": np.zeros((rows, self.action_dim), np.float32),
                "rewards": np.zeros(rows, np.float32), "next_obs": empty_obs(self.obs_spec, rows),
                "terminals": np.zeros(rows, np.float32), "dones": np.zeros(rows, np.float32),
                "success": np.zeros(rows, np.float32)}

    def _oldest(self) -> int:
        return self.pos if self.size == self.capacity else 0

    def success_rows(self) -> int:
        """Rows that belong to successful episodes."""
        return int(np.count_nonzero(self.data["success"][:self.size]))

    def sample_windows(self, rng: np.random.Generator, n: int, horizon: int, gamma: float,
                       success_only: bool = False) -> dict[str, Any]:
        """n windows of `horizon` consecutive rows, their starts uniform over the rows whose window
        fits in the buffer (oldest row first; a window never crosses the ring's write position), as
        OGPO's sample_sequence: obs of the first row, actions (n, horizon * d) the rows' actions,
        rewards sum_j gamma^j r_j over the whole window, next_obs of the last row, terminals 1 where
        any row terminated (the bootstrap mask), steps = horizon (the bootstrap is gamma^horizon),
        valid 0 where an episode ended before the last row (the TD loss ignores such windows).
        `success_only`: starts uniform over the rows of successful episodes among those (OGPO's
        create_success_buffer_batch: sample_sequence(success_only=True))."""
        if self.size < horizon:
            raise ValueError(f"StepReplay: {self.size} rows, a window needs {horizon}")
        oldest = self._oldest()
        if success_only:
            logical = np.flatnonzero(np.roll(self.data["success"][:self.size], -oldest)[:self.size - horizon + 1])
            if len(logical) == 0:
                raise ValueError("StepReplay: no window starts in a successful episode")
            starts = (oldest + logical[rng.integers(0, len(logical), int(n))]) % self.capacity
        else:
            starts = (oldest + rng.integers(0, self.size - horizon + 1, int(n))) % self.capacity
        rows = (starts[:, None] + np.arange(horizon)[None, :]) % self.capacity  # (n, H)
        powers = gamma ** np.arange(horizon, dtype=np.float64)
        rewards = (self.data["rewards"][rows].astype(np.float64) * powers).sum(1)
        ended_early = self.data["dones"][rows[:, :-1]].max(1) if horizon > 1 else np.zeros(len(starts))
        return {"obs": take_rows(self.data["obs"], starts),
                "actions": self.data["actions"][rows].reshape(len(starts), -1),
                "rewards": rewards.astype(np.float32),
                "next_obs": take_rows(self.data["next_obs"], rows[:, -1]),
                "terminals": self.data["terminals"][rows].max(1),
                "steps": np.full(len(starts), horizon, np.int64),
                "valid": (1.0 - ended_early).astype(np.float32)}


class ObsActionRing(ChunkReplay):
    """A `ChunkReplay` of (obs, actions) rows only, e.g. OGPO's buffer of chunks from successful
    episodes: written one row at a time into the same growing ring, never rebuilt by concatenation
    (with image observations a rebuild copied the whole buffer on every successful episode)."""

    FIELDS = ("obs", "actions")

    def _empty(self, rows: int) -> dict[str, Any]:
        return {"obs": empty_obs(self.obs_spec, rows), "actions": np.zeros((rows, self.action_dim), np.float32)}

    def filled(self) -> tuple[Obs, np.ndarray]:
        """(obs, actions) of the rows written so far, oldest slot first (views, not copies)."""
        return take_rows(self.data["obs"], slice(0, self.size)), self.data["actions"][:self.size]


def _pairs(a: Any, b: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """(a, b) array pairs: the arrays themselves, or the entries of two dicts key by key."""
    return [(a[k], b[k]) for k in b] if isinstance(b, dict) else [(a, b)]


def check_flat_box(who: str, space: gym.Space) -> int:
    """The size o of a flat (1-D) float Box; ValueError naming `who` and the space otherwise."""
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1 and np.issubdtype(space.dtype, np.floating)):
        raise ValueError(f"{who}: needs a flat (1-D) float Box, a uint8 (H, W, C) image Box or a Dict of image "
                         f"Boxes and 1-D vectors as the observation space, got {space}")
    return int(space.shape[0])


def observation_spec(who: str, space: gym.Space) -> tuple[dict[str, gym.spaces.Box] | None, ObsSpec]:
    """(layout, replay spec) of an observation space: (None, o) for a flat float Box; for pixels
    ({key: Box} as `observation_layout` gives, {key: (shape, dtype)}: images uint8, vectors float32).
    ValueError naming `who` and the space (or the offending Dict key) for anything else."""
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return None, check_flat_box(who, space)
    layout = observation_layout(space, who)
    return layout, {k: (tuple(box.shape), box.dtype if is_image_space(box) else np.dtype(np.float32))
                    for k, box in layout.items()}


def chunk_env_of(who: str, env: gym.Env, policy: Any) -> ActionChunkWrapper:
    """`env` as an `ActionChunkWrapper` of the policy's horizon (wrapping it unless it already is one),
    after checking that the policy's spaces fit the primitive env's."""
    horizon, dim = (int(n) for n in policy.noise_shape)
    if isinstance(env, ActionChunkWrapper):
        if env.horizon != horizon:
            raise ValueError(f"{who}: the env executes chunks of {env.horizon} actions, the policy plans {horizon}")
        primitive = env.env
    else:
        primitive = env
    check_policy_spaces(who, policy, primitive.observation_space, primitive.action_space)
    return env if isinstance(env, ActionChunkWrapper) else ActionChunkWrapper(env, horizon)


class ChunkTrainer(OffPolicyTrainer):
    """Base of OGPO and DSRL-NA: env loop, logging, evaluation, save/load. Subclasses implement
    `_act` (obs -> the env action), `_predict_actions`, `_update`, `_modules`, `_optimizers`; they
    may override `_wrap_env` / `_executed_chunk` (another env wrapper) and the state hooks."""

    algorithm = ""
    FORMAT = ""
    config_cls: type = object

    # -------------------------------------------------------------------------- set-up
    def _setup_common(self, env: gym.Env | None, policy: Any, config: Any, seed: int,
                      device: str | torch.device, who: str) -> Any:
        """Common state; returns `policy`, bound to the env's task when it is task-conditioned.

        The chunk trainers learn and store whole denoised chunks (H, d), so a policy that executes
        fewer actions than it denoises (`chunk_length` below its noise's H, e.g. a LeRobot diffusion
        policy) is refused; the steering wrappers and SB3 take it."""
        horizon, executed = int(policy.noise_shape[0]), chunk_length(policy)
        if executed != horizon:
            raise ValueError(f"{who}: the policy executes {executed} of the {horizon} actions it "
                             f"denoises; {who} learns whole denoised chunks, so it needs chunk_length == "
                             "noise_shape[0] (steer such a policy with NoiseActionWrapper and SB3 instead)")
        self.config = config
        self.seed = int(seed)
        self.device = torch.device(device)
        self.env: gym.Env | None = None
        if env is not None:
            policy = bind_task(who, policy, _primitive(env))
            self.env = self._wrap_env(env, policy)
        self.observation_space = policy.observation_space
        self.primitive_action_space = policy.action_space
        self._layout, self._obs_spec = observation_spec(who, self.observation_space)  # layout None: flat
        self.obs_dim: int | None = self._obs_spec if self._layout is None else None
        self.horizon, self.action_dim = (int(n) for n in policy.noise_shape)
        self.chunk_dim = self.horizon * self.action_dim
        space = self.primitive_action_space
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError(f"{who}: the action space needs finite bounds, got {space}")
        self._low = torch.as_tensor(space.low, dtype=torch.float32, device=self.device)
        self._high = torch.as_tensor(space.high, dtype=torch.float32, device=self.device)
        normalizers = getattr(policy, "obs_normalizers", None) if config.normalize_observations else None
        if self._layout is None:
            self._obs_loc, self._obs_scale = self._standardiser(normalizers, "obs", self.obs_dim)
        else:  # vector keys only (GenerativePolicy names their normalisers "obs_<key>"); images stay uint8
            stats = {k: self._standardiser(normalizers, f"obs_{k}", int(box.shape[0]))
                     for k, box in self._layout.items() if not is_image_space(box)}
            self._obs_loc = {k: loc for k, (loc, _) in stats.items()}
            self._obs_scale = {k: scale for k, (_, scale) in stats.items()}
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.eval_generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)
        self.replay = ChunkReplay(config.buffer_size, self._obs_spec, self.chunk_dim)
        self.num_timesteps = 0  # primitive env steps
        self.agent_steps = 0  # chunks
        self.episodes = 0
        self.updates = 0
        self.metrics: dict[str, float] = {}
        self.train_successes: list[bool] = []
        self.history: list[dict[str, Any]] = []  # progress rows (every config.log_every updates)
        self.eval_history: list[dict[str, Any]] = []  # evaluation rows
        # the schedules of `learn` (env steps of the next evaluation / checkpoint), saved with a checkpoint
        self._next_eval = self._next_checkpoint = 0
        self._obs: Any = None  # the training episode's observation (None: reset before the next step)
        self._episode_success = False
        return policy

    def _standardiser(self, normalizers: Any, name: str, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) (dim,) of the base policy's normaliser `name`, or (0, 1) without one."""
        if normalizers is not None and name in normalizers:
            loc, scale = normalizers[name].loc, normalizers[name].scale
        else:
            loc, scale = torch.zeros(dim), torch.ones(dim)
        return (loc.detach().to(self.device, torch.float32).clone(),
                scale.detach().to(self.device, torch.float32).clone())

    def make_critics(self, hidden: tuple[int, ...], n: int, layer_norm: bool) -> nn.Module:
        """A critic ensemble Q(s, a) over flat chunks a (A = H*d) on the device: `FusedCritics` for
        flat observations, `PixelCritics` (its own `PixelEncoder` + a `FusedCritics` head) for pixels."""
        if self._layout is None:
            return FusedCritics(self.obs_dim, self.chunk_dim, hidden, n, layer_norm=layer_norm).to(self.device)
        encoder = self.config.make_encoder(self._layout)
        head = FusedCritics(encoder.out_dim, self.chunk_dim, hidden, n, layer_norm=layer_norm)
        return PixelCritics(encoder, head).to(self.device)

    def target_critics(self, critic: nn.Module, hidden: tuple[int, ...], n: int, layer_norm: bool) -> nn.Module:
        """A frozen copy of `critic` (with its own encoder copy for pixels), for Polyak averaging."""
        target = self.make_critics(hidden, n, layer_norm)
        target.load_state_dict(critic.state_dict())
        return target.requires_grad_(False)

    def set_env(self, env: gym.Env) -> None:
        """Attach (or replace) the training env; its spaces must fit the policy's."""
        self.env = self._wrap_env(env, self.policy)

    def _wrap_env(self, env: gym.Env, policy: Any) -> gym.Env:
        """The env the agent steps (default: an ActionChunkWrapper of the policy's horizon)."""
        return chunk_env_of(type(self).__name__, env, policy)

    def _executed_chunk(self, action: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """The (H, d) chunk in env units that `action` made the env execute (clipped; rows after an
        episode's end are the planned ones, never NaN)."""
        return self.env.chunk_from_action(action)

    # ------------------------------------------------------------------------ conversions
    def obs_row(self, obs: Any) -> Any:
        """One env observation as the replay stores it: unchanged (flat, a dict), or {IMAGE_KEY: image}."""
        return {IMAGE_KEY: obs} if self._layout is not None and not isinstance(obs, dict) else obs

    def single_batch(self, obs: Any) -> Obs:
        """One env observation -> a batch of 1: (1, o), or {key: (1, *shape)} for pixels."""
        if self._layout is None:
            return obs[None]
        row = self.obs_row(obs)
        return {k: np.asarray(row[k])[None] for k in self._layout}

    def policy_obs(self, obs: Obs) -> Any:
        """A batch as the base policy takes it: (B, o) float32, the (B, H, W, C) images of a bare image
        Box, or the dict itself."""
        if self._layout is None:
            return np.asarray(obs, np.float32)
        return obs if isinstance(self.observation_space, gym.spaces.Dict) else obs[IMAGE_KEY]

    def obs_tensor(self, obs: Obs) -> torch.Tensor | dict[str, torch.Tensor]:
        """Raw observations (B, o) -> the critics' standardised, clipped inputs; for pixels a dict
        of tensors: images (B, H, W, C) uint8 as stored, vector keys standardised and clipped."""
        if self._layout is None:
            x = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)
            return ((x - self._obs_loc) / self._obs_scale).clamp(-CLIP_OBS, CLIP_OBS)
        out = {}
        for k, box in self._layout.items():
            if is_image_space(box):
                out[k] = torch.as_tensor(np.asarray(obs[k], np.uint8), device=self.device)
            else:
                x = torch.as_tensor(np.asarray(obs[k], np.float32), device=self.device)
                out[k] = ((x - self._obs_loc[k]) / self._obs_scale[k]).clamp(-CLIP_OBS, CLIP_OBS)
        return out

    def critic_input(self, obs: Obs) -> torch.Tensor | dict[str, torch.Tensor]:
        """`obs_tensor` of a training batch; pixels with `image_augmentation` get DrQ's random shift
        of every image key (sorted key order), drawn from the agent's generator."""
        x = self.obs_tensor(obs)
        if self._layout is None or not self.config.image_augmentation:
            return x
        return {k: random_shift(v, SHIFT_PAD, self.generator) if is_image_space(self._layout[k]) else v
                for k, v in x.items()}

    def critic_action(self, chunk: torch.Tensor) -> torch.Tensor:
        """Chunks in env units (B, H, d) -> flat (B, H*d) in [-1, 1] (the critics' action units)."""
        scaled = 2.0 * (chunk - self._low) / (self._high - self._low) - 1.0
        return scaled.clamp(-1.0, 1.0).reshape(chunk.shape[0], -1)

    def env_chunk(self, critic_action: torch.Tensor) -> torch.Tensor:
        """Inverse of `critic_action`: (B, H*d) in [-1, 1] -> (B, H, d) env units."""
        a = critic_action.reshape(-1, self.horizon, self.action_dim)
        return self._low + (a + 1.0) * 0.5 * (self._high - self._low)

    # ----------------------------------------------------------------------------- acting
    def predict(self, obs: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3-shaped: (action (A,) or (N, A), None) for the env the agent steps (see the subclass).
        `obs`: one observation or a batch (N, ...); pixels: an image / dict, or a batch of them."""
        if self._layout is not None:
            batch, single = check_pixel_obs(obs, self._layout, self.observation_space, "the observation",
                                            f"{type(self).__name__}.predict")
            actions = self._predict_actions(batch, deterministic)
            flat = actions.reshape(actions.shape[0], -1).cpu().numpy().astype(np.float32)
            return (flat[0] if single else flat), None
        arr = np.asarray(obs, dtype=np.float32)
        single = arr.shape == (self.obs_dim,)
        if not single and not (arr.ndim == 2 and arr.shape[1] == self.obs_dim):
            raise ValueError(f"{type(self).__name__}.predict: observation shape {arr.shape}, expected "
                             f"({self.obs_dim},) or (N, {self.obs_dim})")
        actions = self._predict_actions(arr.reshape(-1, self.obs_dim), deterministic)  # (N, ...) tensor
        flat = actions.reshape(actions.shape[0], -1).cpu().numpy().astype(np.float32)
        return (flat[0] if single else flat), None

    def reset_eval_noise(self, seed: int) -> None:
        self.eval_generator.manual_seed(int(seed))

    def evaluate(self, env: gym.Env, episodes: int = 10, seed: int = 0,
                 deterministic: bool = True) -> dict[str, float]:
        """Episodes on `env` (wrapped as the training env is, if needed), reset seeds seed + i, the
        evaluation noise reseeded with seed + i: success_rate and mean_return."""
        return score_episodes(self._wrap_env(env, self.policy),
                              lambda obs: self.predict(obs, deterministic=deterministic)[0],
                              episodes, seed, self.reset_eval_noise)

    # ----------------------------------------------------------------------------- training
    def learn(self, total_timesteps: int, eval_env: gym.Env | None = None, eval_every: int = 10_000,
              eval_episodes: int = 10, eval_seed: int = 0, out: str | os.PathLike | None = None,
              progress: bool = True, time_budget_s: float | None = None,
              reset_num_timesteps: bool = True, checkpoint_every: int | None = None) -> "ChunkTrainer":
        """Collect and train for `total_timesteps` more *primitive* env steps (or `time_budget_s`).

        SB3's meaning: `reset_num_timesteps=True` restarts the step counters (env steps and agent
        steps, so `learning_starts` applies again, as in SB3) at 0 and the training episode afresh;
        False continues them, as a resumed run does (`learn(total - agent.num_timesteps,
        reset_num_timesteps=False)`). Training episodes keep counting, so their reset seeds never repeat.

        Each agent step: act (a chunk), store the transition, then the algorithm's updates (how many:
        `_update_rounds`; by default one after `config.learning_starts` agent steps). With `eval_env`, evaluates every `eval_every` env steps
        and at the end (deterministic, seeds eval_seed + i); with `out`, writes the run folder and a
        checkpoint every `checkpoint_every` env steps (default eval_every) at the next episode end.
        The loop itself is `OffPolicyTrainer._run_loop`.
        """
        who = f"{type(self).__name__}.learn"
        if self.env is None:
            raise ValueError(f"{who}: no training env; pass env= to the constructor or load, or call set_env")
        target = learn_target(who, self.num_timesteps, total_timesteps, reset_num_timesteps)
        if int(eval_every) < 1 or int(eval_episodes) < 1:
            raise ValueError(f"{who}: eval_every and eval_episodes must be >= 1, got {eval_every}, {eval_episodes}")
        if reset_num_timesteps and self.num_timesteps > 0:
            self.num_timesteps = self.agent_steps = self._next_eval = self._next_checkpoint = 0
            self.eval_history, self._obs = [], None
        if out is not None:
            write_json(Path(out) / "run.json", {
                "algorithm": self.algorithm, "config": self.config.to_dict(), "seed": self.seed,
                "total_timesteps": int(total_timesteps), "eval_every": eval_every,
                "eval_episodes": eval_episodes, "eval_seed": eval_seed, "start_env_steps": self.num_timesteps,
            })
        self._learn_started = time.perf_counter()
        self._run_loop(target, eval_env=eval_env, eval_every=eval_every, eval_episodes=eval_episodes,
                       eval_seed=eval_seed, out=out, checkpoint_every=checkpoint_every, progress=progress,
                       desc=self.algorithm, time_budget_s=time_budget_s, unit="env step")
        return self

    # ------------------------------------------------------------ the hooks of OffPolicyTrainer
    def _collect(self, log) -> int:
        """One agent step: act (a chunk), store the transition, run the `_update_rounds` owed."""
        cfg = self.config
        if self._obs is None:  # a new training episode
            self._obs, _ = self.env.reset(seed=TRAIN_SEED_OFFSET + self.seed + self.episodes)
            self._episode_start()
            self._episode_success = False
        obs = self._obs
        env_action = self._act(obs)
        next_obs, reward, terminated, truncated, info = self.env.step(env_action)
        planned = self._executed_chunk(env_action, info)  # (H, d), env units, clipped
        steps = int(info.get("steps", self.horizon))
        action = self.critic_action(torch.as_tensor(planned[None], dtype=torch.float32, device=self.device))
        slot = self._store_chunk(obs, action[0].cpu().numpy(), float(reward), next_obs, bool(terminated),
                                 bool(terminated or truncated), steps, info)
        self._on_transition(slot)
        self._episode_success = self._episode_success or bool(info.get("is_success", False))
        before = self.num_timesteps
        self.num_timesteps += steps
        self.agent_steps += 1
        for _ in range(self._update_rounds(before, steps)):
            self.metrics = self._update()
            self.updates += 1
            if self.updates % cfg.log_every == 0:
                self._log_row(log)
                self._bar.set_postfix({k: f"{v:.3g}" for k, v in list(self.metrics.items())[:3]}, refresh=False)
        if terminated or truncated:
            self.train_successes.append(self._episode_success)
            self._episode_end(self._episode_success)
            self.episodes += 1
            self._obs = None  # the next `_collect` resets; a checkpoint here resumes exactly
        else:
            self._obs = next_obs
        return steps

    def _between_episodes(self) -> bool:
        return self._obs is None

    def _evaluate_row(self, eval_env, episodes: int, seed: int) -> dict[str, Any]:
        scores = self.evaluate(eval_env, episodes, seed)
        recent = self.train_successes[-50:]
        row = {"env_steps": self.num_timesteps, "agent_steps": self.agent_steps,
               "wall_s": round(time.perf_counter() - self._learn_started, 2), **scores,
               "train_success": float(np.mean(recent)) if recent else None}
        self.eval_history.append(row)
        return row

    def _eval_rows(self) -> list[dict[str, Any]]:
        return self.eval_history

    def _log_keep(self) -> dict[str, Any]:
        last_eval = self.eval_history[-1]["env_steps"] if self.eval_history else -1
        updates = self.updates
        return {"eval": lambda row: float(row["env_steps"]) <= last_eval,  # the checkpoint's evaluations
                "progress": lambda row: float(row["updates"]) <= updates}

    def _log_purge_step(self) -> int:
        return self.num_timesteps

    def _log_row(self, log) -> None:
        row = {"env_steps": self.num_timesteps, "agent_steps": self.agent_steps, "updates": self.updates,
               **{k: round(float(v), 6) for k, v in self.metrics.items()}}
        self.history.append(row)
        if log is not None:
            log.write("progress", row, self.num_timesteps, scalars=self.metrics, prefix="train")

    # hooks for subclasses
    def _store_chunk(self, obs: Any, action: np.ndarray, reward: float, next_obs: Any, terminated: bool,
                     done: bool, steps: int, info: dict[str, Any]) -> int | None:
        """Store an executed chunk (action: flat (H*d,) in [-1, 1] units, reward the sum of its
        `steps` rewards); returns its replay slot. Default: one `ChunkReplay` row per chunk."""
        return self.replay.add(obs=self.obs_row(obs), actions=action, rewards=reward, next_obs=self.obs_row(next_obs),
                               terminals=float(terminated), steps=steps)

    def _update_rounds(self, env_steps_before: int, steps: int) -> int:
        """How many `_update` rounds follow the chunk just executed (`steps` primitive steps after
        `env_steps_before`). Default: one per agent step once `agent_steps > config.learning_starts`."""
        return 1 if self.agent_steps > self.config.learning_starts else 0

    def _episode_start(self) -> None:
        pass

    def _on_transition(self, slot: int) -> None:
        pass

    def _episode_end(self, success: bool) -> None:
        pass

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _restore_extra_arrays(self, arrays: dict[str, np.ndarray], where: str) -> None:
        pass

    def _extra_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def _restore_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    # ------------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Atomically write the full trainer state to the folder `path` (see the module docstring)."""

        tensors, optim_meta = trainer_state.training_tensors(self._modules(), self._optimizers())
        tensors["generator"] = self.generator.get_state().cpu()
        tensors["eval_generator"] = self.eval_generator.get_state().cpu()
        tensors.update(self._extra_tensors())
        meta = {"format": self.FORMAT, "algorithm": self.algorithm, "config": self.config.to_dict(),
                "seed": self.seed, "num_timesteps": self.num_timesteps, "agent_steps": self.agent_steps,
                "episodes": self.episodes, "updates": self.updates,
                "observation_space": space_to_json(self.observation_space),
                "action_space": space_to_json(self.primitive_action_space), "optimizers": optim_meta,
                "numpy_rng": trainer_state.numpy_rng_state(self.rng), "metrics": self.metrics,
                "train_successes": [bool(x) for x in self.train_successes[-1000:]],
                "eval_history": self.eval_history, "next_eval": self._next_eval,
                "next_checkpoint": self._next_checkpoint}
        arrays = {**self.replay.arrays("replay"), **self._extra_arrays()}

        def write_policy(staging: Path) -> None:
            if _saveable(self.policy):
                # keep the base policy's metadata (its task: `steergym eval --policy DIR` needs no --env)
                metadata = {**dict(getattr(self.policy, "metadata", None) or {}), "trainer": self.algorithm,
                            "env_steps": self.num_timesteps}
                env_id = getattr(getattr(self.env, "spec", None), "id", None)
                if env_id and not getattr(self.policy, "task_ids", ()):
                    metadata["env_id"] = env_id
                save_policy(self.policy, staging / POLICY_DIR, metadata)
        return trainer_state.write_checkpoint(path, self.FORMAT, meta, tensors, arrays, write_policy)

    @classmethod
    def _read_checkpoint(cls, path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor], dict, Any]:

        path = Path(path)
        meta, tensors, arrays = trainer_state.read_checkpoint(path, cls.FORMAT, cls.algorithm, replay=True)
        policy = load_policy(path / POLICY_DIR) if (path / POLICY_DIR).exists() else None
        return meta, tensors, arrays, policy

    def _restore(self, path: Path, meta: dict, tensors: dict[str, torch.Tensor], arrays: dict) -> None:
        try:
            trainer_state.load_training_tensors(self._modules(), self._optimizers(), tensors, meta["optimizers"])
            self.generator.set_state(tensors["generator"])
            self.eval_generator.set_state(tensors["eval_generator"])
            self._restore_extra_tensors(tensors)
        except (KeyError, RuntimeError) as exc:
            raise ValueError(f"{path}: checkpoint does not match its config ({exc})") from exc
        try:
            self.replay.restore(arrays, "replay", str(path / "replay"))
            self._restore_extra_arrays(arrays, str(path / "replay"))
        except KeyError as exc:
            raise ValueError(f"{path}: the replay file has no array {exc}") from exc
        trainer_state.set_numpy_rng_state(self.rng, meta["numpy_rng"])
        for key in ("num_timesteps", "agent_steps", "episodes", "updates"):
            setattr(self, key, int(meta[key]))
        self.metrics = dict(meta.get("metrics", {}))
        self.train_successes = list(meta.get("train_successes", []))
        self.eval_history = [dict(row) for row in meta.get("eval_history", [])]
        next_eval = meta.get("next_eval")
        if next_eval is None:  # a checkpoint of steergym before the shared loop, saved outside an evaluation
            just_evaluated = self.eval_history and self.eval_history[-1]["env_steps"] == self.num_timesteps
            next_eval = self.num_timesteps + 1 if just_evaluated else 0
        self._next_eval = int(next_eval)
        self._next_checkpoint = int(meta.get("next_checkpoint", 0))


def _primitive(env: gym.Env) -> gym.Env:
    return env.env if isinstance(env, ActionChunkWrapper) else env


def _saveable(policy: Any) -> bool:
    return isinstance(policy, GenerativePolicy)


