"""Trainers: behaviour cloning of generative policies (Cal-QL/CQL, PTR, DSRL-NA and OGPO come next)."""

from steergym.algorithms.bc import BCConfig, BCTrainer

__all__ = ["BCConfig", "BCTrainer"]
