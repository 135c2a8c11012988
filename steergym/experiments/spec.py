"""An experiment spec: what to run (tasks x methods x seeds x config variants) with what budget.

    {"name": "steering",
     "tasks": ["widowx-carrot-diffusion", "widowx-lift-diffusion"],
     "methods": ["dsrl", "residual", "sac"],
     "seeds": [0, 1, 2],
     "budget": {"env_steps": 100000, "eval_every": 10000, "eval_episodes": 30},
     "config": {"dsrl": {"gradient_steps": 2, "learning_rate": {"loguniform": [1e-4, 1e-3]}}},
     "num_samples": 1, "scheduler": null,
     "resources": {"cpus": 1, "gpus": 0}, "max_failures": 2}

A task is a shipped policy name, an env id, a dataset id, or a policy checkpoint folder (relative to
where `steergym run` starts, or absolute: its trials are then named by the folder's last component).
`datasets` declares datasets the trials train on that the runner collects first, once, into
DIR/datasets (`{"steergym/lift/mixed-v0": {"env": "steergym/WidowXLiftCube-v0", "episodes": 40,
"quality": "mixed", "seed": 1000}}`, as `steergym collect` takes them); such a dataset may be a task
without existing yet. `budget.eval_seed` is the first evaluation reset seed (default 0).

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
    eval_seed: int = 0  # evaluation episodes reset with seeds eval_seed + i


@dataclass(frozen=True)
class Resources:
    cpus: float = 1
    gpus: float = 0


@dataclass(frozen=True)
class DatasetRecipe:
    """A dataset the runner collects before the trials (`steergym collect` with these arguments)."""

    env: str
    episodes: int
    quality: str = "expert"
    seed: int = 0


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
    datasets: dict[str, DatasetRecipe] = field(default_factory=dict)

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
    location: str | None = None  # a policy folder task: its absolute path (Ray workers start elsewhere)
    data_root: str | None = None  # a dataset task the spec declares: the folder it is collected into

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trial:
        return cls(**{**d, "budget": Budget(**d["budget"])})

    @property
    def source(self) -> str:
        """What the run function trains on: the folder's absolute path for a folder task, else the name."""
        return self.location or self.task


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
             "max_failures", "description", "datasets"}
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
        if not isinstance(task, str) or not task or ".." in task.split("/") or task != task.strip():
            raise _bad(f"tasks[{i}]", task, "must be a task name or folder (no '..': it names the trials' folders)")
    keys = [task_key(t) for t in tasks]
    for i, key in enumerate(keys):
        if keys.index(key) != i:
            raise _bad(f"tasks[{i}]", tasks[i], f"names the same trials ({key!r}) as tasks[{keys.index(key)}]")
    datasets = _dataset_recipes(data.get("datasets", {}))
    for dataset in datasets:
        if dataset not in tasks:
            raise _bad(f"datasets.{dataset}", data["datasets"][dataset], f"not one of the spec's tasks {tasks}")
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
    budget_fields = ("env_steps", "eval_every", "eval_episodes", "pretrain_steps", "eval_seed")
    for key in raw_budget:
        if key not in budget_fields:
            raise _bad(f"budget.{key}", raw_budget[key], f"unknown field (valid: {', '.join(budget_fields)})")
    for key in budget_fields[:3]:
        if key not in raw_budget:
            raise ValueError(f"spec field budget.{key} is missing")
    for key, value in raw_budget.items():
        _positive_int(f"budget.{key}", value, minimum=0 if key == "eval_seed" else 1)
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
    spec = ExperimentSpec(name, tasks, methods, seeds, budget, config, num_samples, scheduler, resources, max_failures,
                          datasets)
    if scheduler == "asha" and not any(is_space(v) for o in config.values() for v in o.values()):
        raise _bad("scheduler", scheduler, "needs a search space in config (ASHA compares config variants)")
    if check_tasks:
        for method in methods:
            for i, task in enumerate(tasks):
                if task in datasets and METHODS[method].task_kind == "dataset":
                    continue  # collected by the runner before the trials
                try:
                    check_task(METHODS[method], task)
                except ValueError as exc:
                    raise _bad(f"tasks[{i}]", task, str(exc)) from None
    return spec


def task_key(task: str) -> str:
    """The name a task's trials go under: the task itself, or an absolute folder's last component."""
    return Path(task).name if task.startswith("/") else task.rstrip("/")


def _dataset_recipes(raw: Any) -> dict[str, DatasetRecipe]:
    from steergym.data.collect import QUALITIES
    from steergym.registry import entry

    if not isinstance(raw, dict):
        raise _bad("datasets", raw, "must be an object: dataset id -> {env, episodes, quality, seed}")
    recipes = {}
    for name, recipe in raw.items():
        where = f"datasets.{name}"
        if not isinstance(recipe, dict):
            raise _bad(where, recipe, "must be an object {env, episodes, quality, seed}")
        unknown = sorted(set(recipe) - {"env", "episodes", "quality", "seed"})
        if unknown:
            raise _bad(f"{where}.{unknown[0]}", recipe[unknown[0]], "unknown field (valid: env, episodes, quality, seed)")
        for required in ("env", "episodes"):
            if required not in recipe:
                raise ValueError(f"spec field {where}.{required} is missing")
        try:
            entry(recipe["env"])
        except (KeyError, TypeError):
            raise _bad(f"{where}.env", recipe["env"], "unknown env id (steergym list)") from None
        _positive_int(f"{where}.episodes", recipe["episodes"])
        _positive_int(f"{where}.seed", recipe.get("seed", 0), minimum=0)
        if recipe.get("quality", "expert") not in QUALITIES:
            raise _bad(f"{where}.quality", recipe["quality"], f"must be one of {list(QUALITIES)}")
        recipes[name] = DatasetRecipe(**recipe)
    return recipes


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


def expand(spec: ExperimentSpec, out: str | os.PathLike | None = None) -> list[Trial]:
    """Every trial of the spec, in a stable order (task, method, variant, seed). Folder tasks get their
    absolute path (relative to the current directory); declared datasets their folder under `out`."""
    from steergym.experiments.methods import is_folder_task

    trials = []
    for task in spec.tasks:
        location = str(Path(task).resolve()) if is_folder_task(task) else None
        key = task_key(task)
        for method in spec.methods:
            data_root = None
            if task in spec.datasets and METHODS[method].task_kind == "dataset" and out is not None:
                data_root = str(Path(out).resolve() / "datasets")
            options = variants(spec, method)
            for j, overrides in enumerate(options):
                for seed in spec.seeds:
                    variant = j if len(options) > 1 else None
                    middle = f"/cfg{j}" if variant is not None else ""
                    trials.append(Trial(f"{key}/{method}{middle}/seed{seed}", task, method, seed, variant,
                                        overrides, spec.budget, location, data_root))
    return trials
