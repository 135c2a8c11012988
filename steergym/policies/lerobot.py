"""A LeRobot policy checkpoint as a steergym generative base policy (DSRL's noise, V-GPS's samples,
the residual wrapper's base actions).

    env = gymnasium.make("steergym/WidowXLiftCube-v0")
    policy = LeRobotPolicy.load("outputs/train/my_diffusion/checkpoints/last/pretrained_model", env)
    env = policy.wrap_env(env)                       # stacks n_obs_steps observations, as LeRobot does
    dsrl = NoiseActionWrapper(env, policy)           # SAC picks the (horizon, d) initial noise

What is loaded: a LeRobot policy folder as `save_pretrained` / `lerobot-train` write it (config.json,
model.safetensors and the policy_preprocessor / policy_postprocessor pipelines holding the dataset
statistics), or a hub id where the user has network. Only LeRobot's own loaders read it (safetensors
and json: nothing is unpickled). Supported policy types: `SUPPORTED_TYPES` (the diffusion policy,
whose sampler takes the initial noise); others are refused with that list.

Sampling (`sample(obs, noise)`): noise (horizon, d) in the policy's normalised action space is
denoised by the policy's U-Net; the actions from the current step on, `chunk_length =
n_action_steps` of them (LeRobot executes these, then replans), are un-normalised by the policy's
postprocessor and clipped to the env's action space: (chunk_length, d), or (B, chunk_length, d)
for a batch. A DDPM policy is switched to DDIM (eta = 0, the same trained weights and timesteps) at
load, with a warning: DDPM injects fresh noise at every denoising step, so its chunk would not be a
function of the initial noise and DSRL could not steer it.

Observations: `obs_map` says where each of the policy's input features comes from in the env's
observation: "obs" (a flat Box observation), a Dict key ("state", "pixels", "wrist_pixels"), either
with a slice ("obs[0:7]" = the Bridge proprio of a WidowX state vector). Without one,
`default_obs_map` matches features to the observation by name and shape and raises a ValueError
listing what the policy expects and what the env gives when it cannot. Images go from uint8
(H, W, 3) to float (3, H, W) in [0, 1], as LeRobot's env processing does. With n_obs_steps > 1 the
policy reads the last n_obs_steps observations: `wrap_env` adds gymnasium's FrameStackObservation
(padding with the first observation, as LeRobot's queues do) and `observation_space` is that
stacked space.

Needs the `lerobot` extra (`pip install -e ".[lerobot]"`: LeRobot 0.4.4, Python 3.10-3.11; see the
README for the install line and why it cannot share a venv with the `suites` extra).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from steergym.data.lerobot_format import ENV_STATE, IMAGES_PREFIX, INSTALL_HINT, STATE, Source
from steergym.policies.base import is_batched

SUPPORTED_TYPES = ("diffusion",)
BRIDGE_PROPRIO_DIM = 7  # [x, y, z, roll, pitch, yaw, gripper_open] at the front of a WidowX state vector


def import_lerobot() -> Any:
    """The lerobot package, or an ImportError saying how to install it."""
    try:
        import lerobot  # noqa: F401
        from lerobot.policies.factory import get_policy_class  # noqa: F401
    except ImportError as err:
        raise ImportError(f"LeRobotPolicy needs LeRobot: {INSTALL_HINT}") from err
    import lerobot
    return lerobot


# ------------------------------------------------------------------------------ observation map
def _feature_shape(feature: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in feature.shape)


def _fits(feature_key: str, shape: tuple[int, ...], space: gym.spaces.Box) -> bool:
    if feature_key.startswith(IMAGES_PREFIX):  # (C, H, W) feature <- (H, W, C) uint8 image
        return len(space.shape) == 3 and len(shape) == 3 and space.dtype == np.uint8 \
            and tuple(space.shape) == (shape[1], shape[2], shape[0])
    return len(space.shape) == 1 and tuple(space.shape) == shape


def describe(features: Mapping[str, Any], observation_space: gym.Space) -> str:
    """Two lines: what the policy expects and what the env gives (for errors)."""
    wants = ", ".join(f"{key} {_feature_shape(f)}" for key, f in features.items())
    if isinstance(observation_space, gym.spaces.Dict):
        gives = ", ".join(f"{key} {sp.shape} {sp.dtype}" for key, sp in observation_space.spaces.items())
    else:
        gives = f"obs {observation_space.shape} {getattr(observation_space, 'dtype', '')}"
    return f"the policy expects {wants}; the env gives {gives}"


def default_obs_map(features: Mapping[str, Any], observation_space: gym.Space) -> dict[str, str]:
    """Match the policy's input features (LeRobot names -> shapes) to the env's observation.

    By name first ("observation.state" <- "state", "observation.images.X" <- "X" or "X_pixels" or
    "pixels" when there is one image), then by shape; a WidowX state vector splits into the 7-D Bridge
    proprio ("observation.state") and the rest ("observation.environment_state") when the policy
    asks for both. ValueError listing both sides when a feature finds no source.
    """
    if isinstance(observation_space, gym.spaces.Dict):
        candidates = [k for k, sp in observation_space.spaces.items() if isinstance(sp, gym.spaces.Box)]
    else:
        candidates = ["obs"]
    images = [k for k in features if k.startswith(IMAGES_PREFIX)]
    used: set[str] = set()
    mapping: dict[str, str] = {}

    def pick(feature_key: str, names: list[str]) -> str | None:
        shape = _feature_shape(features[feature_key])
        ordered = [n for n in names if n in candidates] + [n for n in candidates if n not in names]
        for name in ordered:
            if name not in used and _fits(feature_key, shape, Source(name).space(observation_space)):
                return name
        return None

    for key in images:
        camera = key[len(IMAGES_PREFIX):]
        names = [camera, f"{camera}_pixels"] + (["pixels"] if len(images) == 1 else [])
        if "wrist" in camera:
            names.append("wrist_pixels")
        found = pick(key, names)
        if found:
            mapping[key], _ = found, used.add(found)
    vectors = [k for k in features if not k.startswith(IMAGES_PREFIX)]
    if STATE in vectors and ENV_STATE in vectors:  # split one state vector: proprio | the rest
        state_dim, env_dim = _feature_shape(features[STATE])[0], _feature_shape(features[ENV_STATE])[0]
        for name in [n for n in ("state", "obs") if n in candidates]:
            space = Source(name).space(observation_space)
            if len(space.shape) == 1 and space.shape[0] == state_dim + env_dim:
                mapping[STATE] = f"{name}[0:{state_dim}]"
                mapping[ENV_STATE] = f"{name}[{state_dim}:]"
                used.add(name)
                break
    for key in vectors:
        if key in mapping:
            continue
        found = pick(key, ["state", "obs", "environment_state"] if key == STATE else ["environment_state"])
        if found is None and key == STATE and _feature_shape(features[key]) == (BRIDGE_PROPRIO_DIM,):
            for name in [n for n in ("state", "obs") if n in candidates]:
                space = Source(name).space(observation_space)
                if len(space.shape) == 1 and space.shape[0] > BRIDGE_PROPRIO_DIM:
                    found = f"{name}[0:{BRIDGE_PROPRIO_DIM}]"
                    break
        if found:
            mapping[key] = found
            used.add(found)
    missing = [k for k in features if k not in mapping]
    if missing:
        raise ValueError(f"LeRobotPolicy: no source in the env's observation for {missing}: "
                         f"{describe(features, observation_space)}. Pass obs_map={{feature: source}}, "
                         "e.g. {'observation.state': 'state[0:7]', 'observation.images.top': 'pixels'}")
    return mapping


def check_obs_map(obs_map: Mapping[str, str], features: Mapping[str, Any],
                  observation_space: gym.Space) -> dict[str, Source]:
    """Parse `obs_map` and check it covers exactly the policy's inputs with fitting shapes."""
    unknown = sorted(set(obs_map) - set(features))
    missing = sorted(set(features) - set(obs_map))
    if unknown or missing:
        raise ValueError(f"LeRobotPolicy: obs_map {'names unknown features ' + str(unknown) if unknown else ''}"
                         f"{'; ' if unknown and missing else ''}{'misses ' + str(missing) if missing else ''}: "
                         f"{describe(features, observation_space)}")
    sources = {}
    for key, text in obs_map.items():
        source = Source.parse(text)
        space = source.space(observation_space)
        shape = _feature_shape(features[key])
        if not _fits(key, shape, space):
            want = f"uint8 {(shape[1], shape[2], shape[0])} (for {shape} CHW)" if key.startswith(IMAGES_PREFIX) \
                else str(shape)
            raise ValueError(f"LeRobotPolicy: obs_map[{key!r}] = {str(source)!r} gives {space.dtype} {space.shape}, "
                             f"the policy wants {want}: {describe(features, observation_space)}")
        sources[key] = source
    return sources


# ------------------------------------------------------------------------------------- policy
class LeRobotPolicy:
    """A loaded LeRobot policy with steergym's generative-policy interface.

    Args:
        lerobot_policy: the LeRobot `PreTrainedPolicy` (eval mode; its weights are not changed).
        preprocessor, postprocessor: its processor pipelines (normalisation with the dataset stats).
        observation_space: the env's observation space (before stacking).
        action_space: the env's action space, a 1-D Box of the policy's action dimension.
        obs_map: feature -> source (see the module docstring); None: `default_obs_map`.
        seed: seed of the noise generator `act` and `sample_n` draw from.
    Use `LeRobotPolicy.load(path, env)` rather than this constructor.
    """

    kind = "lerobot"

    def __init__(self, lerobot_policy: Any, preprocessor: Any, postprocessor: Any, observation_space: gym.Space,
                 action_space: gym.Space, obs_map: Mapping[str, str] | None = None, seed: int = 0) -> None:
        config = lerobot_policy.config
        if config.type not in SUPPORTED_TYPES:
            raise ValueError(f"LeRobotPolicy: policy type {config.type!r} is not supported (supported: "
                             f"{list(SUPPORTED_TYPES)}: their samplers take the initial noise)")
        action_feature = config.output_features.get("action")
        if action_feature is None:
            raise ValueError(f"LeRobotPolicy: the policy has no 'action' output (outputs: {list(config.output_features)})")
        action_dim = _feature_shape(action_feature)
        if not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
            raise ValueError(f"LeRobotPolicy: the env's action space must be a 1-D Box, got {action_space}")
        if tuple(action_space.shape) != action_dim:
            raise ValueError(f"LeRobotPolicy: the policy's actions are {action_dim}, the env's action space is "
                             f"{action_space.shape} ({action_space})")
        self.lerobot_policy = lerobot_policy.eval()
        self.preprocessor, self.postprocessor = preprocessor, postprocessor
        self.features = dict(config.input_features)
        self.env_observation_space = observation_space
        mapping = default_obs_map(self.features, observation_space) if obs_map is None else dict(obs_map)
        self.sources = check_obs_map(mapping, self.features, observation_space)
        self.obs_map = {key: str(source) for key, source in self.sources.items()}
        self.n_obs_steps = int(config.n_obs_steps)
        self.observation_space = observation_space if self.n_obs_steps == 1 else \
            gym.wrappers.FrameStackObservation(_SpaceEnv(observation_space), self.n_obs_steps).observation_space
        self.action_space = action_space
        self.noise_shape = (int(config.horizon), int(action_dim[0]))
        self.chunk_length = int(config.n_action_steps)
        self._low = np.asarray(action_space.low, np.float32)
        self._high = np.asarray(action_space.high, np.float32)
        self._generator = torch.Generator().manual_seed(int(seed))
        self._queue: np.ndarray | None = None
        self._queue_batched = False
        self.folder: Path | None = None  # the folder `load` read (what `save` copies)

    # ------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str | Path, env: gym.Env | None = None, *, observation_space: gym.Space | None = None,
             action_space: gym.Space | None = None, obs_map: Mapping[str, str] | None = None, seed: int = 0,
             device: str = "cpu") -> "LeRobotPolicy":
        """Load a LeRobot policy folder (or hub id) for `env` (or the two spaces).

        A DDPM diffusion policy is switched to DDIM with eta = 0 (warned): the chunk must be a
        deterministic function of the initial noise for DSRL.
        """
        import_lerobot()
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        if env is not None:
            observation_space = observation_space or env.observation_space
            action_space = action_space or env.action_space
        if observation_space is None or action_space is None:
            raise ValueError("LeRobotPolicy.load: give the env (or observation_space and action_space)")
        where = str(path)
        if Path(where).exists() and not (Path(where) / "config.json").is_file():
            raise ValueError(f"LeRobotPolicy.load: {where} has no config.json; point at the folder that "
                             "save_pretrained wrote (for lerobot-train: .../checkpoints/last/pretrained_model)")
        config = PreTrainedConfig.from_pretrained(where)
        if config.type not in SUPPORTED_TYPES:
            raise ValueError(f"LeRobotPolicy.load: {where} holds a {config.type!r} policy; supported: "
                             f"{list(SUPPORTED_TYPES)} (their samplers take the initial noise)")
        if getattr(config, "noise_scheduler_type", "DDIM") != "DDIM":
            warnings.warn(f"LeRobotPolicy.load: {where} samples with {config.noise_scheduler_type}; switched to DDIM "
                          "(eta = 0, same weights and timesteps) so its chunk is a deterministic function of the "
                          "initial noise, as DSRL needs", stacklevel=2)
            config.noise_scheduler_type = "DDIM"
        config.device = device
        policy = get_policy_class(config.type).from_pretrained(where, config=config)
        pre, post = make_pre_post_processors(config, pretrained_path=where,
                                             preprocessor_overrides={"device_processor": {"device": device}})
        loaded = cls(policy, pre, post, observation_space, action_space, obs_map=obs_map, seed=seed)
        loaded.folder = Path(where) if Path(where).is_dir() else None  # a hub id: None
        return loaded

    def save(self, path: str | Path) -> Path:
        """A copy of the folder this policy was loaded from at `path` (a new folder), with the sampler
        it runs (DDIM): LeRobot's own files, so `LeRobotPolicy.load(path, env)` gives it back. Files are
        hard-linked where the file system allows (a large policy costs no space), else copied."""
        import json
        import os
        import shutil

        if self.folder is None:
            raise ValueError("LeRobotPolicy.save copies the folder the policy was loaded from; this one came "
                             "from a hub id: download it (huggingface-cli download ID --local-dir DIR) and load DIR")

        def link_or_copy(src: str, dst: str) -> None:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        path = Path(path)
        shutil.copytree(self.folder, path, copy_function=link_or_copy)
        config_file = path / "config.json"
        config = json.loads(config_file.read_text())
        if config.get("noise_scheduler_type", "DDIM") != "DDIM":  # written anew, never through the link
            config["noise_scheduler_type"] = "DDIM"
            config_file.unlink()
            config_file.write_text(json.dumps(config, indent=4) + "\n")
        return path

    def wrap_env(self, env: gym.Env) -> gym.Env:
        """`env` with the observation history the policy reads (FrameStackObservation when n_obs_steps > 1,
        padded with the first observation as LeRobot's queues are); `env` itself otherwise."""
        if self.n_obs_steps == 1:
            return env
        return gym.wrappers.FrameStackObservation(env, self.n_obs_steps, padding_type="reset")

    # ------------------------------------------------------------------------------- sampling
    @property
    def device(self) -> torch.device:
        return next(self.lerobot_policy.parameters()).device

    def fork(self, seed: int | None = None) -> "LeRobotPolicy":
        """A view sharing the weights with its own chunk queue and noise generator (one per env)."""
        view = copy.copy(self)
        view._generator = torch.Generator().manual_seed(
            int(self._generator.initial_seed() if seed is None else seed))
        view._queue = None
        return view

    def reset(self, seed: int | None = None) -> None:
        """Forget the chunk in progress (call at episode start); optionally reseed the noise."""
        self._queue = None
        if seed is not None:
            self._generator.manual_seed(int(seed))

    def sample(self, obs: Any, noise: Any) -> np.ndarray:
        """The executed chunk for `noise` (horizon, d) or flat: (chunk_length, d); batched: (B, ...)."""
        batch, batched, size = self._inputs(obs)
        arr = noise.detach().cpu().numpy() if torch.is_tensor(noise) else np.asarray(noise, dtype=np.float32)
        flat = int(np.prod(self.noise_shape))
        per_item = arr.shape[1:] if batched else arr.shape
        if per_item not in (self.noise_shape, (flat,)) or (batched and arr.shape[0] != size):
            lead = (size,) if batched else ()
            raise ValueError(f"LeRobotPolicy.sample: noise must have shape {(*lead, *self.noise_shape)} or "
                             f"{(*lead, flat)}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("LeRobotPolicy.sample: noise contains NaN or inf")
        noise_t = torch.as_tensor(arr, dtype=torch.float32).reshape(size, *self.noise_shape)
        chunk = self._generate(batch, noise_t)
        return chunk if batched else chunk[0]

    def sample_n(self, obs: Any, n: int) -> np.ndarray:
        """`n` chunks with fresh noise: (n, chunk_length, d), or (B, n, chunk_length, d) for a batch."""
        if isinstance(n, bool) or int(n) < 1:
            raise ValueError(f"LeRobotPolicy.sample_n: n must be >= 1, got {n}")
        n = int(n)
        batch, batched, size = self._inputs(obs)
        repeated = {key: value.repeat_interleave(n, dim=0) for key, value in batch.items()}
        noise = torch.randn((size * n, *self.noise_shape), generator=self._generator)
        chunks = self._generate(repeated, noise).reshape(size, n, self.chunk_length, self.noise_shape[1])
        return chunks if batched else chunks[0]

    def act(self, obs: Any) -> np.ndarray:
        """One action (d,) (or (B, d)): a chunk with fresh noise, executed open loop, then replanned."""
        batch, batched, size = self._inputs(obs)
        if self._queue is None or self._queue.shape[1] == 0 or self._queue.shape[0] != size \
                or self._queue_batched != batched:
            noise = torch.randn((size, *self.noise_shape), generator=self._generator)
            self._queue, self._queue_batched = self._generate(batch, noise), batched
        action, self._queue = self._queue[:, 0], self._queue[:, 1:]
        return action if batched else action[0]

    # ------------------------------------------------------------------------------- internals
    def _inputs(self, obs: Any) -> tuple[dict[str, torch.Tensor], bool, int]:
        """(LeRobot inputs (B, n_obs_steps, ...), batched, B) from a (batch of) stacked steergym
        observation(s)."""
        batched = is_batched(obs, self.observation_space)
        if isinstance(obs, Mapping):
            obs = {key: np.asarray(value) for key, value in obs.items()}
        tensors = {}
        for key, source in self.sources.items():
            value = source.take(obs)
            if not batched:
                value = value[None]
            if self.n_obs_steps == 1:
                value = value[:, None]
            if value.dtype == np.uint8:  # (B, n, H, W, C) uint8 -> (B, n, C, H, W) float in [0, 1]
                tensor = torch.as_tensor(value).permute(0, 1, 4, 2, 3).float() / 255.0
            else:
                if not np.all(np.isfinite(value)):
                    raise ValueError(f"LeRobotPolicy: observation source {str(source)!r} contains NaN or inf")
                tensor = torch.as_tensor(np.asarray(value, dtype=np.float32))
            tensors[key] = tensor
        return tensors, batched, int(next(iter(tensors.values())).shape[0])

    @torch.no_grad()
    def _generate(self, batch: dict[str, torch.Tensor], noise: torch.Tensor) -> np.ndarray:
        """Normalise, denoise `noise` (B, horizon, d), keep the executed steps, un-normalise, clip."""
        from lerobot.utils.constants import OBS_IMAGES

        model = self.lerobot_policy
        inputs = self.preprocessor(dict(batch))
        image_keys = list(model.config.image_features)
        if image_keys:
            inputs[OBS_IMAGES] = torch.stack([inputs[key] for key in image_keys], dim=-4)
        inputs = {key: value for key, value in inputs.items() if key.startswith("observation.")}
        actions = model.diffusion.generate_actions(inputs, noise=noise.to(self.device))
        actions = self.postprocessor(actions)
        return np.clip(actions.detach().cpu().numpy().astype(np.float32), self._low, self._high)

    def __repr__(self) -> str:
        config = self.lerobot_policy.config
        return (f"LeRobotPolicy({config.type}, noise {self.noise_shape}, chunk {self.chunk_length}, "
                f"n_obs_steps {self.n_obs_steps}, obs_map {self.obs_map})")


class _SpaceEnv(gym.Env):
    """A stand-in env with only an observation space, to ask FrameStackObservation for its stacked space."""

    def __init__(self, observation_space: gym.Space) -> None:
        self.observation_space = observation_space
        self.action_space = gym.spaces.Discrete(1)
