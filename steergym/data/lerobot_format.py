"""steergym datasets to LeRobotDataset (v3.0, LeRobot 0.4.x) and back, through LeRobot's own API.

`export_to_lerobot` turns a local steergym/Minari dataset into a LeRobotDataset folder that
`lerobot-train` reads offline; `import_from_lerobot` turns a LeRobotDataset folder (one exported
here, or any other whose features fit a steergym env) into a steergym dataset for `load_episodes`,
`load_transitions` and the Cal-QL / PTR / V-GPS trainers. Needs the `lerobot` extra
(``pip install -e ".[lerobot]"``); `import steergym` never imports lerobot.

One LeRobot frame per env step t = 0..T-1 of an episode:

    steergym episode                           LeRobot feature                  dtype, shape
    observations[t]  (Box vector)              observation.state                float32 (D,)
    observations[t]["state"]                   observation.state                float32 (D,)
      ... with proprio_dim=P                   observation.state                float32 (P,)
                                               observation.environment_state    float32 (D-P,)
    observations[t][key]  (uint8 image)        observation.images.<key>         image (H, W, 3)
    observations[t]  (uint8 image, no dict)    observation.images.pixels        image (H, W, 3)
    observations[t][key]  (other vector)       observation.<key>                (d,)
    actions[t]                                 action                           float32 (A,)
    rewards[t]                                 next.reward                      float32
    terminations[t]                            next.done                        bool
    truncations[t]                             next.truncated                   bool
    successes[t]  (info["is_success"])         next.success                     bool
    the task's language instruction            task (per-frame string)
    observations[T]  (the final one)           meta/steergym_final_observations.npz (not a frame)
    steergym.json, quality labels, seeds       meta/steergym.json

Images are stored as PNG images inside the parquet files (``use_videos=False``): lossless and with no
video encoder or decoder needed (no ffmpeg / torchcodec), at the price of larger files than LeRobot's
default AV1 videos. ACT and Diffusion Policy need an image or `observation.environment_state`
among their inputs: export a state task with ``proprio_dim=7`` (the WidowX proprio: tcp pose and
gripper) so the object state becomes the environment state.

Train a LeRobot policy on an export, offline (``--dataset.root`` is the folder written here):

    HF_HUB_OFFLINE=1 lerobot-train --dataset.repo_id=steergym/lift_expert-v0 \\
        --dataset.root=lerobot/lift_expert-v0 --policy.type=diffusion --policy.device=cpu \\
        --policy.push_to_hub=false --output_dir=outputs/diffusion_lift

Import reads image and video features (videos decoded with PyAV) and fills in what a foreign
LeRobot dataset lacks: rewards 0 without `next.reward`, no termination without `next.done` (then the
last frame of each episode is a truncation), no success without `next.success`, and, without the
steergym sidecar, the final observation of each episode repeats its last frame's observation.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from steergym.data.dataset import (
    Episode,
    dataset_exists,
    load_dataset,
    load_episodes,
    local_dataset_ids,
    write_dataset,
)
from steergym.data.dataset import datasets_root as _datasets_root

INSTALL_HINT = 'pip install -e ".[lerobot]"'
SIDECAR = "meta/steergym.json"
FINAL_OBSERVATIONS = "meta/steergym_final_observations.npz"
SIDECAR_FORMAT = "steergym-lerobot-v1"
ACTION, REWARD, DONE, TRUNCATED, SUCCESS = "action", "next.reward", "next.done", "next.truncated", "next.success"
STATE, ENV_STATE = "observation.state", "observation.environment_state"
IMAGES_PREFIX = "observation.images."  # + the camera (the Dict key; "pixels" for a bare image)
SCALARS = {REWARD: "float32", DONE: "bool", TRUNCATED: "bool", SUCCESS: "bool"}
IMAGE_NAMES = ["height", "width", "channels"]
_SOURCE = re.compile(r"^(?P<key>[A-Za-z_][\w.]*)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")
# Keys of steergym.json that write_dataset computes itself (from the env and the episodes).
_COMPUTED_METADATA = ("format", "env_id", "instruction", "state_names", "episode_quality", "episode_seeds")


def _lerobot_dataset_class():
    """LeRobot's LeRobotDataset class, imported on first use; ImportError with the install line."""
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except ImportError as exc:
        raise ImportError(f"LeRobot is not installed ({exc}); the LeRobot dataset format needs the "
                          f"lerobot extra: {INSTALL_HINT}") from exc
    return LeRobotDataset


@dataclass(frozen=True)
class Source:
    """Where a feature is read from: `key` ("obs" for a flat observation, else a Dict key) and an
    optional slice [start:stop] of its last axis. Parsed from an obs_map entry such as "obs[0:7]"."""

    key: str
    start: int | None = None
    stop: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Source":
        match = _SOURCE.match(str(text).strip())
        if not match:
            raise ValueError(f"obs_map: {text!r} is not a source: use 'obs', a Dict key, or either with a slice "
                             "like 'obs[0:7]'")
        start, stop = match["start"], match["stop"]
        return cls(match["key"], int(start) if start else None, int(stop) if stop else None)

    def space(self, observation_space: spaces.Space) -> spaces.Box:
        """The sub-space this source reads (sliced on the last axis); ValueError if it is not there."""
        if isinstance(observation_space, spaces.Dict):
            if self.key not in observation_space.spaces:
                raise ValueError(f"obs_map: the env's Dict observation has no key {self.key!r} "
                                 f"(it has {list(observation_space.spaces)})")
            space = observation_space[self.key]
        elif self.key != "obs":
            raise ValueError(f"obs_map: the env's observation is a {type(observation_space).__name__}, not a "
                             f"Dict; name it 'obs', not {self.key!r}")
        else:
            space = observation_space
        if not isinstance(space, spaces.Box):
            raise ValueError(f"obs_map: source {self.key!r} is a {type(space).__name__}, not a Box")
        if self.start is None and self.stop is None:
            return space
        if len(space.shape) != 1:
            raise ValueError(f"obs_map: only vector sources can be sliced; {self.key!r} has shape {space.shape}")
        index = slice(self.start, self.stop)
        low, high = space.low[index], space.high[index]
        if low.size == 0:
            raise ValueError(f"obs_map: {self} selects nothing of {self.key!r}, shape {space.shape}")
        return spaces.Box(low, high, low.shape, space.dtype)

    def take(self, obs: Any) -> np.ndarray:
        """The source's values from an observation, leading axes kept: (..., D) sliced to (..., stop - start)."""
        value = np.asarray(obs if self.key == "obs" and not isinstance(obs, Mapping) else obs[self.key])
        return value if self.start is None and self.stop is None else value[..., self.start:self.stop]

    def __str__(self) -> str:
        if self.start is None and self.stop is None:
            return self.key
        return f"{self.key}[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"


@dataclass(frozen=True)
class _Slot:
    """One LeRobot observation feature: its name and where it lives in a steergym observation."""

    source: Source
    feature: str  # LeRobot feature name
    image: bool  # uint8 (H, W, 3); else a float vector (D,)


def _is_image(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[-1] == 3


def _vector_slots(key: str, feature: str, dim: int, proprio_dim: int | None) -> list[_Slot]:
    if proprio_dim is None:
        return [_Slot(Source(key), feature, False)]
    if not (isinstance(proprio_dim, (int, np.integer)) and 0 < proprio_dim < dim):
        raise ValueError(f"proprio_dim={proprio_dim!r} must be a whole number in 1..{dim - 1} "
                         f"(the state vector has {dim} entries)")
    proprio_dim = int(proprio_dim)
    return [_Slot(Source(key, 0, proprio_dim), STATE, False), _Slot(Source(key, proprio_dim), ENV_STATE, False)]


def _observation_slots(space: spaces.Space, proprio_dim: int | None = None) -> list[_Slot]:
    """The LeRobot features of an observation space (see the module docstring's table)."""
    if _is_image(space):
        return [_Slot(Source("obs"), f"{IMAGES_PREFIX}pixels", True)]
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return _vector_slots("obs", STATE, space.shape[0], proprio_dim)
    if isinstance(space, spaces.Dict):
        slots: list[_Slot] = []
        for key, sub in space.spaces.items():
            if _is_image(sub):
                slots.append(_Slot(Source(key), f"{IMAGES_PREFIX}{key}", True))
            elif isinstance(sub, spaces.Box) and len(sub.shape) == 1:
                slots += (_vector_slots(key, STATE, sub.shape[0], proprio_dim) if key == "state"
                          else [_Slot(Source(key), f"observation.{key}", False)])
            else:
                raise ValueError(f"observation key {key!r} has space {sub}; only 1-D Box vectors and "
                                 "uint8 (H, W, 3) images map to LeRobot features")
        return slots
    raise ValueError(f"observation space {space} is not supported; only a 1-D Box vector, a uint8 "
                     "(H, W, 3) image or a Dict of those map to LeRobot features")


def _feature_spec(slot: _Slot, space: spaces.Space, state_names: list[str]) -> dict[str, Any]:
    source, sub = slot.source, slot.source.space(space)
    if slot.image:
        return {"dtype": "image", "shape": tuple(int(n) for n in sub.shape), "names": IMAGE_NAMES}
    dim, whole = sub.shape[0], Source(source.key).space(space).shape[0]
    is_state = not isinstance(space, spaces.Dict) or source.key == "state"
    names = state_names[source.start:source.stop] if is_state and len(state_names) == whole else None
    names = names or [f"{slot.feature.split('.')[-1]}_{i}" for i in range(dim)]
    return {"dtype": str(np.dtype(sub.dtype)), "shape": (dim,), "names": list(names)}


def _default_repo_id(dataset_id: str) -> str:
    """ "steergym/lift/mixed-v0" -> "steergym/lift_mixed-v0" (LeRobot ids are "owner/name")."""
    parts = dataset_id.strip("/").split("/")
    return f"{parts[0]}/{'_'.join(parts[1:])}" if len(parts) > 1 else f"steergym/{parts[0]}"


def _env_fps(env_id: str | None) -> int:
    """Control rate of `env_id` (steps per second), from its metadata["render_fps"]."""
    from steergym.registry import make_env

    if not env_id:
        raise ValueError("the dataset names no env id to take the fps from; pass fps=")
    env = make_env(env_id)
    try:
        fps = env.metadata.get("render_fps")
    finally:
        env.close()
    if not fps or fps <= 0 or abs(fps - round(fps)) > 1e-6:
        raise ValueError(f"{env_id}: metadata render_fps={fps!r} is not a whole positive rate; pass fps=")
    return round(fps)


def _check_out_root(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_root {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        is_lerobot = (out / "meta" / "info.json").is_file()
        if not overwrite:
            what = "a LeRobot dataset" if is_lerobot else "files"
            raise ValueError(f"out_root {out} already holds {what}; pass overwrite=True to replace a dataset")
        if not is_lerobot:
            raise ValueError(f"out_root {out} holds files but no LeRobot dataset (no meta/info.json); "
                             "refusing to replace it even with overwrite=True")


def _scalars_as_0d(dataset, keys) -> None:
    """LeRobot 0.4.4 validates scalar features as (1,) arrays but then hands each (1,) row to
    `datasets`, whose float()/bool() of a 1-element array fails on NumPy >= 2.4; 0-d entries are what
    its own index columns use and go through both (stats treat them like (T, 1))."""
    for key in keys:
        dataset.episode_buffer[key] = [np.asarray(v).reshape(()) for v in dataset.episode_buffer[key]]


def _replace_folder(built: Path, final: Path) -> None:
    """Move `built` to `final`, replacing what is there without a moment with neither."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        os.rename(built, final)
        return
    trash = final.parent / f".{final.name}.trash-{uuid.uuid4().hex}"
    os.rename(final, trash)
    os.rename(built, final)
    shutil.rmtree(trash)


def export_to_lerobot(
    dataset_id: str,
    out_root: str | os.PathLike,
    repo_id: str | None = None,
    *,
    datasets_root: str | os.PathLike | None = None,
    overwrite: bool = False,
    fps: int | None = None,
    proprio_dim: int | None = None,
) -> Path:
    """Write the steergym dataset `dataset_id` as a LeRobotDataset in the folder `out_root`.

    Args:
        dataset_id: a local steergym/Minari dataset ("namespace/name-vN") under `datasets_root`
            (default $MINARI_DATASETS_PATH or ~/.minari/datasets).
        out_root: the LeRobot dataset folder (what `--dataset.root` names); built beside it and
            renamed into place, so a failed export leaves nothing there.
        repo_id: LeRobot's "owner/name" label; default from the id ("steergym/lift/x-v0" ->
            "steergym/lift_x-v0"). Nothing is pushed or pulled.
        overwrite: replace a LeRobot dataset already at `out_root` (never other files).
        fps: frames per second; default the env's control rate (`metadata["render_fps"]`, 5 Hz for
            WidowX).
        proprio_dim: split the state vector into `observation.state` = its first `proprio_dim`
            entries and `observation.environment_state` = the rest (7 for WidowX).
    Returns the LeRobot dataset folder.
    """
    LeRobotDataset = _lerobot_dataset_class()
    base = _datasets_root(datasets_root)
    if not dataset_exists(dataset_id, base):
        raise ValueError(f"dataset_id {dataset_id!r} does not exist under {base}; local datasets: "
                         f"{local_dataset_ids(base)}")
    out = Path(out_root)
    _check_out_root(out, overwrite)
    minari_dataset = load_dataset(dataset_id, base)
    observation_space, action_space = minari_dataset.observation_space, minari_dataset.action_space
    episodes, metadata = load_episodes(dataset_id, base)
    if not (isinstance(action_space, spaces.Box) and len(action_space.shape) == 1):
        raise ValueError(f"dataset {dataset_id!r}: action space {action_space} is not a 1-D Box")
    env_spec = getattr(getattr(minari_dataset, "spec", None), "env_spec", None)
    env_id = metadata.get("env_id") or getattr(env_spec, "id", None)
    fps = _env_fps(env_id) if fps is None else fps
    if not (isinstance(fps, (int, np.integer)) and fps > 0):
        raise ValueError(f"fps={fps!r} must be a positive whole number of frames per second")
    slots = _observation_slots(observation_space, proprio_dim)
    if proprio_dim is not None and not any(s.feature == ENV_STATE for s in slots):
        raise ValueError(f"proprio_dim={proprio_dim!r}: dataset {dataset_id!r} has no state vector to split "
                         f"(observation space {observation_space})")
    state_names = list(metadata.get("state_names") or [])
    features = {s.feature: _feature_spec(s, observation_space, state_names) for s in slots}
    features[ACTION] = {"dtype": "float32", "shape": (int(action_space.shape[0]),),
                        "names": [f"action_{i}" for i in range(action_space.shape[0])]}
    features.update({key: {"dtype": dtype, "shape": (1,), "names": None} for key, dtype in SCALARS.items()})
    task = metadata.get("instruction") or env_id or dataset_id
    repo_id = repo_id or _default_repo_id(dataset_id)

    staging = out.parent / f".{out.name}.staging-{uuid.uuid4().hex}"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        lerobot = LeRobotDataset.create(repo_id, fps=int(fps), features=features, root=staging, use_videos=False)
        for ep in episodes:
            for t in range(len(ep)):
                frame: dict[str, Any] = {
                    s.feature: _take_step(ep.observations, t, s, features[s.feature]) for s in slots
                }
                frame[ACTION] = np.asarray(ep.actions[t], dtype=np.float32)
                frame[REWARD] = np.array([ep.rewards[t]], dtype=np.float32)
                frame[DONE] = np.array([ep.terminations[t]], dtype=bool)
                frame[TRUNCATED] = np.array([ep.truncations[t]], dtype=bool)
                frame[SUCCESS] = np.array([ep.successes[t]], dtype=bool)
                frame["task"] = task
                lerobot.add_frame(frame)
            _scalars_as_0d(lerobot, SCALARS)
            with warnings.catch_warnings():  # np.histogram of the bool columns' quantile stats
                warnings.filterwarnings("ignore", message="Converting input from bool", category=RuntimeWarning)
                lerobot.save_episode()
        lerobot.finalize()
        sidecar = {
            "format": SIDECAR_FORMAT,
            "source_dataset_id": dataset_id,
            "env_id": env_id,
            "env_kwargs": metadata.get("env_kwargs", {}),
            "task": task,
            "proprio_dim": proprio_dim,
            "observation_features": [[s.source.key if isinstance(observation_space, spaces.Dict) else None,
                                      s.feature] for s in slots],
            "episode_lengths": [len(ep) for ep in episodes],
            "source_metadata": metadata,
        }
        (staging / SIDECAR).write_text(json.dumps(sidecar, indent=2))
        finals = {s.feature: np.stack([_take_step(ep.observations, len(ep), s, features[s.feature])
                                       for ep in episodes]) for s in slots}
        np.savez_compressed(staging / FINAL_OBSERVATIONS, **finals)
        _replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _take_step(observations: Any, t: int, slot: _Slot, spec: dict[str, Any]) -> np.ndarray:
    """Observation `t` of an episode's (T+1, ...) observations as the LeRobot feature of `slot`."""
    step = {k: v[t] for k, v in observations.items()} if isinstance(observations, dict) else observations[t]
    value = slot.source.take(step)
    return value.astype(np.uint8 if slot.image else np.dtype(spec["dtype"]), copy=False)


def _read_sidecar(root: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The steergym sidecar of an exported dataset: ({} , {}) for a foreign LeRobot dataset."""
    path = root / SIDECAR
    if not path.is_file():
        return {}, {}
    try:
        sidecar = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{path}: not a {SIDECAR_FORMAT} sidecar")
    finals: dict[str, np.ndarray] = {}
    if (root / FINAL_OBSERVATIONS).is_file():
        with np.load(root / FINAL_OBSERVATIONS, allow_pickle=False) as npz:
            finals = {key: npz[key] for key in npz.files}
    return sidecar, finals


def _episode_runs(episode_index: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) rows of each run of one episode index, in order."""
    if len(episode_index) == 0:
        return []
    cuts = np.flatnonzero(np.diff(episode_index)) + 1
    bounds = [0, *cuts.tolist(), len(episode_index)]
    return list(itertools.pairwise(bounds))


def import_from_lerobot(
    lerobot_root: str | os.PathLike,
    dataset_id: str,
    *,
    repo_id: str | None = None,
    datasets_root: str | os.PathLike | None = None,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Write the LeRobotDataset in the folder `lerobot_root` as the steergym dataset `dataset_id`.

    Args:
        lerobot_root: a local LeRobot v3.0 dataset folder (meta/info.json, data/...); read with
            `LeRobotDataset(repo_id, root=lerobot_root)`, never from the hub.
        dataset_id: the steergym/Minari id to write ("namespace/name-vN") under `datasets_root`.
        env_id, env_kwargs: the steergym env the data belongs to (its spaces go into the dataset);
            default what an export recorded in meta/steergym.json.
        overwrite: replace an existing steergym dataset of that id.
    Observations must fit the env's observation space (the table in the module docstring, read
    backwards; `observation.state` + `observation.environment_state` are joined when their sizes
    add up to the state vector's), and `action` its action space.
    Returns `dataset_id`.
    """
    from steergym.registry import make_env

    root = Path(lerobot_root)
    if not (root / "meta" / "info.json").is_file():
        raise ValueError(f"lerobot_root {root} holds no LeRobot dataset (no meta/info.json)")
    if not any((root / "data").glob("**/*.parquet")):  # else LeRobotDataset would try the hub
        raise ValueError(f"lerobot_root {root} holds no data files (data/**/*.parquet)")
    target = _datasets_root(datasets_root) / dataset_id
    if target.exists() and not overwrite:
        raise FileExistsError(f"dataset {dataset_id!r} already exists at {target}; pass overwrite=True")
    sidecar, finals = _read_sidecar(root)
    LeRobotDataset = _lerobot_dataset_class()
    # PyAV (a LeRobot dependency) decodes video features; torchcodec, the default, needs system FFmpeg libraries.
    lerobot = LeRobotDataset(repo_id or f"local/{root.name}", root=root, video_backend="pyav")
    features = lerobot.meta.features
    if ACTION not in features:
        raise ValueError(f"LeRobot dataset at {root} has no {ACTION!r} feature; features: {sorted(features)}")
    env_id = env_id or sidecar.get("env_id")
    if not env_id:
        raise ValueError(f"LeRobot dataset at {root} names no steergym env; pass env_id=")
    env_kwargs = dict(sidecar.get("env_kwargs") or {}) if env_kwargs is None else dict(env_kwargs)
    env = make_env(env_id, **env_kwargs)
    try:
        action_shape = tuple(features[ACTION]["shape"])
        if action_shape != env.action_space.shape:
            raise ValueError(f"LeRobot feature {ACTION!r} has shape {action_shape} but {env_id}'s action space "
                             f"is {env.action_space}")
        slots = _import_slots(env.observation_space, features, sidecar, env_id)
        episodes = _read_episodes(lerobot, slots, env.observation_space, sidecar, finals)
        source = dict(sidecar.get("source_metadata") or {})
        extra = {k: v for k, v in source.items() if k not in _COMPUTED_METADATA}
        extra.update({"env_kwargs": env_kwargs, "lerobot_source": {
            "root": str(root), "repo_id": lerobot.repo_id, "fps": int(lerobot.fps),
            "tasks": [str(t) for t in lerobot.meta.tasks.index]}})
        write_dataset(dataset_id, episodes, env, root=datasets_root, extra_metadata=extra, overwrite=overwrite,
                      description=f"{env_id}: imported from the LeRobot dataset at {root}")
    finally:
        env.close()
    return dataset_id


def _import_slots(space: spaces.Space, features: dict[str, dict], sidecar: dict[str, Any],
                  env_id: str) -> list[_Slot]:
    """The slots that rebuild `space` from the dataset's features; ValueError naming what is missing."""
    proprio_dim = sidecar.get("proprio_dim")
    if proprio_dim is None and STATE in features and ENV_STATE in features:
        proprio_dim = int(features[STATE]["shape"][0])
    slots = _observation_slots(space, None)
    state_dim = None
    for s in slots:
        if s.feature == STATE:
            state_dim = s.source.space(space).shape[0]
    if (proprio_dim is not None and state_dim is not None and ENV_STATE in features
            and proprio_dim + int(features[ENV_STATE]["shape"][0]) == state_dim):
        slots = _observation_slots(space, proprio_dim)
    images = [name for name, ft in features.items() if ft["dtype"] in ("image", "video")]
    resolved = []
    for s in slots:
        feature = s.feature
        if s.image and not isinstance(space, spaces.Dict) and feature not in features and len(images) == 1:
            feature = images[0]  # a bare-image env and a dataset with one camera of another name
        if feature not in features:
            raise ValueError(f"{env_id}'s observation needs the LeRobot feature {feature!r}, which the dataset "
                             f"lacks; features: {sorted(features)}")
        expected = tuple(s.source.space(space).shape)
        got = tuple(features[feature]["shape"])
        if got != expected and not (s.image and got == (expected[2], expected[0], expected[1])):
            raise ValueError(f"LeRobot feature {feature!r} has shape {got} but {env_id}'s observation needs "
                             f"{expected}")
        resolved.append(_Slot(s.source, feature, s.image))
    return resolved


def _read_episodes(lerobot, slots: list[_Slot], space: spaces.Space, sidecar: dict[str, Any],
                   finals: dict[str, np.ndarray]) -> list[Episode]:
    table = lerobot.hf_dataset.with_format("numpy")
    videos = set(lerobot.meta.video_keys)
    columns = set(table.column_names)
    runs = _episode_runs(np.asarray(table.select_columns(["episode_index"])[:]["episode_index"]))
    lengths = [stop - start for start, stop in runs]
    from_sidecar = sidecar.get("episode_lengths") == lengths and all(s.feature in finals for s in slots)
    if sidecar and not from_sidecar:
        warnings.warn("the LeRobot dataset's episodes differ from those its steergym sidecar recorded (was it "
                      "edited?); final observations repeat each episode's last one", stacklevel=3)
    source = sidecar.get("source_metadata") or {}
    qualities = source.get("episode_quality") if from_sidecar else None
    seeds = source.get("episode_seeds") if from_sidecar else None
    episodes = []
    for k, (start, stop) in enumerate(runs):
        rows = table[start:stop]
        n = stop - start
        decoded = [lerobot[i] for i in range(start, stop)] if any(s.feature in videos for s in slots) else []
        parts: dict[str, list[np.ndarray]] = {}
        for s in slots:
            if s.feature in videos:  # (C, H, W) float in [0, 1] per frame, decoded by LeRobot
                values = np.stack([_video_frame(item[s.feature]) for item in decoded])
            else:
                values = np.asarray(rows[s.feature])
            if s.image and values.shape[1:] != s.source.space(space).shape:  # channel-first in the dataset
                values = np.moveaxis(values, 1, -1)
            final = finals[s.feature][k] if from_sidecar else values[-1]
            parts.setdefault(s.source.key, []).append(np.concatenate([values, np.asarray(final)[None]]))
        observations: Any = {key: _as_space_dtype(np.concatenate(p, axis=-1) if len(p) > 1 else p[0], space, key)
                             for key, p in parts.items()}
        if not isinstance(space, spaces.Dict):
            observations = observations["obs"]
        terminations = _column(rows, columns, DONE, n, bool)
        truncations = _column(rows, columns, TRUNCATED, n, bool)
        if TRUNCATED not in columns and not terminations[-1]:
            truncations[-1] = True
        episodes.append(Episode(
            observations=observations,
            actions=np.asarray(rows[ACTION], dtype=np.float32).reshape(n, -1),
            rewards=_column(rows, columns, REWARD, n, np.float64),
            terminations=terminations,
            truncations=truncations,
            successes=_column(rows, columns, SUCCESS, n, bool),
            seed=seeds[k] if seeds and k < len(seeds) else None,
            quality=qualities[k] if qualities and k < len(qualities) else "unknown",
        ))
    return episodes


def _video_frame(frame) -> np.ndarray:
    """A decoded video frame, a (C, H, W) float tensor in [0, 1], as (H, W, C) uint8."""
    return np.clip(np.rint(np.asarray(frame, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def _as_space_dtype(values: np.ndarray, space: spaces.Space, key: str) -> np.ndarray:
    return values.astype(Source(key).space(space).dtype, copy=False)


def _column(rows: dict[str, Any], columns: set[str], name: str, n: int, dtype) -> np.ndarray:
    if name not in columns:
        return np.zeros(n, dtype=dtype)
    return np.asarray(rows[name]).reshape(n).astype(dtype)


__all__ = ["export_to_lerobot", "import_from_lerobot"]
