"""DSRL's latent-noise MDP over a Stable-Baselines3 vector env: one batched decode per step.

    venv = make_noise_vec_env("steergym/WidowXLiftCube-v0", 8, policy, vec_env_cls=SubprocVecEnv)
    SAC("MlpPolicy", venv).learn(100_000)

`NoiseActionVecEnvWrapper` is the SB3 counterpart of `NoiseActionVectorWrapper` (gymnasium vector
envs): the sub-envs only execute chunks, the policy runs once per vector step in this process.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

from steergym.policies.base import agent_noise_shape, expand_noise
from steergym.wrappers.chunk import (
    ActionChunkWrapper,
    bind_task,
    check_generative,
    check_positive,
    chunk_length,
)
from steergym.wrappers.noise import check_chunked_sub_envs, clip_noise


class NoiseActionVecEnvWrapper(VecEnvWrapper):
    """`NoiseActionWrapper` for an SB3 `VecEnv` (DummyVecEnv, SubprocVecEnv): the agent's action is
    the initial noise w of a frozen generative policy, decoded for all N envs in ONE
    `policy.sample(obs_batch, w (N, H*d)) -> (N, H, d)` call per vector step.

    Args:
        venv: an SB3 vector env whose sub-envs execute action chunks of the policy's horizon H,
            i.e. `ActionChunkWrapper(env, H)` around each (single action space (H*d,));
            `make_noise_vec_env` builds one. Put this wrapper directly on it: the policy must see
            raw observations (stack `VecNormalize` etc. on top, not below).
        policy: a generative policy (`sample(obs, noise)`, `noise_shape == (H, d)`, spaces equal to
            the sub-envs'); a task-conditioned one is bound to the sub-envs' id. Used read-only
            (`sample` is a pure function), so it is never copied to subprocesses.
        noise_bound: b, the half-width of the noise box.
        shared_noise: one noise row (D,) repeated over the chunk (as `NoiseActionWrapper`).

    Action space: Box(-b, b, (H*d,), float32) ((D,) with `shared_noise`), per env. Observation space: the venv's.

    Step: `step_async(actions)` checks and clips the (N, H*d) noise (wrong shape or NaN/inf:
    ValueError), decodes it against the last observations this wrapper returned, and forwards the
    flat chunks; each sub-env runs its chunk, stopping early when its episode ends (reward: the sum
    over the executed steps). SB3 resets a finished sub-env within the same step and returns the
    reset observation (the final one is `infos[i]["terminal_observation"]`), so the next noise is
    decoded against the new episode's first observation: each sub-env sees exactly the transitions
    a `NoiseActionWrapper` would give it. Dict observations arrive as a dict of (N, ...) arrays and
    are passed to `policy.sample` as they are.

    Infos: the sub-envs' (`ActionChunkWrapper`'s keys) plus `noise` (H*d,) the clipped noise and
    `chunk` (H, d) the decoded chunk, per env.
    """

    def __init__(self, venv: VecEnv, policy: Any, noise_bound: float = 1.5, shared_noise: bool = False) -> None:
        who = "NoiseActionVecEnvWrapper"
        bound = check_positive(who, "noise_bound", noise_bound)
        horizon, dim = check_chunked_sub_envs(who, policy, venv.observation_space, venv.action_space,
                                              "make_noise_vec_env")
        policy = bind_task(who, policy, _env_id(venv) if _needs_task(policy) else "")
        self.action_noise_shape = agent_noise_shape((horizon, dim), shared_noise)
        super().__init__(venv, action_space=gym.spaces.Box(-bound, bound, (int(np.prod(self.action_noise_shape)),),
                                                           np.float32))
        self.policy = policy
        self.noise_bound = bound
        self.noise_shape = (horizon, dim)
        self.shared_noise = bool(shared_noise)
        self._last_obs: Any = None
        self._noise: np.ndarray | None = None
        self._chunks: np.ndarray | None = None

    def reset(self):
        obs = self.venv.reset()
        self._last_obs = obs
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        if self._last_obs is None:
            raise gym.error.ResetNeeded("NoiseActionVecEnvWrapper: call reset() before step()")
        noise = clip_noise("NoiseActionVecEnvWrapper", actions, self.action_noise_shape, self.noise_bound,
                           batch=self.num_envs)
        noise = expand_noise(noise, self.noise_shape)
        chunks = np.asarray(self.policy.sample(self._last_obs, noise), dtype=np.float32)
        self._noise, self._chunks = noise, chunks
        self.venv.step_async(chunks.reshape(self.num_envs, -1))

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self._last_obs = obs
        for i, info in enumerate(infos):
            info["noise"] = self._noise[i]
            info["chunk"] = self._chunks[i]
        return obs, rewards, dones, infos


def make_noise_vec_env(
    env_id: str,
    n_envs: int,
    policy: Any,
    noise_bound: float = 1.5,
    vec_env_cls: type[VecEnv] = DummyVecEnv,
    seed: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    vec_env_kwargs: dict[str, Any] | None = None,
    shared_noise: bool = False,
) -> NoiseActionVecEnvWrapper:
    """`n_envs` copies of `env_id` (SB3 `make_vec_env`: Monitor, then `ActionChunkWrapper(env, H)`),
    steered through `NoiseActionVecEnvWrapper`.

    `seed`: sub-env i resets with seed + i at the first reset (SB3's convention); `env_kwargs` go
    to `gymnasium.make` (e.g. obs_mode, max_episode_steps); `vec_env_kwargs` to `vec_env_cls`
    (e.g. start_method for SubprocVecEnv). The Monitor sits under the chunker, so its episode
    returns and lengths are in primitive control steps.
    """
    who = "make_noise_vec_env"
    check_generative(who, policy)
    if isinstance(env_id, str):
        policy = bind_task(who, policy, env_id)
    venv = make_vec_env(
        env_id, n_envs=n_envs, seed=seed, vec_env_cls=vec_env_cls, env_kwargs=env_kwargs,
        vec_env_kwargs=vec_env_kwargs, wrapper_class=ActionChunkWrapper, wrapper_kwargs={"horizon": chunk_length(policy)},
    )
    try:
        return NoiseActionVecEnvWrapper(venv, policy, noise_bound, shared_noise)
    except BaseException:
        venv.close()
        raise


def _needs_task(policy: Any) -> bool:
    return bool(getattr(policy, "task_ids", ())) and getattr(policy, "task", None) is None


def _env_id(venv: VecEnv) -> str | None:
    """The first sub-env's registered id (`spec.id`), or None."""
    try:
        spec = venv.get_attr("spec", [0])[0]
    except Exception:  # noqa: BLE001 - a custom VecEnv without specs: the task cannot be inferred
        return None
    return getattr(spec, "id", None)
