"""Without the `lerobot` extra (the main test venv): `import steergym` never imports LeRobot, and
every LeRobot entry point raises an ImportError that names the extra."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import pytest

from steergym.data.lerobot_format import export_to_lerobot, import_from_lerobot
from steergym.policies.lerobot import LeRobotPolicy

LIFT = "steergym/WidowXLiftCube-v0"


@pytest.fixture
def no_lerobot(monkeypatch):
    for name in ("lerobot", "lerobot.datasets", "lerobot.datasets.lerobot_dataset", "lerobot.policies",
                 "lerobot.policies.factory"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: the import fails


def test_missing_lerobot_names_the_extra(no_lerobot, tmp_path):
    with pytest.raises(ImportError, match=r'pip install -e "\.\[lerobot\]"'):
        export_to_lerobot("steergym/x/y-v0", tmp_path / "out", datasets_root=tmp_path)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[lerobot\]"'):
        _import_without_lerobot(tmp_path)


def _import_without_lerobot(tmp_path):
    """import_from_lerobot reaches the LeRobot import once the folder looks like a dataset."""
    (tmp_path / "lr" / "meta").mkdir(parents=True)
    (tmp_path / "lr" / "meta" / "info.json").write_text("{}")
    (tmp_path / "lr" / "data").mkdir()
    (tmp_path / "lr" / "data" / "file-000.parquet").write_bytes(b"")
    import_from_lerobot(tmp_path / "lr", "steergym/x/y-v0", datasets_root=tmp_path, env_id=LIFT)


def test_import_steergym_never_imports_lerobot():
    code = ("import sys, steergym, steergym.data, steergym.data.lerobot_format, steergym.policies.lerobot, steergym.cli; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'lerobot'); "
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_lerobot_policy_without_lerobot_names_the_extra(no_lerobot, tmp_path):
    env = gym.make(LIFT)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[lerobot\]"'):
        LeRobotPolicy.load(tmp_path, env)
    env.close()


def test_a_lerobot_folder_on_the_command_line_needs_the_task_and_the_extra(no_lerobot, tmp_path, capsys):
    """`steergym eval|train --policy DIR` recognises a LeRobot policy folder (its config.json names a policy
    type): without --env it asks for the task, without the extra it names the install command; a
    steergym checkpoint is never mistaken for one."""
    from steergym.cli import main
    from steergym.policies.zoo import is_lerobot_folder, resolve_policy, shipped_policies

    folder = tmp_path / "pretrained_model"
    folder.mkdir()
    (folder / "config.json").write_text('{"type": "diffusion", "horizon": 16}')
    assert is_lerobot_folder(folder)
    assert not is_lerobot_folder(shipped_policies()["widowx-lift-flow"].path)
    with pytest.raises(ValueError, match="does not name its steergym task: give one with --env"):
        resolve_policy(str(folder))
    with pytest.raises(ValueError, match=r'is a LeRobot policy: .*pip install -e "\.\[lerobot\]"'):
        resolve_policy(str(folder), LIFT)
    assert main(["eval", "--policy", str(folder), "--env", LIFT, "--episodes", "1"]) != 0
    assert 'pip install -e ".[lerobot]"' in capsys.readouterr().err
