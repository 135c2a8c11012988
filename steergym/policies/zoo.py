"""Shipped base policies (`steergym/assets/policies/`), looked up by name.

`index.json` there lists each policy: its folder, task(s), kind, and the success rate measured over
100 seeds when it was made, with the band it was made to land in. Every entry is produced by
`recipes/shipped_policies.py` (the exact commands and seeds are in `assets/policies/README.md`).

    policy = load_shipped("widowx-carrot-diffusion")        # a DiffusionPolicy
    env_id = shipped_policies()["widowx-carrot-diffusion"].env_ids[0]

`resolve_policy(name_or_path, env_id)` is what the command line uses: a shipped name or a
checkpoint folder, bound to `env_id`'s task for a task-conditioned (generalist) policy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steergym.policies.checkpoint import load_policy
from steergym.policies.steered import is_steered_folder, load_steered

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "policies"
INDEX_FILE = "index.json"


@dataclass(frozen=True)
class ShippedPolicy:
    """One entry of the shipped-policy index.

    Attributes:
        name: lookup name, e.g. "widowx-carrot-diffusion".
        folder: checkpoint folder under `SHIPPED_DIR`.
        kind: "diffusion" or "flow".
        env_ids: the task(s) it was trained on (several for a generalist).
        success_rate: {env_id: success over `episodes` seeds 0..episodes-1} measured when made.
        success_band: (low, high) the recipe aimed for.
        episodes: evaluation episodes behind `success_rate`.
        failed_seeds: {env_id: reset seeds (of 0..episodes-1) whose episode failed}.
        description: one line for `steergym policies`.
    """

    name: str
    folder: str
    kind: str
    env_ids: tuple[str, ...]
    success_rate: dict[str, float]
    success_band: tuple[float, float]
    episodes: int
    failed_seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)
    description: str = ""

    @property
    def path(self) -> Path:
        return SHIPPED_DIR / self.folder


def measurement_environment() -> dict[str, str]:
    """What a shipped policy's recorded success depends on besides its weights: the CPU model and the
    numeric libraries. The same seeds give the same episodes only where all of these match (their last
    float bits decide episodes that end at a success boundary)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from steergym.machine_info import cpu_name

    cpu = cpu_name()
    libraries = {}
    for name in ("mujoco", "numpy", "torch"):
        try:
            libraries[name] = version(name)
        except PackageNotFoundError:
            libraries[name] = "missing"
    return {"cpu": cpu, "machine": platform.machine(), **libraries}


def recorded_environment(directory: str | os.PathLike | None = None) -> dict[str, str] | None:
    """`measurement_environment()` where the shipped index was last measured (None if unrecorded)."""
    index = Path(directory or SHIPPED_DIR) / INDEX_FILE
    return json.loads(index.read_text()).get("measured_on") if index.exists() else None


def shipped_policies(directory: str | os.PathLike | None = None) -> dict[str, ShippedPolicy]:
    """All shipped policies by name (empty if the index is missing)."""
    index = Path(directory or SHIPPED_DIR) / INDEX_FILE
    if not index.exists():
        return {}
    entries = json.loads(index.read_text())
    return {
        name: ShippedPolicy(
            name=name,
            folder=e["folder"],
            kind=e["kind"],
            env_ids=tuple(e["env_ids"]),
            success_rate={k: float(v) for k, v in e["success_rate"].items()},
            success_band=(float(e["success_band"][0]), float(e["success_band"][1])),
            episodes=int(e["episodes"]),
            failed_seeds={k: tuple(int(x) for x in v) for k, v in e.get("failed_seeds", {}).items()},
            description=e.get("description", ""),
        )
        for name, e in sorted(entries.get("policies", {}).items())
    }


def shipped_policy(name: str) -> ShippedPolicy:
    """The index entry of the shipped policy `name`; ValueError listing the names if there is no such policy."""
    table = shipped_policies()
    if name not in table:
        raise ValueError(f"no shipped policy {name!r}; shipped policies: {', '.join(table) or 'none'}")
    return table[name]


def load_shipped(name: str, env=None, seed: int = 0):
    """Load the shipped policy `name`; ValueError listing the names if there is no such policy."""
    return load_policy(shipped_policy(name).path, env, seed=seed)


def is_lerobot_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a LeRobot policy folder (save_pretrained's config.json names a policy `type`;
    a steergym checkpoint's names its `format`)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "type" in data and "format" not in data


def load_lerobot_for(path: str | os.PathLike, env_id: str | None, seed: int = 0) -> Any:
    """A LeRobot policy folder loaded for the task `env_id` (its spaces and default observation map);
    the folder does not name a steergym task, so `env_id` is required."""
    from steergym.policies.lerobot import LeRobotPolicy, import_lerobot
    from steergym.registry import make_env

    if env_id is None:
        raise ValueError(f"{path} is a LeRobot policy, which does not name its steergym task: give one with --env")
    try:
        import_lerobot()
    except ImportError as err:  # a user error here (a LeRobot folder without the extra), not a bug
        raise ValueError(f"{path} is a LeRobot policy: {err}") from None
    env = make_env(env_id)
    try:
        return LeRobotPolicy.load(path, observation_space=env.observation_space, action_space=env.action_space,
                                  seed=seed)
    finally:
        env.close()


def resolve_policy(name_or_path: str, env_id: str | None = None, seed: int = 0) -> tuple[Any, str]:
    """(policy ready for `env_id`, env_id) from a shipped name, a checkpoint folder, a steered-policy
    folder (`steergym train dsrl|residual|sac` writes RUN/policy) or a LeRobot policy folder (diffusion;
    needs `env_id` and the `lerobot` extra).

    Without `env_id`, a single-task policy's own task is used; a generalist needs one. A
    task-conditioned policy is bound to `env_id` with `for_task`.
    """
    table = shipped_policies()
    if name_or_path in table:
        policy = load_shipped(name_or_path, seed=seed)
        trained_on = list(table[name_or_path].env_ids)
    elif is_steered_folder(name_or_path):
        policy = load_steered(name_or_path, seed=seed)
        if env_id is not None and policy.env_id and env_id != policy.env_id:
            raise ValueError(f"steered policy {name_or_path!r} was trained on {policy.env_id}, not {env_id}")
        return policy, env_id or policy.env_id
    elif is_lerobot_folder(name_or_path):
        return load_lerobot_for(name_or_path, env_id, seed), env_id
    elif Path(name_or_path).is_dir():
        policy = load_policy(name_or_path, seed=seed)
        trained_on = list(policy.task_ids) or [e for e in [policy.metadata.get("env_id")] if e]
    else:
        raise ValueError(
            f"policy {name_or_path!r} is neither a shipped policy ({', '.join(table) or 'none'}) nor a "
            "checkpoint folder"
        )
    if env_id is None:
        if len(trained_on) != 1:
            raise ValueError(f"policy {name_or_path!r} covers tasks {trained_on}; choose one with --env")
        env_id = trained_on[0]
    if policy.task_ids:
        policy = policy.for_task(env_id)
    return policy, env_id
