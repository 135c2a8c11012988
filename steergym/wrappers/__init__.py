"""Steering methods as Gymnasium wrappers (latent-noise / DSRL, residual, V-GPS proposals, action
chunks). Not built yet: see the wrappers issue. Nothing here is importable API today."""
