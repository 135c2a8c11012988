"""steergym datasets <-> LeRobotDataset: round trips of collected state and pixel datasets, foreign
LeRobot datasets, and the errors. Everything stays on local disk: HF_HUB_OFFLINE and HF_LEROBOT_HOME
point LeRobot away from the hub and the user's cache.

Collected only where LeRobot is installed (tests/conftest.py); the errors without it are in
tests/test_lerobot_missing.py.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from steergym.data import collect
from steergym.data.dataset import load_episodes, load_transitions, read_metadata
from steergym.data.lerobot_format import export_to_lerobot, import_from_lerobot

LIFT = "steergym/WidowXLiftCube-v0"
STATE_ID = "steergym/lift/mixed-v0"


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path_factory.getbasetemp() / "hf_lerobot_home"))


@pytest.fixture(scope="module")
def state_export(tmp_path_factory):
    """3 LiftCube state episodes (expert, noisy, failing) collected and exported."""
    root = tmp_path_factory.mktemp("minari")
    _, episodes = collect(LIFT, 3, "mixed", STATE_ID, seed=3, root=root, progress=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        out = export_to_lerobot(STATE_ID, tmp_path_factory.mktemp("lr") / "lift_mixed", datasets_root=root)
    return root, out, episodes


def _columns(lerobot) -> dict[str, np.ndarray]:
    return lerobot.hf_dataset.with_format("numpy")[:]


def test_export_reads_back_in_lerobot_with_the_same_steps(state_export):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    _, out, episodes = state_export
    lerobot = LeRobotDataset("steergym/lift_mixed-v0", root=out)
    lengths = [len(ep) for ep in episodes]
    assert len(lerobot) == sum(lengths) and lerobot.num_episodes == 3 and lerobot.fps == 5
    ends = np.cumsum(lengths)
    np.testing.assert_array_equal(np.asarray(lerobot.meta.episodes["dataset_from_index"]), ends - lengths)
    np.testing.assert_array_equal(np.asarray(lerobot.meta.episodes["dataset_to_index"]), ends)
    cols = _columns(lerobot)
    np.testing.assert_array_equal(cols["episode_index"], np.repeat(np.arange(3), lengths))
    np.testing.assert_allclose(cols["observation.state"], np.concatenate([ep.observations[:-1] for ep in episodes]),
                               rtol=0, atol=1e-7)
    np.testing.assert_allclose(cols["action"], np.concatenate([ep.actions for ep in episodes]), rtol=0, atol=1e-7)
    np.testing.assert_allclose(cols["next.reward"], np.concatenate([ep.rewards for ep in episodes]), atol=1e-7)
    for feature, field in (("next.success", "successes"), ("next.done", "terminations"),
                           ("next.truncated", "truncations")):
        np.testing.assert_array_equal(cols[feature], np.concatenate([getattr(ep, field) for ep in episodes]))
    # The expert succeeds (a reward-1, terminal, successful last step); the failing one does not.
    assert episodes[0].quality == "expert" and cols["next.success"][ends[0] - 1] and cols["next.done"][ends[0] - 1]
    assert cols["next.reward"][ends[0] - 1] == 1.0 and not cols["next.success"][: ends[0] - 1].any()
    assert lerobot[0]["task"] == "lift the red cube" and lerobot[len(lerobot) - 1]["task"] == "lift the red cube"
    state_names = lerobot.meta.features["observation.state"]["names"]
    assert state_names[:3] == ["tcp_x", "tcp_y", "tcp_z"] and len(state_names) == episodes[0].observations.shape[1]


def test_import_gives_back_the_same_episodes(state_export, tmp_path):
    root, out, episodes = state_export
    assert import_from_lerobot(out, "steergym/lift/back-v0", datasets_root=tmp_path) == "steergym/lift/back-v0"
    env = gym.make(LIFT)
    back, metadata = load_episodes("steergym/lift/back-v0", tmp_path, env.observation_space, env.action_space)
    env.close()
    assert len(back) == len(episodes)
    for a, b in zip(episodes, back):
        np.testing.assert_allclose(b.observations, a.observations, rtol=0, atol=1e-7)  # the final one too
        np.testing.assert_allclose(b.actions, a.actions, rtol=0, atol=1e-7)
        np.testing.assert_allclose(b.rewards, a.rewards, atol=1e-7)
        for field in ("terminations", "truncations", "successes"):
            np.testing.assert_array_equal(getattr(b, field), getattr(a, field))
        assert b.quality == a.quality
    source = read_metadata(STATE_ID, root)
    assert metadata["env_id"] == LIFT and metadata["instruction"] == "lift the red cube"
    assert metadata["episode_seeds"] == source["episode_seeds"] == [3, 4, 5]
    assert metadata["quality"] == "mixed" and metadata["lerobot_source"]["fps"] == 5
    # What the offline trainers read.
    tr = load_transitions("steergym/lift/back-v0", root=tmp_path)
    assert len(tr) == sum(len(ep) for ep in episodes)
    np.testing.assert_allclose(tr.next_observations[len(episodes[0]) - 1], episodes[0].observations[-1], atol=1e-7)


def test_pixel_dataset_round_trip_with_a_proprio_split(tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.datasets.utils import dataset_to_policy_features

    kwargs = {"obs_mode": "pixels_state", "image_size": (32, 32)}
    collect(LIFT, 1, "expert", "steergym/lift/pixels-v0", seed=0, env_kwargs=kwargs, root=tmp_path / "m",
            progress=False)
    (episode,), _ = load_episodes("steergym/lift/pixels-v0", tmp_path / "m")  # images as Minari decodes them
    out = export_to_lerobot("steergym/lift/pixels-v0", tmp_path / "lr", "me/pixels", datasets_root=tmp_path / "m",
                            proprio_dim=7)
    lerobot = LeRobotDataset("me/pixels", root=out)
    cols = _columns(lerobot)
    assert len(lerobot) == len(episode)
    # Stored as PNG: exactly the pixels load_episodes gives.
    np.testing.assert_array_equal(cols["observation.images.pixels"], episode.observations["pixels"][:-1])
    np.testing.assert_array_equal(cols["observation.state"], episode.observations["state"][:-1, :7])
    np.testing.assert_array_equal(cols["observation.environment_state"], episode.observations["state"][:-1, 7:])
    kinds = {k: f.type.name for k, f in dataset_to_policy_features(lerobot.meta.features).items()}
    assert kinds == {"observation.images.pixels": "VISUAL", "observation.state": "STATE",
                     "observation.environment_state": "ENV", "action": "ACTION"}
    assert tuple(lerobot[0]["observation.images.pixels"].shape) == (3, 32, 32)  # channel-first for policies
    import_from_lerobot(out, "steergym/lift/pixels-back-v0", datasets_root=tmp_path / "m")
    (back,), metadata = load_episodes("steergym/lift/pixels-back-v0", tmp_path / "m")
    assert metadata["env_kwargs"]["obs_mode"] == "pixels_state"
    np.testing.assert_array_equal(back.observations["state"], episode.observations["state"])
    error = np.abs(back.observations["pixels"].astype(np.int16) - episode.observations["pixels"].astype(np.int16))
    assert back.observations["pixels"].shape == episode.observations["pixels"].shape and error.mean() < 8.0  # JPEG
    np.testing.assert_array_equal(back.actions, episode.actions)


def _foreign_dataset(root, state_dim: int, action_dim: int, with_action: bool = True, lengths=(4, 3)):
    """A LeRobot dataset made with LeRobot's API alone: no steergym sidecar, no reward or done."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {"observation.state": {"dtype": "float32", "shape": (state_dim,), "names": None}}
    if with_action:
        features["action"] = {"dtype": "float32", "shape": (action_dim,), "names": None}
    else:
        features["joint_targets"] = {"dtype": "float32", "shape": (action_dim,), "names": None}
    dataset = LeRobotDataset.create("someone/foreign", fps=5, features=features, root=root, use_videos=False)
    rng = np.random.default_rng(0)
    for n in lengths:
        for _ in range(n):
            dataset.add_frame({"observation.state": rng.uniform(-1, 1, state_dim).astype(np.float32),
                               "action" if with_action else "joint_targets":
                                   rng.uniform(-1, 1, action_dim).astype(np.float32),
                               "task": "lift the red cube"})
        dataset.save_episode()
    dataset.finalize()
    return dataset


def test_foreign_lerobot_dataset_imports_with_an_env_id(tmp_path, make_env):
    env = make_env(LIFT)
    state_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    _foreign_dataset(tmp_path / "foreign", state_dim, action_dim)
    with pytest.raises(ValueError, match="env_id"):
        import_from_lerobot(tmp_path / "foreign", "steergym/foreign/data-v0", datasets_root=tmp_path / "m")
    import_from_lerobot(tmp_path / "foreign", "steergym/foreign/data-v0", datasets_root=tmp_path / "m", env_id=LIFT)
    episodes, _ = load_episodes("steergym/foreign/data-v0", tmp_path / "m", env.observation_space, env.action_space)
    assert [len(ep) for ep in episodes] == [4, 3]
    for ep in episodes:
        assert ep.observations.shape == (len(ep) + 1, state_dim)
        np.testing.assert_array_equal(ep.observations[-1], ep.observations[-2])  # no final obs: repeated
        assert not ep.rewards.any() and not ep.terminations.any() and not ep.successes.any()
        assert ep.truncations.tolist() == [False] * (len(ep) - 1) + [True]
        assert ep.quality == "unknown"


def test_foreign_video_dataset_imports_into_a_pixel_env(tmp_path, make_env):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    env = make_env(LIFT, obs_mode="pixels", image_size=(32, 32))
    features = {"observation.images.top": {"dtype": "video", "shape": (32, 32, 3),
                                           "names": ["height", "width", "channels"]},
                "action": {"dtype": "float32", "shape": (7,), "names": None}}
    dataset = LeRobotDataset.create("someone/video", fps=5, features=features, root=tmp_path / "video")
    frames = [np.full((32, 32, 3), 30 * i, np.uint8) for i in range(5)]
    for frame in frames:
        dataset.add_frame({"observation.images.top": frame, "action": np.zeros(7, np.float32), "task": "lift"})
    dataset.save_episode()
    dataset.finalize()
    import_from_lerobot(tmp_path / "video", "steergym/video/data-v0", datasets_root=tmp_path / "m", env_id=LIFT,
                        env_kwargs={"obs_mode": "pixels", "image_size": (32, 32)})
    (episode,), metadata = load_episodes("steergym/video/data-v0", tmp_path / "m", env.observation_space)
    assert metadata["env_kwargs"] == {"obs_mode": "pixels", "image_size": [32, 32]}
    assert episode.observations.shape == (6, 32, 32, 3) and episode.observations.dtype == np.uint8
    # AV1 video, then Minari's JPEG: lossy, but each frame keeps its grey level.
    levels = episode.observations.reshape(6, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [0, 30, 60, 90, 120, 120], atol=4)


def test_import_refuses_a_dataset_without_action_or_with_another_action_size(tmp_path, make_env):
    env = make_env(LIFT)
    state_dim = env.observation_space.shape[0]
    _foreign_dataset(tmp_path / "no_action", state_dim, 7, with_action=False, lengths=(2,))
    with pytest.raises(ValueError, match="no 'action' feature.*joint_targets"):
        import_from_lerobot(tmp_path / "no_action", "steergym/x/a-v0", datasets_root=tmp_path / "m", env_id=LIFT)
    _foreign_dataset(tmp_path / "action3", state_dim, 3, lengths=(2,))
    with pytest.raises(ValueError, match=r"'action' has shape \(3,\).*\(7,\)"):
        import_from_lerobot(tmp_path / "action3", "steergym/x/b-v0", datasets_root=tmp_path / "m", env_id=LIFT)
    _foreign_dataset(tmp_path / "state5", 5, 7, lengths=(2,))
    with pytest.raises(ValueError, match=r"'observation.state' has shape \(5,\)"):
        import_from_lerobot(tmp_path / "state5", "steergym/x/c-v0", datasets_root=tmp_path / "m", env_id=LIFT)
    with pytest.raises(ValueError, match="no LeRobot dataset"):
        import_from_lerobot(tmp_path / "nothing", "steergym/x/d-v0", datasets_root=tmp_path / "m", env_id=LIFT)
    assert not (tmp_path / "nothing").exists()  # LeRobotDataset(root=...) would have created it
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").glob("steergym/x/*"))


def test_export_errors_name_the_dataset_and_the_folder(state_export, tmp_path):
    root, out, _ = state_export
    with pytest.raises(ValueError, match=r"'steergym/lift/nothing-v0' does not exist.*steergym/lift/mixed-v0"):
        export_to_lerobot("steergym/lift/nothing-v0", tmp_path / "x", datasets_root=root)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match=f"out_root {out} already holds a LeRobot dataset.*overwrite=True"):
        export_to_lerobot(STATE_ID, out, datasets_root=root)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="no LeRobot dataset.*even with overwrite=True"):
        export_to_lerobot(STATE_ID, tmp_path / "mine", datasets_root=root, overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="proprio_dim=99"):
        export_to_lerobot(STATE_ID, tmp_path / "y", datasets_root=root, proprio_dim=99)
    assert not list(tmp_path.glob(".*staging*")) and not (tmp_path / "y").exists()
    with pytest.raises(ValueError, match="proprio_dim=0"):
        export_to_lerobot(STATE_ID, tmp_path / "y", datasets_root=root, proprio_dim=0)


def test_overwrite_replaces_an_export(state_export, tmp_path):
    import json

    root, _, _ = state_export
    out = export_to_lerobot(STATE_ID, tmp_path / "lr", datasets_root=root, fps=5)
    export_to_lerobot(STATE_ID, out, datasets_root=root, overwrite=True, fps=10)
    assert json.loads((out / "meta" / "info.json").read_text())["fps"] == 10
    assert [p.name for p in tmp_path.iterdir()] == ["lr"]  # no staging or trash folder left


def test_cli_export_and_import(state_export, tmp_path, capsys):
    from steergym.cli import main

    root, _, episodes = state_export
    assert main(["export-lerobot", STATE_ID, str(tmp_path / "lr"), "--root", str(root)]) == 0
    assert (tmp_path / "lr" / "meta" / "info.json").is_file()
    assert main(["import-lerobot", str(tmp_path / "lr"), "steergym/lift/cli-v0", "--root", str(tmp_path / "m")]) == 0
    back, _ = load_episodes("steergym/lift/cli-v0", tmp_path / "m")
    np.testing.assert_allclose(back[1].actions, episodes[1].actions, atol=1e-7)
    capsys.readouterr()
    assert main(["export-lerobot", STATE_ID, str(tmp_path / "lr"), "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "overwrite" in err
