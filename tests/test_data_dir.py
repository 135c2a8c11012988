"""Default outputs go to the per-user data folder (`steergym.paths`), never the working directory."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest

from steergym.paths import data_dir, robot_log_dir
from steergym.robot.backends import SimBackend
from steergym.robot.episode_log import log_files, read_episode_log
from steergym.robot.launch import START_TIMEOUT_S, free_port
from steergym.robot.server import RobotServer

LIFT, REAL_LIFT = "steergym/WidowXLiftCube-v0", "steergym/WidowXRealLiftCube-v0"


@pytest.fixture
def user(tmp_path, monkeypatch):
    """A fresh user: HOME, XDG_DATA_HOME and the working directory in tmp_path, no STEERGYM_DATA_DIR."""
    home, xdg, cwd = tmp_path / "home", tmp_path / "xdg", tmp_path / "cwd"
    for folder in (home, xdg, cwd):
        folder.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg))
    monkeypatch.delenv("STEERGYM_DATA_DIR", raising=False)
    monkeypatch.chdir(cwd)
    return home, xdg, cwd


def test_data_dir_order_steergym_then_xdg_then_local_share(user, monkeypatch, tmp_path):
    home, xdg, _ = user
    assert data_dir() == xdg / "steergym" and robot_log_dir() == xdg / "steergym" / "robot_logs"
    for unusable in ("", "relative/share"):  # the XDG spec: ignore an empty or relative value
        monkeypatch.setenv("XDG_DATA_HOME", unusable)
        assert data_dir() == home / ".local" / "share" / "steergym"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert robot_log_dir() == home / ".local" / "share" / "steergym" / "robot_logs"
    monkeypatch.setenv("STEERGYM_DATA_DIR", str(tmp_path / "own"))
    assert robot_log_dir() == tmp_path / "own" / "robot_logs"


def test_robot_server_default_log_dir_is_the_data_dir(user):
    _, xdg, cwd = user
    server = RobotServer(SimBackend(LIFT), "token", port=0)
    try:
        assert server.log_dir == xdg / "steergym" / "robot_logs"
    finally:
        server.close()
    assert list(cwd.iterdir()) == []


def test_serve_with_default_args_writes_nothing_into_the_working_directory(user, tmp_path):
    home, xdg, cwd = user
    port, stderr = free_port(), tmp_path / "serve.stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "steergym.cli", "serve", "--task", LIFT, "--port", str(port)],
                                cwd=cwd, stdout=subprocess.PIPE, stderr=err, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        ready, deadline = b"", time.monotonic() + START_TIMEOUT_S
        while b"ready on" not in ready and time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stdout], [], [], 0.5)[0]:
                ready = proc.stdout.readline()
        assert b"ready on" in ready, stderr.read_text()[-2000:]
        logs = xdg / "steergym" / "robot_logs"
        assert f"logs {logs})".encode() in ready
        env = gym.make(REAL_LIFT, port=port, token_file=str(home / ".config/steergym/robot_token"),
                       control_period_s=0.0)
        env.reset(seed=0)
        env.step(np.zeros(7, np.float32))
        env.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait(10)
    assert list(cwd.iterdir()) == []
    journal = read_episode_log(log_files(logs)[-1])
    assert len(log_files(logs)) == 1 and len(journal["steps"]) == 1

    from steergym.cli import main  # export's LOG_DIR defaults to the same folder

    assert main(["robot", "export", "--dataset-id", "test/robot-v0", "--root", str(home / "datasets")]) == 0
    assert (home / "datasets" / "test" / "robot-v0").is_dir() and list(cwd.iterdir()) == []
