"""Steering methods as Gymnasium wrappers around a frozen base policy.

| wrapper                    | the agent outputs           | the robot executes                          |
|----------------------------|-----------------------------|---------------------------------------------|
| `ActionChunkWrapper`       | a chunk of H actions (H*d,) | the chunk, open loop                        |
| `NoiseActionWrapper`       | noise w in [-b, b]^(H*d)    | `policy.sample(obs, w)`, a chunk (DSRL)     |
| `ResidualActionWrapper`    | a correction c in [-1, 1]^d | clip(`policy.act(obs)` + scale * c)         |
| `ProposalWrapper`          | an index k in [0, K)        | the k-th of K proposed chunks (V-GPS as RL) |

`NoiseActionVectorWrapper` (and `make_noise_vector_env`) steer a gymnasium vector env with one
batched policy call per step. `ValueGuidedPolicy` (V-GPS re-ranking with a critic) is a policy,
not an env wrapper; it lives in `steergym.policies.value_guided` and is re-exported here.

    env = NoiseActionWrapper(gymnasium.make("steergym/WidowXLiftCube-v0"), policy)
    stable_baselines3.SAC("MlpPolicy", env).learn(10_000)
"""

from steergym.policies.value_guided import ValueGuidedPolicy
from steergym.wrappers.chunk import ActionChunkWrapper
from steergym.wrappers.noise import NoiseActionVectorWrapper, NoiseActionWrapper, make_noise_vector_env
from steergym.wrappers.proposal import ProposalWrapper
from steergym.wrappers.residual import ResidualActionWrapper

__all__ = [
    "ActionChunkWrapper",
    "NoiseActionVectorWrapper",
    "NoiseActionWrapper",
    "ProposalWrapper",
    "ResidualActionWrapper",
    "ValueGuidedPolicy",
    "make_noise_vector_env",
]
