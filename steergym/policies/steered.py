"""`SteeredPolicy`: a frozen base policy steered by a learned actor, as one Policy.

What `steergym train dsrl|residual|sac` produces and `steergym eval --policy RUN/policy` runs:

| method   | the actor outputs                 | the robot executes                                  |
|----------|-----------------------------------|-----------------------------------------------------|
| dsrl     | noise w (H*d,) in [-b, b]          | the chunk `base.sample(obs, w)`, open loop (H steps) |
| residual | correction c (d,) in [-1, 1]       | clip(`base.act(obs)` + scale * c)                    |
| sac      | the action (d,)                    | the action (no base policy)                          |

The actor is a Stable-Baselines3 `SACPolicy` actor. `deterministic=False` samples its tanh-Gaussian
from the policy's own generator, reseeded by `reset(seed)` so an episode depends only on its seed
(DSRL evaluates its noise policy this way); `deterministic=True` uses the tanh of the mean (the
SAC convention). `default_deterministic(method)`: stochastic for dsrl, deterministic otherwise. A saved folder holds `steered.json` (method, spaces, network shape, SHA-256 of
the weights), `actor.safetensors`, and `base/`, a copy of the base policy's checkpoint, so the
folder is self-contained. Nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from steergym.atomic import atomic_folder
from steergym.policies.base import agent_noise_shape, check_action, expand_noise, reset_policy
from steergym.policies.checkpoint import load_policy, save_policy, sha256_file
from steergym.rollout import with_observation_history
from steergym.space_json import space_from_json, space_to_json

STEERED_FORMAT = "steergym.steered-policy"
STEERED_VERSION = 1
STEERED_CONFIG = "steered.json"
ACTOR_FILE = "actor.safetensors"
BASE_FOLDER = "base"
METHODS = ("dsrl", "residual", "sac")
CLIP_OBS, NORM_EPS = 10.0, 1e-8  # the learner's input: clip((obs - mean) / sqrt(std^2 + eps), +-10), as SB3 VecNormalize
STATS_PREFIX = "learner_obs."
ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


def default_deterministic(method: str) -> bool:
    """How a method's actor is evaluated by default: DSRL samples its noise policy (as the DSRL
    code evaluates), residual and SAC use the mean action (SB3's convention)."""
    return method != "dsrl"


def actor_action_space(method: str, env_action_space: gym.spaces.Box, base: Any,
                       noise_bound: float, shared_noise: bool = False) -> gym.spaces.Box:
    """The learner's action space for `method` (what the SB3 actor outputs): dsrl's is the noise,
    (H*D,), or one row (D,) repeated over the chunk with `shared_noise`."""
    if method == "dsrl":
        shape = agent_noise_shape(tuple(int(n) for n in base.noise_shape), shared_noise)
        return gym.spaces.Box(-noise_bound, noise_bound, (int(np.prod(shape)),), np.float32)
    if method == "residual":
        return gym.spaces.Box(-1.0, 1.0, env_action_space.shape, np.float32)
    if method == "sac":
        return env_action_space
    raise ValueError(f"unknown steering method {method!r}; valid methods: {', '.join(METHODS)}")


def build_actor(observation_space: gym.Space, action_space: gym.spaces.Box, hidden: tuple[int, ...],
                activation: str) -> Any:
    """A fresh SB3 `SACPolicy` (actor and critics) of the given shape, in eval mode on the CPU."""
    from stable_baselines3.sac.policies import MultiInputPolicy, SACPolicy

    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    cls = MultiInputPolicy if isinstance(observation_space, gym.spaces.Dict) else SACPolicy
    policy = cls(observation_space, action_space, lambda _: 0.0, net_arch=list(hidden),
                 activation_fn=ACTIVATIONS[activation])
    policy.set_training_mode(False)
    return policy


class SteeredPolicy:
    """A base policy steered by an SB3 SAC actor (see the module table).

    Args:
        method: "dsrl", "residual" or "sac".
        base: the frozen base policy (generative for dsrl; any Policy for residual; None for sac).
        sb3_policy: an SB3 `SACPolicy` whose actor maps the env's observation to the learner's
            action (noise, correction or action); only its actor is used.
        observation_space, action_space: the env's.
        noise_bound: DSRL's b. residual_scale: the residual's scale.
        env_id: the task it was trained on (for `steergym eval` and the saved config).
        hidden, activation: the actor's network shape (saved so `load_steered` can rebuild it).
        obs_stats: (mean, std) the actor's input was normalised with in training, or None.
        deterministic: mean action (True) or a seeded sample (False); None: `default_deterministic`.
        shared_noise: dsrl: the actor outputs one noise row (D,), repeated over the chunk.
    """

    def __init__(self, method: str, base: Any, sb3_policy: Any, observation_space: gym.Space,
                 action_space: gym.spaces.Box, noise_bound: float = 1.5, residual_scale: float = 0.1,
                 env_id: str | None = None, hidden: tuple[int, ...] = (256, 256), activation: str = "tanh",
                 obs_stats: tuple[np.ndarray, np.ndarray] | None = None, deterministic: bool | None = None,
                 shared_noise: bool = False) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown steering method {method!r}; valid methods: {', '.join(METHODS)}")
        if method != "sac" and base is None:
            raise ValueError(f"SteeredPolicy: method {method!r} needs a base policy")
        self.method, self.base, self.sb3_policy = method, base, sb3_policy
        self.observation_space, self.action_space = observation_space, action_space
        self.noise_bound, self.residual_scale = float(noise_bound), float(residual_scale)
        self.env_id, self.hidden, self.activation = env_id, tuple(int(h) for h in hidden), activation
        self.name = f"{method}-steered" + (f" {getattr(base, 'name', '')}".rstrip() if base is not None else "")
        self.obs_stats = None if obs_stats is None else tuple(np.asarray(x, dtype=np.float64) for x in obs_stats)
        self.deterministic = default_deterministic(method) if deterministic is None else bool(deterministic)
        self.shared_noise = bool(shared_noise)
        self._generator = torch.Generator().manual_seed(0)
        self._queue: list[np.ndarray] = []

    # -------------------------------------------------------------------- acting
    def actor_output(self, obs: Any) -> np.ndarray:
        """The actor's output for one observation (noise, correction or action), in its space's units:
        the mean's tanh when `deterministic`, else a tanh-Gaussian sample from the own generator."""
        if self.obs_stats is not None:
            mean, std = self.obs_stats
            obs = np.clip((np.asarray(obs, dtype=np.float64) - mean) / np.sqrt(std**2 + NORM_EPS),
                          -CLIP_OBS, CLIP_OBS).astype(np.float32)
        policy = self.sb3_policy
        obs_t, _ = policy.obs_to_tensor(obs)
        with torch.no_grad():
            if self.deterministic:
                squashed = policy.actor(obs_t, deterministic=True)
            else:
                mean_t, log_std, _ = policy.actor.get_action_dist_params(obs_t)
                noise = torch.randn(mean_t.shape, generator=self._generator)
                squashed = torch.tanh(mean_t + log_std.exp() * noise)
        squashed = squashed.cpu().numpy().reshape(policy.action_space.shape)
        return np.asarray(policy.unscale_action(squashed), dtype=np.float32)

    def act(self, obs: Any) -> np.ndarray:
        """One primitive action (d,) for one observation."""
        who = f"SteeredPolicy({self.method})"
        if self.method == "dsrl":
            if not self._queue:
                noise = expand_noise(self.actor_output(obs), self.base.noise_shape).reshape(self.base.noise_shape)
                chunk = np.asarray(self.base.sample(obs, noise), dtype=np.float32)
                self._queue = list(chunk)
            return check_action(self._queue.pop(0), self.action_space, False, who)
        if self.method == "residual":
            base = check_action(self.base.act(obs), self.action_space, False, who)
            action = base + self.residual_scale * self.actor_output(obs)
            return np.clip(action, self.action_space.low, self.action_space.high).astype(self.action_space.dtype)
        return check_action(self.actor_output(obs), self.action_space, False, who)

    def wrap_env(self, env: gym.Env) -> gym.Env:
        """`env` with the observation history the base policy reads (see `LeRobotPolicy.wrap_env`)."""
        return with_observation_history(self.base, env)

    def reset(self, seed: int | None = None) -> None:
        """Start an episode: empty the chunk queue, reseed the actor's sampling and the base policy."""
        self._queue = []
        if seed is not None:
            self._generator.manual_seed(int(seed))
        if self.base is not None:
            reset_policy(self.base, seed)

    # -------------------------------------------------------------------- saving
    def save(self, path: str | os.PathLike) -> Path:
        """Write the folder `path` atomically (replacing an earlier steered policy there)."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.exists() and not (path / STEERED_CONFIG).exists():
            raise ValueError(f"refusing to overwrite {path}: it exists and is not a steered-policy folder")
        with atomic_folder(path) as staging:
            actor = {k: v.detach().cpu().contiguous().clone() for k, v in self.sb3_policy.actor.state_dict().items()}
            if self.obs_stats is not None:
                actor[STATS_PREFIX + "mean"] = torch.as_tensor(self.obs_stats[0])
                actor[STATS_PREFIX + "std"] = torch.as_tensor(self.obs_stats[1])
            save_file(actor, str(staging / ACTOR_FILE), metadata={"format": STEERED_FORMAT})
            lerobot_base = getattr(self.base, "kind", None) == "lerobot"
            if lerobot_base:  # LeRobot's own files, and what loading them needs from the env
                self.base.save(staging / BASE_FOLDER)
            elif self.base is not None:
                save_policy(self.base, staging / BASE_FOLDER, metadata={"role": "frozen base policy"})
            config = {
                "format": STEERED_FORMAT,
                "format_version": STEERED_VERSION,
                "method": self.method,
                "env_id": self.env_id,
                "noise_bound": self.noise_bound,
                "residual_scale": self.residual_scale,
                "hidden": list(self.hidden),
                "activation": self.activation,
                "observation_space": space_to_json(self.observation_space, compact=False),
                "action_space": space_to_json(self.action_space, compact=False),
                "actor_sha256": sha256_file(staging / ACTOR_FILE),
                "deterministic": self.deterministic,
                "shared_noise": self.shared_noise,
            }
            if lerobot_base:
                config["base_kind"] = "lerobot"
                config["base_obs_map"] = dict(self.base.obs_map)
                config["base_observation_space"] = space_to_json(self.base.env_observation_space, compact=False)
            (staging / STEERED_CONFIG).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
        return path


def is_steered_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / STEERED_CONFIG).is_file()


def load_steered(path: str | os.PathLike, seed: int = 0, deterministic: bool | None = None) -> SteeredPolicy:
    """Load a folder written by `SteeredPolicy.save`; ValueError naming the file when it is not one.

    `deterministic` as in `SteeredPolicy` (None: the saved choice)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config_file = path / STEERED_CONFIG
    if not config_file.is_file():
        raise ValueError(f"{path}: not a steered-policy folder (no {STEERED_CONFIG})")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{config_file}: unreadable or not JSON ({exc})") from exc
    if config.get("format") != STEERED_FORMAT or config.get("format_version") != STEERED_VERSION:
        raise ValueError(f"{config_file}: format {config.get('format')!r} version {config.get('format_version')!r}, "
                         f"expected {STEERED_FORMAT!r} version {STEERED_VERSION}")
    method = config.get("method")
    if method not in METHODS:
        raise ValueError(f"{config_file}: unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    actor_file = path / ACTOR_FILE
    if not actor_file.is_file():
        raise ValueError(f"{actor_file}: missing")
    if sha256_file(actor_file) != config.get("actor_sha256"):
        raise ValueError(f"{actor_file}: SHA-256 does not match {STEERED_CONFIG} (corrupt or modified)")
    observation_space = space_from_json(config["observation_space"])
    action_space = space_from_json(config["action_space"])
    if config.get("base_kind") == "lerobot":
        from steergym.policies.lerobot import LeRobotPolicy

        base = LeRobotPolicy.load(path / BASE_FOLDER, observation_space=space_from_json(config["base_observation_space"]),
                                  action_space=action_space, obs_map=config["base_obs_map"], seed=seed)
    else:
        base = load_policy(path / BASE_FOLDER, seed=seed) if method != "sac" else None
    if base is not None and getattr(base, "task_ids", ()) and config.get("env_id"):
        base = base.for_task(config["env_id"])
    shared_noise = config.get("shared_noise", False)  # absent in folders saved before the option
    if not isinstance(shared_noise, bool):
        raise ValueError(f"{config_file}: shared_noise must be true or false, got {shared_noise!r}")
    space = actor_action_space(method, action_space, base, float(config["noise_bound"]), shared_noise)
    sb3_policy = build_actor(observation_space, space, tuple(config["hidden"]), config["activation"])
    try:
        tensors = load_file(str(actor_file))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{actor_file}: not a readable safetensors file ({exc})") from exc
    stats = None
    if STATS_PREFIX + "mean" in tensors:
        stats = (tensors.pop(STATS_PREFIX + "mean").numpy(), tensors.pop(STATS_PREFIX + "std", torch.ones(1)).numpy())
    try:
        sb3_policy.actor.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ValueError(f"{actor_file}: weights do not fit the network in {STEERED_CONFIG} ({exc})") from exc
    return SteeredPolicy(method, base, sb3_policy, observation_space, action_space,
                         noise_bound=config["noise_bound"], residual_scale=config["residual_scale"],
                         env_id=config.get("env_id"), hidden=tuple(config["hidden"]),
                         activation=config["activation"], obs_stats=stats,
                         deterministic=config.get("deterministic") if deterministic is None else deterministic,
                         shared_noise=shared_noise)
