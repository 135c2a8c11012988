"""Policy checkpoints: a folder with `model.safetensors` (weights) and `config.json` (everything else).

config.json holds the format tag and version, the policy kind and `PolicyConfig`, both spaces
(Minari's JSON space serialisation), the SHA-256 of the weights file, and free-form metadata
(training recipe, measured success). Loading rebuilds the architecture from the config and refuses
anything that does not match exactly: another format, an unknown kind, missing or extra tensors,
wrong shapes or dtypes, non-finite weights, a weights file whose hash differs (tampered), or spaces
that differ from the env the policy is meant for. Nothing is ever unpickled.

Writes go to a temporary sibling folder renamed into place, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from steergym.atomic import atomic_folder

FORMAT = "steergym.policy"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".zip")


def policy_classes() -> dict[str, type]:
    from steergym.policies.diffusion import DiffusionPolicy
    from steergym.policies.flow import FlowPolicy

    return {"diffusion": DiffusionPolicy, "flow": FlowPolicy}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_policy(policy, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write `policy` to the folder `path` (replacing an existing checkpoint there); returns it."""
    from minari.serialization import serialize_space
    from safetensors.torch import save_file

    import steergym

    path = Path(path)
    if path.exists() and not (path / CONFIG_FILE).exists():
        raise ValueError(f"refusing to overwrite {path}: it exists and is not a steergym checkpoint folder")
    with atomic_folder(path) as staging:
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in policy.state_dict().items()}
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": FORMAT})
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "steergym_version": steergym.__version__,
            "kind": policy.kind,
            "policy_config": policy.config.to_dict(),
            "observation_space": json.loads(serialize_space(policy.observation_space)),
            "action_space": json.loads(serialize_space(policy.action_space)),
            "weights_sha256": sha256_file(staging / WEIGHTS_FILE),
            "metadata": metadata or {},
        }
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    return path


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The validated config.json of the checkpoint folder `path`."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(
            f"{path}: steergym does not load pickled checkpoints ({path.suffix}); a steergym checkpoint is "
            f"a folder with {CONFIG_FILE} and {WEIGHTS_FILE}"
        )
    if not path.is_dir():
        raise ValueError(f"{path}: no such checkpoint folder (expected {CONFIG_FILE} and {WEIGHTS_FILE} inside)")
    config_path = path / CONFIG_FILE
    if not config_path.exists() or not (path / WEIGHTS_FILE).exists():
        raise ValueError(f"{path}: not a steergym checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config_path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{config_path}: not a steergym policy checkpoint (format {found!r}, expected {FORMAT!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{config_path}: format_version {config.get('format_version')!r} is not supported "
            f"(this steergym reads version {FORMAT_VERSION})"
        )
    missing = [k for k in ("kind", "policy_config", "observation_space", "action_space", "weights_sha256")
               if k not in config]
    if missing:
        raise ValueError(f"{config_path}: missing fields {missing}")
    if config["kind"] not in policy_classes():
        raise ValueError(f"{config_path}: unknown policy kind {config['kind']!r}; known: {sorted(policy_classes())}")
    return config


def load_policy(path: str | os.PathLike, env: gym.Env | None = None, *,
                observation_space: gym.Space | None = None, action_space: gym.Space | None = None,
                seed: int = 0):
    """Load the checkpoint folder `path`; validate it against `env`'s (or the given) spaces.

    Raises:
        ValueError: not a checkpoint, wrong format or version, tampered or mismatched weights, or
            spaces that differ from the env's (the message names the file and the difference).
    """
    from minari.serialization import deserialize_space
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from steergym.policies.config import PolicyConfig

    path = Path(path)
    config = read_config(path)
    weights_path = path / WEIGHTS_FILE
    if sha256_file(weights_path) != config["weights_sha256"]:
        raise ValueError(f"{weights_path}: SHA-256 differs from the one in {CONFIG_FILE}; the weights were modified")
    try:
        obs_space = deserialize_space(json.dumps(config["observation_space"]))
        act_space = deserialize_space(json.dumps(config["action_space"]))
        policy_config = PolicyConfig.from_dict(config["policy_config"])
    except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
        raise ValueError(f"{path / CONFIG_FILE}: invalid spaces or policy_config ({exc})") from exc
    if env is not None:
        observation_space = observation_space or env.observation_space
        action_space = action_space or env.action_space
    for label, expected, stored in (("observation", observation_space, obs_space),
                                    ("action", action_space, act_space)):
        if expected is not None and not _same_space(expected, stored):
            raise ValueError(f"{path}: the policy's {label} space {stored} does not match the env's {expected}")
    policy = policy_classes()[config["kind"]](obs_space, act_space, policy_config, seed=seed)
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{weights_path}: unreadable safetensors file ({exc})") from exc
    expected_state = policy.state_dict()
    missing, extra = sorted(set(expected_state) - set(tensors)), sorted(set(tensors) - set(expected_state))
    if missing or extra:
        raise ValueError(f"{weights_path}: tensors do not match the architecture (missing {missing}, unexpected {extra})")
    for name, value in tensors.items():
        want = expected_state[name]
        if value.shape != want.shape or value.dtype != want.dtype:
            raise ValueError(
                f"{weights_path}: tensor {name!r} is {tuple(value.shape)} {value.dtype}, "
                f"expected {tuple(want.shape)} {want.dtype}"
            )
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{weights_path}: tensor {name!r} contains NaN or inf")
    policy.load_state_dict(tensors)
    policy.metadata = dict(config.get("metadata", {}))
    policy.checkpoint_path = str(path)
    return policy


def _same_space(a: gym.Space, b: gym.Space) -> bool:
    """Space equality that tolerates float rounding of Box bounds through JSON."""
    if isinstance(a, gym.spaces.Dict) and isinstance(b, gym.spaces.Dict):
        return set(a.spaces) == set(b.spaces) and all(_same_space(a[k], b[k]) for k in a.spaces)
    if isinstance(a, gym.spaces.Box) and isinstance(b, gym.spaces.Box):
        return (a.shape == b.shape and a.dtype == b.dtype
                and np.allclose(a.low, b.low) and np.allclose(a.high, b.high))
    return a == b
