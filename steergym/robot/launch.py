"""Start `steergym serve` in a subprocess: rehearse with the simulated twin, benchmark, test.

    with ServerProcess("steergym/WidowXLiftCube-v0", folder="twin") as server:
        env = server.make_env(control_period_s=0.0)     # steergym/WidowXRealLiftCube-v0 against it
        ...

`folder` holds the token file, the episode logs and the server's stderr (`server-<port>.log`).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from steergym.registry import real_id  # importing the registry registers the ids

START_TIMEOUT_S = 120.0  # import + model build on a loaded 2-core machine


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`steergym serve --backend sim --task TASK ...` as a child process.

    Args:
        task: the simulated task to serve.
        folder: token file (`token`), episode logs (`logs/`) and the server's stderr go here.
        port: TCP port (None: a free one).
        args: extra `steergym serve` arguments (e.g. "--obs-mode", "pixels", "--client-timeout", "0.5").
    """

    def __init__(self, task: str, folder: str | os.PathLike, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.task, self.folder = task, Path(folder)
        self.port = port or free_port()
        self.args = tuple(args)
        self.token_file, self.log_dir = self.folder / "token", self.folder / "logs"
        self.stderr_path = self.folder / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> ServerProcess:
        """Launch and return once the server printed its ready line (RuntimeError with its log if not)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "steergym.cli", "serve", "--task", self.task, "--port", str(self.port),
               "--token-file", str(self.token_file), "--log-dir", str(self.log_dir), *self.args]
        with open(self.stderr_path, "ab") as stderr:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr,
                                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if select.select([self.proc.stdout], [], [], 0.5)[0] and b"ready on" in self.proc.stdout.readline():
                return self
            if self.proc.poll() is not None:
                break
        self.kill()
        raise RuntimeError(f"steergym serve did not start on port {self.port}: {self.stderr_path.read_text()[-2000:]}")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (the server returns the arm to its safe pose and exits), SIGKILL if it hangs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return None if self.proc is None else self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the server dies mid-whatever (what a crash looks like to clients)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def make_env(self, env_id: str | None = None, **kwargs: Any):
        """`gymnasium.make` of the served task's WidowXReal id (or `env_id`) connected to this server."""
        import gymnasium as gym

        kwargs = {"port": self.port, "token_file": str(self.token_file), **kwargs}
        return gym.make(env_id or real_id(self.task), **kwargs)

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
