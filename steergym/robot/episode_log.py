"""The robot server's episode log: one append-only msgpack journal per episode, crash-safe.

Each record is written and flushed to the OS as it happens (``fsync=True`` also forces it to disk
each time, surviving a power cut at some cost per step), so a killed server loses nothing already
executed; a reader stops cleanly at a half-written last record. Records, in order:

    {"kind": "header", "format", "task", "backend", "options", "instruction", "safety", "seed", "t"}
    {"kind": "reset", "obs", "info", "t"}
    {"kind": "step", "action_requested", "action_executed", "safety", "obs", "reward", "terminated",
     "truncated", "is_success", "timing": {"exec_s", "rate_wait_s"}, "fault", "t"}   (one per step)
    {"kind": "end", "reason", "t"}            reason: "done", "reset", "bye", "client_lost", "estop", "fault",
                                              "preempted", "reconnect", "server_stop"

`export_logs` turns a folder of journals into a Minari dataset in the project's format
(`steergym.data.write_dataset`), so robot episodes feed the same loaders and trainers as sim data.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from steergym.data.dataset import Episode, write_dataset
from steergym.robot import protocol

LOG_FORMAT = "steergym-robot-log-v1"
LOG_SUFFIX = ".msgpack"


class EpisodeLog:
    """Writer of one episode's journal at `path` (created; an existing file is an error)."""

    def __init__(self, path: str | os.PathLike, header: dict[str, Any], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "xb")  # noqa: SIM115 - closed in close()
        self._fsync = fsync
        self.steps = 0
        self.closed = False
        self._write({"kind": "header", "format": LOG_FORMAT, **header})

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(protocol.encode({**record, "t": time.time()}))
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    def reset(self, obs: Any, info: dict[str, Any]) -> None:
        self._write({"kind": "reset", "obs": obs, "info": plain_info(info)})

    def step(self, **record: Any) -> None:
        self.steps += 1
        self._write({"kind": "step", **record})

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self._write({"kind": "end", "reason": reason})
        self._file.close()
        self.closed = True


def plain_info(info: dict[str, Any]) -> dict[str, Any]:
    """An info dict reduced to what msgpack carries (numbers, strings, arrays, lists, dicts)."""
    out = {}
    for key, value in info.items():
        if isinstance(value, (bool, int, float, str, np.ndarray, np.generic, type(None))):
            out[str(key)] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (bool, int, float, str)) for v in value):
            out[str(key)] = list(value)
        elif isinstance(value, dict):
            out[str(key)] = plain_info(value)
    return out


def read_episode_log(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a journal: {"header", "reset", "steps": [...], "end" (or None), "complete": bool}.

    A file cut short by a crash yields every complete record and ``complete=False``; a file that is
    not a steergym robot log raises ValueError naming it.
    """
    path = Path(path)
    unpacker = protocol.stream_unpacker()
    unpacker.feed(path.read_bytes())
    records = []
    try:
        for record in unpacker:
            records.append(record)
    except Exception as exc:  # noqa: BLE001 - garbage after a crash ends the readable part
        if not records:
            raise ValueError(f"{path}: not a steergym robot episode log ({exc})") from None
    if not records or not isinstance(records[0], dict) or records[0].get("format") != LOG_FORMAT:
        raise ValueError(f"{path}: not a steergym robot episode log (expected a {LOG_FORMAT!r} header)")
    out: dict[str, Any] = {"header": records[0], "reset": None, "steps": [], "end": None}
    for record in records[1:]:
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind == "reset":
            out["reset"] = record
        elif kind == "step":
            out["steps"].append(record)
        elif kind == "end":
            out["end"] = record
    out["complete"] = out["end"] is not None
    return out


def log_files(folder: str | os.PathLike) -> list[Path]:
    """The journals in `folder`, oldest first (names sort by start time)."""
    return sorted(Path(folder).glob(f"episode_*{LOG_SUFFIX}"))


def log_to_episode(log: dict[str, Any]):
    """A parsed journal as a `steergym.data.Episode` (None if it has no steps).

    Actions are the *executed* (safety-filtered) ones; an episode cut short by a crash or a
    client loss ends truncated.
    """
    steps = log["steps"]
    if log["reset"] is None or not steps:
        return None
    obs = [log["reset"]["obs"]] + [s["obs"] for s in steps]
    if isinstance(obs[0], dict):
        observations = {k: np.stack([o[k] for o in obs]) for k in obs[0]}
    else:
        observations = np.stack(obs)
    truncations = np.array([bool(s["truncated"]) for s in steps])
    terminations = np.array([bool(s["terminated"]) for s in steps])
    if not (terminations[-1] or truncations[-1]):
        truncations[-1] = True  # ended by reset, client loss, e-stop or a crash
    return Episode(
        observations=observations,
        actions=np.stack([np.asarray(s["action_executed"], np.float32) for s in steps]),
        rewards=np.array([float(s["reward"]) for s in steps]),
        terminations=terminations,
        truncations=truncations,
        successes=np.array([bool(s["is_success"]) for s in steps]),
        seed=log["header"].get("seed"),
        quality=f"robot:{log['header'].get('backend', '?')}",
    )


def export_logs(folder: str | os.PathLike, dataset_id: str, *, root: str | os.PathLike | None = None,
                overwrite: bool = False) -> Path:
    """Write every episode logged in `folder` as the Minari dataset `dataset_id`; returns its path.

    All journals must come from one task with one observation setup (else ValueError naming the
    two); the dataset's spaces are that simulated task's, which the robot link guarantees equal.
    """
    import gymnasium as gym

    files = log_files(folder)
    if not files:
        raise FileNotFoundError(f"no robot episode logs (episode_*{LOG_SUFFIX}) in {folder}")
    episodes, setup = [], None
    for path in files:
        log = read_episode_log(path)
        this = (log["header"]["task"], tuple(sorted(log["header"]["options"].items(), key=str)))
        if setup is None:
            setup = this
        elif this != setup:
            raise ValueError(f"{path}: logged with {this}, but earlier logs in {folder} used {setup}; "
                             "export them to separate datasets")
        episode = log_to_episode(log)
        if episode is not None:
            episodes.append(episode)
    task, options = setup[0], dict(setup[1])
    options["image_size"] = tuple(options.get("image_size", (128, 128)))
    env = gym.make(task, **options)
    try:
        return write_dataset(dataset_id, episodes, env, root=root, overwrite=overwrite,
                             extra_metadata={"algorithm": "steergym.robot", "source_logs": [p.name for p in files]})
    finally:
        env.close()
