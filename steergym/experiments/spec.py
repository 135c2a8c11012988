"""An experiment spec: what to run (tasks x methods x seeds x config variants) with what budget.

    {"name": "steering",
     "tasks": ["widowx-carrot-diffusion", "widowx-lift-diffusion"],
     "methods": ["dsrl", "residual", "sac"],
     "seeds": [0, 1, 2],
     "budget": {"env_steps": 100000, "eval_every": 10000, "eval_episodes": 30},
     "config": {"dsrl": {"gradient_steps": 2, "learning_rate": {"loguniform": [1e-4, 1e-3]}}},
     "num_samples": 1, "scheduler": null,
     "resources": {"cpus": 1, "gpus": 0}, "max_failures": 2}

`config` maps a method to overrides of its config dataclass (SteeringConfig, CalQLConfig, OGPOConfig,
DSRLNAConfig); a value may be a search space: {"grid": [v, ...]}, {"uniform": [lo, hi]} or
{"loguniform": [lo, hi]}. A method's variants are its grid's combinations, each with `num_samples`
random draws of its uniform/loguniform fields (drawn from a generator seeded by the spec's name, so a
re-run expands to the same trials). `scheduler: "asha"` stops poor trials early on the evaluation
success reported after each evaluation. `budget.pretrain_steps` is calql/cql's offline phase.

`load_spec` validates everything before anything runs (ValueError naming the field and value);
`expand` gives the trials, with stable ids "<task>/<method>/seed<k>" ("<task>/<method>/cfg<j>/seed<k>"
when the method has several config variants).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from steergym.experiments.methods import METHODS, check_task

SPACES = ("grid", "uniform", "loguniform")
SCHEDULERS = (None, "asha")


@dataclass(frozen=True)
class Budget:
    env_steps: int
    eval_every: int
    eval_episodes: int
    pretrain_steps: int = 10_000  # calql / cql: offline gradient steps before the online phase


@dataclass(frozen=True)
class Resources:
    cpus: float = 1
    gpus: float = 0


@dataclass
class ExperimentSpec:
    name: str
    tasks: list[str]
    methods: list[str]
    seeds: list[int]
    budget: Budget
    config: dict[str, dict[str, Any]] = field(default_factory=dict)
    num_samples: int = 1
    scheduler: str | None = None
    resources: Resources = field(default_factory=Resources)
    max_failures: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Trial:
    id: str
    task: str
    method: str
    seed: int
    variant: int | None  # index of the config variant (None: the method has one)
    overrides: dict[str, Any]  # config fields set by the spec (search values resolved)
    budget: Budget

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trial:
        return cls(**{**d, "budget": Budget(**d["budget"])})


def _bad(where: str, value: Any, why: str) -> ValueError:
    return ValueError(f"spec field {where} = {value!r}: {why}")


def _positive_int(where: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(where, value, f"must be an integer >= {minimum}")
    return value


def _nonempty_list(where: str, value: Any) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise _bad(where, value, "must be a non-empty list")
    if len(set(map(json.dumps, value))) != len(value):
        raise _bad(where, value, "has duplicates")
    return value


def is_space(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SPACES


def parse_spec(data: dict[str, Any], *, check_tasks: bool = True) -> ExperimentSpec:
    """An `ExperimentSpec` from a JSON object, validated (ValueError naming the field and value)."""
    if not isinstance(data, dict):
        raise _bad("(top level)", data, "must be a JSON object")
    known = {"name", "tasks", "methods", "seeds", "budget", "config", "num_samples", "scheduler", "resources",
             "max_failures", "description"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise _bad(unknown[0], data[unknown[0]], f"unknown field (valid: {', '.join(sorted(known))})")
    for required in ("name", "tasks", "methods", "seeds", "budget"):
        if required not in data:
            raise ValueError(f"spec field {required} is missing")
    name = data["name"]
    if not isinstance(name, str) or not name or "/" in name:
        raise _bad("name", name, "must be a non-empty string without '/'")
    tasks = _nonempty_list("tasks", data["tasks"])
    for i, task in enumerate(tasks):
        if not isinstance(task, str) or not task or ".." in task.split("/") or task.startswith("/"):
            raise _bad(f"tasks[{i}]", task, "must be a task name (a relative name: it becomes a folder)")
    methods = _nonempty_list("methods", data["methods"])
    for i, method in enumerate(methods):
        if method not in METHODS:
            raise _bad(f"methods[{i}]", method, f"unknown method (valid: {', '.join(METHODS)})")
    seeds = _nonempty_list("seeds", data["seeds"])
    for i, seed in enumerate(seeds):
        _positive_int(f"seeds[{i}]", seed, minimum=0)
    raw_budget = data["budget"]
    if not isinstance(raw_budget, dict):
        raise _bad("budget", raw_budget, "must be an object")
    budget_fields = ("env_steps", "eval_every", "eval_episodes", "pretrain_steps")
    for key in raw_budget:
        if key not in budget_fields:
            raise _bad(f"budget.{key}", raw_budget[key], f"unknown field (valid: {', '.join(budget_fields)})")
    for key in budget_fields[:3]:
        if key not in raw_budget:
            raise ValueError(f"spec field budget.{key} is missing")
    for key, value in raw_budget.items():
        _positive_int(f"budget.{key}", value)
    budget = Budget(**raw_budget)
    num_samples = _positive_int("num_samples", data.get("num_samples", 1))
    scheduler = data.get("scheduler")
    if scheduler not in SCHEDULERS:
        raise _bad("scheduler", scheduler, "must be null or \"asha\"")
    raw_resources = data.get("resources", {})
    if not isinstance(raw_resources, dict):
        raise _bad("resources", raw_resources, "must be an object")
    for key, value in raw_resources.items():
        if key not in ("cpus", "gpus"):
            raise _bad(f"resources.{key}", value, "unknown field (valid: cpus, gpus)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (key == "cpus" and value <= 0):
            raise _bad(f"resources.{key}", value, "must be a number " + ("> 0" if key == "cpus" else ">= 0"))
    resources = Resources(**raw_resources)
    max_failures = _positive_int("max_failures", data.get("max_failures", 2), minimum=0)
    config = data.get("config", {})
    if not isinstance(config, dict):
        raise _bad("config", config, "must be an object: method -> {config field: value}")
    for method, overrides in config.items():
        if method not in methods:
            raise _bad(f"config.{method}", overrides, f"not one of the spec's methods {methods}")
        if not isinstance(overrides, dict):
            raise _bad(f"config.{method}", overrides, "must be an object: {config field: value}")
        _check_overrides(method, overrides, budget)
    spec = ExperimentSpec(name, tasks, methods, seeds, budget, config, num_samples, scheduler, resources, max_failures)
    if scheduler == "asha" and not any(is_space(v) for o in config.values() for v in o.values()):
        raise _bad("scheduler", scheduler, "needs a search space in config (ASHA compares config variants)")
    if check_tasks:
        for method in methods:
            for i, task in enumerate(tasks):
                try:
                    check_task(METHODS[method], task)
                except ValueError as exc:
                    raise _bad(f"tasks[{i}]", task, str(exc)) from None
    return spec


def _check_overrides(method: str, overrides: dict[str, Any], budget: Budget) -> None:
    m = METHODS[method]
    fields = m.config_fields()
    grids, ranges = {}, {}
    for key, value in overrides.items():
        where = f"config.{method}.{key}"
        if key not in fields:
            raise _bad(where, value, f"unknown config field of {type(m.config_factory()()).__name__} "
                       f"(valid: {', '.join(fields)})")
        if isinstance(value, dict) and not is_space(value):
            raise _bad(where, value, "a search space is one of {\"grid\": [...]}, {\"uniform\": [lo, hi]}, "
                       "{\"loguniform\": [lo, hi]}")
        if is_space(value):
            (kind, arg), = value.items()
            if kind == "grid":
                grids[key] = _nonempty_list(f"{where}.grid", arg)
            else:
                ok = (isinstance(arg, list) and len(arg) == 2
                      and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in arg)
                      and arg[0] < arg[1] and (kind == "uniform" or arg[0] > 0))
                if not ok:
                    raise _bad(f"{where}.{kind}", arg, "must be [lo, hi] with lo < hi" +
                               (" and lo > 0" if kind == "loguniform" else ""))
                ranges[key] = arg
    fixed = {k: v for k, v in overrides.items() if not is_space(v)}
    # every value a search can give builds a valid config: the grid's values, the ranges' ends
    probes = [{**fixed}] + [{**fixed, k: v} for k, vs in grids.items() for v in vs] + \
        [{**fixed, k: v} for k, r in ranges.items() for v in r]
    for probe in probes:
        try:
            m.make_config(probe, budget)
        except (TypeError, ValueError) as exc:
            changed = {k: v for k, v in probe.items() if k not in fixed} or fixed
            raise _bad(f"config.{method}", changed, f"not a valid {type(m.config_factory()()).__name__}: {exc}") from None


def load_spec(path: str | os.PathLike, *, check_tasks: bool = True) -> ExperimentSpec:
    """Read and validate a spec file (.json; .yaml/.yml when PyYAML is installed)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: YAML specs need PyYAML (pip install pyyaml), or write the spec as JSON") from None
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
    return parse_spec(data, check_tasks=check_tasks)


def variants(spec: ExperimentSpec, method: str) -> list[dict[str, Any]]:
    """The method's config variants: grid combinations x `num_samples` draws of the random fields
    (one variant, the fixed overrides, when it has no search space)."""
    overrides = spec.config.get(method, {})
    fixed = {k: v for k, v in overrides.items() if not is_space(v)}
    grids = {k: v["grid"] for k, v in overrides.items() if is_space(v) and "grid" in v}
    ranges = {k: v for k, v in overrides.items() if is_space(v) and "grid" not in v}
    combos = [dict(zip(grids, values)) for values in itertools.product(*grids.values())]
    if not ranges:
        return [{**fixed, **combo} for combo in combos]
    rng = random.Random(f"{spec.name}/{method}")  # stable across runs: the same trials on a re-run
    out = []
    for _ in range(spec.num_samples):
        draw = {}
        for key, space in ranges.items():
            (kind, (lo, hi)), = space.items()
            draw[key] = rng.uniform(lo, hi) if kind == "uniform" else math.exp(rng.uniform(math.log(lo), math.log(hi)))
        out.extend({**fixed, **combo, **draw} for combo in combos)
    return out


def expand(spec: ExperimentSpec) -> list[Trial]:
    """Every trial of the spec, in a stable order (task, method, variant, seed)."""
    trials = []
    for task in spec.tasks:
        for method in spec.methods:
            options = variants(spec, method)
            for j, overrides in enumerate(options):
                for seed in spec.seeds:
                    variant = j if len(options) > 1 else None
                    middle = f"/cfg{j}" if variant is not None else ""
                    trials.append(Trial(f"{task}/{method}{middle}/seed{seed}", task, method, seed, variant,
                                        overrides, spec.budget))
    return trials
