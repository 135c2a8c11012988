"""V-GPS value functions: a task-conditioned Cal-QL critic trained offline on mixed-quality
multi-task data, exported as the critic `ValueGuidedPolicy` re-ranks a generalist's samples with.

    data = {task: load_transitions(f"vgps/{task}") for task in TASKS}      # mixed quality, sparse 0/1
    value = train_value_function(data, steps=20_000)
    value.save("runs/vgps/value_function")
    steered = ValueGuidedPolicy(generalist.for_task(task), value.critic(task), num_samples=10)

Training (V-GPS, Nakamoto et al., CoRL 2024; reference/algorithms.md section 3.2) is Cal-QL with
alpha 5, gamma 0.98, 4 CQL actions, the max-target backup and twin critics, on single-step actions
with rewards -1 per step and 0 at the success (terminal) step; a failed episode gets the sparse
failure value -1 / (1 - gamma) = -50 as its reference. V-GPS conditions on a language embedding;
our tasks are a closed set, so the condition is the task one-hot (PTR's), which is what
`steergym.algorithms.ptr.PTR` trains: the value function is a pre-trained PTR agent's critic.

At test time Q(s, a) = min over the *target* critics (V-GPS `get_q_values`), scored on the first
action of each candidate chunk (V-GPS scores single actions while the policy outputs chunks).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from steergym.algorithms.calql import CalQLConfig
from steergym.algorithms.ptr import PTR, PTR_FILE, PTRConfig
from steergym.data.multitask import append_task, task_one_hot
from steergym.policies.base import is_batched


def vgps_calql_config(**overrides: Any) -> CalQLConfig:
    """Cal-QL settings of V-GPS's value function (nakamotoo/V-GPS launch scripts, `lc_cql` agent)."""
    values = dict(
        calibrated=True,  # `use_calql=True`
        cql_alpha=5.0,  # cql_alpha 5.0, fixed (no Lagrange)
        discount=0.98,  # discount 0.98
        cql_n_actions=4,  # cql_n_actions 4
        cql_max_target_backup=True,  # cql_max_target_backup True
        cql_importance_sample=True,  # importance sampling on
        backup_entropy=False,
        batch_size=256,  # launch script
        actor_lr=1e-4, critic_lr=3e-4, alpha_lr=3e-4,  # (the code's 2000-step warm-up is not used here)
        critic_hidden=(256, 256), actor_hidden=(256, 256),  # MLP heads [256, 256]
        reward_scale=1.0, reward_bias=-1.0,  # sparse success {0, 1} -> {-1, 0}
        failure_reward=0.0,  # raw reward of a failed episode's every step: reference -1 / (1 - gamma)
    )
    values.update(overrides)
    return CalQLConfig(**values)


class ValueFunction:
    """Q(s, a, task) of a task-conditioned Cal-QL agent (a trained `PTR`).

    `value(obs, actions, task)` takes observations without the task one-hot, (N, o) or a Dict of
    (N, ...) arrays, and actions (N, d) in env units; returns (N,) float64, min over the target
    critics. `value.critic(task)` is the `critic(obs, chunks)` `ValueGuidedPolicy` expects.
    """

    def __init__(self, ptr: PTR, use_target: bool = True) -> None:
        self.ptr, self.use_target = ptr, use_target
        self.task_ids = ptr.task_ids
        self.observation_space = ptr.base_observation_space
        self.action_space = ptr.agent.action_space

    @torch.no_grad()
    def __call__(self, obs: Any, actions: Any, task: str) -> np.ndarray:
        agent = self.ptr.agent
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 2 or actions.shape[1:] != self.action_space.shape:
            raise ValueError(f"ValueFunction: actions must be (N, {self.action_space.shape[0]}), got {actions.shape}")
        if not np.isfinite(actions).all():
            raise ValueError("ValueFunction: actions hold non-finite values")
        n = actions.shape[0]
        if not is_batched(obs, self.observation_space):
            raise ValueError("ValueFunction: obs must be a batch (N, ...) matching the actions")
        rows = len(next(iter(obs.values()))) if isinstance(obs, dict) else np.shape(obs)[0]
        if rows != n:
            raise ValueError(f"ValueFunction: {rows} observations but {n} actions")
        conditioned = append_task(obs, task_one_hot(self.task_ids, task), n if isinstance(obs, dict) else None)
        return agent.q_values(conditioned, actions, target=self.use_target)

    def critic(self, task: str) -> "TaskCritic":
        """The `critic(obs, chunks) -> (N,)` of `ValueGuidedPolicy` for `task` (first action scored)."""
        task_one_hot(self.task_ids, task)
        return TaskCritic(self, task)

    def steer(self, policy: Any, task: str, num_samples: int = 10, temperature: float = 0.0,
              seed: int = 0, action_steps: int | None = 1) -> Any:
        """`policy` (a generative policy: it has `sample_n`) re-ranked by this value function on `task`:
        a `ValueGuidedPolicy` named "<policy>+vgps(K=<num_samples>)", re-ranking every `action_steps`
        control steps (1, V-GPS's setting; None: once per base-policy chunk)."""
        from steergym.policies.value_guided import ValueGuidedPolicy

        if task not in self.task_ids:
            raise ValueError(f"this value function knows tasks {list(self.task_ids)}, not {task!r}")
        if isinstance(policy, str) or not callable(getattr(policy, "sample_n", None)):
            raise ValueError(f"V-GPS needs a diffusion or flow policy to sample from, not {policy!r}")  # noqa: TRY004
        steered = ValueGuidedPolicy(policy, self.critic(task), num_samples=num_samples, temperature=temperature,
                                    seed=seed, action_steps=action_steps)
        steered.name = f"{getattr(policy, 'name', 'policy')}+vgps(K={num_samples})"
        return steered

    def save(self, path: str | os.PathLike) -> Path:
        """A PTR checkpoint folder (`ValueFunction.load` or `PTR.load` read it back)."""
        return self.ptr.save(path)

    @classmethod
    def load(cls, path: str | os.PathLike, observation_space: gym.Space | None = None,
             device: str | torch.device = "cpu") -> "ValueFunction":
        """Load a saved value function; the observation space defaults to the first task's env's."""
        path = Path(path)
        if observation_space is None:
            import json

            try:
                task_ids = json.loads((path / PTR_FILE).read_text())["task_ids"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}: not a V-GPS value function ({PTR_FILE}: {exc})") from exc
            observation_space = _task_spaces(task_ids[0])[0]
        return cls(PTR.load(path, observation_space, device=device))


class TaskCritic:
    """`critic(obs, chunks)` for `ValueGuidedPolicy`: Q of each chunk's first action for one task."""

    def __init__(self, value: ValueFunction, task: str) -> None:
        self.value, self.task = value, task

    def __call__(self, obs: Any, chunks: np.ndarray) -> np.ndarray:
        chunks = np.asarray(chunks, dtype=np.float32)
        first = chunks[:, 0] if chunks.ndim == 3 else chunks
        return self.value(obs, first, self.task)


def train_value_function(data: Mapping[str, Any], steps: int, config: CalQLConfig | None = None,
                         task_ids: tuple[str, ...] | None = None, seed: int = 0,
                         spaces: tuple[gym.Space, gym.Space] | None = None,
                         progress: bool = True) -> ValueFunction:
    """Train a V-GPS value function on {task: Transitions} (sparse 0/1 success rewards).

    Args:
        data: each task's transitions (e.g. `load_transitions` of a mixed-quality dataset).
        steps: offline gradient steps.
        config: Cal-QL settings (default `vgps_calql_config()`).
        task_ids: the one-hot layout (default: the keys of `data`).
        spaces: (observation space without the task, action space); default the first task's env's.
    """
    task_ids = tuple(task_ids) if task_ids is not None else tuple(data)
    observation_space, action_space = spaces if spaces is not None else _task_spaces(task_ids[0])
    ptr = PTR(observation_space, action_space, PTRConfig(task_ids, calql=config or vgps_calql_config()), seed=seed)
    ptr.pretrain(data, steps, progress=progress)
    return ValueFunction(ptr)


def _task_spaces(env_id: str) -> tuple[gym.Space, gym.Space]:
    env = gym.make(env_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
