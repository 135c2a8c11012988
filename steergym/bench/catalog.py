"""What steergym offers, as data: the registered envs' rows (`steergym list`), a picture of each task
(`steergym render-tasks`), and a policy to evaluate by name (`steergym eval --policy`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def env_rows() -> list[dict[str, Any]]:
    """Every registered id with its family, instruction, horizon and the spaces of its default obs mode
    (obs_shape a list, or {key: list} for Dict observations; None for a served robot task)."""
    from steergym.bench.evaluate import make_env
    from steergym.registry import ENVS
    from steergym.registry import entry as registry_entry

    rows = []
    listed: dict[str, dict] = {}
    for entry in ENVS:
        if entry.family == "real" and entry.base_id is None:
            # the generic robot client takes whatever task its server serves: nothing to show offline
            rows.append({"id": entry.id, "family": entry.family, "instruction": "(the served task's)",
                         "horizon": None, "obs_shape": None, "action_shape": [7]})
            continue
        if entry.family in ("robosuite", "dmc"):
            # the adapters' spaces are known without importing (or installing) robosuite/dm_control,
            # and building those envs would make listing slow; dm_control's own limit ends its tasks
            from steergym.envs import dmc, robosuite_tasks

            info = (robosuite_tasks.describe(entry.kwargs["task"]) if entry.family == "robosuite"
                    else dmc.describe(entry.kwargs["domain"], entry.kwargs["task"]))
            rows.append({"id": entry.id, "family": entry.family, "instruction": info["instruction"],
                         "horizon": entry.max_episode_steps or dmc.HORIZON, "obs_shape": info["obs_shape"],
                         "action_shape": info["action_shape"]})
            continue
        if entry.family == "real":
            # a robot client's row is its simulated task's (the server must serve that task; the
            # tasks come first in ENVS), so listing never connects to a robot or builds a task twice
            rows.append({**listed[entry.base_id], "id": entry.id, "family": entry.family})
            continue
        # a steered env ends when its base task's time limit does
        horizon = entry.max_episode_steps or registry_entry(entry.base_id).max_episode_steps
        try:
            env = make_env(entry.id)
        except ImportError:  # a steered robosuite/dm-control task on an install without the suites extra
            rows.append({"id": entry.id, "family": entry.family,
                         "instruction": '(needs the suites extra: pip install -e ".[suites]")',
                         "horizon": horizon, "obs_shape": None, "action_shape": None})
            continue
        try:
            rows.append({"id": entry.id, "family": entry.family,
                         "instruction": getattr(env.unwrapped, "instruction", ""), "horizon": horizon,
                         "obs_shape": space_shape(env.observation_space),
                         "action_shape": space_shape(env.action_space)})
            listed[entry.id] = rows[-1]
        finally:
            env.close()
    return rows


def space_shape(space: Any) -> Any:
    """JSON-able shape of a space: a list, or {key: list} for a Dict space."""
    if getattr(space, "shape", None) is not None:
        return list(space.shape)
    return {key: space_shape(sub) for key, sub in getattr(space, "spaces", {}).items()}


def render_tasks(out: str | os.PathLike, size: tuple[int, int] = (240, 320),
                 env_ids: Sequence[str] | None = None) -> list[Path]:
    """Render each task (default: all) after reset(seed=0) into `out`: <Name>-vN.png from the 'front'
    camera and <Name>-vN_third_person.png from the policy camera; `size` is (height, width)."""
    import imageio.v3 as iio

    from steergym.bench.evaluate import make_env
    from steergym.registry import env_ids as all_env_ids

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for env_id in env_ids or all_env_ids():
        env = make_env(env_id, render_mode="rgb_array", render_size=size)
        try:
            env.reset(seed=0)
            name = env_id.split("/")[-1]
            images = {f"{name}.png": env.render()}
            if hasattr(env.unwrapped, "render_camera_image"):
                images[f"{name}_third_person.png"] = env.unwrapped.render_camera_image("third_person", size)
        finally:
            env.close()
        for filename, image in images.items():
            iio.imwrite(out / filename, image, optimize=True)
            written.append(out / filename)
    return written


def eval_policy(name: str, env_id: str | None, seed: int = 0) -> tuple[Any, str]:
    """(policy for `evaluate`, env id): a built-in name (expert, random) passes through; a shipped
    policy name or a checkpoint folder is loaded (its own task without `env_id`)."""
    from steergym.bench.evaluate import POLICY_NAMES
    from steergym.policies.zoo import resolve_policy, shipped_policies

    if name in POLICY_NAMES:
        if env_id is None:
            raise ValueError(f"--env is required with --policy {name}")
        return name, env_id
    if name not in shipped_policies() and not Path(name).is_dir():
        shipped = ", ".join(shipped_policies()) or "none"
        raise ValueError(f"unknown policy {name!r}: not one of {', '.join(POLICY_NAMES)}, a shipped policy "
                         f"({shipped}) or a checkpoint folder")
    policy, env_id = resolve_policy(name, env_id, seed=seed)
    policy.name = name
    return policy, env_id
