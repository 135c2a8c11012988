"""Trainers that accept any (wrapped) Gymnasium env: BC for generative policies, Cal-QL/CQL, PTR,
DSRL-NA, OGPO. Not built yet: see the trainer issues. Nothing here is importable API today."""
