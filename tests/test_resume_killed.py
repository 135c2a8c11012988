"""A killed training process resumes bit for bit (the claim in docs/policies.md and docs/trainers.md), trainer by trainer.

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

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_numpy
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


def _past_start(checkpoint: Path) -> bool:
    """A chunk trainer's checkpoint saved after some training (its first is saved at env step 0)."""
    try:
        return json.loads(checkpoint.read_text())["num_timesteps"] > 0
    except (OSError, ValueError, KeyError):
        return False


def _kill_after(proc: subprocess.Popen, checkpoint: Path, what: str, ready=Path.exists) -> None:
    """SIGKILL `proc`'s process group as soon as `ready(checkpoint)`; fail if it ended before."""
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while not ready(checkpoint):
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
                         checkpoint: str, what: str, ready=Path.exists) -> None:
    """The uninterrupted run and the killed one side by side, then the resumed run."""
    straight_proc = _start([*cli, *total, out_flag, str(straight)])
    try:
        killed_proc = _start([*cli, *total, out_flag, str(killed)])
        _kill_after(killed_proc, killed / checkpoint, f"{what} (to be killed)", ready)
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
    _killed_then_resumed(argv, ["--steps", "150"], "--out", tmp_path / "straight", tmp_path / "killed",
                         "last/state.safetensors", "train bc")
    for name in ("last/state.safetensors", "policy/model.safetensors"):
        assert_same_tensors(tmp_path / "straight" / name, tmp_path / "killed" / name)
    assert _csv_without_wall(tmp_path / "killed" / "progress.csv") == _csv_without_wall(
        tmp_path / "straight" / "progress.csv")  # each row once


# ---------------------------------------------------------------------------------- Cal-QL / CQL
@pytest.mark.parametrize("trainer", ["calql"])  # cql: the same code with the calibration off
def test_calql_killed_after_pretraining_and_online_resumes_bit_for_bit(trainer, data_root, tmp_path):
    argv = cli(trainer, "--dataset", "resume/lift-mixed-v0", "--root", str(data_root), "--pretrain-steps", "60",
               "--eval-every", "40", "--eval-episodes", "1", "--hidden", "16", "16", "--batch-size", "16",
               "--reward-scale", "10", "--reward-bias", "-5", "--failure-reward", "0", "--env-steps", "240")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight_proc = _start([*argv, "--out", str(straight)])
    try:
        # killed once pretrained/ exists (resumed from it), then once checkpoints/latest exists
        _kill_after(_start([*argv, "--out", str(killed)]), killed / "pretrained" / "config.json",
                    f"train {trainer} (pre-training)")
        _kill_after(_start([*argv, "--out", str(killed), "--resume"]),
                    killed / "checkpoints" / "latest" / "config.json", f"train {trainer} (online)")
        _finish(straight_proc, f"train {trainer} (uninterrupted)")
    finally:
        _kill_group(straight_proc)
    _run([*argv, "--out", str(killed), "--resume"], f"train {trainer} (resumed)")
    for name in ("agent/model.safetensors", "checkpoints/latest/model.safetensors",
                 "checkpoints/latest/replay.safetensors", "pretrained/model.safetensors"):
        assert_same_tensors(straight / name, killed / name)
    for name in ("offline.csv", "progress.csv", "eval.csv"):  # each row once
        assert _csv_without_wall(killed / name) == _csv_without_wall(straight / name), name


# ------------------------------------------------------------------------------------------ PTR
# `steergym train ptr` saves every 2,000 offline steps; the library's save_every makes a tiny run
# checkpoint often (the CLI calls this same run_ptr).
PTR_SCRIPT = """
import sys, torch
from steergym.algorithms.multitask_runs import run_ptr
from steergym.algorithms.ptr import ptr_calql_config
torch.set_num_threads(1)
root, out, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "resume"
run_ptr(["resume/carrot-v0", "resume/spoon-v0"], "resume/stack-v0", out, pretrain_steps=150, adapt_steps=150,
        demos=1, calql=ptr_calql_config(batch_size=16, critic_hidden=(16, 16), actor_hidden=(16, 16), log_every=10),
        save_every=10, eval_episodes=1, root=root, resume=resume, progress=False)
"""


def _ptr_checkpoint_after(steps: int):
    def ready(folder: Path) -> bool:
        try:  # ptr.json is written last: the checkpoint is complete
            return (folder / "ptr.json").is_file() and json.loads((folder / "config.json").read_text())[
                "offline_steps"] >= steps
        except (OSError, ValueError, KeyError):
            return False
    return ready


def test_ptr_killed_in_each_offline_phase_resumes_bit_for_bit(tmp_path):
    root = tmp_path / "data"
    for k, (task, name) in enumerate(((CARROT, "carrot"), (SPOON, "spoon"), (STACK, "stack"))):
        collect(task, 1, "mixed", f"resume/{name}-v0", seed=10 * k, root=root, progress=False)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    argv = lambda out, mode: ["-c", PTR_SCRIPT, str(root), str(out), mode]  # noqa: E731
    straight_proc = _start(argv(straight, "new"))
    try:
        # killed during pre-training, resumed, killed again during adaptation, resumed to the end
        _kill_after(_start(argv(killed, "new")), killed / "checkpoints" / "offline", "PTR (pre-training)",
                    _ptr_checkpoint_after(10))
        _kill_after(_start(argv(killed, "resume")), killed / "checkpoints" / "offline", "PTR (adaptation)",
                    _ptr_checkpoint_after(170))
        _finish(straight_proc, "PTR (uninterrupted)")
    finally:
        _kill_group(straight_proc)
    _run(argv(killed, "resume"), "PTR (resumed)")
    for name in ("agent/model.safetensors", "checkpoints/offline/model.safetensors"):
        assert_same_tensors(straight / name, killed / name)
    assert (straight / "agent" / "ptr.json").read_text() == (killed / "agent" / "ptr.json").read_text()


# ---------------------------------------------------------------------------------- OGPO, DSRL-NA
CHUNK_TINY = {
    "ogpo": ["--hidden", "16", "16", "--batch-size", "8", "--learning-starts", "2", "--group-size", "2"],
    "dsrl-na": ["--hidden", "16", "16", "--batch-size", "8", "--learning-starts", "2", "--utd", "1"],
}


@pytest.mark.parametrize("trainer", ["ogpo", "dsrl-na"])
def test_chunk_trainer_killed_run_resumes_bit_for_bit(trainer, tmp_path):
    # evaluations every 30 env steps fall inside training episodes (lift's are 6 to 40 steps here):
    # a checkpoint saved there and resumed into a fresh episode is what this case caught
    argv = cli(trainer, "--policy", "widowx-lift-diffusion", "--eval-every", "30", "--eval-episodes", "1",
               "--config", '{"log_every": 3}', *CHUNK_TINY[trainer])
    _killed_then_resumed(argv, ["--env-steps", "240"], "--out", tmp_path / "straight", tmp_path / "killed",
                         "checkpoints/latest/config.json", f"train {trainer}", ready=_past_start)
    for name in ("agent/model.safetensors", "checkpoints/latest/model.safetensors"):
        assert_same_tensors(tmp_path / "straight" / name, tmp_path / "killed" / name)
    for a, b in ((tmp_path / "straight", tmp_path / "killed"),):
        x, y = load_numpy(a / "agent" / "replay.safetensors"), load_numpy(b / "agent" / "replay.safetensors")
        assert sorted(x) == sorted(y)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
    # the logs hold each row once, as the uninterrupted run's (timings aside)
    for name in ("progress.csv", "eval.csv"):
        assert _csv_without_wall(tmp_path / "killed" / name) == _csv_without_wall(tmp_path / "straight" / name)


def _csv_without_wall(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k not in ("wall_s", "samples_per_s")} for row in csv.DictReader(handle)]


def test_cli_train_dsrl_na_writes_its_run_folder_and_a_loadable_agent(tmp_path, capsys):
    from steergym.algorithms.dsrl_na import DSRLNA
    from steergym.cli import main

    out = tmp_path / "run"
    assert main(["train", "dsrl-na", "--policy", "widowx-lift-diffusion", "--out", str(out), "--env-steps", "40",
                 "--eval-every", "40", "--eval-episodes", "1", "--seed", "3", "--quiet", "--config",
                 '{"log_every": 1}', *CHUNK_TINY["dsrl-na"]]) == 0
    text = capsys.readouterr().out
    assert f"{out}: dsrl-na on {LIFT}, 40 env steps" in text and "eval success (1 episodes)" in text
    for name in ("run.json", "progress.csv", "eval.csv", "tb", "checkpoints/latest/config.json",
                 "agent/config.json", "agent/model.safetensors", "agent/replay.safetensors", "agent/policy"):
        assert (out / name).exists(), name
    assert json.loads((out / "run.json").read_text())["algorithm"] == "dsrl-na"
    agent = DSRLNA.load(out / "agent")  # the base policy comes from the agent's own policy/ folder
    assert (agent.num_timesteps, agent.agent_steps, agent.seed) == (40, 10, 3)
    assert agent.config.hidden == (16, 16) and agent.replay.size == 10
    action, _ = agent.predict(np.zeros(agent.observation_space.shape, np.float32))
    assert np.all(np.isfinite(action))
    # the folder holds a run: training into it again needs --resume
    assert main(["train", "dsrl-na", "--out", str(out), "--env-steps", "40", "--quiet"]) == 2
    assert "pass --resume" in capsys.readouterr().err


# ------------------------------------------------------------------- decoding ignores torch's RNG
@pytest.mark.parametrize("name", ["widowx-lift-diffusion", "widowx-lift-flow"])
def test_decoding_noise_does_not_depend_on_torchs_global_random_state(name):
    from steergym.policies.zoo import load_shipped

    policy = load_shipped(name)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((3, *policy.observation_space.shape)).astype(np.float32)
    noise = rng.standard_normal((3, *policy.noise_shape)).astype(np.float32)
    torch.manual_seed(0)
    first, batch = policy.sample(obs[0], noise[0]), policy.sample(obs, noise)
    for seed in (1, 12345, 2**31 - 1):
        torch.manual_seed(seed)
        torch.rand(seed % 97 + 1)  # and move the global generator along
        np.testing.assert_array_equal(policy.sample(obs[0], noise[0]), first)
        torch.randn(5)
        np.testing.assert_array_equal(policy.sample(obs, noise), batch)
    # (a batch of 3 goes through other matmul kernels than a batch of 1: equal up to rounding)
    np.testing.assert_allclose(batch[0], first, rtol=0, atol=1e-5)
    # a policy's own sampling draws from its own generator: reseeded, it repeats whatever torch's state
    policy.reset(seed=7)
    chunks = policy.sample_n(obs[0], 2)
    torch.manual_seed(99)
    torch.rand(3)
    policy.reset(seed=7)
    np.testing.assert_array_equal(policy.sample_n(obs[0], 2), chunks)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_overwriting_a_checkpoint_folder_swaps_it_in_one_step(tmp_path, monkeypatch):
    """Two renames (old away, new in) leave a moment with no checkpoint at all: a run killed there
    could not be resumed. On Linux the swap is one renameat2(RENAME_EXCHANGE)."""
    from steergym.atomic import atomic_folder

    with atomic_folder(tmp_path / "latest") as staging:
        (staging / "config.json").write_text("old")

    def no_rename(*args):
        raise AssertionError("os.replace: the checkpoint was swapped in two steps")

    monkeypatch.setattr(os, "replace", no_rename)
    with atomic_folder(tmp_path / "latest") as staging:
        (staging / "config.json").write_text("new")
    assert (tmp_path / "latest" / "config.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]  # the old content is gone
