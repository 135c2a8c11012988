"""API, determinism, image, input-validation, reward and controller tests of every steergym env.

Fast by design (CI runs the whole suite with `pytest -n 2`): pixel observations are rendered at
32x32 (36x36 for the checkers, the smallest size SB3's CnnPolicy accepts without a warning).
"""

from __future__ import annotations

import os
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from steergym.envs.rotations import quat_to_yaw
from steergym.registry import env_ids

ENV_IDS = env_ids()
OBS_MODES = ("state", "pixels", "pixels_state")
SMALL = (32, 32)
HAS_DISPLAY = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
OPEN_STILL = np.array([0, 0, 0, 0, 0, 0, 1.0], dtype=np.float32)  # hold the pose, gripper open


def _short(env_id: str) -> str:
    return env_id.split("/")[-1].rsplit("-v", 1)[0]


def _state_of(obs) -> np.ndarray:
    return obs["state"] if isinstance(obs, dict) else obs


def _assert_obs_equal(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    else:
        np.testing.assert_array_equal(a, b)


def _all_finite(obs) -> bool:
    parts = obs.values() if isinstance(obs, dict) else [obs]
    return all(np.all(np.isfinite(np.asarray(p, dtype=np.float64))) for p in parts)


def _rollout(env: gym.Env, seed: int, actions: np.ndarray):
    """Reset with `seed`, play `actions`; the observations and rewards (no episode end expected)."""
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        observations.append(obs)
        rewards.append(reward)
        assert not (terminated or truncated), "random actions ended the episode; lengthen the horizon"
    return observations, rewards


# --------------------------------------------------------------------------- API checkers
# The state vector is unbounded on purpose (object positions, deltas), so gymnasium's "probably too
# low/high" notes about infinite Box bounds are expected; every other warning is examined below.
_BENIGN = re.compile(r"Box observation space (minimum|maximum) value is -?infinity")
_PROBLEM = re.compile(
    r"observation|dtype|precision|float64|shape|not within|bounds|share|reuse|determinis|seed",
    re.IGNORECASE,
)


@pytest.mark.parametrize("obs_mode", OBS_MODES)
@pytest.mark.parametrize("env_id", ENV_IDS, ids=_short)
def test_gymnasium_and_sb3_checkers(make_env, env_id, obs_mode):
    env = make_env(env_id, obs_mode=obs_mode, image_size=(36, 36), render_mode="rgb_array", render_size=SMALL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Gymnasium's render check also opens render_mode="human" (a GLFW window): only with a display.
        gym_check_env(env.unwrapped, skip_render_check=not HAS_DISPLAY)
        sb3_check_env(env.unwrapped, warn=True)
    messages = [str(w.message) for w in caught if not _BENIGN.search(str(w.message))]
    problems = [m for m in messages if _PROBLEM.search(m)]
    assert not problems, f"checker warnings about observations/dtypes/determinism: {problems}"


@pytest.mark.parametrize("env_id", ENV_IDS, ids=_short)
def test_rgb_array_render_is_uint8_hxwx3(make_env, env_id):
    env = make_env(env_id, render_mode="rgb_array", render_size=(40, 56))
    env.reset(seed=0)
    for _ in range(2):
        frame = env.render()
        assert isinstance(frame, np.ndarray)
        assert frame.dtype == np.uint8
        assert frame.shape == (40, 56, 3)
        assert frame.std() > 5.0, "blank render"
        env.step(env.action_space.sample())


def test_render_mode_none_returns_none(make_env):
    env = make_env(ENV_IDS[0])
    env.reset(seed=0)
    assert env.render() is None


@pytest.mark.parametrize("obs_mode", OBS_MODES)
def test_observations_match_spaces(make_env, obs_mode):
    env = make_env("steergym/WidowXPushCube-v0", obs_mode=obs_mode, image_size=SMALL, wrist_camera=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    if obs_mode == "pixels_state":
        assert set(obs) == {"pixels", "state", "wrist_pixels"}
    for _ in range(3):
        obs, *_ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
    state = _state_of(obs) if obs_mode != "pixels" else None
    if state is not None:
        assert len(env.unwrapped.state_names) == state.shape[0]
        assert state.dtype == np.float32


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("env_id", ENV_IDS, ids=_short)
def test_same_seed_same_rollout(make_env, env_id):
    actions = np.random.default_rng(123).uniform(-1, 1, size=(50, 7)).astype(np.float32)
    # Long horizon and no early termination, so all 50 steps run inside one episode.
    kwargs = dict(max_episode_steps=1000, terminate_on_success=False, reward_type="dense")
    env_a, env_b = make_env(env_id, **kwargs), make_env(env_id, **kwargs)
    obs_a, rew_a = _rollout(env_a, 7, actions)
    obs_b, rew_b = _rollout(env_b, 7, actions)
    for a, b in zip(obs_a, obs_b):
        _assert_obs_equal(a, b)
    assert rew_a == rew_b
    # The same env, reset again with the same seed after an episode: nothing leaks across episodes.
    obs_c, rew_c = _rollout(env_a, 7, actions)
    for a, c in zip(obs_a, obs_c):
        _assert_obs_equal(a, c)
    assert rew_a == rew_c


def test_same_seed_same_pixels(make_env):
    actions = np.random.default_rng(5).uniform(-1, 1, size=(10, 7)).astype(np.float32)
    env_a = make_env("steergym/WidowXPutCarrotOnPlate-v0", obs_mode="pixels_state", image_size=SMALL)
    env_b = make_env("steergym/WidowXPutCarrotOnPlate-v0", obs_mode="pixels_state", image_size=SMALL)
    obs_a, _ = _rollout(env_a, 3, actions)
    obs_b, _ = _rollout(env_b, 3, actions)
    for a, b in zip(obs_a, obs_b):
        _assert_obs_equal(a, b)


@pytest.mark.parametrize("env_id", ENV_IDS, ids=_short)
def test_different_seeds_different_layouts(make_env, env_id):
    env = make_env(env_id)
    layouts, states = [], []
    for seed in (0, 1, 2):
        obs, _ = env.reset(seed=seed)
        layouts.append({k: v.copy() for k, v in env.unwrapped.initial_positions.items()})
        states.append(obs)
    for i in range(3):
        for j in range(i + 1, 3):
            moved = max(np.linalg.norm(layouts[i][k] - layouts[j][k]) for k in layouts[i])
            assert moved > 0.005, f"seeds {i} and {j} give the same layout"
            assert not np.array_equal(states[i], states[j])


@pytest.mark.parametrize("env_id", ENV_IDS, ids=_short)
def test_reset_layouts_at_rest_and_reachable(make_env, env_id):
    env = make_env(env_id)
    u = env.unwrapped
    low, high = np.array(u.controller.limits.workspace_low), np.array(u.controller.limits.workspace_high)
    for seed in range(8):
        env.reset(seed=seed)
        assert np.abs(u.data.qvel).max() < 0.05, f"seed {seed}: something still moves after the reset"
        for name, pos in u.initial_positions.items():
            assert np.all(pos[:2] >= low[:2]) and np.all(pos[:2] <= high[:2]), f"seed {seed}: {name} at {pos}"
            assert -0.005 <= pos[2] <= 0.1, f"seed {seed}: {name} not on the table: {pos}"


# --------------------------------------------------------------------------- images
def _first_frames(env_id: str, seeds, make_env) -> list[np.ndarray]:
    env = make_env(env_id, obs_mode="pixels", image_size=(48, 48))
    return [env.reset(seed=s)[0].astype(np.float64) for s in seeds]


@pytest.mark.parametrize("env_id", ENV_IDS, ids=_short)
def test_pixels_not_blank_and_change_with_seed(make_env, env_id):
    frame0, frame1 = _first_frames(env_id, (0, 1), make_env)
    assert frame0.std() > 10.0 and frame1.std() > 10.0, "blank or near-uniform image"
    assert np.abs(frame0 - frame1).mean() > 0.5, "the image does not show the seed's layout"


def test_pixels_differ_across_tasks(make_env):
    frames = {env_id: _first_frames(env_id, (0,), make_env)[0] for env_id in ENV_IDS}
    for i, a in enumerate(ENV_IDS):
        for b in ENV_IDS[i + 1 :]:
            diff = np.abs(frames[a] - frames[b]).mean()
            assert diff > 0.5, f"{a} and {b} look the same (mean abs diff {diff:.2f})"


def test_pixels_show_arm_motion(make_env):
    env = make_env("steergym/WidowXLiftCube-v0", obs_mode="pixels", image_size=(48, 48))
    before, _ = env.reset(seed=0)
    for _ in range(3):
        after, *_ = env.step(np.array([0, 0.8, -0.8, 0, 0, 0, 1.0]))
    assert np.abs(before.astype(float) - after.astype(float)).mean() > 0.5


# --------------------------------------------------------------------------- bad input
BAD_ACTIONS = {
    "short": (np.zeros(6), r"\(6,\)"),
    "column": (np.zeros((7, 1)), r"\(7, 1\)"),
    "strings": (["a"] * 7, r"'a'"),
    "one_string": ("forward", r"forward"),
    "nan": (np.array([0, 0, np.nan, 0, 0, 0, 1.0]), r"nan"),
    "inf": (np.array([np.inf, 0, 0, 0, 0, 0, 1.0]), r"inf"),
    "neg_inf": ([0.0, 0.0, 0.0, 0.0, 0.0, -np.inf, 1.0], r"-inf"),
}


@pytest.mark.parametrize("wrapped", [True, False], ids=["make", "unwrapped"])
@pytest.mark.parametrize("case", list(BAD_ACTIONS))
def test_bad_action_raises_value_error(make_env, case, wrapped):
    action, value_pattern = BAD_ACTIONS[case]
    env = make_env("steergym/WidowXLiftCube-v0")
    target = env if wrapped else env.unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError) as excinfo:
        target.step(action)
    message = str(excinfo.value)
    assert type(env.unwrapped).__name__ in message, message
    assert re.search(value_pattern, message), f"message does not show the value: {message}"


def test_rejected_action_leaves_state_untouched(make_env):
    env_a, env_b = make_env("steergym/WidowXPushCube-v0"), make_env("steergym/WidowXPushCube-v0")
    env_a.reset(seed=4)
    env_b.reset(seed=4)
    with pytest.raises(ValueError):
        env_a.step([0.5, 0.5, np.nan, 0, 0, 0, 1])
    action = np.array([0.5, 0.5, -0.5, 0, 0, 0.2, 1.0])
    _assert_obs_equal(env_a.step(action)[0], env_b.step(action)[0])


@pytest.mark.parametrize(
    "env_id", ["steergym/WidowXLiftCube-v0", "steergym/WidowXPutSpoonOnTowel-v0"], ids=_short
)
def test_out_of_range_action_is_clipped(make_env, env_id):
    big = np.array([5.0, -5.0, 3.0, 2.0, -2.0, 7.0, -9.0])
    clipped = np.clip(big, -1.0, 1.0)
    env_a, env_b = make_env(env_id, reward_type="dense"), make_env(env_id, reward_type="dense")
    env_a.reset(seed=11)
    env_b.reset(seed=11)
    for _ in range(3):
        out_a, out_b = env_a.step(big), env_b.step(clipped)
        _assert_obs_equal(out_a[0], out_b[0])
        assert out_a[1:4] == out_b[1:4]


def test_step_before_reset_raises_reset_needed(make_env):
    env = make_env("steergym/WidowXLiftCube-v0")
    with pytest.raises(gym.error.ResetNeeded):
        env.step(OPEN_STILL)
    raw = make_env("steergym/WidowXLiftCube-v0").unwrapped
    with pytest.raises(gym.error.ResetNeeded, match="LiftCube"):
        raw.step(OPEN_STILL)


@pytest.mark.parametrize("env_id", ENV_IDS, ids=_short)
def test_unknown_kwarg_raises_type_error_listing_options(env_id):
    with pytest.raises(TypeError) as excinfo:
        gym.make(env_id, foo=1)
    message = str(excinfo.value)
    for word in ("foo", "obs_mode", "reward_type", "image_size", "render_mode"):
        assert word in message, message


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(obs_mode="rgb"), ("obs_mode", "'rgb'", "pixels_state")),
        (dict(reward_type="shaped"), ("reward_type", "'shaped'", "dense")),
        (dict(render_mode="video"), ("render_mode", "'video'", "rgb_array")),
        (dict(camera="nope"), ("camera", "'nope'", "third_person")),
        (dict(image_size=(4, 4)), ("image_size",)),
    ],
    ids=["obs_mode", "reward_type", "render_mode", "camera", "image_size"],
)
# gymnasium warns about the unknown render_mode before our ValueError is raised
@pytest.mark.filterwarnings("ignore:.*render_mode='video' that is not in the possible render_modes")
def test_bad_option_raises_value_error(kwargs, words):
    with pytest.raises(ValueError) as excinfo:
        gym.make("steergym/WidowXPushCube-v0", **kwargs)
    message = str(excinfo.value)
    assert "PushCube" in message
    for word in words:
        assert word in message, message


# --------------------------------------------------------------------------- physics errors
def _blow_up(data, kind: str) -> None:
    if kind == "qvel_1e9":
        data.qvel[:] = 1e9
    elif kind == "qvel_nan":
        data.qvel[:] = np.nan
    elif kind == "qpos_nan":
        data.qpos[:3] = np.nan
    elif kind == "qpos_huge":  # beyond mjMAXVAL (1e10): what a diverging integration produces
        data.qpos[:3] = 1e11
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("obs_mode", ["state", "pixels_state"])
def test_physics_instability_truncates_with_error(make_env, obs_mode):
    env = make_env("steergym/WidowXLiftCube-v0", obs_mode=obs_mode, image_size=SMALL)
    env.reset(seed=0)
    _blow_up(env.unwrapped.data, "qvel_1e9")
    obs, reward, terminated, truncated, info = env.step(OPEN_STILL)
    assert truncated is True and terminated is False
    assert isinstance(info.get("physics_error"), str) and info["physics_error"]
    assert info["is_success"] is False and reward == 0.0
    assert info["instruction"] == env.unwrapped.instruction
    assert _all_finite(obs)
    assert env.observation_space.contains(obs)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(OPEN_STILL)
    # A reset recovers fully.
    env.reset(seed=0)
    obs, _, terminated, truncated, info = env.step(OPEN_STILL)
    assert not truncated and "physics_error" not in info and _all_finite(obs)


@pytest.mark.parametrize("kind", ["qvel_1e9", "qvel_nan", "qpos_nan", "qpos_huge"])
def test_physics_instability_is_never_silent(make_env, kind):
    """MuJoCo auto-resets mjData on a bad qpos/qvel/qacc; the env must report it, not carry on."""
    env = make_env("steergym/WidowXPushCube-v0")
    env.reset(seed=0)
    _blow_up(env.unwrapped.data, kind)
    obs, _, _, truncated, info = env.step(OPEN_STILL)
    assert truncated and "physics_error" in info, (
        f"{kind}: MuJoCo warnings {_mujoco_warnings(env.unwrapped.data)} but the step returned "
        f"truncated={truncated}, info={info}"
    )
    assert _all_finite(obs)


def _mujoco_warnings(data) -> dict[str, int]:
    import mujoco

    return {mujoco.mjtWarning(i).name: int(w.number) for i, w in enumerate(data.warning) if w.number}


def test_physics_error_observation_is_fresh(make_env):
    """The observation returned on a physics error must not be the previous step's array object."""
    env = make_env("steergym/WidowXLiftCube-v0")
    previous, _ = env.reset(seed=0)
    _blow_up(env.unwrapped.data, "qvel_1e9")
    obs, *_ = env.step(OPEN_STILL)
    assert not np.shares_memory(obs, previous), "physics-error observation aliases the previous one"


# --------------------------------------------------------------------------- info and rewards
@pytest.mark.parametrize("reward_type", ["sparse", "dense"])
@pytest.mark.parametrize("env_id", ENV_IDS, ids=_short)
def test_info_and_reward_range(make_env, env_id, reward_type):
    env = make_env(env_id, reward_type=reward_type)
    instruction = env.unwrapped.instruction
    assert isinstance(instruction, str) and instruction
    _, info = env.reset(seed=3)
    assert isinstance(info["is_success"], bool) and info["instruction"] == instruction
    rng = np.random.default_rng(3)
    for _ in range(8):
        _, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, 7))
        assert isinstance(info["is_success"], bool)
        assert info["instruction"] == instruction
        assert isinstance(reward, float)
        if reward_type == "sparse":
            assert reward in (0.0, 1.0)
            assert reward == float(info["is_success"])
        else:
            assert 0.0 <= reward <= 1.0
            assert (reward == 1.0) == info["is_success"]
        if terminated or truncated:
            break


def _put_source_on_target(u) -> None:
    """Teleport the task's object onto its goal (everything but LiftCube, which needs a grasp)."""
    if hasattr(u, "goal_position"):  # PushCube
        goal = u.goal_position()
        u.set_free_body_pose("blue_cube", np.array([goal[0], goal[1], 0.021]))
        return
    target_pos, target_quat = u.body_pose(u.target)
    geo = u.geometry[u.source]
    z = u.target_top() + geo.half_extents[2] - geo.center_offset[2] + 0.003
    u.set_free_body_pose(u.source, np.array([target_pos[0], target_pos[1], z]), quat_to_yaw(target_quat))


@pytest.mark.parametrize("reward_type", ["sparse", "dense"])
@pytest.mark.parametrize("env_id", [e for e in ENV_IDS if "LiftCube" not in e], ids=_short)
def test_goal_state_is_success(make_env, env_id, reward_type):
    env = make_env(env_id, reward_type=reward_type)
    for seed in (0, 1):
        env.reset(seed=seed)
        _put_source_on_target(env.unwrapped)
        _, reward, terminated, truncated, info = env.step(OPEN_STILL)
        assert info["is_success"] is True and reward == 1.0
        assert terminated is True and truncated is False
    keep_going = make_env(env_id, reward_type=reward_type, terminate_on_success=False)
    keep_going.reset(seed=0)
    _put_source_on_target(keep_going.unwrapped)
    _, reward, terminated, _, info = keep_going.step(OPEN_STILL)
    assert info["is_success"] and reward == 1.0 and terminated is False


# --------------------------------------------------------------------------- controller workspace
@pytest.mark.parametrize("axis, sign", [(0, 1), (0, -1), (1, 1), (1, -1), (2, 1), (2, -1)],
                         ids=["+x", "-x", "+y", "-y", "+z", "-z"])
def test_workspace_limits_hold(make_env, axis, sign):
    env = make_env("steergym/WidowXLiftCube-v0", max_episode_steps=1000)
    u = env.unwrapped
    low = np.array(u.controller.limits.workspace_low)
    high = np.array(u.controller.limits.workspace_high)
    env.reset(seed=0)
    action = OPEN_STILL.copy()
    action[axis] = sign
    for _ in range(12):
        obs, *_ = env.step(action)
        target = u.controller.target_pos
        assert np.all(target >= low - 1e-9) and np.all(target <= high + 1e-9), target
        tcp = u.tcp_pose()[0]
        np.testing.assert_allclose(obs[:3], tcp, atol=1e-6)  # the proprio reports the measured tcp
        if (axis, sign) != (2, -1):  # going down, the fingers meet the table before the target
            assert np.linalg.norm(tcp - target) < 0.012, (tcp, target)
    edge = high[axis] if sign > 0 else low[axis]
    assert target[axis] == pytest.approx(edge)
    if (axis, sign) != (2, -1):
        np.testing.assert_allclose(u.tcp_pose()[0], target, atol=0.003)
    else:
        assert 0.0 < u.tcp_pose()[0][2] < 0.04  # resting on the table, not through it


def test_rotation_limits_hold(make_env):
    env = make_env("steergym/WidowXPushCube-v0", max_episode_steps=1000)
    u = env.unwrapped
    lo, hi = np.array(u.controller.limits.rotation_low), np.array(u.controller.limits.rotation_high)
    env.reset(seed=0)
    for _ in range(10):
        env.step(np.array([0, 0, 0, 1, -1, 1, 1.0]))
        assert np.all(u.controller.target_rpy >= lo - 1e-9) and np.all(u.controller.target_rpy <= hi + 1e-9)
    np.testing.assert_allclose(u.controller.target_rpy, [hi[0], lo[1], hi[2]])


# --------------------------------------------------------------------------- vector env
@pytest.mark.parametrize("obs_mode", ["state", "pixels"])
def test_sync_vector_env(obs_mode):
    envs = gym.make_vec(
        "steergym/WidowXPushCube-v0",
        num_envs=2,
        vectorization_mode="sync",
        obs_mode=obs_mode,
        image_size=SMALL,
    )
    try:
        obs, info = envs.reset(seed=0)
        assert obs.shape[0] == 2
        assert not np.array_equal(obs[0], obs[1]), "sub-envs got the same seed"
        for _ in range(4):
            obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
            assert obs.shape == envs.observation_space.shape
            assert reward.shape == (2,) and terminated.shape == (2,) and truncated.shape == (2,)
            assert "is_success" in info
    finally:
        envs.close()


def test_pixel_env_pickles_after_rendering_and_continues_identically():
    import pickle

    env = gym.make("steergym/WidowXLiftCube-v0", obs_mode="pixels", image_size=(32, 32))
    try:
        env.reset(seed=3)
        env.step(np.full(7, 0.2, np.float32))  # the renderer now holds OpenGL handles
        clone = pickle.loads(pickle.dumps(env))
        try:
            action = np.array([0.3, -0.2, 0.1, 0, 0, 0.1, -1], np.float32)
            np.testing.assert_array_equal(env.step(action)[0], clone.step(action)[0])
        finally:
            clone.close()
    finally:
        env.close()
