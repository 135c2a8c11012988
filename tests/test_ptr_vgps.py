"""Multi-task offline RL: task one-hots on data and envs, sampling mixtures, PTR (pre-train on prior
tasks, adapt to a target from a few demos, fine-tune online) and the V-GPS value function that
re-ranks a generalist's samples."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from steergym.algorithms.calql import CalQL, CalQLConfig
from steergym.algorithms.ptr import PTR, PTRConfig, ptr_calql_config
from steergym.algorithms.vgps import ValueFunction, train_value_function, vgps_calql_config
from steergym.data import collect, load_transitions
from steergym.data.multitask import concat_transitions, mix_transitions, task_one_hot, with_task
from steergym.policies.value_guided import ValueGuidedPolicy
from steergym.wrappers import TaskConditionWrapper

CARROT = "steergym/WidowXPutCarrotOnPlate-v0"
SPOON = "steergym/WidowXPutSpoonOnTowel-v0"
STACK = "steergym/WidowXStackGreenOnYellowBlock-v0"
TASKS = (CARROT, SPOON, STACK)
TINY = dict(batch_size=32, actor_hidden=(32, 32), critic_hidden=(32, 32), log_every=1)


def dataset_name(task: str) -> str:
    return f"steergym/{task.split('/')[1].removesuffix('-v0').lower()}/ptr-v0"


@pytest.fixture(scope="module")
def task_root(tmp_path_factory):
    """A dataset folder with two mixed-quality episodes of each of three WidowX tasks."""
    root = tmp_path_factory.mktemp("multitask-data")
    for k, task in enumerate(TASKS):
        collect(task, 2, "mixed", dataset_name(task), seed=10 * k, root=root, progress=False)
    return root


@pytest.fixture(scope="module")
def task_data(task_root):
    return {task: load_transitions(dataset_name(task), root=task_root) for task in TASKS}


@pytest.fixture(scope="module")
def obs_space():
    env = gym.make(CARROT)
    space = env.observation_space
    env.close()
    return space


# ------------------------------------------------------------------------------- task one-hots
def test_with_task_appends_the_one_hot_to_every_observation(task_data):
    data = task_data[SPOON]
    tagged = with_task(data, TASKS, SPOON)
    o = data.observations.shape[1]
    assert tagged.observations.shape == (len(data), o + 3)
    np.testing.assert_array_equal(tagged.observations[:, :o], data.observations)
    np.testing.assert_array_equal(tagged.observations[:, o:], np.tile([0.0, 1.0, 0.0], (len(data), 1)))
    np.testing.assert_array_equal(tagged.next_observations[:, o:], tagged.observations[:, o:])
    assert tagged.metadata["task"] == SPOON
    with pytest.raises(ValueError, match="not one of the task_ids"):
        with_task(data, TASKS, "steergym/WidowXPushCube-v0")
    with pytest.raises(ValueError, match="distinct"):
        task_one_hot((CARROT, CARROT), CARROT)


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
def test_task_condition_wrapper_matches_the_offline_tagging(task_data, make_env):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = TaskConditionWrapper(make_env(SPOON), TASKS)  # task: the env's own id
    check_env(env, skip_render_check=True)
    sb3_check_env(env)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs.shape == (env.observation_space.shape[0],)
    np.testing.assert_array_equal(obs[-3:], [0.0, 1.0, 0.0])
    bare = make_env(SPOON).reset(seed=0)[0]
    np.testing.assert_array_equal(obs[:-3], bare)
    dict_env = TaskConditionWrapper(make_env(SPOON, obs_mode="pixels_state", image_size=(16, 16)), TASKS)
    assert set(dict_env.observation_space.spaces) == {"pixels", "state", "task"}
    dict_obs, _ = dict_env.reset(seed=0)
    np.testing.assert_array_equal(dict_obs["task"], [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="not one of the task_ids"):
        TaskConditionWrapper(make_env(SPOON), (CARROT, STACK))


def test_a_mixture_fills_each_batch_at_its_ratios(task_data, obs_space):
    prior = concat_transitions([with_task(task_data[t], TASKS, t) for t in (CARROT, SPOON)])
    target = with_task(task_data[STACK], TASKS, STACK)
    mixed = mix_transitions([prior, target], (0.9, 0.1))
    assert len(mixed) == len(prior) + len(target)
    assert mixed.episode_index.max() + 1 == 6  # episode indices stay distinct across parts
    spaces = (gym.spaces.Box(-np.inf, np.inf, (obs_space.shape[0] + 3,), np.float32), gym.spaces.Box(-1, 1, (7,)))
    agent = CalQL(spaces, CalQLConfig(**TINY))
    agent.set_offline_data(mixed)
    for n in (64, 10, 7):
        rows = agent._offline_rows(n).numpy()
        assert len(rows) == n
        assert (rows >= len(prior)).sum() == round(0.1 * n)  # exactly the target share
    with pytest.raises(ValueError, match="sum to 1"):
        mix_transitions([prior, target], (0.9, 0.2))
    with pytest.raises(ValueError, match="2 parts but 1 ratios"):
        mix_transitions([prior, target], (1.0,))
    broken = dataclasses.replace(mixed, group_ratios=None)
    with pytest.raises(ValueError, match="needs both"):
        agent.set_offline_data(broken)


# ------------------------------------------------------------------------------------------ PTR
def ptr_config(**overrides):
    return PTRConfig(TASKS, calql=ptr_calql_config(discount=0.9, critic_lr=1e-3, actor_lr=1e-3, **TINY,
                                                   **overrides))


def test_ptr_conditions_actor_and_critic_on_the_task(task_data, obs_space):
    ptr = PTR(obs_space, gym.spaces.Box(-1, 1, (7,), np.float32), ptr_config(), seed=0)
    ptr.pretrain({CARROT: task_data[CARROT], SPOON: task_data[SPOON]}, 200, progress=False)
    td = [row["td_loss"] for row in ptr.agent.history]
    assert np.mean(td[-20:]) < np.mean(td[:20])
    obs = task_data[CARROT].observations[:8]
    actions = {task: ptr.predict(obs, task)[0] for task in TASKS}
    assert actions[CARROT].shape == (8, 7)
    assert not np.allclose(actions[CARROT], actions[SPOON])  # same state, another task, another action
    # the one-hot bypasses standardisation: STACK never appears in the prior data, its column is not x1000
    assert torch.all(ptr.agent.obs_std[-3:] == 1.0) and torch.all(ptr.agent.obs_mean[-3:] == 0.0)


def test_ptr_adapts_to_a_target_task_and_resumes_from_disk(task_data, obs_space, tmp_path, make_env):
    ptr = PTR(obs_space, gym.spaces.Box(-1, 1, (7,), np.float32), ptr_config(), seed=0)
    ptr.pretrain({CARROT: task_data[CARROT], SPOON: task_data[SPOON]}, 50, progress=False)
    ptr.adapt(STACK, task_data[STACK], 50, progress=False)
    assert [p["phase"] for p in ptr.phases] == ["pretrain", "adapt"] and ptr.agent.step == 100
    assert ptr.offline.group_ratios == (0.9, 0.1)
    ptr.save(tmp_path / "ptr")
    loaded = PTR.load(tmp_path / "ptr", obs_space)
    obs = task_data[STACK].observations[:5]
    np.testing.assert_array_equal(loaded.predict(obs, STACK)[0], ptr.predict(obs, STACK)[0])
    assert loaded.phases == ptr.phases and loaded.task_ids == TASKS
    # online fine-tuning on the target task, mixing the adaptation data back in
    with pytest.raises(ValueError, match="wrap the env first"):
        loaded.learn(make_env(STACK), 10)
    env = ptr.wrap(make_env(STACK))
    ptr.learn(env, 80, eval_env=None, progress=False)
    assert ptr.agent.online.num_timesteps == 80 and ptr.agent.step > 100
    policy = ptr.policy(STACK)
    assert policy.act(obs[0]).shape == (7,)


def test_ptr_on_pixel_observations(tmp_path):
    kwargs = {"obs_mode": "pixels_state", "image_size": (16, 16)}
    data = {}
    for k, task in enumerate((CARROT, STACK)):
        collect(task, 1, "expert", f"steergym/pix{k}-v0", seed=k, env_kwargs=kwargs, root=tmp_path, progress=False)
        data[task] = load_transitions(f"steergym/pix{k}-v0", root=tmp_path)
    env = gym.make(CARROT, **kwargs)
    space = env.observation_space
    calql = ptr_calql_config(**TINY, encoder_channels=(4, 4), encoder_strides=(2, 2), latent_dim=8)
    ptr = PTR(space, env.action_space, PTRConfig(TASKS, calql=calql), seed=0)
    ptr.pretrain({CARROT: data[CARROT]}, 20, progress=False)
    ptr.adapt(STACK, data[STACK], 10, progress=False)
    assert torch.all(ptr.agent.obs_std["task"] == 1.0) and torch.all(ptr.agent.obs_mean["task"] == 0.0)
    obs, _ = env.reset(seed=0)
    env.close()
    action, _ = ptr.predict(obs, STACK)
    assert action.shape == (7,) and np.all(np.abs(action) <= 1.0)
    batch = {k: np.stack([v, v]) for k, v in obs.items()}
    actions = ptr.predict(batch, STACK)[0]
    assert actions.shape == (2, 7)
    np.testing.assert_allclose(actions[0], action, rtol=1e-5, atol=1e-6)


def test_ptr_rejects_foreign_data(task_data, obs_space):
    ptr = PTR(obs_space, gym.spaces.Box(-1, 1, (7,), np.float32), ptr_config(), seed=0)
    with pytest.raises(ValueError, match="not one of the task_ids"):
        ptr.pretrain({"steergym/WidowXPushCube-v0": task_data[CARROT]}, 1, progress=False)
    short = dataclasses.replace(task_data[CARROT], observations=task_data[CARROT].observations[:, :5],
                                next_observations=task_data[CARROT].next_observations[:, :5])
    with pytest.raises(ValueError, match="'observations' has shape"):
        ptr.pretrain({CARROT: short}, 1, progress=False)
    with pytest.raises(ValueError, match="call pretrain first"):
        ptr.adapt(STACK, task_data[STACK], 1, progress=False)
    with pytest.raises(ValueError, match="target_ratio"):
        PTRConfig(TASKS, target_ratio=1.0)


# ----------------------------------------------------------------------------------------- V-GPS
@pytest.fixture(scope="module")
def value_function(task_data):
    data = {CARROT: task_data[CARROT], SPOON: task_data[SPOON]}
    config = vgps_calql_config(**{**TINY, "log_every": 10})
    return train_value_function(data, 60, config=config, progress=False)


def test_vgps_rewards_and_reference_values(value_function, task_data):
    agent = value_function.ptr.agent
    data = agent._offline
    rewards, mc = data["rewards"].numpy(), data["mc_returns"].numpy()
    assert set(np.unique(rewards)) <= {-1.0, 0.0}  # -1 per step, 0 at the success step
    success = np.concatenate([task_data[t].successes for t in (CARROT, SPOON)])
    episode = np.concatenate([task_data[CARROT].episode_index, task_data[SPOON].episode_index + 100])
    for k in np.unique(episode):
        rows = episode == k
        if not success[rows].any():  # a failed episode: the sparse-failure reference -1 / (1 - 0.98)
            np.testing.assert_allclose(mc[rows], -50.0, rtol=1e-5)
        else:
            assert mc[rows][-1] == 0.0 and np.all(mc[rows] <= 0) and np.all(mc[rows] > -50)


def test_value_function_plugs_into_value_guided_policy(value_function, tmp_path):
    from steergym.policies.zoo import load_shipped

    generalist = load_shipped("widowx-generalist-diffusion").for_task(CARROT)
    steered = ValueGuidedPolicy(generalist, value_function.critic(CARROT), num_samples=6)
    env = gym.make(CARROT)
    obs, _ = env.reset(seed=3)
    env.close()
    chunks, values = steered.propose(obs)
    assert chunks.shape[0] == 6 and values.shape == (6,)
    expected = value_function(np.repeat(obs[None], 6, 0), chunks[:, 0], CARROT)
    np.testing.assert_allclose(values, expected)
    steered.reset(seed=0)
    chosen = steered.sample_chunk(obs)
    steered.reset(seed=0)
    chunks, values = steered.propose(obs)
    np.testing.assert_array_equal(chosen, chunks[np.argmax(values)])
    # the task changes the values; save/load keeps them
    other = value_function(np.repeat(obs[None], 6, 0), chunks[:, 0], SPOON)
    assert not np.allclose(other, values)
    value_function.save(tmp_path / "vf")
    loaded = ValueFunction.load(tmp_path / "vf")
    np.testing.assert_array_equal(loaded(np.repeat(obs[None], 6, 0), chunks[:, 0], CARROT), expected)
    with pytest.raises(ValueError, match=r"actions must be \(N, 7\)"):
        value_function(np.repeat(obs[None], 6, 0), chunks, CARROT)
    with pytest.raises(ValueError, match="1 observations but 6 actions"):
        value_function(obs[None], chunks[:, 0], CARROT)


# ------------------------------------------------------------------------------------------ CLI
def test_train_vgps_resumes_and_steers_eval_from_the_command_line(task_root, tmp_path, capsys):
    from steergym.cli import main

    common = ["--dataset", dataset_name(CARROT), "--dataset", dataset_name(SPOON), "--batch-size", "16",
              "--hidden", "16", "--root", str(task_root), "--quiet"]
    assert main(["train", "vgps", *common, "--out", str(tmp_path / "straight"), "--steps", "40"]) == 0
    assert main(["train", "vgps", *common, "--out", str(tmp_path / "killed"), "--steps", "25"]) == 0
    capsys.readouterr()
    assert main(["train", "vgps", *common, "--out", str(tmp_path / "killed"), "--steps", "40"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "vgps", *common, "--out", str(tmp_path / "killed"), "--steps", "40", "--resume"]) == 0
    straight = ValueFunction.load(tmp_path / "straight" / "value_function")
    resumed = ValueFunction.load(tmp_path / "killed" / "value_function")
    obs = load_transitions(dataset_name(CARROT), root=task_root).observations[:4]
    actions = np.zeros((4, 7), np.float32)
    np.testing.assert_array_equal(resumed(obs, actions, CARROT), straight(obs, actions, CARROT))
    assert resumed.ptr.agent.offline_steps == 40
    out_json = tmp_path / "eval.json"
    assert main(["eval", "--policy", "widowx-generalist-diffusion", "--env", CARROT, "--steer", "vgps",
                 "--critic", str(tmp_path / "straight" / "value_function"), "--num-samples", "3",
                 "--episodes", "1", "--json", str(out_json), "--quiet"]) == 0
    assert "vgps(K=3)" in json.loads(out_json.read_text())["policy"]
    capsys.readouterr()
    assert main(["eval", "--policy", "widowx-generalist-diffusion", "--env", STACK, "--steer", "vgps",
                 "--critic", str(tmp_path / "straight" / "value_function"), "--episodes", "1", "--quiet"]) == 2
    assert "knows tasks" in capsys.readouterr().err


def test_train_ptr_from_the_command_line(task_root, tmp_path, capsys):
    from steergym.cli import main

    out = tmp_path / "ptr"
    assert main(["train", "ptr", "--prior", dataset_name(CARROT), "--prior", dataset_name(SPOON),
                 "--target", dataset_name(STACK), "--demos", "1", "--out", str(out), "--pretrain-steps", "20",
                 "--adapt-steps", "10", "--env-steps", "70", "--eval-every", "70", "--eval-episodes", "1",
                 "--batch-size", "16", "--hidden", "16", "--root", str(task_root), "--quiet"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["tasks"] == [CARROT, SPOON, STACK] and run["demo_episodes"] == 1
    assert 0.0 <= run["offline_eval"]["success_rate"] <= 1.0 and len(run["online_curve"]) == 2
    ptr = PTR.load(out / "agent", gym.make(STACK).observation_space)
    assert [p["phase"] for p in ptr.phases] == ["pretrain", "adapt"]
    assert [p["steps"] for p in ptr.phases] == [20, 10]
    assert ptr.agent.online.num_timesteps == 70
    assert "after adaptation" in capsys.readouterr().out
