"""Every steergym environment id, in one table, and its gymnasium registration.

Importing `steergym` registers these ids; `gymnasium.make("steergym.registry:steergym/<Name>-v0")`
works without a prior import too (gymnasium imports the module before the id lookup).

Families of rows:
  * "widowx": the simulated tasks themselves, `steergym/<Task>-v0` (`env_ids()` lists these).
  * "real": clients of a robot server (`steergym serve`, `steergym.envs.real`), one per task,
        `steergym/WidowXReal<Task>-v0` (the robot must serve that task: same instruction, same
        spaces, same horizon), and `steergym/WidowXReal-v0`, which takes whatever task the server
        serves. `gymnasium.make` connects to the server (host/port/token options); no TimeLimit is
        registered: the client truncates at the served task's horizon.
  * "robosuite": robosuite 1.5 tasks (Panda, OSC_POSE, robomimic low-dim observations, 20 Hz),
        `steergym/Robosuite-<Task>-v0` for Lift, PickPlaceCan and NutAssemblySquare, with DPPO's
        horizons (300 / 300 / 400); built by `steergym.envs.robosuite_tasks`.
  * "dmc": dm_control suite tasks with flat float32 observations, `steergym/DMC-<domain>-<task>-v0`;
        dm_control's own 1000-step limit truncates (no TimeLimit); built by `steergym.envs.dmc`.
    Both need the `suites` extra (robosuite, dm_control, shimmy), imported only by `gymnasium.make`.
  * "steered": a task with a shipped base policy inside a steering wrapper, one pair per shipped
    single-task policy of a WidowX or robosuite task (`env_ids("steered")`, e.g.
    `steergym/Robosuite-Lift-DSRL-v0`; built by `steergym.wrappers.steered_envs`):
        steergym/<Task>-DSRL-v0       NoiseActionWrapper(make(<Task>-v0), policy, noise_bound=1.5)
        steergym/<Task>-Residual-v0   ResidualActionWrapper(make(<Task>-v0), policy, scale=0.1)
    Naming: each task's *default* policy (its diffusion policy; else the first by name) gets the
    plain ids above; every other shipped policy of the task adds its kind, capitalised, before the
    method: `steergym/WidowXLiftCube-Flow-DSRL-v0` steers `widowx-lift-flow`. (Should a task ever
    ship two non-default policies of one kind, the later one by name is named by its policy name
    in CamelCase instead, e.g. `-WidowxLiftFlowV2-`.) The multi-task generalist is not registered
    (steer it with `make_dsrl_env(task, "widowx-generalist-diffusion")`).
    The rows are read from the shipped-policy index (a JSON file); no checkpoint is loaded until
    `gymnasium.make` builds the env, so importing steergym stays cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

NAMESPACE = "steergym"
STEERED = "steered"
DSRL_NOISE_BOUND = 1.5  # DSRL's default noise box half-width
RESIDUAL_SCALE = 0.1  # correction weight of the registered residual tasks

# The shipped-policy index (`steergym.policies.zoo` reads the same file; importing zoo would import
# torch, which registration must not).
_POLICY_INDEX = Path(__file__).resolve().parent / "assets" / "policies" / "index.json"


@dataclass(frozen=True)
class EnvEntry:
    """One registered environment.

    Attributes:
        id: full gymnasium id, "steergym/<Name>-v<N>".
        entry_point: "module:Class" (or "module:function") building the environment.
        max_episode_steps: TimeLimit horizon in control steps (5 Hz: 60 steps = 12 s); None for a
            steered row, whose base env's own TimeLimit ends the episode (an outer one would count
            agent steps, i.e. chunks for DSRL).
        kwargs: default constructor options (overridable in `gymnasium.make`).
        family: grouping shown by `steergym list` ("widowx", "real", "robosuite", "dmc", "steered").
        base_id: for a steered row, the task it steers.
        policy: for a steered row, the shipped base policy's name.
        thin: register without gymnasium's OrderEnforcing and PassiveEnvChecker wrappers (for an env
            that raises ResetNeeded itself and whose checks run in the tests; dm_control rows, whose
            cheapest steps are ~0.08 ms, where the two wrappers alone cost ~3%).
    """

    id: str
    entry_point: str
    max_episode_steps: int | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    family: str = "widowx"
    base_id: str | None = None
    policy: str | None = None
    thin: bool = False


def _widowx(name: str, cls: str, steps: int) -> EnvEntry:
    return EnvEntry(f"{NAMESPACE}/{name}-v0", f"steergym.envs.tasks:{cls}", steps)


TASKS: tuple[EnvEntry, ...] = (
    # The four SIMPLER WidowX (BridgeData) tasks, horizons as in SIMPLER.
    _widowx("WidowXPutSpoonOnTowel", "PutSpoonOnTowel", 60),
    _widowx("WidowXPutCarrotOnPlate", "PutCarrotOnPlate", 60),
    _widowx("WidowXStackGreenOnYellowBlock", "StackGreenOnYellowBlock", 60),
    _widowx("WidowXPutEggplantInBasket", "PutEggplantInBasket", 120),
    # Small tasks for fast tests and RL.
    _widowx("WidowXLiftCube", "LiftCube", 40),
    _widowx("WidowXPushCube", "PushCube", 60),
)


def steered_entries(index_file: str | Path = _POLICY_INDEX,
                    tasks: tuple[EnvEntry, ...] = TASKS) -> tuple[EnvEntry, ...]:
    """The "steered" rows for the single-task policies of a shipped-policy index (naming: above).

    Rows follow the order of `tasks`, then default policy first; policies of unknown tasks and
    multi-task policies are skipped; a missing index gives no rows.
    """
    path = Path(index_file)
    if not path.exists():
        return ()
    policies = json.loads(path.read_text()).get("policies", {})
    by_task: dict[str, list[tuple[str, str]]] = {}
    for name, e in policies.items():
        if len(e.get("env_ids", ())) == 1:
            by_task.setdefault(e["env_ids"][0], []).append((name, str(e.get("kind", ""))))
    rows: list[EnvEntry] = []
    for task in tasks:
        shipped = sorted(by_task.get(task.id, ()), key=lambda nk: (nk[1] != "diffusion", nk[0]))
        base = task.id.split("/", 1)[1].rsplit("-v", 1)[0]
        variants: set[str] = set()
        for i, (name, kind) in enumerate(shipped):
            variant = "" if i == 0 else kind.capitalize()
            if i and (not variant.isalnum() or variant in variants):
                variant = "".join(part.capitalize() for part in name.replace("_", "-").split("-") if part)
            variants.add(variant)
            stem = f"{NAMESPACE}/{base}{'-' + variant if variant else ''}"
            common = dict(max_episode_steps=None, family=STEERED, base_id=task.id, policy=name)
            rows.append(EnvEntry(
                f"{stem}-DSRL-v0", "steergym.wrappers.steered_envs:make_dsrl_env",
                kwargs={"base_id": task.id, "policy": name, "noise_bound": DSRL_NOISE_BOUND}, **common))
            rows.append(EnvEntry(
                f"{stem}-Residual-v0", "steergym.wrappers.steered_envs:make_residual_env",
                kwargs={"base_id": task.id, "policy": name, "scale": RESIDUAL_SCALE}, **common))
    return tuple(rows)


REAL = "real"


def real_id(task_id: str) -> str:
    """The robot-client id of a simulated task: "steergym/WidowX<Task>-v0" -> "steergym/WidowXReal<Task>-v0"."""
    return f"{NAMESPACE}/WidowXReal" + task_id.split("/", 1)[1].removeprefix("WidowX")


def real_entries(tasks: tuple[EnvEntry, ...] = TASKS) -> tuple[EnvEntry, ...]:
    """The robot-client rows: the generic `steergym/WidowXReal-v0`, then one per task."""
    rows = [EnvEntry(f"{NAMESPACE}/WidowXReal-v0", "steergym.envs.real:RealWidowXEnv", None, family=REAL)]
    for task in tasks:
        rows.append(EnvEntry(real_id(task.id), "steergym.envs.real:RealWidowXEnv", None,
                             kwargs={"task": task.id}, family=REAL, base_id=task.id))
    return tuple(rows)


ROBOSUITE = "robosuite"
# robosuite env name -> horizon in 20 Hz control steps (DPPO's max_episode_steps)
ROBOSUITE_TASKS: tuple[tuple[str, int], ...] = (
    ("Lift", 300), ("PickPlaceCan", 300), ("NutAssemblySquare", 400),
)


def robosuite_entries() -> tuple[EnvEntry, ...]:
    """The robosuite rows, `steergym/Robosuite-<Task>-v0`."""
    return tuple(
        EnvEntry(f"{NAMESPACE}/Robosuite-{name}-v0", "steergym.envs.robosuite_tasks:RobosuiteEnv", steps,
                 kwargs={"task": name}, family=ROBOSUITE)
        for name, steps in ROBOSUITE_TASKS
    )


DMC = "dmc"
DMC_TASKS: tuple[tuple[str, str], ...] = (
    ("cartpole", "swingup"), ("cheetah", "run"), ("walker", "walk"), ("reacher", "easy"),
    ("ball_in_cup", "catch"), ("finger", "spin"),
)


def dmc_entries() -> tuple[EnvEntry, ...]:
    """The dm_control rows, `steergym/DMC-<domain>-<task>-v0` (episode end: dm_control's limit)."""
    return tuple(
        EnvEntry(f"{NAMESPACE}/DMC-{domain}-{task}-v0", "steergym.envs.dmc:DMCEnv", None,
                 kwargs={"domain": domain, "task": task}, family=DMC, thin=True)
        for domain, task in DMC_TASKS
    )


ENVS: tuple[EnvEntry, ...] = (TASKS + real_entries() + robosuite_entries() + dmc_entries()
                              + steered_entries(tasks=TASKS + robosuite_entries()))


def env_ids(family: str | None = None, *, include_steered: bool = False) -> list[str]:
    """Registered ids.

    `env_ids()` lists the simulated WidowX tasks themselves (family "widowx"), which is what code
    that iterates "all tasks" wants; `env_ids(family)` one family ("steered", "real", ...);
    `include_steered=True` (without a family) every id in the table, whatever its family.
    """
    if family is not None:
        return [e.id for e in ENVS if e.family == family]
    return [e.id for e in ENVS if include_steered or e.family == "widowx"]


def entry(env_id: str) -> EnvEntry:
    """The table row of `env_id`; raises KeyError listing the known ids."""
    for e in ENVS:
        if e.id == env_id:
            return e
    raise KeyError(f"unknown steergym env id {env_id!r}; known ids: {env_ids(include_steered=True)}")


def make_env(env_id: str, **env_kwargs: Any) -> gym.Env:
    """`gymnasium.make(env_id, **env_kwargs)` with one-line ValueErrors for user mistakes.

    An unknown id names the registered steergym ids; a bad option names the valid ones.
    """
    try:
        return gym.make(env_id, **env_kwargs)
    except (gym.error.UnregisteredEnv, ModuleNotFoundError) as exc:
        raise ValueError(f"unknown env id {env_id!r}; valid ids: {', '.join(env_ids())}") from exc
    except (TypeError, ValueError) as exc:
        # Environments name the offending option; gymnasium appends a long "was raised from" tail.
        message = str(exc).split(" was raised from the environment creator")[0]
        raise ValueError(f"{env_id}: {message}") from exc


def register_all() -> None:
    """Register every id with gymnasium (idempotent)."""
    for e in ENVS:
        if e.id in gym.registry:
            continue
        gym.register(
            id=e.id,
            entry_point=e.entry_point,
            max_episode_steps=e.max_episode_steps,
            kwargs=dict(e.kwargs),
            order_enforce=not e.thin,
            disable_env_checker=e.thin,
        )


register_all()
