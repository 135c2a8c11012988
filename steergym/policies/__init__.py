"""Scripted (privileged) expert policies for the steergym tasks."""

from steergym.policies.scripted import (
    PickPlaceExpert,
    PushExpert,
    ScriptedExpert,
    expert_success_rate,
    make_expert,
)

__all__ = ["PickPlaceExpert", "PushExpert", "ScriptedExpert", "expert_success_rate", "make_expert"]
