"""Datasets: Monte-Carlo returns, Minari round trip, quality mixes, atomic writes, bad datasets."""

import gymnasium as gym
import numpy as np
import pytest

import steergym  # noqa: F401  (registers the envs)
from steergym.data import collect, episode_qualities, load_transitions, monte_carlo_returns
from steergym.data.dataset import load_episodes

LIFT = "steergym/WidowXLiftCube-v0"


def test_mc_returns_match_hand_computed_episode():
    # r = [0, 0, 1], terminated after the last step, gamma 0.9: G = [0.81, 0.9, 1.0].
    g = monte_carlo_returns([0.0, 0.0, 1.0], [False, False, True], discount=0.9)
    np.testing.assert_allclose(g, [0.81, 0.9, 1.0])
    # Truncated (not terminated): no bootstrap past the last step either.
    g = monte_carlo_returns([1.0, 1.0], [False, False], discount=0.5)
    np.testing.assert_allclose(g, [1.5, 1.0])
    # A termination in the middle cuts the sum (concatenated episodes).
    g = monte_carlo_returns([1.0, 2.0, 3.0], [False, True, False], discount=0.5)
    np.testing.assert_allclose(g, [2.0, 2.0, 3.0])


def test_mc_returns_sparse_failure_is_infinite_horizon():
    g = monte_carlo_returns([-1.0] * 4, [False] * 4, discount=0.99, failure_reward=-1.0)
    np.testing.assert_allclose(g, [-100.0] * 4)
    # One non-failure reward: the ordinary recursion applies.
    g = monte_carlo_returns([-1.0, 0.0], [False, True], discount=0.99, failure_reward=-1.0)
    np.testing.assert_allclose(g, [-1.0, 0.0])


def test_mc_returns_reject_bad_input():
    with pytest.raises(ValueError, match="discount"):
        monte_carlo_returns([0.0], [False], discount=1.0)
    with pytest.raises(ValueError, match="same length"):
        monte_carlo_returns([0.0, 1.0], [False], discount=0.9)


def test_mixed_quality_proportions_and_prefixes():
    labels = episode_qualities("mixed", 20)
    assert labels.count("expert") == 8 and labels.count("noisy") == 6 and labels.count("failing") == 6
    assert set(labels[:3]) == {"expert", "noisy", "failing"}
    with pytest.raises(ValueError, match="quality='great'"):
        episode_qualities("great", 3)


@pytest.fixture(scope="module")
def lift_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    folder, episodes = collect(LIFT, 3, "mixed", "steergym/lift/mixed-v0", seed=5, root=root, progress=False)
    return root, folder, episodes


def test_dataset_round_trip(lift_dataset):
    root, folder, episodes = lift_dataset
    assert (folder / "data" / "main_data.hdf5").exists() and (folder / "steergym.json").exists()
    env = gym.make(LIFT)
    tr = load_transitions(
        "steergym/lift/mixed-v0",
        root=root,
        discount=0.99,
        observation_space=env.observation_space,
        action_space=env.action_space,
    )
    assert len(tr) == sum(len(e) for e in episodes)
    assert tr.observations.shape == (len(tr), env.observation_space.shape[0])
    first = episodes[0]
    n0 = len(first)
    np.testing.assert_allclose(tr.observations[:n0], first.observations[:-1])
    np.testing.assert_allclose(tr.next_observations[:n0], first.observations[1:])
    np.testing.assert_allclose(tr.actions[:n0], first.actions)
    np.testing.assert_allclose(tr.mc_returns[:n0], monte_carlo_returns(first.rewards, first.terminations), rtol=1e-6)
    assert tr.metadata["instruction"] == "lift the red cube"
    assert tr.metadata["episode_quality"] == ["expert", "noisy", "failing"]
    assert tr.successes[:n0][-1] == first.successes[-1]
    # The expert episode succeeds and terminates on success with reward 1.
    assert first.quality == "expert" and first.successes[-1] and first.terminations[-1] and first.rewards[-1] == 1.0
    env.close()


def test_same_seed_same_dataset(lift_dataset, tmp_path):
    root, _, episodes = lift_dataset
    _, again = collect(LIFT, 3, "mixed", "steergym/lift/again-v0", seed=5, root=tmp_path, progress=False)
    for a, b in zip(episodes, again):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)


def test_existing_dataset_is_not_overwritten_silently(lift_dataset):
    root, _, _ = lift_dataset
    with pytest.raises(FileExistsError, match="overwrite=True"):
        collect(LIFT, 1, "expert", "steergym/lift/mixed-v0", root=root, progress=False)


def test_missing_dataset_lists_local_ones(lift_dataset):
    root, _, _ = lift_dataset
    with pytest.raises(FileNotFoundError, match="steergym/lift/mixed-v0"):
        load_transitions("steergym/lift/nothing-v0", root=root)


def test_mismatched_space_is_refused(lift_dataset):
    root, _, _ = lift_dataset
    other = gym.make("steergym/WidowXPushCube-v0")
    with pytest.raises(ValueError, match="observation space"):
        load_episodes("steergym/lift/mixed-v0", root, observation_space=other.observation_space)
    other.close()


def test_corrupt_dataset_gives_clear_error(tmp_path):
    collect(LIFT, 1, "expert", "steergym/lift/corrupt-v0", root=tmp_path, progress=False)
    (tmp_path / "steergym/lift/corrupt-v0/data/main_data.hdf5").write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="corrupt|cannot read"):
        load_transitions("steergym/lift/corrupt-v0", root=tmp_path)


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    import minari

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        collect(LIFT, 1, "expert", "steergym/lift/broken-v0", root=tmp_path, progress=False)
    assert not (tmp_path / "steergym/lift/broken-v0").exists()
    assert not list(tmp_path.glob(".staging-*"))


def test_cli_collect_writes_a_dataset(tmp_path, capsys):
    from steergym.cli import main

    code = main(["collect", "--env", LIFT, "--episodes", "2", "--quality", "expert",
                 "--out", "steergym/lift/cli-v0", "--root", str(tmp_path), "--quiet"])
    assert code == 0
    assert "2 episodes" in capsys.readouterr().out
    assert len(load_transitions("steergym/lift/cli-v0", root=tmp_path).episode_index) > 0
    # Again without --overwrite: one clear line, exit code 2.
    code = main(["collect", "--env", LIFT, "--episodes", "1", "--out", "steergym/lift/cli-v0",
                 "--root", str(tmp_path), "--quiet"])
    assert code == 2 and "overwrite" in capsys.readouterr().err
    code = main(["collect", "--env", "steergym/Nope-v0", "--episodes", "1", "--out", "x/y-v0",
                 "--root", str(tmp_path), "--quiet"])
    assert code == 2 and "steergym/Nope-v0" in capsys.readouterr().err


@pytest.mark.parametrize("size", [(16, 16), (32, 32)])
def test_image_observations_load_as_dense_uint8_arrays(tmp_path, size):
    # Minari stores images as JPEG and decodes only >= 32x32 ones itself; smaller ones must still
    # come back as (T+1, H, W, C) uint8 close to what was recorded (JPEG is lossy).
    from steergym.data.collect import collect_episodes

    kwargs = {"obs_mode": "pixels_state", "image_size": size}
    recorded, env = collect_episodes(LIFT, 1, "expert", 0, kwargs, progress=False)
    env.close()
    collect(LIFT, 1, "expert", "steergym/lift/tiny-pixels-v0", seed=0, env_kwargs=kwargs, root=tmp_path,
            progress=False)
    (episode,), _ = load_episodes("steergym/lift/tiny-pixels-v0", root=tmp_path)
    pixels = episode.observations["pixels"]
    assert pixels.dtype == np.uint8 and pixels.shape == (len(episode) + 1, *size, 3)
    error = np.abs(pixels.astype(np.int16) - recorded[0].observations["pixels"].astype(np.int16))
    assert error.mean() < 8.0
