"""Shared pytest setup for steergym.

Rendering is headless: MUJOCO_GL must be chosen before mujoco is first imported, so it is set here,
at collection time, before any test module imports mujoco / steergym (a user's own choice wins).
"""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("MUJOCO_GL", "egl")

from collections.abc import Callable, Iterator  # noqa: E402

import gymnasium as gym  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import steergym  # noqa: E402,F401  (registers the ids)

# CI runs two pytest workers on two cores; torch's default of one thread per core in each worker
# oversubscribes the CPU and makes small-network training ~10x slower (OpenMP spin-waits).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _torch_seeded_per_test() -> None:
    """Every test starts from torch's global generator at seed 0, whatever ran before it on its xdist
    worker: untrained weights drawn from it are then the same in every test order. (One order once
    built a policy whose actions all clipped to the bounds, which hid the noise a test compared.)"""
    torch.manual_seed(0)


@pytest.fixture
def make_env() -> Iterator[Callable[..., gym.Env]]:
    """Factory `make_env(env_id, **kwargs)` around `gymnasium.make` that closes every env it made.

    Closing matters: an EGL renderer left to the garbage collector at interpreter exit prints
    spurious EGLError tracebacks.
    """
    made: list[gym.Env] = []

    def _make(env_id: str, **kwargs) -> gym.Env:
        env = gym.make(env_id, **kwargs)
        made.append(env)
        return env

    yield _make
    for env in made:
        env.close()


def pytest_terminal_summary(terminalreporter, config):
    """Print the test order's seed (pytest-randomly shows it only in the header, which -q hides)."""
    seed = getattr(config.option, "randomly_seed", None)
    if config.pluginmanager.hasplugin("randomly") and isinstance(seed, int):
        terminalreporter.write_line(f"test order: --randomly-seed={seed} (pytest -p randomly --randomly-seed={seed} repeats it)")


# tests/lerobot_extra needs the `lerobot` extra, which cannot share a venv with `suites` (LeRobot 0.4 needs
# NumPy 2, robosuite 1.5.2 NumPy 1); .ci/run runs that folder in a venv of its own.
if importlib.util.find_spec("lerobot") is None:
    collect_ignore = ["lerobot_extra"]
