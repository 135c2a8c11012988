"""Offline datasets on local disk in Minari's format (HDF5), written atomically, loaded with checks.

Layout (Minari's): ``<root>/<dataset_id>/data/{main_data.hdf5,metadata.json}`` with
``root = $MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``); steergym adds
``<root>/<dataset_id>/steergym.json`` (env id, instruction, per-episode quality labels and seeds).
Nothing is ever downloaded: `minari.load_dataset(..., download=False)` only.

`load_transitions` flattens episodes into (s, a, r, s', terminal) arrays with discounted
Monte-Carlo returns-to-go (`steergym.data.returns`), what Cal-QL's calibration needs.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import gymnasium as gym
import numpy as np

from steergym.data.returns import monte_carlo_returns

STEERGYM_METADATA = "steergym.json"


@dataclass
class Episode:
    """One recorded episode.

    Attributes:
        observations: (T+1, *obs_shape) array, or a dict of such arrays for Dict observations;
            entry 0 is the reset observation.
        actions: (T, action_dim) float32.
        rewards, terminations, truncations: (T,) after each step.
        successes: (T,) bool, ``info["is_success"]`` after each step.
        seed: the reset seed, if any.
        quality: label of the behaviour that produced it ("expert", "noisy", "failing", ...).
    """

    observations: Any
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    successes: np.ndarray
    seed: int | None = None
    quality: str = "expert"

    def __len__(self) -> int:
        return int(len(self.actions))


@dataclass
class Transitions:
    """Flat (s, a, r, s') arrays of a dataset; N transitions.

    Attributes:
        observations, next_observations: (N, *obs_shape) arrays (or dicts of them).
        actions: (N, action_dim); rewards, mc_returns: (N,) float32; terminals, timeouts,
        successes: (N,) bool; episode_index: (N,) int, which episode each transition came from.
        metadata: the dataset's steergym.json (empty for a foreign Minari dataset).
        sample_group, group_ratios: optional sampling mixture (`steergym.data.multitask.mix_transitions`):
            (N,) int group of each row and the share of every batch each group fills (sums to 1).
            None: rows are drawn uniformly.
    """

    observations: Any
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: Any
    terminals: np.ndarray
    timeouts: np.ndarray
    mc_returns: np.ndarray
    successes: np.ndarray
    episode_index: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    sample_group: np.ndarray | None = None
    group_ratios: tuple[float, ...] | None = None

    def __len__(self) -> int:
        return int(len(self.actions))


def datasets_root(root: str | os.PathLike | None = None) -> Path:
    """The local dataset folder: `root`, else $MINARI_DATASETS_PATH, else ~/.minari/datasets."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))


def dataset_exists(dataset_id: str, root: str | os.PathLike | None = None) -> bool:
    """True when a finished local dataset `dataset_id` is under `root` (its data/metadata.json exists)."""
    return (datasets_root(root) / dataset_id / "data" / "metadata.json").is_file()


def local_dataset_ids(root: str | os.PathLike | None = None) -> list[str]:
    """The ids of the finished local datasets under `root`, sorted (for error messages)."""
    base = datasets_root(root)
    return sorted(str(p.parent.parent.relative_to(base)) for p in base.glob("**/data/metadata.json"))


@contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def write_dataset(
    dataset_id: str,
    episodes: list[Episode],
    env: gym.Env,
    *,
    root: str | os.PathLike | None = None,
    description: str = "",
    extra_metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `episodes` as the Minari dataset `dataset_id` ("namespace/name-vN"); returns its folder.

    The dataset is built in a temporary folder beside the destination and renamed into place, so
    a crash never leaves a half-written dataset under `dataset_id`.
    """
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    if not episodes:
        raise ValueError(f"write_dataset({dataset_id!r}): no episodes to write")
    base = datasets_root(root)
    final = base / dataset_id
    if final.exists() and not overwrite:
        raise FileExistsError(f"dataset {dataset_id!r} already exists at {final}; pass overwrite=True")
    buffers = [
        EpisodeBuffer(
            id=i,
            seed=ep.seed,
            observations=ep.observations,
            actions=np.asarray(ep.actions, dtype=np.float32),
            rewards=np.asarray(ep.rewards, dtype=np.float64),
            terminations=np.asarray(ep.terminations, dtype=bool),
            truncations=np.asarray(ep.truncations, dtype=bool),
            infos={"is_success": np.asarray(ep.successes, dtype=bool)},
        )
        for i, ep in enumerate(episodes)
    ]
    unwrapped = env.unwrapped
    metadata = {
        "format": "steergym-dataset-v1",
        "env_id": env.spec.id if env.spec is not None else None,
        "instruction": getattr(unwrapped, "instruction", ""),
        "state_names": list(getattr(unwrapped, "state_names", [])),
        "episode_quality": [ep.quality for ep in episodes],
        "episode_seeds": [ep.seed for ep in episodes],
        **(extra_metadata or {}),
    }
    staging = base / f".staging-{uuid.uuid4().hex}"
    try:
        with _minari_root(staging), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Minari warns about optional metadata we leave unset
            minari.create_dataset_from_buffers(
                dataset_id,
                buffers,
                env=env,
                algorithm_name=metadata.get("algorithm", "steergym.collect"),
                description=description or f"{metadata['env_id']}: {metadata['instruction']}",
                data_format="hdf5",
            )
        built = staging / dataset_id
        (built / STEERGYM_METADATA).write_text(json.dumps(metadata, indent=2))
        _copy_namespace_metadata(staging, base, dataset_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            trash = base / f".trash-{uuid.uuid4().hex}"
            os.rename(final, trash)
            os.rename(built, final)
            shutil.rmtree(trash)
        else:
            os.rename(built, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _copy_namespace_metadata(staging: Path, base: Path, dataset_id: str) -> None:
    parts = dataset_id.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        rel = Path(*parts[:depth]) / "namespace_metadata.json"
        if (staging / rel).exists() and not (base / rel).exists():
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(staging / rel, base / rel)


def load_dataset(dataset_id: str, root: str | os.PathLike | None = None):
    """Open a local Minari dataset; clear errors for a missing or unreadable one."""
    import minari

    base = datasets_root(root)
    if not dataset_exists(dataset_id, base):
        raise FileNotFoundError(f"no dataset {dataset_id!r} under {base}; local datasets: {local_dataset_ids(base)}")
    try:
        with _minari_root(base):
            return minari.load_dataset(dataset_id, download=False)
    except Exception as exc:  # h5py/json errors of a corrupt dataset
        raise ValueError(f"dataset {dataset_id!r} at {base / dataset_id} is unreadable or corrupt: {exc}") from exc


def read_metadata(dataset_id: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The steergym.json of a dataset, or {} for a foreign Minari dataset.

    Raises ValueError naming the dataset and the file when it is not a JSON object (bad bytes,
    bad JSON, another value) or its "episode_quality" is not a list of labels.
    """
    path = datasets_root(root) / dataset_id / STEERGYM_METADATA
    if not path.exists():
        return {}
    try:
        metadata = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"dataset {dataset_id!r}: {path} is not valid JSON: {type(exc).__name__}: {exc}") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"dataset {dataset_id!r}: {path} must hold a JSON object, got {type(metadata).__name__}")
    qualities = metadata.get("episode_quality", [])
    if not (isinstance(qualities, list) and all(isinstance(q, str) for q in qualities)):
        raise ValueError(f"dataset {dataset_id!r}: {path}: episode_quality must be a list of labels, got {qualities!r:.80}")
    return metadata


def load_episodes(
    dataset_id: str,
    root: str | os.PathLike | None = None,
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
) -> tuple[list[Episode], dict[str, Any]]:
    """All episodes of a dataset, validated; optionally against an env's spaces."""
    ds = load_dataset(dataset_id, root)
    metadata = read_metadata(dataset_id, root)
    for label, expected, stored in (
        ("observation space", observation_space, ds.observation_space),
        ("action space", action_space, ds.action_space),
    ):
        if expected is not None and expected != stored:
            raise ValueError(f"dataset {dataset_id!r}: {label} {stored} does not match the env's {expected}")
    qualities = metadata.get("episode_quality", [])
    episodes = []
    try:
        episode_iter = list(ds.iterate_episodes())
    except Exception as exc:  # missing or malformed HDF5 fields
        raise ValueError(f"dataset {dataset_id!r}: cannot read episodes: {exc}") from exc
    for k, ep in enumerate(episode_iter):
        infos = ep.infos if isinstance(ep.infos, dict) else {}
        n = len(ep.actions)
        fields = {"rewards": ep.rewards, "terminations": ep.terminations, "truncations": ep.truncations}
        for name, values in fields.items():
            if values is None or len(values) != n:
                raise ValueError(f"dataset {dataset_id!r} episode {ep.id}: field {name!r} missing or not {n} long")
        if not np.all(np.isfinite(ep.actions)) or not np.all(np.isfinite(ep.rewards)):
            raise ValueError(f"dataset {dataset_id!r} episode {ep.id}: non-finite actions or rewards")
        observations = _dense(ep.observations)
        for key, array in (observations.items() if isinstance(observations, dict) else [("", observations)]):
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):  # a NaN would poison every critic target
                where = f" ({key!r})" if key else ""
                raise ValueError(f"dataset {dataset_id!r} episode {ep.id}: non-finite observations{where}")
        successes = np.asarray(infos.get("is_success", np.zeros(n, dtype=bool)), dtype=bool)
        episodes.append(
            Episode(
                observations=observations,
                actions=np.asarray(ep.actions, dtype=np.float32),
                rewards=np.asarray(ep.rewards, dtype=np.float64),
                terminations=np.asarray(ep.terminations, dtype=bool),
                truncations=np.asarray(ep.truncations, dtype=bool),
                successes=successes,
                seed=None,
                quality=qualities[k] if k < len(qualities) else "unknown",
            )
        )
    return episodes, metadata


def _dense(obs: Any) -> Any:
    """Observations as dense arrays. Minari's HDF5 storage writes every uint8 image as JPEG but
    decodes only images of at least 32x32 on reading (`minari_storage.is_image_space`); smaller
    ones come back as an object array of JPEG byte strings, decoded here the way Minari decodes
    the large ones. (So image observations in these datasets are JPEG-compressed, lossy.)"""
    if isinstance(obs, dict):
        return {k: _dense(v) for k, v in obs.items()}
    array = np.asarray(obs)
    if array.dtype != object:
        return array
    import io

    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(np.asarray(frame, np.uint8).tobytes())), dtype=np.uint8)
                     for frame in array])


def _take(obs: Any, index: np.ndarray) -> Any:
    if isinstance(obs, dict):
        return {k: _take(v, index) for k, v in obs.items()}
    return np.asarray(obs)[index]


def _concat(parts: list[Any]) -> Any:
    if isinstance(parts[0], dict):
        return {k: _concat([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def load_transitions(
    dataset_id: str,
    *,
    root: str | os.PathLike | None = None,
    discount: float = 0.99,
    failure_reward: float | None = None,
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
) -> Transitions:
    """Flatten a dataset into transitions with Monte-Carlo returns-to-go (see `monte_carlo_returns`)."""
    episodes, metadata = load_episodes(dataset_id, root, observation_space, action_space)
    obs, next_obs, rets, index = [], [], [], []
    for k, ep in enumerate(episodes):
        n = len(ep)
        obs.append(_take(ep.observations, np.arange(n)))
        next_obs.append(_take(ep.observations, np.arange(1, n + 1)))
        rets.append(monte_carlo_returns(ep.rewards, ep.terminations, discount, failure_reward))
        index.append(np.full(n, k))
    return Transitions(
        observations=_concat(obs),
        actions=np.concatenate([ep.actions for ep in episodes]),
        rewards=np.concatenate([ep.rewards for ep in episodes]).astype(np.float32),
        next_observations=_concat(next_obs),
        terminals=np.concatenate([ep.terminations for ep in episodes]),
        timeouts=np.concatenate([ep.truncations for ep in episodes]),
        mc_returns=np.concatenate(rets).astype(np.float32),
        successes=np.concatenate([ep.successes for ep in episodes]),
        episode_index=np.concatenate(index),
        metadata=metadata,
    )
