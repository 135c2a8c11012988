"""Simulated WidowX 250 tasks (MuJoCo)."""

from steergym.envs.tasks import TASKS
from steergym.envs.widowx import WidowXEnv

__all__ = ["TASKS", "WidowXEnv"]
