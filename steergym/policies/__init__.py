"""Policies: the Policy protocol, diffusion and flow base policies, scripted experts, adapters, and
`RemotePolicy` / `serve_policy` (a policy on an openpi-style websocket server; `remote` extra).

    from steergym.policies import DiffusionPolicy, FlowPolicy, PolicyConfig, load_policy
"""

from steergym.policies.base import (
    CallablePolicy,
    GenerativePolicyProtocol,
    Policy,
    SB3Policy,
    ScriptedPolicy,
    as_policy,
)
from steergym.policies.checkpoint import load_policy, save_policy
from steergym.policies.config import PolicyConfig
from steergym.policies.diffusion import DiffusionPolicy
from steergym.policies.flow import FlowPolicy
from steergym.policies.generative import GenerativePolicy
from steergym.policies.remote import RemotePolicy
from steergym.policies.remote_server import serve_policy
from steergym.policies.scripted import (
    PickPlaceExpert,
    PushExpert,
    ScriptedExpert,
    expert_success_rate,
    make_expert,
)

__all__ = [
    "CallablePolicy",
    "DiffusionPolicy",
    "FlowPolicy",
    "GenerativePolicy",
    "GenerativePolicyProtocol",
    "PickPlaceExpert",
    "Policy",
    "PolicyConfig",
    "PushExpert",
    "RemotePolicy",
    "SB3Policy",
    "ScriptedExpert",
    "ScriptedPolicy",
    "as_policy",
    "expert_success_rate",
    "load_policy",
    "make_expert",
    "save_policy",
    "serve_policy",
]
