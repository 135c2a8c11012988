"""Registered steered tasks (`steergym/<Task>-DSRL-v0`, `-Residual-v0`): ids, spaces, checkers,
determinism, pickling, rendering, and equality with the wrappers built by hand."""

from __future__ import annotations

import pickle
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from test_wrappers import quiet_check_envs, same_step

from steergym.policies.zoo import load_shipped, shipped_policies
from steergym.registry import ENVS, entry, env_ids
from steergym.wrappers import NoiseActionWrapper, ResidualActionWrapper, make_dsrl_env, make_residual_env

STEERED = env_ids("steered")
LIFT = "steergym/WidowXLiftCube-v0"
CARROT = "steergym/WidowXPutCarrotOnPlate-v0"
EXPECTED = [  # the naming scheme, pinned: a new shipped policy must add its ids here on purpose
    f"steergym/{task}{method}-v0"
    for task in ("WidowXPutSpoonOnTowel", "WidowXPutCarrotOnPlate", "WidowXStackGreenOnYellowBlock",
                 "WidowXPutEggplantInBasket", "WidowXLiftCube", "WidowXLiftCube-Flow", "WidowXPushCube",
                 "Robosuite-Lift")
    for method in ("-DSRL", "-Residual")
]


def steered_pair(env_id):
    """(base id, shipped policy name, hand-built twin factory) of a steered id."""
    row = entry(env_id)
    if env_id.endswith("-DSRL-v0"):
        return row.base_id, row.policy, lambda env, policy: NoiseActionWrapper(env, policy, 1.5)
    return row.base_id, row.policy, lambda env, policy: ResidualActionWrapper(env, policy, 0.1)


# ------------------------------------------------------------------------------------ table
def test_one_dsrl_and_one_residual_id_per_shipped_single_task_policy():
    assert STEERED == EXPECTED
    single = {n: p for n, p in shipped_policies().items() if len(p.env_ids) == 1}
    rows = [entry(i) for i in STEERED]
    assert sorted({r.policy for r in rows}) == sorted(single)  # generalist skipped, others all in
    for row in rows:
        assert row.family == "steered" and row.max_episode_steps is None
        assert row.base_id == single[row.policy].env_ids[0] and row.kwargs["base_id"] == row.base_id
        assert row.kwargs["policy"] == row.policy
    assert entry("steergym/WidowXLiftCube-DSRL-v0").policy == "widowx-lift-diffusion"
    assert entry("steergym/WidowXLiftCube-Flow-DSRL-v0").policy == "widowx-lift-flow"
    # env_ids() keeps meaning "the simulated tasks" for its callers; the table holds every family
    assert env_ids() == env_ids("widowx") and not set(env_ids()) & set(STEERED)
    assert env_ids(include_steered=True) == [e.id for e in ENVS]
    families = set(env_ids()) | set(env_ids("real")) | set(env_ids("robosuite")) | set(env_ids("dmc"))
    assert set(env_ids(include_steered=True)) == families | set(STEERED)
    assert all(i in gym.registry for i in STEERED)


def test_importing_steergym_loads_no_checkpoint_and_no_torch():
    code = ("import sys, gymnasium, steergym; "
            "assert 'steergym/WidowXLiftCube-DSRL-v0' in gymnasium.registry; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------- every id, quickly
@pytest.mark.parametrize("env_id", STEERED)
def test_steered_id_spaces_and_env_checkers(make_env, env_id):
    env = make_env(env_id)
    base_id, name, _ = steered_pair(env_id)
    base = make_env(base_id)
    horizon, dim = load_shipped(name).noise_shape
    if env_id.endswith("-DSRL-v0"):
        assert env.action_space == gym.spaces.Box(-1.5, 1.5, (horizon * dim,), np.float32)
    else:
        assert env.action_space == gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
    assert env.observation_space == base.observation_space
    assert env.spec.id == env_id and env.spec.max_episode_steps is None  # no TimeLimit over chunks
    quiet_check_envs(env)


@pytest.mark.parametrize("env_id", STEERED)
def test_steered_id_is_deterministic_and_pickles(make_env, env_id):
    a, b = make_env(env_id), make_env(env_id)
    a.action_space.seed(0)
    actions = [a.action_space.sample() for _ in range(4)]
    a.reset(seed=7), b.reset(seed=7)
    same_step(a.step(actions[0]), b.step(actions[0]))
    clone = pickle.loads(pickle.dumps(a))
    for action in actions[1:]:
        step = a.step(action)
        same_step(step, b.step(action))
        same_step(step, clone.step(action))
    clone.close()


# ------------------------------------------------------------------------- semantics
@pytest.mark.parametrize("env_id", ["steergym/WidowXLiftCube-Flow-DSRL-v0",
                                    "steergym/WidowXPushCube-Residual-v0"])
def test_steered_id_equals_the_wrapper_built_by_hand_incl_mid_chunk_end(make_env, env_id):
    base_id, name, build = steered_pair(env_id)
    env = make_env(env_id, base_max_episode_steps=6)  # 6 = 4 + 2: DSRL's second chunk is cut short
    twin = build(make_env(base_id, max_episode_steps=6), load_shipped(name))
    env.action_space.seed(1)
    for seed in (3, 4):
        env.reset(seed=seed), twin.reset(seed=seed)
        done = False
        while not done:
            action = env.action_space.sample()
            step = env.step(action)
            same_step(step, twin.step(action))
            done = step[2] or step[3]
    if env_id.endswith("-DSRL-v0"):
        assert step[4]["steps"] == 2


def test_episode_is_the_base_tasks_horizon_in_control_steps(make_env):
    # actions that keep the cube on the table (saturated noise / corrections), so the 40-step
    # TimeLimit of WidowXLiftCube-v0 ends the episode
    dsrl = make_env("steergym/WidowXLiftCube-DSRL-v0")
    residual = make_env("steergym/WidowXLiftCube-Residual-v0", scale=1.0)
    for env, chunk in ((dsrl, 4), (residual, 1)):
        env.reset(seed=0)
        agent_steps, control_steps, truncated = 0, 0, False
        while not truncated:
            _, _, terminated, truncated, info = env.step(env.action_space.high)
            agent_steps += 1
            control_steps += info.get("steps", 1)
            assert not terminated
        assert control_steps == 40 and agent_steps == 40 // chunk


def test_spec_remakes_the_env_with_its_options(make_env):
    env = make_env("steergym/WidowXLiftCube-Residual-v0", base_max_episode_steps=5, scale=0.3)
    assert env.spec.kwargs["scale"] == 0.3 and env.spec.additional_wrappers == ()
    again = gym.make(env.spec)
    try:
        assert again.get_wrapper_attr("scale") == 0.3
        env.reset(seed=2), again.reset(seed=2)
        for _ in range(5):
            step = env.step(np.full(7, 0.5, np.float32))
            same_step(step, again.step(np.full(7, 0.5, np.float32)))
        assert step[3]  # base_max_episode_steps=5 reached
    finally:
        again.close()


@pytest.mark.parametrize("env_id", ["steergym/WidowXPutCarrotOnPlate-DSRL-v0",
                                    "steergym/WidowXLiftCube-Residual-v0"])
def test_render_mode_rgb_array_goes_to_the_base_task(make_env, env_id):
    env = make_env(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.std() > 0
    clone = pickle.loads(pickle.dumps(env))  # rendering envs pickle too
    clone.close()


def test_factories_take_a_checkpoint_folder_a_generalist_and_bad_options(make_env):
    shipped = shipped_policies()
    by_name = make_dsrl_env(LIFT, "widowx-lift-diffusion")
    by_path = make_dsrl_env(LIFT, shipped["widowx-lift-diffusion"].path)
    generalist = make_residual_env(CARROT, "widowx-generalist-diffusion", scale=0.2)
    try:
        noise = np.full(28, 0.7, np.float32)
        remade = gym.make(by_name.spec)  # built directly: the base task's spec plus the wrapper
        for env in (by_name, by_path, remade):
            env.reset(seed=1)
        step = by_name.step(noise)
        same_step(step, by_path.step(noise)), same_step(step, remade.step(noise))
        remade.close()
        assert generalist.policy.task == CARROT and generalist.scale == 0.2
        generalist.reset(seed=0)
        assert generalist.step(np.zeros(7, np.float32))[4]["base_action"].shape == (7,)
    finally:
        by_name.close(), by_path.close(), generalist.close()
    with pytest.raises(ValueError, match="no shipped policy|neither a shipped policy"):
        make_dsrl_env(LIFT, "no-such-policy")
    with pytest.raises(ValueError, match="observation space"):  # obs_mode reaches the base task
        make_env("steergym/WidowXLiftCube-DSRL-v0", obs_mode="pixels_state", image_size=(32, 32))
    with pytest.raises(ValueError, match="noise_bound"):
        make_env("steergym/WidowXLiftCube-DSRL-v0", noise_bound=0.0)
