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
