"""DSRL's latent-noise MDP: the agent picks the initial noise w of a frozen generative policy.

    env = NoiseActionWrapper(gym.make("steergym/WidowXLiftCube-v0"), policy, noise_bound=1.5)
    SAC("MlpPolicy", env).learn(10_000)

`NoiseActionWrapper` steers one env; `NoiseActionVectorWrapper` steers a gymnasium vector env and
decodes every sub-env's noise in one batched policy call per vector step (`make_noise_vector_env`
builds one). Reference: Wagenmaker et al. 2025, reference/algorithms.md section 4.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space

from steergym.checks import real_array
from steergym.policies.base import agent_noise_shape, expand_noise
from steergym.wrappers.chunk import (
    ActionChunkWrapper,
    bind_task,
    check_generative,
    check_policy_spaces,
    check_positive,
    chunk_length,
)


class NoiseActionWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Act in the latent-noise space of a frozen generative policy (DSRL-SAC's M^W).

    Args:
        env: an env with a 1-D Box action space of the policy's action dimension d.
        policy: a generative policy (`sample(obs, noise)`, `noise_shape == (H, d)`, spaces equal
            to the env's), e.g. `DiffusionPolicy` (DDIM, eta = 0) or `FlowPolicy`; a task-conditioned
            policy is bound to the env's id. It is used read-only: `sample` is a pure function.
        noise_bound: b, the half-width of the noise box (DSRL default 1.5; w = b * tanh(u) for SAC).
        shared_noise: act with one noise row (D,) repeated over the chunk's H steps instead of the
            whole (H, D) noise: dsrl_pi0's low-dimensional noise space for long chunks (pi0: a
            32-D noise for a 50 x 32 chunk noise). Default False (DSRL's full chunk noise).

    Action space: Box(-b, b, (H * d,), float32), the flattened noise ((D,) with `shared_noise`).
    Observation space: the env's.

    Step: w = clip(action, -b, b) (a wrong shape or NaN/inf raises ValueError); the chunk
    `policy.sample(last_obs, w)` (H, d) is executed by a private `ActionChunkWrapper(env, H)`:
    reward = sum of the k <= H primitive rewards, stops early when the episode ends.
    Info: `ActionChunkWrapper`'s keys (`executed_actions` (H, d), NaN after `steps` = k, the actions
    actually executed; `chunk_rewards`, `chunk_successes`, `is_success`) plus `noise` (H*d,), the
    clipped w (repeated over the chunk with `shared_noise`), and `chunk` (H, d), the whole decoded
    chunk (what DSRL-NA stores as the action).
    """

    def __init__(self, env: gym.Env, policy: Any, noise_bound: float = 1.5, shared_noise: bool = False) -> None:
        who = "NoiseActionWrapper"
        self.noise_bound = check_positive(who, "noise_bound", noise_bound)
        horizon, dim = check_generative(who, policy)
        check_policy_spaces(who, policy, env.observation_space, env.action_space)
        gym.utils.RecordConstructorArgs.__init__(self, policy=policy, noise_bound=noise_bound,
                                                 shared_noise=shared_noise, _disable_deepcopy=True)
        super().__init__(env)
        self.policy = bind_task(who, policy, env)
        self.chunker = ActionChunkWrapper(env, chunk_length(policy))  # composed, not stacked: env.spec stays remakeable
        self.noise_shape = (horizon, dim)
        self.shared_noise = bool(shared_noise)
        self.action_noise_shape = agent_noise_shape(self.noise_shape, self.shared_noise)
        self.action_space = gym.spaces.Box(-self.noise_bound, self.noise_bound,
                                           (int(np.prod(self.action_noise_shape)),), np.float32)
        self._last_obs: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._last_obs = obs
        return obs, info

    def step(self, action: Any):
        if self._last_obs is None:
            raise gym.error.ResetNeeded("NoiseActionWrapper: call reset() before step()")
        noise = clip_noise("NoiseActionWrapper", action, self.action_noise_shape, self.noise_bound, batch=None)
        noise = expand_noise(noise, self.noise_shape)
        chunk = np.asarray(self.policy.sample(self._last_obs, noise), dtype=np.float32)
        obs, reward, terminated, truncated, info = self.chunker.step(chunk)
        self._last_obs = obs
        info["noise"] = noise
        info["chunk"] = chunk
        return obs, reward, terminated, truncated, info


class NoiseActionVectorWrapper(VectorWrapper):
    """`NoiseActionWrapper` for a gymnasium vector env: one batched `policy.sample` per vector step.

    The sub-envs must already execute chunks: each is an `ActionChunkWrapper(env, H)` (single
    action space (H*d,)); `make_noise_vector_env` builds such a vector env. Each vector step decodes
    all N noises in ONE call `policy.sample(obs_batch (N, ...), w (N, H*d))` -> (N, H, d) and hands
    the flat chunks to the vector env; every sub-env then runs its own chunk step by step.

    Sub-envs whose episode ends mid-chunk: the sub-env's `ActionChunkWrapper` stops at that step, so
    it is not stepped further in that chunk; this vector step reports its final observation, the
    sum of the rewards of the k steps it did take, its terminated/truncated flags and its final
    info (`steps` = k, `executed_actions` NaN after row k). The vector env's autoreset then works
    at chunk granularity, exactly as for any gymnasium env:
      * NEXT_STEP (gymnasium's default): the *next* vector step resets that sub-env instead of
        stepping it; its noise and decoded chunk are ignored, its reward is 0, terminated and
        truncated are False, its obs/info are the reset's (`infos["_noise"]` is False for it).
      * SAME_STEP: the reset happens in the same vector step; the returned obs is the reset
        observation (the final one is in `infos["final_obs"]`), and the next noise is decoded
        against the reset observation.
      * DISABLED: reset finished sub-envs yourself with `reset(options={"reset_mask": mask})`.
    So each sub-env sees the same transitions, with the same seeds and noise, as a vector env of
    `NoiseActionWrapper`s would give it (tests/test_wrappers.py checks NEXT_STEP and SAME_STEP).

    Infos: the sub-envs' infos (batched by the vector env), plus `noise` (N, H*d) clipped noise and
    `chunk` (N, H, d) decoded chunks, with masks `_noise` / `_chunk`. `shared_noise` as in
    `NoiseActionWrapper` (single action space (D,)).
    """

    def __init__(self, env: VectorEnv, policy: Any, noise_bound: float = 1.5, shared_noise: bool = False) -> None:
        super().__init__(env)
        who = "NoiseActionVectorWrapper"
        self.noise_bound = check_positive(who, "noise_bound", noise_bound)
        horizon, dim = check_chunked_sub_envs(who, policy, env.single_observation_space, env.single_action_space,
                                              "make_noise_vector_env")
        self.policy = bind_task(who, policy, env)
        self.noise_shape = (horizon, dim)
        self.shared_noise = bool(shared_noise)
        self.action_noise_shape = agent_noise_shape(self.noise_shape, self.shared_noise)
        bound = self.noise_bound
        self.single_action_space = gym.spaces.Box(-bound, bound, (int(np.prod(self.action_noise_shape)),), np.float32)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._last_obs: Any = None
        self._autoreset = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        obs, infos = self.env.reset(seed=seed, options=options)
        self._last_obs = obs
        mask = (options or {}).get("reset_mask")
        if mask is None:
            self._autoreset[:] = False
        else:
            self._autoreset[np.asarray(mask, dtype=bool)] = False
        return obs, infos

    def step(self, actions: Any):
        if self._last_obs is None:
            raise gym.error.ResetNeeded("NoiseActionVectorWrapper: call reset() before step()")
        who = "NoiseActionVectorWrapper"
        noise = clip_noise(who, actions, self.action_noise_shape, self.noise_bound, batch=self.num_envs)
        noise = expand_noise(noise, self.noise_shape)
        chunks = np.asarray(self.policy.sample(self._last_obs, noise), dtype=np.float32)
        obs, rewards, terminations, truncations, infos = self.env.step(chunks.reshape(self.num_envs, -1))
        self._last_obs = obs
        stepped = ~self._autoreset  # NEXT_STEP: the sub-envs reset this step ignored their noise
        infos = dict(infos)
        infos.update(noise=noise, _noise=stepped.copy(), chunk=chunks, _chunk=stepped.copy())
        if self.env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP) == AutoresetMode.NEXT_STEP:
            self._autoreset = np.logical_or(terminations, truncations)
        return obs, rewards, terminations, truncations, infos


def make_noise_vector_env(
    env_id: str,
    num_envs: int,
    policy: Any,
    noise_bound: float = 1.5,
    vectorization_mode: str = "sync",
    vector_kwargs: dict[str, Any] | None = None,
    shared_noise: bool = False,
    **env_kwargs: Any,
) -> NoiseActionVectorWrapper:
    """`num_envs` copies of `env_id` (`gymnasium.make_vec`), each chunked to the policy's horizon,
    steered through `NoiseActionVectorWrapper`; `env_kwargs` go to the env constructor."""
    check_generative("make_noise_vector_env", policy)
    vec = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode=vectorization_mode, vector_kwargs=vector_kwargs,
        wrappers=[functools.partial(ActionChunkWrapper, horizon=chunk_length(policy))], **env_kwargs,
    )
    return NoiseActionVectorWrapper(vec, policy, noise_bound, shared_noise)


def check_chunked_sub_envs(who: str, policy: Any, observation_space: gym.Space, action_space: gym.Space,
                           builder: str) -> tuple[int, int]:
    """The policy's noise shape (H, d) after checking that each sub-env executes chunks of the
    policy's `chunk_length` L actions (action space (L*d,)) and that the policy's spaces fit the
    sub-envs'; ValueError naming `who` otherwise."""
    horizon, dim = check_generative(who, policy)
    length = chunk_length(policy)
    if not (isinstance(action_space, gym.spaces.Box) and action_space.shape == (length * dim,)):
        raise ValueError(
            f"{who}: the sub-envs must execute action chunks of the policy's chunk length: expected a "
            f"sub-env action space of shape ({length * dim},) (ActionChunkWrapper(env, {length}) "
            f"around each sub-env; {builder} builds one), got {action_space}"
        )
    chunk_space = gym.spaces.Box(action_space.low[:dim], action_space.high[:dim], (dim,), action_space.dtype)
    check_policy_spaces(who, policy, observation_space, chunk_space)
    return horizon, dim


def clip_noise(who: str, action: Any, noise_shape: tuple[int, int], bound: float,
               batch: int | None) -> np.ndarray:
    """Validated noise clipped to [-bound, bound]: flat (H*d,), or (B, H*d) when `batch` is given.

    Accepts the flat shape or `noise_shape` per item; ValueError naming `who` for a value that is
    not real numbers (`steergym.checks.real_array`), a wrong shape or a non-finite value.
    """
    arr = real_array(action, owner=who, what="the noise action")  # float64: a huge finite value is clipped, not inf
    flat = int(np.prod(noise_shape))
    lead = () if batch is None else (batch,)
    if arr.shape not in ((*lead, flat), (*lead, *noise_shape)):
        raise ValueError(
            f"{who}: the noise action must have shape {(*lead, flat)} (or {(*lead, *noise_shape)}), "
            f"got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{who}: the noise action contains NaN or inf: {arr.tolist()}")
    return np.clip(arr.reshape(*lead, flat), -bound, bound).astype(np.float32)
