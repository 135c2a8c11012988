"""Task conditioning of an env's observations (PTR's one-hot task id), for multi-task agents.

    env = TaskConditionWrapper(gymnasium.make("steergym/WidowXPutCarrotOnPlate-v0"), TASKS,
                               "steergym/WidowXPutCarrotOnPlate-v0")
    obs, _ = env.reset()      # state (o,) -> (o + len(TASKS),); a Dict observation gets key "task"

The same transformation as `steergym.data.multitask.with_task` on offline data, so an agent
pre-trained on task-tagged transitions runs on the wrapped env as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from steergym.data.multitask import TASK_KEY, append_task, task_one_hot


class TaskConditionWrapper(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Append the one-hot of `task` among `task_ids` to every observation.

    Args:
        env: an env with a 1-D Box observation space, or a Dict space without a "task" key.
        task_ids: the ordered task names the agent knows (its one-hot layout).
        task: the env's task, one of `task_ids` (default: `env.spec.id`).
    """

    def __init__(self, env: gym.Env, task_ids: Sequence[str], task: str | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, task_ids=tuple(task_ids), task=task)
        gym.ObservationWrapper.__init__(self, env)
        task = task if task is not None else getattr(env.spec, "id", None)
        self.task_ids, self.task = tuple(task_ids), task
        self.one_hot = task_one_hot(self.task_ids, task)
        space, n = env.observation_space, len(self.task_ids)
        task_space = gym.spaces.Box(0.0, 1.0, (n,), np.float32)
        if isinstance(space, gym.spaces.Dict):
            if TASK_KEY in space.spaces:
                raise ValueError(f"TaskConditionWrapper: the observation space already has a {TASK_KEY!r} key")
            self.observation_space = gym.spaces.Dict({**space.spaces, TASK_KEY: task_space})
        elif isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
            self.observation_space = gym.spaces.Box(
                np.concatenate([space.low, task_space.low]).astype(np.float32),
                np.concatenate([space.high, task_space.high]).astype(np.float32), dtype=np.float32)
        else:
            raise ValueError(f"TaskConditionWrapper: needs a 1-D Box or Dict observation space, got {space} "
                             "(image observations: use obs_mode='pixels_state')")

    def observation(self, observation: Any) -> Any:
        return append_task(observation, self.one_hot)
