"""steergym.bench.evaluate: the Wilson interval, result fields, determinism, videos and errors."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

from steergym.bench import EvalResult, evaluate, make_env, wilson_interval

LIFT = "steergym/WidowXLiftCube-v0"  # 40-step horizon: the cheapest task
SMALL = {"render_size": (48, 64)}  # (height, width) of video frames in these tests
FIELDS = {
    "env_id", "policy", "episodes", "successes", "success_rate", "ci_low", "ci_high",
    "mean_return", "mean_length", "seed", "env_kwargs", "video", "failed_seeds", "returns", "lengths",
}  # fmt: skip


# --------------------------------------------------------------------------- Wilson interval
# Hand computation with z = 1.959964, z^2 = 3.841459, n = 10, denominator 1 + z^2/n = 1.3841459:
#   0/10:  centre = (z^2/20)/1.3841459 = 0.138766 = half width  ->  [0, 0.277532]
#   10/10: mirror image of 0/10                                 ->  [0.722468, 1]
#   5/10:  half = z * sqrt(0.025 + z^2/400) / 1.3841459 = 0.263407 around 0.5 -> [0.236593, 0.763407]
#   1/1:   low = (1 + z^2/2 - z^2/2) / (1 + z^2) = 1/4.841459                   -> [0.206549, 1]
@pytest.mark.parametrize(
    "successes, n, low, high",
    [(0, 10, 0.0, 0.277532), (10, 10, 0.722468, 1.0), (5, 10, 0.236593, 0.763407), (1, 1, 0.206549, 1.0)],
)
def test_wilson_interval_matches_hand_computed_values(successes, n, low, high):
    got_low, got_high = wilson_interval(successes, n)
    assert got_low == pytest.approx(low, abs=1e-5)
    assert got_high == pytest.approx(high, abs=1e-5)


def test_wilson_interval_ends_are_exact_and_ordered():
    assert wilson_interval(0, 7)[0] == 0.0  # exactly, not 5e-17
    assert wilson_interval(7, 7)[1] == 1.0
    for k in range(21):
        low, high = wilson_interval(k, 20)
        assert 0.0 <= low <= k / 20 <= high <= 1.0


@pytest.mark.parametrize("successes, n", [(0, 0), (-1, 10), (11, 10)])
def test_wilson_interval_rejects_impossible_counts(successes, n):
    with pytest.raises(ValueError, match="wilson_interval"):
        wilson_interval(successes, n)


# --------------------------------------------------------------------------- evaluate
def test_random_policy_result_fields():
    result = evaluate(LIFT, "random", episodes=2, seed=3, progress=False)
    assert isinstance(result, EvalResult)
    d = result.to_dict()
    assert set(d) == FIELDS
    json.dumps(d)  # serialisable as is
    assert (result.env_id, result.policy, result.episodes, result.seed) == (LIFT, "random", 2, 3)
    assert 0 <= result.successes <= 2
    assert result.success_rate == result.successes / 2
    assert result.ci_low <= result.success_rate <= result.ci_high
    assert (result.ci_low, result.ci_high) == wilson_interval(result.successes, 2)
    assert 1 <= result.mean_length <= 40
    assert result.video is None


def test_same_seed_same_result():
    kwargs = dict(episodes=2, seed=11, env_kwargs={"reward_type": "dense"}, progress=False)
    a = evaluate(LIFT, "random", **kwargs)
    b = evaluate(LIFT, "random", **kwargs)
    assert a.mean_return > 0  # dense reward, so the comparison means something
    assert a.to_dict() == b.to_dict()
    c = evaluate(LIFT, "random", **{**kwargs, "seed": 12})
    assert c.mean_return != a.mean_return


def test_callable_and_policy_object():
    def still(obs):
        return np.zeros(7, dtype=np.float32)

    result = evaluate(LIFT, still, episodes=1, progress=False)
    assert result.policy == "still"
    assert result.successes == 0 and result.mean_length == 40  # standing still never lifts

    class Counting:
        def __init__(self):
            self.resets = 0

        def reset(self):
            self.resets += 1

        def act(self, obs):
            return np.zeros(7, dtype=np.float32)

    policy = Counting()
    assert evaluate(LIFT, policy, episodes=2, progress=False).policy == "Counting"
    assert policy.resets == 2  # once after every env.reset


def test_failed_seeds_and_expert_knobs():
    # Uniform random actions on LiftCube essentially never succeed: every seed is listed.
    random = evaluate(LIFT, "random", episodes=3, seed=7, progress=False)
    assert len(random.failed_seeds) == 3 - random.successes
    assert set(random.failed_seeds) <= {7, 8, 9}
    # The expert's noise knob reaches the expert: heavy noise changes the episodes.
    calm = evaluate(LIFT, "expert", episodes=2, progress=False)
    noisy = evaluate(LIFT, "expert", episodes=2, progress=False, expert_kwargs={"noise": 1.0})
    assert noisy.mean_length != calm.mean_length
    with pytest.raises(ValueError, match="expert_kwargs"):
        evaluate(LIFT, "random", episodes=1, progress=False, expert_kwargs={"noise": 0.1})


def test_expert_policy_lifts_the_cube():
    result = evaluate(LIFT, "expert", episodes=2, progress=False)
    assert result.policy == "expert"
    assert result.successes >= 1
    assert result.mean_return == pytest.approx(result.success_rate)  # sparse reward, ends on success


# --------------------------------------------------------------------------- videos
@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_video_is_written_and_readable(tmp_path, suffix):
    path = tmp_path / "sub" / f"episodes{suffix}"
    result = evaluate(
        LIFT, "random", episodes=2, video=path, video_episodes=1, env_kwargs=SMALL, progress=False
    )
    assert result.video == str(path)
    assert "render_mode" not in result.env_kwargs
    frames = iio.imread(path)
    assert frames.shape[1:] == (48, 64, 3)
    if suffix == ".mp4":  # (a GIF writer may merge the identical held frames)
        # Only the first episode: reset frame + one per step + one second (5 frames at 5 Hz) held.
        first_length = 40  # the random policy never lifts the cube: the episode hits the time limit
        assert result.successes == 0
        assert len(frames) == first_length + 1 + 5
    assert frames.std() > 5  # a scene, not a blank image
    assert not list(path.parent.glob(".*partial*"))  # the temporary file was renamed


def test_failed_evaluation_leaves_no_video(tmp_path):
    path = tmp_path / "broken.mp4"
    calls = []

    def breaks(obs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("policy crashed")
        return np.zeros(7, dtype=np.float32)

    with pytest.raises(RuntimeError, match="policy crashed"):
        evaluate(LIFT, breaks, episodes=1, video=path, env_kwargs=SMALL, progress=False)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- errors
def test_unknown_env_id_lists_valid_ids():
    with pytest.raises(ValueError, match="'steergym/NoSuchTask-v0'") as err:
        evaluate("steergym/NoSuchTask-v0", "random", episodes=1, progress=False)
    assert LIFT in str(err.value)


def test_unknown_policy_lists_valid_names():
    with pytest.raises(ValueError, match="'bogus'.*expert, random"):
        evaluate(LIFT, "bogus", episodes=1, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"episodes": 0}, "episodes must be >= 1"),
        ({"video": "out.avi"}, "'out.avi' must end in one of .mp4, .gif"),
        ({"env_kwargs": {"obs_mode": "rgbd"}}, "obs_mode='rgbd'"),
        ({"env_kwargs": {"colour": 1}}, "unknown option.*colour"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate(LIFT, "random", **{"episodes": 1, "progress": False, **kwargs})


def test_make_env_error_has_no_gymnasium_tail():
    with pytest.raises(ValueError) as err:
        make_env(LIFT, colour=1)
    assert "raised from the environment creator" not in str(err.value)
    assert str(err.value).startswith(LIFT)
