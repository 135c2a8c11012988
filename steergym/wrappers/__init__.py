"""Steering methods as Gymnasium wrappers around a frozen base policy.

| wrapper                    | the agent outputs           | the robot executes                          |
|----------------------------|-----------------------------|---------------------------------------------|
| `ActionChunkWrapper`       | a chunk of H actions (H*d,) | the chunk, open loop                        |
| `NoiseActionWrapper`       | noise w in [-b, b]^(H*d)    | `policy.sample(obs, w)`, a chunk (DSRL)     |
| `ResidualActionWrapper`    | a correction c in [-1, 1]^d | clip(`policy.act(obs)` + scale * c)         |
| `ProposalWrapper`          | an index k in [0, K)        | the k-th of K proposed chunks (V-GPS as RL) |

`TaskConditionWrapper` appends a task one-hot to the observation (PTR's task conditioning).

Vector envs, one batched policy call per vector step:

| vector wrapper (builder)                             | steers                                      |
|------------------------------------------------------|---------------------------------------------|
| `NoiseActionVectorWrapper` (`make_noise_vector_env`) | a gymnasium vector env (sync / async)       |
| `NoiseActionVecEnvWrapper` (`make_noise_vec_env`)    | an SB3 VecEnv (DummyVecEnv / SubprocVecEnv) |

Registered steered tasks (`steergym/<Task>-DSRL-v0`, `steergym/<Task>-Residual-v0`, one pair per
shipped single-task policy; see `steergym.wrappers.steered_envs`) are built by `make_dsrl_env` and
`make_residual_env`, which take a task id and a shipped policy name or checkpoint folder.

`ValueGuidedPolicy` (V-GPS re-ranking with a critic) is a policy, not an env wrapper; it lives in
`steergym.policies.value_guided` and is re-exported here.

    env = NoiseActionWrapper(gymnasium.make("steergym/WidowXLiftCube-v0"), policy)
    env = gymnasium.make("steergym/WidowXLiftCube-DSRL-v0")   # the same with the shipped policy
    stable_baselines3.SAC("MlpPolicy", env).learn(10_000)
"""

from steergym.policies.value_guided import ValueGuidedPolicy
from steergym.wrappers.chunk import ActionChunkWrapper
from steergym.wrappers.noise import NoiseActionVectorWrapper, NoiseActionWrapper, make_noise_vector_env
from steergym.wrappers.proposal import ProposalWrapper
from steergym.wrappers.residual import ResidualActionWrapper
from steergym.wrappers.sb3 import NoiseActionVecEnvWrapper, make_noise_vec_env
from steergym.wrappers.steered_envs import make_dsrl_env, make_residual_env
from steergym.wrappers.task_condition import TaskConditionWrapper

__all__ = [
    "ActionChunkWrapper",
    "NoiseActionVecEnvWrapper",
    "NoiseActionVectorWrapper",
    "NoiseActionWrapper",
    "ProposalWrapper",
    "ResidualActionWrapper",
    "TaskConditionWrapper",
    "ValueGuidedPolicy",
    "make_dsrl_env",
    "make_noise_vec_env",
    "make_noise_vector_env",
    "make_residual_env",
]
