"""Discounted Monte-Carlo returns-to-go, as Cal-QL computes its reference values.

Per trajectory, backward: G_t = r_t + discount * G_{t+1} * (1 - terminated_t), G_{T} = 0 after the
last step (a truncated episode is not bootstrapped, as in Cal-QL's replay buffer). Sparse-reward
special case (Cal-QL `is_sparse_reward`): if every reward of the trajectory equals the failure
reward r_fail, the failure is treated as lasting forever: G_t = r_fail / (1 - discount) for all t.
Source: nakamotoo/Cal-QL replay_buffer.py (reference/algorithms.md section 1.4).
"""

from __future__ import annotations

import numpy as np


def monte_carlo_returns(
    rewards: np.ndarray,
    terminations: np.ndarray,
    discount: float = 0.99,
    failure_reward: float | None = None,
) -> np.ndarray:
    """Returns-to-go of one episode.

    Args:
        rewards: (T,) rewards r_0..r_{T-1}.
        terminations: (T,) bool, True where the episode terminated after that step.
        discount: gamma in [0, 1).
        failure_reward: if given and every reward equals it, use r_fail / (1 - gamma) everywhere.

    Returns:
        (T,) float64 returns G_0..G_{T-1}.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    terminations = np.asarray(terminations, dtype=bool)
    if rewards.ndim != 1 or rewards.shape != terminations.shape:
        raise ValueError(
            f"monte_carlo_returns: rewards {rewards.shape} and terminations {terminations.shape} "
            "must be 1-D of the same length"
        )
    if not 0.0 <= discount < 1.0:
        raise ValueError(f"monte_carlo_returns: discount must be in [0, 1), got {discount}")
    if failure_reward is not None and rewards.size and np.all(rewards == failure_reward):
        return np.full(rewards.shape, failure_reward / (1.0 - discount))
    returns = np.zeros_like(rewards)
    future = 0.0
    for t in range(rewards.size - 1, -1, -1):
        future = rewards[t] + discount * future * (1.0 - terminations[t])
        returns[t] = future
    return returns
