"""Offline datasets (Minari format), collection and Monte-Carlo returns. Not built yet: see the
base-policy and data issue. Nothing here is importable API today."""
