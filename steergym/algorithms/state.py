"""Resumable trainer state without pickle: tensors in safetensors, everything else in JSON.

A state folder holds `state.safetensors` (module weights, optimiser moments, torch generator
states) and `state.json` (step counters, optimiser hyper-parameters, numpy generator states, the
trainer's config). It is written to a temporary sibling and renamed into place, so an interrupted
save leaves the previous state intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steergym.atomic import atomic_folder

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
STATE_FORMAT = "steergym.trainer-state"


def optimizer_state(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split `optimizer.state_dict()` into tensors (keyed `prefix/<param>/<name>`) and JSON."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in sd["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}/{index}/{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{index}/{name}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, prefix: str,
                         tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "/"):
            index, name = key[len(prefix) + 1:].split("/", 1)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def numpy_rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def set_numpy_rng_state(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state


def write_state(folder: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Atomically write a state folder (replacing the previous one)."""
    from safetensors.torch import save_file

    with atomic_folder(folder) as staging:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(staging / STATE_TENSORS),
                  metadata={"format": STATE_FORMAT})
        (staging / STATE_JSON).write_text(json.dumps({"format": STATE_FORMAT, **meta}, indent=1) + "\n")
    return Path(folder)


def read_state(folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of a state folder; ValueError naming the folder if it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / STATE_TENSORS).exists() or not (folder / STATE_JSON).exists():
        raise ValueError(f"{folder}: not a trainer state folder (needs {STATE_TENSORS} and {STATE_JSON})")
    try:
        meta = json.loads((folder / STATE_JSON).read_text())
        tensors = load_file(str(folder / STATE_TENSORS))
    except (json.JSONDecodeError, SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{folder}: unreadable trainer state ({exc})") from exc
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{folder}: format {meta.get('format')!r} is not {STATE_FORMAT!r}")
    return tensors, meta


def module_tensors(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def load_module_tensors(module: torch.nn.Module, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
    sub = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + "/")}
    module.load_state_dict(sub)


def training_tensors(modules: dict[str, torch.nn.Module],
                     optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], dict]:
    """Every named module's and optimiser's tensors (keyed by their prefixes) and the optimisers'
    JSON part ({prefix: meta}), what a trainer checkpoint stores of its networks."""
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        tensors.update(module_tensors(module, prefix))
    optim_meta = {}
    for prefix, optimizer in optimizers.items():
        optim_tensors, optim_meta[prefix] = optimizer_state(optimizer, prefix)
        tensors.update(optim_tensors)
    return tensors, optim_meta


def load_training_tensors(modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                          tensors: dict[str, torch.Tensor], optim_meta: dict) -> None:
    """Inverse of `training_tensors` (KeyError / RuntimeError on missing or mis-shaped entries)."""
    for prefix, module in modules.items():
        load_module_tensors(module, prefix, tensors)
    for prefix, optimizer in optimizers.items():
        load_optimizer_state(optimizer, prefix, tensors, optim_meta[prefix])


# ----------------------------------------------------------------- off-policy trainer checkpoints
CHECKPOINT_JSON, CHECKPOINT_TENSORS, CHECKPOINT_REPLAY = "config.json", "model.safetensors", "replay.safetensors"
LEGACY_REPLAY_NPZ = "replay.npz"  # the chunk trainers' replay before it moved to safetensors


def write_checkpoint(path: str | os.PathLike, fmt: str, meta: dict, tensors: dict[str, torch.Tensor],
                     arrays: dict[str, np.ndarray] | None = None, extra: Any = None) -> Path:
    """Atomically write an off-policy trainer's checkpoint folder `path` (replacing the previous one):
    config.json (`meta` with "format": fmt; +-inf as Infinity) + model.safetensors (`tensors`) +
    replay.safetensors (`arrays`, numpy, when given) + whatever `extra(staging_folder)` writes."""
    from safetensors.numpy import save_file as save_numpy
    from safetensors.torch import save_file

    with atomic_folder(path) as staging:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(staging / CHECKPOINT_TENSORS),
                  metadata={"format": fmt})
        if arrays is not None:
            save_numpy({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(staging / CHECKPOINT_REPLAY),
                       metadata={"format": fmt})
        if extra is not None:
            extra(staging)
        (staging / CHECKPOINT_JSON).write_text(json.dumps({**meta, "format": fmt}, indent=1) + "\n")
    return Path(path)


def read_checkpoint(path: str | os.PathLike, fmt: str, what: str,
                    replay: bool) -> tuple[dict, dict[str, torch.Tensor], dict[str, np.ndarray] | None]:
    """(meta, tensors, replay arrays or None) of a folder `write_checkpoint` wrote with format `fmt`.
    `replay=True`: the replay file must be there (replay.safetensors, or a legacy replay.npz).
    ValueError naming the file and `what` (e.g. "Cal-QL") for a missing, foreign or corrupt part."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file as load_numpy
    from safetensors.torch import load_file

    path = Path(path)
    replay_file = path / CHECKPOINT_REPLAY
    if not replay_file.exists() and (path / LEGACY_REPLAY_NPZ).exists():
        replay_file = path / LEGACY_REPLAY_NPZ
    needed = [path / CHECKPOINT_JSON, path / CHECKPOINT_TENSORS] + ([replay_file] if replay else [])
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise ValueError(f"{path}: not a steergym {what} checkpoint (missing {missing})")
    try:
        meta = json.loads((path / CHECKPOINT_JSON).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path / CHECKPOINT_JSON}: unreadable ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path}: format {found!r} is not {fmt!r}; not a {what} checkpoint")
    try:
        tensors = load_file(str(path / CHECKPOINT_TENSORS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path / CHECKPOINT_TENSORS}: unreadable ({exc})") from exc
    arrays = None
    if replay_file.is_file():
        try:
            if replay_file.suffix == ".npz":
                with np.load(replay_file, allow_pickle=False) as data:
                    arrays = {k: data[k] for k in data.files}
            else:
                arrays = load_numpy(str(replay_file))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{replay_file}: unreadable ({exc})") from exc
    return meta, tensors, arrays
