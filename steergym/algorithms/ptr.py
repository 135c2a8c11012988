"""PTR: multi-task offline RL pre-training, then a new task from a handful of demonstrations.

    ptr = PTR(obs_space, action_space, PTRConfig(task_ids=PRIOR + (TARGET,)))
    ptr.pretrain({task: load_transitions(d) for task, d in prior.items()}, steps=20_000)
    ptr.adapt(TARGET, load_transitions(ten_demos), steps=10_000)      # 90% prior, 10% target rows
    env = ptr.wrap(gymnasium.make(TARGET))                             # observation + task one-hot
    ptr.learn(env, 10_000)                                             # optional online fine-tuning
    action, _ = ptr.predict(obs, TARGET)

PTR (Kumar, Singh, Ebert, Nakamoto, Yang, Finn, Levine; RSS 2023) is CQL with a task-conditioned
actor and critic (one-hot task id appended to the features), pre-trained jointly on every prior
task's data; adaptation to a new task continues the *same* objective with the target task's few
demonstrations mixed into every batch at a fixed share (code: `target_mixing_ratio` 0.9 = 90%
prior rows); online fine-tuning then mixes online and offline data (`online_mixing_ratio` 0.5).
Rewards follow the code's `final_one` setting on success-labelled data: r' = 11 r - 1, i.e. -1 per
step and +10 at the success (terminal) step (reference/algorithms.md section 2.3).

The trainer is `steergym.algorithms.CalQL` with `calibrated=False` (PTR is CQL) on task-augmented
observations (`steergym.data.multitask`), so checkpoints, logs, resume and the online phase are
Cal-QL's; this module adds the task bookkeeping and the mixing schedule. The task one-hot is left
out of the observation standardisation (a task absent from the prior data would otherwise be scaled
by 1/std = 1000). Pixel observations go through Cal-QL's conv encoder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from steergym.algorithms.calql import CalQL, CalQLConfig
from steergym.data.multitask import TASK_KEY, append_task, concat_transitions, mix_transitions, task_one_hot, with_task
from steergym.policies.base import is_batched
from steergym.wrappers.task_condition import TaskConditionWrapper

PTR_FILE = "ptr.json"
FORMAT = "steergym.ptr-v1"


def ptr_calql_config(**overrides: Any) -> CalQLConfig:
    """Cal-QL settings of PTR's released code (Asap7772/PTR, `cql_encodersep_parallel`, run scripts)."""
    values = dict(
        calibrated=False,  # PTR is CQL (min_q_version 3)
        cql_alpha=10.0,  # scripts `cql_alpha` 10 (high-alpha CQL)
        cql_n_actions=4,  # `NUM_CQL_REPEAT` 4 uniform + 4 policy actions at s: a logsumexp over 8
        cql_next_state_actions=False,  # critic_updater min_q_version 3 samples no pi(.|s') candidates
        cql_max_target_backup=True,  # max-Q backup over 4 next actions
        cql_importance_sample=True,  # min_q_version 3
        backup_entropy=False,  # code
        discount=0.96,  # scripts (episode horizon ~25 steps; use 0.99 for 100-step tasks)
        batch_size=64,  # code default
        actor_lr=1e-4, critic_lr=3e-4, alpha_lr=3e-4,  # code
        critic_hidden=(256, 256, 256),  # `MLPActionSep` hidden sizes
        actor_hidden=(256, 256),  # policy MLP
        reward_scale=11.0, reward_bias=-1.0,  # final_one rewards {0, 1} -> {-1, +10}
        online_ratio=0.5,  # `online_mixing_ratio`
    )
    values.update(overrides)
    return CalQLConfig(**values)


@dataclass
class PTRConfig:
    """PTR's task layout and mixing; `calql` holds the critic/actor hyper-parameters."""

    task_ids: tuple[str, ...]  # every task the agent can be conditioned on: prior + target(s)
    target_ratio: float = 0.1  # share of target-task rows per adaptation batch (code: 1 - 0.9)
    calql: CalQLConfig = field(default_factory=ptr_calql_config)

    def __post_init__(self) -> None:
        self.task_ids = tuple(self.task_ids)
        task_one_hot(self.task_ids, self.task_ids[0] if self.task_ids else "")  # validates the list
        if not 0.0 < self.target_ratio < 1.0:
            raise ValueError(f"PTRConfig: target_ratio must be in (0, 1), got {self.target_ratio}")


class PTR:
    """Task-conditioned CQL: `pretrain` on prior tasks, `adapt` to a target task, optional `learn`.

    Args:
        observation_space: the tasks' own observation space (a 1-D Box, or a Dict with images),
            without the task one-hot (added here).
        action_space: the tasks' Box action space.
        config: `PTRConfig`.
        seed: seeds the networks and the sampling.
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: PTRConfig,
                 seed: int = 0, device: str | torch.device = "cpu") -> None:
        self.config = config
        self.task_ids = config.task_ids
        self.base_observation_space = observation_space
        probe = TaskConditionWrapper(_SpaceOnly(observation_space, action_space), self.task_ids, self.task_ids[0])
        self.agent = CalQL((probe.observation_space, action_space), config.calql, seed=seed, device=device)
        self.prior: Any = None  # the pre-training transitions (task-tagged), kept for `adapt`
        self.offline: Any = None  # the adaptation mixture (prior + target demos), kept for `learn`
        self.phases: list[dict[str, Any]] = []  # what was trained, in order

    # ----------------------------------------------------------------------------- data
    def tag(self, data: Mapping[str, Any]) -> list[Any]:
        """{task: Transitions} -> the transitions with their task one-hots, in `data`'s order."""
        if not data:
            raise ValueError("PTR: no task data given")
        return [with_task(transitions, self.task_ids, task) for task, transitions in data.items()]

    def pretrain(self, prior: Mapping[str, Any], steps: int, progress: bool = True) -> "PTR":
        """Joint multi-task CQL on the prior tasks' data ({task: Transitions}); rows drawn uniformly
        over all tasks (the code's mixing ratio 1.0 before `offline_finetuning_start`)."""
        data = concat_transitions(self.tag(prior))
        self._train(data, steps, progress)
        self.prior = data
        self._record({"phase": "pretrain", "tasks": list(prior), "rows": len(data)}, steps)
        return self

    def adapt(self, task: str, demos: Any, steps: int, prior: Mapping[str, Any] | None = None,
              progress: bool = True) -> "PTR":
        """Continue the same objective on the prior data with the target task's `demos` mixed in at
        `config.target_ratio` of every batch. `prior` defaults to the data of `pretrain`."""
        prior_data = concat_transitions(self.tag(prior)) if prior is not None else self.prior
        if prior_data is None:
            raise ValueError("PTR.adapt: no prior data: call pretrain first or pass prior={task: transitions}")
        target = with_task(demos, self.task_ids, task)
        ratio = self.config.target_ratio
        mixture = mix_transitions([prior_data, target], (1.0 - ratio, ratio))
        self._train(mixture, steps, progress)
        self.offline = mixture
        self._record({"phase": "adapt", "task": task, "demo_rows": len(target), "target_ratio": ratio}, steps)
        return self

    def _record(self, phase: dict[str, Any], steps: int) -> None:
        """Append a phase to `phases`, or add the steps to the last one if it is the same phase
        on the same data (a phase trained in slices, as the run folders do)."""
        last = self.phases[-1] if self.phases else {}
        if {k: v for k, v in last.items() if k != "steps"} == phase:
            last["steps"] += int(steps)
        else:
            self.phases.append({**phase, "steps": int(steps)})

    def _train(self, data: Any, steps: int, progress: bool) -> None:
        # A new phase brings new data on purpose (CalQL refuses a silent data swap on resume).
        self.agent._offline_fingerprint = None
        self.agent.set_offline_data(data, "PTR")  # fixes the standardisation statistics on first use
        self._unscale_task_features()  # before any update sees the one-hot
        self.agent.pretrain(data, steps, progress=progress)

    def _unscale_task_features(self) -> None:
        """The one-hot bypasses standardisation (mean 0, std 1): the last T columns of a flat
        observation, the "task" entry of a Dict one."""
        agent, n = self.agent, len(self.task_ids)
        if isinstance(agent.obs_mean, dict):
            if TASK_KEY not in agent.obs_mean:
                return
            agent.obs_mean[TASK_KEY] = torch.zeros_like(agent.obs_mean[TASK_KEY])
            agent.obs_std[TASK_KEY] = torch.ones_like(agent.obs_std[TASK_KEY])
        elif agent.obs_mean is not None:
            agent.obs_mean[-n:] = 0.0
            agent.obs_std[-n:] = 1.0

    # ---------------------------------------------------------------------------- online
    def wrap(self, env: gym.Env, task: str | None = None) -> gym.Env:
        """`env` with the task one-hot in its observations (task default: the env's id)."""
        return TaskConditionWrapper(env, self.task_ids, task)

    def learn(self, env: gym.Env, total_timesteps: int, **kwargs: Any) -> "PTR":
        """Online fine-tuning on a `wrap`ped env, mixing in the adaptation data (`CalQL.learn`)."""
        if not isinstance(env, TaskConditionWrapper) and not _has_task_wrapper(env):
            raise ValueError("PTR.learn: wrap the env first: ptr.wrap(env, task) adds the task one-hot")
        offline = kwargs.pop("offline", self.offline if self.offline is not None else self.prior)
        self.agent.learn(env, total_timesteps, offline=offline, **kwargs)
        return self

    def predict(self, obs: Any, task: str, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """SB3-shaped action for a task's observation (without the one-hot), one or a batch."""
        one_hot = task_one_hot(self.task_ids, task)
        batch = None
        if isinstance(obs, dict) and is_batched(obs, self.base_observation_space):
            batch = len(next(iter(obs.values())))
        return self.agent.predict(append_task(obs, one_hot, batch), deterministic=deterministic)

    def policy(self, task: str) -> "TaskPolicy":
        """A Policy-protocol view bound to `task` (for `steergym.bench.evaluate.evaluate`)."""
        return TaskPolicy(self, task)

    # ------------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """`path/` = the Cal-QL checkpoint + ptr.json (task ids, target ratio, phases), written in one
        atomic step: a process killed while saving leaves the previous checkpoint whole (ptr.json
        written after the folder's swap left a folder that `load` refused and --resume could not
        continue)."""
        path = Path(path)
        meta = {"format": FORMAT, "task_ids": list(self.task_ids), "target_ratio": self.config.target_ratio,
                "phases": self.phases}
        self.agent.save(path, replay=True, extra_files={PTR_FILE: json.dumps(meta, indent=1, default=str) + "\n"})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, observation_space: gym.Space,
             device: str | torch.device = "cpu") -> "PTR":
        """Rebuild a `save`d PTR agent; `observation_space` is the tasks' own (without the one-hot)."""
        path = Path(path)
        try:
            meta = json.loads((path / PTR_FILE).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a PTR checkpoint ({PTR_FILE}: {exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{path / PTR_FILE}: format is not {FORMAT!r}")
        agent = CalQL.load(path, device=device)
        config = PTRConfig(tuple(meta["task_ids"]), float(meta["target_ratio"]), agent.config)
        ptr = cls(observation_space, agent.action_space, config, seed=agent.seed, device=device)
        if ptr.agent.observation_space != agent.observation_space:
            raise ValueError(f"{path}: saved observation space {agent.observation_space} does not match "
                             f"{observation_space} + {len(config.task_ids)} task features")
        ptr.agent, ptr.phases = agent, list(meta.get("phases", []))
        return ptr


class TaskPolicy:
    """A PTR agent bound to one task, with the Policy protocol (`act`, `reset`, spaces)."""

    def __init__(self, ptr: PTR, task: str) -> None:
        task_one_hot(ptr.task_ids, task)
        self.ptr, self.task = ptr, task
        self.observation_space = ptr.base_observation_space
        self.action_space = ptr.agent.action_space

    def act(self, obs: Any) -> np.ndarray:
        return self.ptr.predict(obs, self.task, deterministic=True)[0]

    def reset(self, seed: int | None = None) -> None:
        return None


class _SpaceOnly(gym.Env):
    """An env with only spaces, so TaskConditionWrapper can compute the conditioned space."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space


def _has_task_wrapper(env: Any) -> bool:
    while env is not None:
        if isinstance(env, TaskConditionWrapper):
            return True
        env = getattr(env, "env", None)
    return False


__all__ = ["PTR", "PTRConfig", "TaskPolicy", "ptr_calql_config"]
