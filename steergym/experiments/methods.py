"""The trainers an experiment can run: name -> how one trial calls its library run function.

Names are the `steergym train` trainer table's (a test keeps them in step); the multi-dataset trainers
(bc, ptr, vgps) take several datasets per run and have no per-task learning curve, so they are not here.

A task is what the method trains on: a shipped policy name (or a policy checkpoint folder) for the
steering and chunk trainers, also an env id for sac (no base policy), a dataset id for calql/cql.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

TaskKind = str  # "policy", "policy-or-env", "dataset"


@dataclass(frozen=True)
class Method:
    name: str
    family: str  # "steering", "calql" or "chunk"
    task_kind: TaskKind
    skip: tuple[str, ...] = ()  # config fields the method decides

    def config_factory(self) -> Callable[..., Any]:
        if self.family == "steering":
            from steergym.algorithms.steering import SteeringConfig

            return SteeringConfig
        if self.family == "calql":
            from steergym.algorithms.calql import CalQLConfig

            return partial(CalQLConfig, calibrated=self.name == "calql")
        if self.name == "ogpo":
            from steergym.algorithms.ogpo import OGPOConfig

            return OGPOConfig
        from steergym.algorithms.dsrl_na import DSRLNAConfig

        return DSRLNAConfig

    def config_fields(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.config_factory()()) if f.name not in self.skip]

    def make_config(self, overrides: dict[str, Any], budget: Any = None) -> Any:
        """The config dataclass with `overrides` (errors name the field)."""
        fields = set(self.config_fields())
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown} for method {self.name!r}")
        values = dict(overrides)
        if self.family == "calql" and "log_every" not in values and budget is not None:
            from steergym.algorithms.runs import offline_log_every

            values["log_every"] = offline_log_every(budget.pretrain_steps)
        return self.config_factory()(**values)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("dsrl", "steering", "policy"),
    Method("residual", "steering", "policy"),
    Method("sac", "steering", "policy-or-env"),
    Method("calql", "calql", "dataset", skip=("calibrated",)),
    Method("cql", "calql", "dataset", skip=("calibrated",)),
    Method("ogpo", "chunk", "policy"),
    Method("dsrl-na", "chunk", "policy"),
)}


def check_task(method: Method, task: str) -> None:
    """ValueError unless `task` is something `method` trains on (a shipped policy, folder, env or dataset)."""
    from steergym.policies.zoo import shipped_policies
    from steergym.registry import entry

    if method.task_kind in ("policy", "policy-or-env"):
        if task in shipped_policies() or (method.task_kind == "policy" and Path(task).is_dir()):
            return
        if method.task_kind == "policy-or-env":
            try:
                entry(task)
                return
            except KeyError:
                pass
        kinds = ("a shipped policy (steergym policies) or an env id (steergym list)"
                 if method.task_kind == "policy-or-env" else "a shipped policy (steergym policies) or a policy folder")
        raise ValueError(f"unknown task {task!r} for method {method.name!r}: expected {kinds}")
    from steergym.data.dataset import dataset_exists, datasets_root, read_metadata

    if not dataset_exists(task):
        raise ValueError(f"unknown task {task!r} for method {method.name!r}: expected a dataset id (steergym "
                         f"collect ...) under {datasets_root()}, or declare it in the spec's datasets")
    read_metadata(task)  # ValueError for a corrupt steergym.json


def is_folder_task(task: str) -> bool:
    """Whether `task` names a policy checkpoint folder (not a shipped policy of the same name)."""
    from steergym.policies.zoo import shipped_policies

    return task not in shipped_policies() and Path(task).is_dir()


def resumable(method: Method, out: Path) -> bool:
    """Whether `out` holds a checkpoint `method`'s run function resumes from (resume=True)."""
    if method.family == "calql":
        return (out / "checkpoints" / "latest").is_dir() or (out / "pretrained").is_dir()
    if method.family == "chunk":
        return (out / "checkpoints" / "latest").is_dir()
    return False  # SB3 steering runs have no resumable state: a restarted trial runs again from the start


def run_method(method: Method, task: str, config: Any, budget: Any, seed: int, out: str | os.PathLike,
               progress: bool = False, data_root: str | None = None, device: str = "cpu") -> tuple[str, list[dict[str, Any]]]:
    """One training run into `out` (resumed from its checkpoint when it holds one, else started afresh);
    returns (env id, evaluation curve rows with env_steps and success_rate). `task` is a shipped name, an
    env or dataset id, or a policy folder; `data_root` the dataset's folder (default $MINARI_DATASETS_PATH)."""
    from steergym.algorithms import runs

    out = Path(out)
    resume = resumable(method, out)
    if not resume and out.exists():  # a killed attempt's partial files: start clean
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    common = {"env_steps": budget.env_steps, "eval_every": budget.eval_every,
              "eval_episodes": budget.eval_episodes, "eval_seed": budget.eval_seed, "seed": seed,
              "progress": progress, "device": device}
    if method.family == "steering":
        kwargs = steering_arguments(method.name, task)
        result = runs.run_steering(method.name, out=out, config=config, **kwargs, **common)
        return result.env_id, [dict(r) for r in result.curve]
    if method.family == "calql":
        result = runs.run_calql(task, out, config=config, pretrain_steps=budget.pretrain_steps, resume=resume,
                                root=data_root, **common)
        return result.env_id, [dict(r) for r in result.agent.curve]
    result = runs.run_chunk_trainer(method.name, out=out, policy=task, config=config, resume=resume, **common)
    return result.env_id, [dict(r) for r in result.agent.eval_history]


def steering_arguments(method: str, task: str) -> dict[str, Any]:
    """run_steering's policy/env/normalize_like for a task: sac on a policy's name trains on that
    policy's task with its observation normalisation (as benchmarks/steering.py compares methods)."""
    if method != "sac":
        return {"policy": task}
    from steergym.policies.zoo import shipped_policies

    table = shipped_policies()
    if task in table:
        return {"policy": None, "env": table[task].env_ids[0], "normalize_like": task}
    return {"policy": None, "env": task}
