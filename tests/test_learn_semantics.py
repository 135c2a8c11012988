"""Every online trainer's `learn(total_timesteps, reset_num_timesteps=True)` means what it means in
Stable-Baselines3: `total_timesteps` MORE steps; the default restarts the step counter at 0, and
`reset_num_timesteps=False` continues it, so learn(a) + learn(b, reset_num_timesteps=False) is learn(a + b)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_calql import ONLINE, Chain, agent_state, spaces, synthetic
from test_dsrl_na import small_config as dsrl_na_config
from test_ogpo import Bandit, small_config, tiny_policy

from steergym.algorithms.base import learn_target
from steergym.algorithms.calql import CalQL, CalQLConfig
from steergym.algorithms.dsrl_na import DSRLNA
from steergym.algorithms.ogpo import OGPO
from steergym.algorithms.ptr import PTR, PTRConfig, ptr_calql_config
from steergym.data.dataset import Transitions
from steergym.policies.flow import FlowPolicy


class Bandit3(Bandit):
    """Bandit's spaces and reward, but 3 steps an episode (observation = step / 3, random start offset
    from the reset seed), so a `learn` can stop in the middle of one."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.offset = 0, float(self.np_random.uniform(-0.1, 0.1))
        return np.array([self.offset], np.float32), {}

    def step(self, action):
        obs, reward, _, _, info = super().step(action)
        self.t += 1
        return np.array([self.offset + self.t / 3], np.float32), reward, self.t >= 3, False, info


def _calql():
    return CalQL(spaces(), CalQLConfig(online_ratio=1.0, **ONLINE), seed=0)


def _ogpo():
    return OGPO(Bandit3(), tiny_policy(FlowPolicy), small_config(learning_starts=6), seed=0)


def _dsrl_na():
    return DSRLNA(Bandit3(), tiny_policy(FlowPolicy), dsrl_na_config(learning_starts=6), seed=0)


def _steps(agent) -> int:
    return agent.online.num_timesteps if isinstance(agent, CalQL) else agent.num_timesteps


def _learn(agent, n, **kw):
    if isinstance(agent, CalQL):  # one env across calls: its episode in progress continues
        agent.__dict__.setdefault("test_env", Chain())
        return agent.learn(agent.test_env, n, eval_env=None, progress=False, **kw)
    return agent.learn(n, progress=False, **kw)


def _state(agent) -> dict[str, torch.Tensor]:
    if isinstance(agent, CalQL):
        return agent_state(agent)
    return {f"{name}.{k}": v for name, module in agent._modules().items() for k, v in module.state_dict().items()}


TRAINERS = {"calql": _calql, "ogpo": _ogpo, "dsrl-na": _dsrl_na}


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_learn_counts_more_steps_and_continues_without_a_reset(name):
    make = TRAINERS[name]
    split = make()
    _learn(split, 10)  # stops inside an episode (CalQL's Chain has 5 steps, the others' Bandit3 3)
    assert _steps(split) == 10
    _learn(split, 15, reset_num_timesteps=False)
    assert _steps(split) == 25
    straight = make()
    _learn(straight, 25)
    for key, value in _state(straight).items():
        assert torch.equal(value, _state(split)[key]), f"{name}: learn(10) + learn(15, reset=False) != learn(25) at {key}"


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_learn_with_the_default_reset_restarts_the_counter(name):
    agent = TRAINERS[name]()
    _learn(agent, 10)
    _learn(agent, 6)
    assert _steps(agent) == 6


def _transitions(seed: int) -> Transitions:
    data = synthetic(n=32, seed=seed)
    return Transitions(**vars(data), timeouts=np.zeros(32, bool), successes=np.zeros(32, bool),
                       episode_index=np.arange(32) // 8)


def test_ptr_online_phase_has_the_same_meaning():
    calql = ptr_calql_config(**ONLINE, online_ratio=1.0)
    ptr = PTR(*spaces(), PTRConfig(task_ids=("a", "b"), calql=calql), seed=0)
    ptr.pretrain({"a": _transitions(0), "b": _transitions(1)}, 2, progress=False)
    env = ptr.wrap(Chain(), "a")
    ptr.learn(env, 5, eval_env=None, progress=False)
    ptr.learn(env, 5, eval_env=None, progress=False, reset_num_timesteps=False)
    assert ptr.agent.online.num_timesteps == 10


@pytest.mark.parametrize("budget", [0, -3, 2.5, True, "10", None, float("inf"), float("nan")])
def test_a_budget_that_is_not_a_positive_integer_is_refused_by_name(budget):
    with pytest.raises(ValueError, match=r"OGPO.learn: total_timesteps must be an integer >= 1"):
        learn_target("OGPO.learn", 0, budget, True)
    with pytest.raises(ValueError, match=r"CalQL.learn: total_timesteps"):
        _calql().learn(Chain(), budget, eval_env=None, progress=False)


def test_a_chunk_checkpoint_from_before_the_shared_loop_still_loads_and_continues(tmp_path):
    """Checkpoints written before OffPolicyTrainer kept `next_eval` None outside an evaluation and
    no `next_checkpoint`; they load, and the schedule does not evaluate twice at the same step."""
    import json

    agent = _ogpo()
    agent.learn(9, eval_env=Bandit3(), eval_every=6, eval_episodes=1, progress=False)
    agent.save(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["next_eval"] = None
    del config["next_checkpoint"]
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    old = OGPO.load(tmp_path / "ckpt", env=Bandit3())
    assert old.num_timesteps == 9 and [row["env_steps"] for row in old.eval_history] == [0, 6, 9]
    old.learn(3, eval_env=Bandit3(), eval_every=6, eval_episodes=1, progress=False, reset_num_timesteps=False)
    assert [row["env_steps"] for row in old.eval_history] == [0, 6, 9, 10, 12]
