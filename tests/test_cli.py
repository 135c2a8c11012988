"""The `steergym` command: list, eval, render-tasks, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v3 as iio
import pytest

from steergym.cli import main
from steergym.envs.dmc import TASKS as DMC_TASKS
from steergym.registry import ENVS, env_ids

LIFT = "steergym/WidowXLiftCube-v0"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `steergym argv...`, argparse exits included."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_list_shows_every_registered_id(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for entry in ENVS:
        line = next(line for line in out.splitlines() if line.startswith(entry.id + " "))
        if entry.id == "steergym/WidowXReal-v0":
            assert "served task" in line  # listing never connects to a robot
            continue
        if entry.family == "dmc":  # dm_control's own 1000-step limit; the task's action size
            action_dim = DMC_TASKS[(entry.kwargs["domain"], entry.kwargs["task"])][1]
            assert " 1000 " in line and f"({action_dim},)" in line
            continue
        base = entry if entry.base_id is None else next(e for e in ENVS if e.id == entry.base_id)
        assert str(base.max_episode_steps) in line  # a steered env lists its base task's horizon
        # DSRL acts in the noise of a chunk of 4 actions: 4 x 7
        assert ("(28,)" if entry.id.endswith("-DSRL-v0") else "(7,)") in line


def test_list_works_on_an_install_without_the_suites_extra(capsys, monkeypatch):
    """`pip install -e .` has no robosuite: listing must still work (it built the steered robosuite
    task and failed), and say what the steered robosuite task needs."""
    from steergym.envs import robosuite_tasks

    def missing(who):
        raise ImportError(f"{who} needs robosuite, which is not installed")

    monkeypatch.setattr(robosuite_tasks, "import_robosuite", missing)
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    rows = {r["id"]: r for r in json.loads(out)}
    assert list(rows) == env_ids(include_steered=True)
    steered = rows["steergym/Robosuite-Lift-DSRL-v0"]
    assert 'pip install -e ".[suites]"' in steered["instruction"] and steered["action_shape"] is None
    assert rows["steergym/Robosuite-Lift-v0"]["obs_shape"] is not None  # from the static table


def test_list_json(capsys):
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["id"] for r in rows] == env_ids(include_steered=True)
    assert {"widowx", "steered", "real", "robosuite", "dmc"} <= {r["family"] for r in rows}
    # the adapters' rows come from static tables (no robosuite/dm_control import); test_robosuite.py
    # and test_dmc.py check those tables against the built envs
    can = next(r for r in rows if r["id"] == "steergym/Robosuite-PickPlaceCan-v0")
    assert (can["horizon"], can["obs_shape"], can["action_shape"]) == (300, [23], [7])
    walker = next(r for r in rows if r["id"] == "steergym/DMC-walker-walk-v0")
    assert (walker["horizon"], walker["obs_shape"], walker["action_shape"]) == (1000, [24], [6])
    real_carrot = next(r for r in rows if r["id"] == "steergym/WidowXRealPutCarrotOnPlate-v0")
    sim_carrot = next(r for r in rows if r["id"] == "steergym/WidowXPutCarrotOnPlate-v0")
    assert {k: v for k, v in real_carrot.items() if k not in ("id", "family")} == \
        {k: v for k, v in sim_carrot.items() if k not in ("id", "family")}
    lift = rows[env_ids().index(LIFT)]
    assert lift["instruction"] == "lift the red cube"
    assert lift["horizon"] == 40 and lift["action_shape"] == [7] and len(lift["obs_shape"]) == 1


def test_eval_prints_rate_and_writes_json(capsys, tmp_path):
    path = tmp_path / "out" / "result.json"
    code, out, _ = run(
        capsys, "eval", "--env", LIFT, "--policy", "random", "--episodes", "2", "--seed", "5",
        "--json", str(path), "--quiet",
    )  # fmt: skip
    assert code == 0
    assert "success rate 0.000 (0/2), 95% CI [0.000, 0.658]" in out
    assert "mean length 40.0 steps" in out
    result = json.loads(path.read_text())
    assert result["env_id"] == LIFT and result["episodes"] == 2 and result["seed"] == 5
    assert result["ci_high"] == pytest.approx(0.657620, abs=1e-5)  # Wilson 0/2: z^2 / (2 + z^2)


def test_eval_obs_mode_is_passed_to_the_env(capsys, tmp_path):
    path = tmp_path / "r.json"
    code, _, _ = run(
        capsys, "eval", "--env", LIFT, "--policy", "random", "--episodes", "1", "--obs-mode", "pixels",
        "--json", str(path), "--quiet",
    )  # fmt: skip
    assert code == 0
    assert json.loads(path.read_text())["env_kwargs"] == {"obs_mode": "pixels"}


def test_render_tasks_writes_pngs_of_the_requested_size(capsys, tmp_path):
    code, out, _ = run(capsys, "render-tasks", "--out", str(tmp_path), "--size", "64x48", "--env", LIFT)
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["WidowXLiftCube-v0.png", "WidowXLiftCube-v0_third_person.png"]
    for name in names:
        image = iio.imread(tmp_path / name)
        assert image.shape == (48, 64, 3) and image.std() > 5


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["eval", "--env", "steergym/NoSuchTask-v0"], ["'steergym/NoSuchTask-v0'", LIFT]),
        (["eval", "--env", LIFT, "--policy", "bogus"], ["'bogus'", "expert", "random"]),
        (["eval", "--env", LIFT, "--episodes", "0"], ["--episodes", "'0'"]),
        (["eval", "--env", LIFT, "--episodes", "1", "--video", "out.avi"], ["'out.avi'", ".mp4"]),
        (["eval", "--env", LIFT, "--obs-mode", "rgbd"], ["'rgbd'", "state"]),
        (["eval"], ["--env"]),
        (["render-tasks", "--out", "x", "--size", "big"], ["'big'", "320x240"]),
        (["render-tasks", "--out", "x", "--env", LIFT, "--size", "4000x100"], ["4000"]),
        (["render-tasks", "--out", "x", "--env", "Nope-v1"], ["'Nope-v1'"]),
        (["frobnicate"], ["'frobnicate'", "eval"]),
        ([], ["COMMAND"]),
    ],
)
def test_user_mistakes_exit_2_with_one_line(capsys, tmp_path, monkeypatch, argv, needles):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert_usage_error(code, err, *needles)


def test_console_process_exit_code_and_stderr():
    proc = subprocess.run(
        [sys.executable, "-m", "steergym.cli", "eval", "--env", "steergym/Missing-v0", "--episodes", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_usage_error(proc.returncode, proc.stderr, "'steergym/Missing-v0'")
    assert proc.stderr.startswith("steergym eval: error: unknown env id")
