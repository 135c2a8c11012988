"""Behaviour cloning: chunking, training, logs, checkpoints and bit-exact resume, the CLI."""

from __future__ import annotations

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from steergym.algorithms.bc import BCConfig, BCTrainer, learning_rate, train_bc
from steergym.cli import main
from steergym.data import collect
from steergym.data.chunks import episode_chunks, load_chunk_data
from steergym.data.dataset import Episode
from steergym.policies import DiffusionPolicy, FlowPolicy, PolicyConfig, load_policy

LIFT = "steergym/WidowXLiftCube-v0"
PUSH = "steergym/WidowXPushCube-v0"
CARROT = "steergym/WidowXPutCarrotOnPlate-v0"
TINY = {"hidden_dim": 16, "time_dim": 4}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Three expert episodes of LiftCube, PushCube and PutCarrotOnPlate in a private dataset folder."""
    root = tmp_path_factory.mktemp("datasets")
    for env_id, name in ((LIFT, "bctest/lift-v0"), (PUSH, "bctest/push-v0"), (CARROT, "bctest/carrot-v0")):
        collect(env_id, 3, "expert", name, root=root, progress=False)
    return root


def _episode(actions: np.ndarray) -> Episode:
    n = len(actions)
    return Episode(observations=np.arange(n + 1, dtype=np.float32)[:, None], actions=actions,
                   rewards=np.zeros(n), terminations=np.zeros(n, bool), truncations=np.zeros(n, bool),
                   successes=np.zeros(n, bool))


def test_chunks_slide_over_the_episode_and_repeat_the_last_action():
    actions = np.arange(3, dtype=np.float32)[:, None]  # a0=0, a1=1, a2=2
    obs, chunks = episode_chunks(_episode(actions), horizon=4)
    np.testing.assert_array_equal(obs[:, 0], [0, 1, 2])  # the final observation is not a sample
    np.testing.assert_array_equal(chunks[..., 0], [[0, 1, 2, 2], [1, 2, 2, 2], [2, 2, 2, 2]])


def test_chunk_data_from_datasets(data_root):
    data = load_chunk_data(["bctest/lift-v0"], horizon=4, root=data_root)
    assert data.task_ids == (LIFT,)
    assert data.chunks.shape[1:] == (4, 7) and len(data) == len(data.actions)
    assert data.observations.shape == (len(data), 17)
    # Two tasks with different observation spaces cannot be trained together.
    with pytest.raises(ValueError, match="bctest/push-v0.*share observation"):
        load_chunk_data(["bctest/lift-v0", "bctest/push-v0"], horizon=4, root=data_root)
    with pytest.raises(FileNotFoundError, match="bctest/missing-v0"):
        load_chunk_data(["bctest/missing-v0"], horizon=4, root=data_root)


def test_learning_rate_warms_up_then_decays_to_the_floor():
    cfg = BCConfig(steps=1000, lr=1e-3, min_lr=1e-5, warmup_steps=100)
    assert learning_rate(0, cfg) == pytest.approx(1e-5)
    assert learning_rate(99, cfg) == pytest.approx(1e-3)
    assert learning_rate(550, cfg) == pytest.approx((1e-3 + 1e-5) / 2)
    assert learning_rate(1000, cfg) == pytest.approx(1e-5)


@pytest.mark.parametrize("cls", [DiffusionPolicy, FlowPolicy])
def test_training_lowers_the_loss(cls, data_root):
    data = load_chunk_data(["bctest/lift-v0"], horizon=4, root=data_root)
    env = gym.make(LIFT)
    torch.manual_seed(0)
    policy = cls(env.observation_space, env.action_space, PolicyConfig(kind=cls.kind, hidden_dim=64))
    trainer = BCTrainer(policy, data, BCConfig(steps=300, batch_size=64, lr=1e-3, log_every=25), progress=False)
    trainer.learn()
    losses = [row["loss"] for row in trainer.history]
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:2])
    # The EMA policy is what the trainer returns and it acts in the env's action space.
    obs, _ = env.reset(seed=0)
    assert env.action_space.contains(trainer.ema.act(obs))
    env.close()


def _run(data_root, run_dir, steps, **kw):
    return train_bc(["bctest/lift-v0"], "diffusion", run_dir, policy_config=TINY, root=data_root, progress=False,
                    config=BCConfig(steps=steps, batch_size=16, save_every=10, log_every=5, ema_start=3, **kw))


def test_resume_continues_bit_for_bit(data_root, tmp_path):
    straight = _run(data_root, tmp_path / "straight", 20)
    _run(data_root, tmp_path / "split", 10)  # stops (and saves) at step 10
    resumed = train_bc(["bctest/lift-v0"], run_dir=tmp_path / "split", root=data_root, resume=True, progress=False,
                       config=BCConfig(steps=20))
    assert resumed.step == 20
    for a, b in ((straight.policy, resumed.policy), (straight.ema, resumed.ema)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name
    # The log has each step once, even though the second half ran in another trainer.
    with open(tmp_path / "split" / "progress.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == [5, 10, 15, 20]


def test_run_folder_holds_logs_state_and_a_loadable_policy(data_root, tmp_path):
    run = tmp_path / "run"
    trainer = _run(data_root, run, 10, eval_every=10, eval_episodes=1)
    assert (run / "run.json").exists() and (run / "last" / "state.safetensors").exists()
    assert any((run / "tb").iterdir()), "no TensorBoard events"
    with open(run / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["step"] == "10" and 0.0 <= float(rows[0][LIFT]) <= 1.0
    policy = load_policy(run / "policy", gym.make(LIFT))
    assert policy.metadata["env_id"] == LIFT and policy.metadata["steps"] == 10
    obs = np.zeros(17, np.float32)
    np.testing.assert_array_equal(policy.sample(obs, np.zeros((4, 7))), trainer.ema.sample(obs, np.zeros((4, 7))))


def test_existing_runs_are_not_overwritten(data_root, tmp_path):
    _run(data_root, tmp_path / "run", 5)
    with pytest.raises(ValueError, match="already holds a run"):
        _run(data_root, tmp_path / "run", 5)
    with pytest.raises(ValueError, match="holds no run"):
        train_bc(["bctest/lift-v0"], run_dir=tmp_path / "empty", root=data_root, resume=True)


def test_trainer_rejects_data_of_another_shape(data_root):
    data = load_chunk_data(["bctest/lift-v0"], horizon=2, root=data_root)
    env = gym.make(LIFT)
    policy = DiffusionPolicy(env.observation_space, env.action_space, PolicyConfig(**TINY))
    with pytest.raises(ValueError, match=r"data chunks are \(2, 7\)"):
        BCTrainer(policy, data, progress=False)


def test_several_tasks_make_a_conditioned_policy(data_root, tmp_path):
    trainer = train_bc(["bctest/carrot-v0", "bctest/push-v0"], "flow", tmp_path / "multi", policy_config=TINY,
                       root=data_root, progress=False, config=BCConfig(steps=5, batch_size=8))
    policy = load_policy(tmp_path / "multi" / "policy")
    assert policy.task_ids == (CARROT, PUSH) == trainer.data.task_ids
    obs, noise = np.zeros(27, np.float32), np.ones((4, 7))
    a, b = policy.for_task(CARROT).sample(obs, noise), policy.for_task(PUSH).sample(obs, noise)
    assert not np.allclose(a, b), "the task one-hot does not reach the output"


def test_cli_train_then_eval(data_root, tmp_path, capsys):
    run = tmp_path / "cli-run"
    code = main(["train", "bc", "--dataset", "bctest/lift-v0", "--policy", "flow", "--out", str(run), "--steps", "5",
                 "--hidden-dim", "16", "--batch-size", "8", "--root", str(data_root), "--quiet"])
    assert code == 0
    assert "5 steps" in capsys.readouterr().out
    out_json = tmp_path / "eval.json"
    code = main(["eval", "--policy", str(run / "policy"), "--episodes", "1", "--quiet", "--json", str(out_json)])
    assert code == 0
    result = json.loads(out_json.read_text())
    assert result["env_id"] == LIFT and result["episodes"] == 1
    # A second train into the same folder without --resume is a user error (exit 2, one line).
    code = main(["train", "bc", "--dataset", "bctest/lift-v0", "--out", str(run), "--steps", "5",
                 "--root", str(data_root), "--quiet"])
    assert code == 2 and "--resume" in capsys.readouterr().err


def test_cli_unknown_policy_is_a_usage_error(capsys):
    assert main(["eval", "--policy", "no-such-policy", "--episodes", "1", "--quiet"]) == 2
    assert "no-such-policy" in capsys.readouterr().err
