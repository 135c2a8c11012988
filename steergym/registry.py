"""Every steergym environment id, in one table, and its gymnasium registration.

Importing `steergym` registers these ids; `gymnasium.make("steergym.registry:steergym/<Name>-v0")`
works without a prior import too (gymnasium imports the module before the id lookup).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

NAMESPACE = "steergym"


@dataclass(frozen=True)
class EnvEntry:
    """One registered environment.

    Attributes:
        id: full gymnasium id, "steergym/<Name>-v<N>".
        entry_point: "module:Class" of the environment.
        max_episode_steps: TimeLimit horizon in control steps (5 Hz: 60 steps = 12 s).
        kwargs: default constructor options (overridable in `gymnasium.make`).
        family: grouping shown by `steergym list`.
    """

    id: str
    entry_point: str
    max_episode_steps: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    family: str = "widowx"


def _widowx(name: str, cls: str, steps: int) -> EnvEntry:
    return EnvEntry(f"{NAMESPACE}/{name}-v0", f"steergym.envs.tasks:{cls}", steps)


ENVS: tuple[EnvEntry, ...] = (
    # The four SIMPLER WidowX (BridgeData) tasks, horizons as in SIMPLER.
    _widowx("WidowXPutSpoonOnTowel", "PutSpoonOnTowel", 60),
    _widowx("WidowXPutCarrotOnPlate", "PutCarrotOnPlate", 60),
    _widowx("WidowXStackGreenOnYellowBlock", "StackGreenOnYellowBlock", 60),
    _widowx("WidowXPutEggplantInBasket", "PutEggplantInBasket", 120),
    # Small tasks for fast tests and RL.
    _widowx("WidowXLiftCube", "LiftCube", 40),
    _widowx("WidowXPushCube", "PushCube", 60),
)


def env_ids(family: str | None = None) -> list[str]:
    """Registered ids, optionally of one family ("widowx", ...)."""
    return [e.id for e in ENVS if family is None or e.family == family]


def entry(env_id: str) -> EnvEntry:
    """The table row of `env_id`; raises KeyError listing the known ids."""
    for e in ENVS:
        if e.id == env_id:
            return e
    raise KeyError(f"unknown steergym env id {env_id!r}; known ids: {env_ids()}")


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
        )


register_all()
