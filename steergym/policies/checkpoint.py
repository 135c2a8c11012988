"""Policy checkpoints: a folder with `model.safetensors` (weights) and `config.json` (everything else).

config.json holds the format tag and version, the policy kind and `PolicyConfig`, both spaces
(Minari's JSON space serialisation), the SHA-256 of the weights file, and free-form metadata
(training recipe, measured success). Loading rebuilds the architecture from the config and refuses
anything that does not match exactly: another format, an unknown kind, missing or extra tensors,
wrong shapes or dtypes, non-finite weights, a weights file whose hash differs (tampered), or spaces
that differ from the env the policy is meant for. Nothing is ever unpickled. The config is not
covered by the hash, so it is checked field by field, and the architecture it describes is built
on PyTorch's "meta" device (no memory) and compared with the weights file's header before the real
policy is allocated: a corrupt or hostile config cannot make the loader allocate gigabytes.

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

import steergym
from steergym.atomic import atomic_folder
from steergym.policies.config import PolicyConfig
from steergym.space_json import space_from_json, space_to_json

FORMAT = "steergym.policy"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".zip")


# kind -> policy class. DiffusionPolicy and FlowPolicy add themselves (`register_policy_class`);
# `steergym.policies` imports both, so the table is full wherever this module can be imported.
# (The classes' `save` calls `save_policy`: importing them here would be an import cycle.)
_POLICY_CLASSES: dict[str, type] = {}


def register_policy_class(cls: type) -> type:
    """Class decorator: checkpoints whose kind is `cls.kind` load as `cls`."""
    _POLICY_CLASSES[cls.kind] = cls
    return cls


def policy_classes() -> dict[str, type]:
    """kind -> policy class, for every kind a checkpoint may have."""
    return dict(_POLICY_CLASSES)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_policy(policy, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write `policy` to the folder `path` (replacing an existing checkpoint there); returns it."""
    from safetensors.torch import save_file

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
            "observation_space": space_to_json(policy.observation_space, compact=False),
            "action_space": space_to_json(policy.action_space, compact=False),
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
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ValueError(f"{config_path}: not valid JSON ({type(exc).__name__}: {exc})") from None
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
    if not isinstance(config["kind"], str) or config["kind"] not in policy_classes():
        raise ValueError(f"{config_path}: unknown policy kind {config['kind']!r}; known: {sorted(policy_classes())}")
    if not isinstance(config.get("metadata", {}), dict):
        raise ValueError(f"{config_path}: metadata must be a JSON object, got {config['metadata']!r}")
    for key in ("observation_space", "action_space"):
        problem = _space_json_problem(config[key])
        if problem:
            raise ValueError(f"{config_path}: invalid spaces or policy_config ({key}: {problem})")
    return config


def load_policy(path: str | os.PathLike, env: gym.Env | None = None, *,
                observation_space: gym.Space | None = None, action_space: gym.Space | None = None,
                seed: int = 0):
    """Load the checkpoint folder `path`; validate it against `env`'s (or the given) spaces.

    Raises:
        ValueError: not a checkpoint, wrong format or version, tampered or mismatched weights, or
            spaces that differ from the env's (the message names the file and the difference).
    """
    from safetensors.torch import load_file

    path = Path(path)
    config = read_config(path)
    weights_path = path / WEIGHTS_FILE
    if sha256_file(weights_path) != config["weights_sha256"]:
        raise ValueError(f"{weights_path}: SHA-256 differs from the one in {CONFIG_FILE}; the weights were modified")
    try:
        obs_space = space_from_json(config["observation_space"])
        act_space = space_from_json(config["action_space"])
        policy_config = PolicyConfig.from_dict(config["policy_config"])
    except (ValueError, TypeError, KeyError, NotImplementedError, AssertionError, OverflowError) as exc:
        raise ValueError(f"{path / CONFIG_FILE}: invalid spaces or policy_config "
                         f"({type(exc).__name__}: {exc})") from exc
    if env is not None:
        observation_space = observation_space or env.observation_space
        action_space = action_space or env.action_space
    for label, expected, stored in (("observation", observation_space, obs_space),
                                    ("action", action_space, act_space)):
        if expected is not None and not _same_space(expected, stored):
            raise ValueError(f"{path}: the policy's {label} space {stored} does not match the env's {expected}")
    cls = policy_classes()[config["kind"]]
    # The architecture the config describes is built without memory first ("meta" tensors) and
    # compared with the weights file's header, so a config asking for a huge network (a corrupt or
    # hostile hidden_dim) is refused before anything that size is allocated.
    try:
        with torch.device("meta"):
            skeleton = cls(obs_space, act_space, policy_config, seed=seed)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{path / CONFIG_FILE}: cannot build the policy it describes ({exc})") from exc
    _check_tensors(weights_path, _header_tensors(weights_path),
                   {k: (tuple(v.shape), v.dtype) for k, v in skeleton.state_dict().items()})
    policy = cls(obs_space, act_space, policy_config, seed=seed)
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...: the file is at fault
        raise ValueError(f"{weights_path}: unreadable safetensors file ({exc})") from exc
    expected_state = policy.state_dict()
    _check_tensors(weights_path, {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()},
                   {k: (tuple(v.shape), v.dtype) for k, v in expected_state.items()})
    for name, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{weights_path}: tensor {name!r} contains NaN or inf")
    policy.load_state_dict(tensors)
    policy.metadata = dict(config.get("metadata", {}))
    policy.checkpoint_path = str(path)
    return policy


# safetensors' dtype names -> torch's
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


def _header_tensors(weights_path: Path) -> dict[str, tuple[tuple[int, ...], Any]]:
    """name -> (shape, dtype) from a safetensors file's header, without reading the tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as f:
            return {name: (tuple(f.get_slice(name).get_shape()),
                           _SAFETENSORS_DTYPES.get(f.get_slice(name).get_dtype(), f.get_slice(name).get_dtype()))
                    for name in f.keys()}
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...: the file is at fault
        raise ValueError(f"{weights_path}: unreadable safetensors file ({exc})") from exc


def _check_tensors(weights_path: Path, stored: dict[str, tuple], expected: dict[str, tuple]) -> None:
    """ValueError naming the file and the first difference between stored and expected (shape, dtype)."""
    missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or extra:
        raise ValueError(f"{weights_path}: tensors do not match the architecture (missing {missing}, unexpected {extra})")
    for name, (shape, dtype) in stored.items():
        want_shape, want_dtype = expected[name]
        if shape != want_shape or dtype != want_dtype:
            raise ValueError(f"{weights_path}: tensor {name!r} is {shape} {dtype}, expected {want_shape} {want_dtype}")


def _space_json_problem(spec: Any, depth: int = 0) -> str:
    """Why a stored space cannot be a policy's (Box, or Dict of Boxes, as `save_policy` writes them,
    bounds written out in full), or ''. Checked before minari builds the space, so a small JSON
    file cannot make it allocate a huge Box (a scalar bound broadcast to a huge shape)."""
    if not isinstance(spec, dict):
        return f"a space must be a JSON object, got {type(spec).__name__}"
    if spec.get("type") == "Dict" and depth == 0:
        subspaces = spec.get("subspaces")
        if not isinstance(subspaces, dict) or not subspaces:
            return "a Dict space needs a non-empty 'subspaces' object"
        for key, sub in subspaces.items():
            problem = _space_json_problem(sub, depth + 1)
            if problem:
                return f"{key}: {problem}"
        return ""
    if spec.get("type") != "Box":
        return f"expected a Box (or a Dict of Boxes), got type {spec.get('type')!r}"
    shape = spec.get("shape")
    if not (isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        return f"Box shape must be a list of non-negative integers, got {shape!r}"
    for bound in ("low", "high"):
        try:
            stored = np.shape(spec.get(bound))
        except ValueError:  # ragged nested lists
            stored = None
        if stored != tuple(shape):
            return f"Box {bound} must be written out in full with shape {tuple(shape)}, got {spec.get(bound)!r:.80}"
    return ""


def _same_space(a: gym.Space, b: gym.Space) -> bool:
    """Space equality that tolerates float rounding of Box bounds through JSON."""
    if isinstance(a, gym.spaces.Dict) and isinstance(b, gym.spaces.Dict):
        return set(a.spaces) == set(b.spaces) and all(_same_space(a[k], b[k]) for k in a.spaces)
    if isinstance(a, gym.spaces.Box) and isinstance(b, gym.spaces.Box):
        return (a.shape == b.shape and a.dtype == b.dtype
                and np.allclose(a.low, b.low) and np.allclose(a.high, b.high))
    return a == b
