"""Offline datasets in Minari format: collection with the scripted experts at a chosen quality,
atomic writing, validated loading, and Monte-Carlo returns-to-go for Cal-QL."""

from steergym.data.collect import QUALITIES, collect, collect_episodes, episode_qualities
from steergym.data.dataset import Episode, Transitions, load_episodes, load_transitions, write_dataset
from steergym.data.returns import monte_carlo_returns

__all__ = [
    "QUALITIES",
    "Episode",
    "Transitions",
    "collect",
    "collect_episodes",
    "episode_qualities",
    "load_episodes",
    "load_transitions",
    "monte_carlo_returns",
    "write_dataset",
]
