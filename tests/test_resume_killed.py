"""A killed training process resumes bit for bit (the README's claim), trainer by trainer.

Each case runs a tiny training in a child process, SIGKILLs it once its first checkpoint exists,
resumes it with `--resume` in a fresh process up to the same total, and compares the final weights
with those of an uninterrupted run of the same total in another process: every tensor must be equal
(torch.equal). A kill between checkpoints is what users meet; resuming within one process (the
trainers' own tests) cannot catch state that only lives in the process (RNG states, counters,
an episode in progress). Children run in their own process group and every wait has a timeout, so a
failing case leaves no process behind.

Also: the `train dsrl-na` command, and that a generative policy decodes noise independently of
torch's global random state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from steergym.data import collect

REPO = Path(__file__).resolve().parents[1]
LIFT = "steergym/WidowXLiftCube-v0"
CARROT = "steergym/WidowXPutCarrotOnPlate-v0"
SPOON = "steergym/WidowXPutSpoonOnTowel-v0"
STACK = "steergym/WidowXStackGreenOnYellowBlock-v0"
RUN_TIMEOUT = 120  # seconds for one child process; a tiny run takes a few


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("MUJOCO_GL", "egl")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *argv], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def _finish(proc: subprocess.Popen, what: str) -> str:
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        pytest.fail(f"{what} did not finish within {RUN_TIMEOUT} s")
    if proc.returncode != 0:
        pytest.fail(f"{what} exited {proc.returncode}:\n{out[-3000:]}")
    return out


def _run(argv: list[str], what: str) -> str:
    proc = _start(argv)
    try:
        return _finish(proc, what)
    finally:
        _kill_group(proc)


def _kill_after(proc: subprocess.Popen, checkpoint: Path, what: str) -> None:
    """SIGKILL `proc`'s process group as soon as `checkpoint` exists; fail if it ended before."""
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while not checkpoint.exists():
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"{what} ended (exit {proc.returncode}) before {checkpoint} existed:\n{out[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: no {checkpoint} after {RUN_TIMEOUT} s")
            time.sleep(0.02)
        assert proc.poll() is None, f"{what} finished before it could be killed: make the run longer"
    finally:
        _kill_group(proc)
    assert proc.returncode == -signal.SIGKILL


def _killed_then_resumed(cli: list[str], total: list[str], out_flag: str, straight: Path, killed: Path,
                         checkpoint: str, what: str) -> None:
    """The uninterrupted run and the killed one side by side, then the resumed run."""
    straight_proc = _start([*cli, *total, out_flag, str(straight)])
    try:
        killed_proc = _start([*cli, *total, out_flag, str(killed)])
        _kill_after(killed_proc, killed / checkpoint, f"{what} (to be killed)")
        _finish(straight_proc, f"{what} (uninterrupted)")
    finally:
        _kill_group(straight_proc)
    _run([*cli, *total, out_flag, str(killed), "--resume"], f"{what} (resumed)")


def assert_same_tensors(a: Path, b: Path) -> None:
    x, y = load_file(str(a)), load_file(str(b))
    assert sorted(x) == sorted(y)
    different = [k for k in x if not torch.equal(x[k], y[k])]
    assert not different, f"{len(different)}/{len(x)} tensors differ, e.g. {different[:5]}"


def cli(*args: str) -> list[str]:
    return ["-m", "steergym.cli", "train", *args, "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume-data")
    collect(LIFT, 2, "expert", "resume/lift-expert-v0", root=root, progress=False)
    collect(LIFT, 2, "mixed", "resume/lift-mixed-v0", seed=0, root=root, progress=False)
    return root


# ------------------------------------------------------------------------------------------ BC
def test_bc_killed_run_resumes_bit_for_bit(data_root, tmp_path):
    argv = cli("bc", "--dataset", "resume/lift-expert-v0", "--root", str(data_root), "--policy", "diffusion",
               "--hidden-dim", "16", "--num-blocks", "1", "--batch-size", "8", "--save-every", "10",
               "--eval-every", "0")
    _killed_then_resumed(argv, ["--steps", "300"], "--out", tmp_path / "straight", tmp_path / "killed",
                         "last/state.safetensors", "train bc")
    for name in ("last/state.safetensors", "policy/model.safetensors"):
        assert_same_tensors(tmp_path / "straight" / name, tmp_path / "killed" / name)
