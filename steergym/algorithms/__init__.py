"""Trainers: behaviour cloning of generative policies, Cal-QL/CQL (offline phase; PTR, DSRL-NA and OGPO come next)."""

from steergym.algorithms.bc import BCConfig, BCTrainer
from steergym.algorithms.calql import CalQL, CalQLConfig

__all__ = ["BCConfig", "BCTrainer", "CalQL", "CalQLConfig"]
