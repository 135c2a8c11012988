"""The steering trainers (DSRL / residual / SAC through SB3), steered-policy checkpoints, and the demo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from steergym.algorithms.steering import SteeringConfig, make_steering_env, train_steering
from steergym.bench.evaluate import evaluate
from steergym.cli import main
from steergym.policies.steered import load_steered
from steergym.policies.zoo import load_shipped

LIFT = "steergym/WidowXLiftCube-v0"
TINY = dict(hidden=(16, 16), batch_size=16, learning_starts=20)


@pytest.fixture(scope="module")
def lift_policy():
    return load_shipped("widowx-lift-diffusion")


def _run(tmp_path, policy, method="dsrl", seed=0, steps=160, name="run"):
    return train_steering(LIFT, method, policy if method != "sac" else None, SteeringConfig(**TINY),
                          env_steps=steps, eval_every=80, eval_episodes=2, seed=seed, out=tmp_path / name,
                          progress=False)


def test_dsrl_run_counts_env_steps_logs_and_saves_a_loadable_policy(tmp_path, lift_policy):
    result = _run(tmp_path, lift_policy)
    steps = [row["env_steps"] for row in result.curve]
    assert steps[0] == 0 and steps == sorted(steps) and steps[-1] == result.env_steps
    assert result.env_steps >= 160 and result.env_steps < 160 + 4  # stops within one chunk of the budget
    # one agent step is a chunk of H = 4 env steps (fewer only when an episode ends mid-chunk)
    assert result.agent_steps * 4 >= result.env_steps > (result.agent_steps - 1) * 1
    run = tmp_path / "run"
    for name in ("run.json", "eval.csv", "progress.csv", "checkpoints/latest/steered.json", "policy/actor.safetensors",
                 "policy/base/model.safetensors"):
        assert (run / name).exists(), name
    assert json.loads((run / "run.json").read_text())["method"] == "dsrl"
    loaded = load_steered(run / "policy")
    # the saved policy acting on the raw task scores what the trainer's last evaluation measured
    assert evaluate(LIFT, loaded, episodes=2, seed=0, progress=False).success_rate == result.curve[-1]["success_rate"]


def test_steered_policy_round_trip_gives_identical_actions(tmp_path, lift_policy):
    result = _run(tmp_path, lift_policy)
    loaded = load_steered(tmp_path / "run" / "policy")
    env = make_steering_env(LIFT, "sac")
    obs, _ = env.reset(seed=3)
    for policy in (result.policy, loaded):
        policy.reset(seed=3)
    for _ in range(6):  # crosses a chunk boundary
        a, b = result.policy.act(obs), loaded.act(obs)
        np.testing.assert_array_equal(a, b)
        obs, *_ = env.step(a)


def test_a_run_without_a_folder_leaves_no_sb3_log_folders(tmp_path, monkeypatch, lift_policy):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where SB3's default logger would go
    monkeypatch.chdir(tmp_path)
    result = train_steering(LIFT, "sac", None, SteeringConfig(**TINY), env_steps=30, eval_every=30,
                            eval_episodes=1, progress=False)
    assert result.env_steps == 30 and sorted(tmp_path.glob("SB3-*")) == []


def test_a_run_with_a_folder_closes_its_log_files(tmp_path):
    """SB3's CSV logger kept the run's progress.csv open: the ResourceWarning surfaced later, inside
    whichever test ran next (one failed on it under a random order in CI)."""
    import gc
    import warnings

    gc.collect()  # garbage of earlier tests on this worker (a subprocess's unclosed pipe) is not this run's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = train_steering(LIFT, "sac", None, SteeringConfig(**TINY), env_steps=30, eval_every=30,
                                eval_episodes=1, out=tmp_path / "run", progress=False)
        del result
        gc.collect()
    assert (tmp_path / "run" / "progress.csv").exists()
    assert not [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def test_same_seed_same_run_and_another_seed_differs(tmp_path, lift_policy):
    first = _run(tmp_path, lift_policy, seed=1, name="a")
    again = _run(tmp_path, lift_policy, seed=1, name="b")
    other = _run(tmp_path, lift_policy, seed=2, name="c")
    state = lambda r: r.model.policy.actor.state_dict()  # noqa: E731
    for key, value in state(first).items():
        torch.testing.assert_close(value, state(again)[key], rtol=0, atol=0)
    without_time = lambda r: [{k: v for k, v in row.items() if k != "wall_s"} for row in r.curve]  # noqa: E731
    assert without_time(first) == without_time(again)
    assert any(not torch.equal(v, state(other)[k]) for k, v in state(first).items())


@pytest.mark.parametrize("method", ["residual", "sac"])
def test_residual_and_sac_runs_write_policies_that_act_in_the_env_bounds(tmp_path, lift_policy, method):
    result = _run(tmp_path, lift_policy, method=method)
    assert result.env_steps == 160 and result.agent_steps == 160  # one env step per agent step
    loaded = load_steered(tmp_path / "run" / "policy")
    assert loaded.method == method and (loaded.base is None) == (method == "sac")
    env = make_steering_env(LIFT, "sac")
    obs, _ = env.reset(seed=0)
    loaded.reset(seed=0)
    action = loaded.act(obs)
    assert env.action_space.contains(action)


def test_tampered_or_foreign_steered_folders_are_refused(tmp_path, lift_policy):
    _run(tmp_path, lift_policy)
    folder = tmp_path / "run" / "policy"
    actor = folder / "actor.safetensors"
    data = bytearray(actor.read_bytes())
    data[-1] ^= 0xFF
    actor.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_steered(folder)
    (folder / "steered.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="format"):
        load_steered(folder)
    with pytest.raises(ValueError, match="not a steered-policy folder"):
        load_steered(tmp_path)


def test_bad_steering_arguments_raise_clear_errors(lift_policy):
    with pytest.raises(ValueError, match="unknown steering method 'ppo'"):
        train_steering(LIFT, "ppo", lift_policy, env_steps=10)
    with pytest.raises(ValueError, match="pass policy="):
        train_steering(LIFT, "dsrl", None, env_steps=10)
    with pytest.raises(ValueError, match="takes no base policy"):
        train_steering(LIFT, "sac", lift_policy, env_steps=10)
    with pytest.raises(ValueError, match="give a budget"):
        train_steering(LIFT, "dsrl", lift_policy, env_steps=None)
    with pytest.raises(ValueError, match="noise_bound"):
        SteeringConfig(noise_bound=0)
    with pytest.raises(ValueError, match="hidden"):
        SteeringConfig(hidden=())
    with pytest.raises(ValueError, match=r"SteeringConfig: unknown fields \['utd'\]"):
        SteeringConfig.from_dict({"utd": 20})
    with pytest.raises(ValueError, match="obs_stats must be two arrays of shape"):
        train_steering(LIFT, "sac", None, env_steps=10, obs_stats=(np.zeros(3), np.ones(3)))
    with pytest.raises(ValueError, match="unknown env id"):
        train_steering("steergym/Nope-v0", "dsrl", lift_policy, env_steps=10)


def test_cli_train_dsrl_then_eval_the_steered_policy(tmp_path, capsys):
    out = tmp_path / "dsrl"
    code = main(["train", "dsrl", "--policy", "widowx-lift-diffusion", "--out", str(out), "--env-steps", "120",
                 "--eval-every", "60", "--eval-episodes", "2", "--hidden", "16", "16", "--batch-size", "16",
                 "--quiet"])
    assert code == 0
    assert "eval success" in capsys.readouterr().out
    assert main(["eval", "--policy", str(out / "policy"), "--episodes", "2", "--quiet"]) == 0
    assert "steergym/WidowXLiftCube-v0" in capsys.readouterr().out
    assert main(["train", "sac", "--out", str(tmp_path / "sac"), "--env-steps", "10"]) == 2
    assert "--env is required" in capsys.readouterr().err


def test_cli_train_sac_normalises_like_a_base_policy_only_when_asked(tmp_path, lift_policy):
    from steergym.algorithms.steering import observation_stats

    common = ["--env", LIFT, "--env-steps", "30", "--eval-every", "30", "--eval-episodes", "1", "--hidden", "8",
              "--batch-size", "8", "--quiet"]
    assert main(["train", "sac", "--out", str(tmp_path / "raw"), *common]) == 0
    assert main(["train", "sac", "--out", str(tmp_path / "norm"), "--normalize-like", "widowx-lift-diffusion",
                 *common]) == 0
    assert load_steered(tmp_path / "raw" / "policy").obs_stats is None
    mean, std = load_steered(tmp_path / "norm" / "policy").obs_stats
    expected_mean, expected_std = observation_stats(lift_policy)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-6)
    np.testing.assert_allclose(std, expected_std, rtol=1e-6)


def test_demo_writes_table_video_plot_and_results(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--policy", "widowx-lift-diffusion", "--env-steps", "60", "--episodes", "2",
                 "--video-episodes", "1", "--out", str(out), "--quiet", "--threads", "1"])
    assert code == 0
    text = capsys.readouterr().out
    # the printed report says what ran and what the numbers mean, then the table
    assert "What ran:" in text and "steergym/WidowXLiftCube-v0 \"lift the red cube\"" in text
    assert "same 2 reset seeds (0..1)" in text and "Wilson interval" in text
    assert "base policy (noise w ~ N(0, I))" in text and "DSRL-steered (noise from SAC)" in text
    results = json.loads((out / "results.json").read_text())
    assert results["env_id"] == LIFT and results["base"]["episodes"] == 2
    assert results["budget"] == {"env_steps": 60, "minutes": None} and results["threads"] == 1
    assert results["dsrl"]["env_steps"] >= 60 and results["dsrl"]["curve"][0]["env_steps"] == 0
    assert results["separated"] == (results["steered"]["ci_low"] > results["base"]["ci_high"])
    import imageio.v3 as iio

    frames = iio.imread(out / "side_by_side.mp4")
    env = make_steering_env(LIFT, "sac", render_mode="rgb_array")
    env.reset(seed=0)
    height, width, _ = env.render().shape
    assert frames.ndim == 4 and frames.shape[1:3] == (height, 2 * width)  # base | DSRL side by side
    assert (out / "learning_curve.png").stat().st_size > 10_000
    assert load_steered(out / "run" / "policy").method == "dsrl"


def test_demo_is_deterministic_given_its_seed(tmp_path):
    from steergym.bench.demo import run_demo

    def once(name: str, seed: int) -> dict:
        torch.manual_seed(1234 + len(name))  # a different global torch state before each run must not matter
        np.random.seed(len(name))
        run_demo("widowx-lift-diffusion", env_steps=120, episodes=3, out=tmp_path / name, seed=seed,
                 video_episodes=1, progress=False, threads=1, config=SteeringConfig(**TINY, gradient_steps=2),
                 eval_every=60, log=lambda *_: None)
        results = json.loads((tmp_path / name / "results.json").read_text())
        curve = [{k: v for k, v in row.items() if k != "wall_s"} for row in results["dsrl"]["curve"]]
        weights = (tmp_path / name / "run" / "policy" / "actor.safetensors").read_bytes()
        return {"base": results["base"], "steered": results["steered"], "curve": curve, "weights": weights}

    first, again, other = once("a", 0), once("bb", 0), once("c", 1)
    assert first == again  # same seed: same evaluations, same curve, byte-identical trained actor
    assert other["weights"] != first["weights"]  # the seed does reach training


def test_demo_refuses_a_missing_budget(tmp_path):
    from steergym.bench.demo import run_demo

    with pytest.raises(ValueError, match="env_steps, minutes or both"):
        run_demo(env_steps=None, minutes=None, out=tmp_path)
    with pytest.raises(ValueError, match="env_steps must be an integer >= 1, got 0"):
        run_demo(env_steps=0, out=tmp_path)


def test_learner_reward_is_the_task_reward_minus_the_offset_per_env_step(lift_policy):
    env = make_steering_env(LIFT, "dsrl", lift_policy, SteeringConfig(reward_offset=1.0))
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(env.action_space.shape))
    # sparse task reward: 1 on the success step, else 0; each of the k executed steps costs 1
    assert reward == sum(info["chunk_successes"]) - info["steps"] and info["steps"] == 4
    plain = make_steering_env(LIFT, "dsrl", lift_policy, SteeringConfig(reward_offset=0.0))
    plain.reset(seed=0)
    assert plain.step(np.zeros(plain.action_space.shape))[1] == reward + 4


def test_dsrl_with_several_envs_decodes_them_together(tmp_path, lift_policy):
    config = SteeringConfig(**TINY, num_envs=3)
    result = train_steering(LIFT, "dsrl", lift_policy, config, env_steps=120, eval_every=60, eval_episodes=1,
                            out=tmp_path / "run", progress=False)
    assert result.env_steps >= 120 and result.agent_steps % 3 == 0  # SB3 counts every sub-env's step
    assert load_steered(tmp_path / "run" / "policy").method == "dsrl"


def test_dsrl_noise_policy_is_sampled_reproducibly_per_episode_seed(tmp_path, lift_policy):
    steered = _run(tmp_path, lift_policy).policy
    assert steered.deterministic is False  # DSRL evaluates its noise policy by sampling
    obs, _ = make_steering_env(LIFT, "sac").reset(seed=0)
    draws = []
    for seed in (5, 5, 6):
        steered.reset(seed=seed)
        draws.append(steered.actor_output(obs))
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])
    assert np.all(np.abs(draws[0]) <= 1.5)  # within the noise bound
    steered.deterministic = True
    steered.reset(seed=5)
    mean_a = steered.actor_output(obs)
    steered.reset(seed=6)
    np.testing.assert_array_equal(mean_a, steered.actor_output(obs))
    assert load_steered(tmp_path / "run" / "policy", deterministic=True).deterministic is True


def test_keep_best_returns_the_actor_of_the_best_evaluation(tmp_path, lift_policy):
    from steergym.algorithms.steering import evaluate_steered

    config = SteeringConfig(**TINY)
    result = train_steering(LIFT, "dsrl", lift_policy, config, env_steps=400, eval_every=80, eval_episodes=3,
                            eval_seed=1000, out=tmp_path / "run", progress=False, keep_best=True,
                            deterministic=True)
    rates = [row["success_rate"] for row in result.curve]
    best = rates.index(max(rates))  # the first best on ties
    assert result.selected_env_steps == result.curve[best]["env_steps"]
    env = make_steering_env(LIFT, "dsrl", lift_policy, config)
    # the returned policy, the saved policy/ and checkpoints/best all hold that evaluation's actor
    assert evaluate_steered(env, result.policy, 3, 1000)["success_rate"] == rates[best]
    from safetensors.torch import load_file

    def actor(folder: str) -> dict:
        return load_file(str(tmp_path / "run" / folder / "actor.safetensors"))

    kept, at_best, last = actor("policy"), actor("checkpoints/best"), actor("checkpoints/latest")
    assert kept.keys() == at_best.keys() and all(torch.equal(kept[k], at_best[k]) for k in kept)
    if best != len(rates) - 1:  # the kept actor is not simply the last one
        assert any(not torch.equal(kept[k], last[k]) for k in kept)


def test_dsrl_with_shared_noise_learns_one_noise_row_and_its_policy_round_trips(tmp_path, lift_policy):
    """`shared_noise`: the learner picks one (D,) noise row, repeated over the chunk (dsrl_pi0's noise
    space); the saved policy rebuilds that actor and acts as the trained one."""
    config = SteeringConfig(**TINY, shared_noise=True)
    env = make_steering_env(LIFT, "dsrl", lift_policy, config)
    assert env.action_space.shape == (lift_policy.noise_shape[1],)
    result = train_steering(LIFT, "dsrl", lift_policy, config, env_steps=80, eval_every=40, eval_episodes=2,
                            seed=0, out=tmp_path / "run", progress=False)
    loaded = load_steered(tmp_path / "run" / "policy")
    assert loaded.shared_noise and loaded.sb3_policy.action_space.shape == (lift_policy.noise_shape[1],)
    obs, _ = make_steering_env(LIFT, "sac").reset(seed=3)
    for policy in (result.policy, loaded):
        policy.reset(seed=3)
    np.testing.assert_array_equal(result.policy.act(obs), loaded.act(obs))
    # the chunk it executes is the base policy's chunk for the row tiled over H
    loaded.reset(seed=3)
    row = loaded.actor_output(obs)
    loaded.reset(seed=3)
    expected = lift_policy.sample(obs, np.tile(row, (lift_policy.noise_shape[0], 1)))
    np.testing.assert_array_equal([loaded.act(obs) for _ in range(lift_policy.noise_shape[0])], expected)
