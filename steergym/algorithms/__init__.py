"""Trainers: behaviour cloning of generative policies, Cal-QL/CQL (offline then online), OGPO (full
fine-tuning of a diffusion/flow policy) and DSRL-NA (noise-aliased steering). DSRL, residual RL and
SAC from scratch run Stable-Baselines3 SAC through `steergym.algorithms.steering`."""

from steergym.algorithms.bc import BCConfig, BCTrainer
from steergym.algorithms.calql import CalQL, CalQLConfig
from steergym.algorithms.dsrl_na import DSRLNA, DSRLNAConfig
from steergym.algorithms.ogpo import OGPO, OGPOConfig

__all__ = ["BCConfig", "BCTrainer", "CalQL", "CalQLConfig", "DSRLNA", "DSRLNAConfig", "OGPO", "OGPOConfig"]
