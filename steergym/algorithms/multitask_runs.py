"""Run folders for the multi-task trainers: `steergym train ptr` and `steergym train vgps`.

    run_vgps(["vgps/spoon-v0", "vgps/carrot-v0"], "runs/vgps", steps=10_000)
    run_ptr(["prior/spoon-v0", "prior/stack-v0"], "demos/carrot-v0", "runs/ptr", pretrain_steps=20_000)

A run folder holds run.json (settings, data, evaluations), offline.csv (training metrics),
checkpoints/offline (the agent, saved every `save_every` offline steps, so a killed run resumes
where it stopped with `resume=True`), checkpoints/latest and the online logs of `CalQL.learn` (PTR's
optional online phase), and the result: value_function/ (V-GPS) or agent/ (PTR).
Each dataset's task is the env id in its metadata.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from steergym.algorithms.calql import CalQL, CalQLConfig
from steergym.algorithms.ptr import PTR, PTRConfig
from steergym.algorithms.run_files import append_csv, keep_csv_rows, write_json
from steergym.algorithms.vgps import ValueFunction, _task_spaces, vgps_calql_config
from steergym.data import Transitions, load_transitions
from steergym.data.multitask import concat_transitions
from steergym.rollout import evaluate

OFFLINE = Path("checkpoints") / "offline"  # the PTR agent during the offline phases
LATEST = Path("checkpoints") / "latest"  # CalQL.learn's online checkpoint


def load_task_datasets(dataset_ids: Sequence[str], root: str | os.PathLike | None = None,
                       max_episodes: int | None = None) -> dict[str, Transitions]:
    """{task: transitions} of datasets (several datasets of one task are concatenated); with
    `max_episodes`, only each dataset's first episodes (PTR's "10 demos")."""
    data: dict[str, list[Transitions]] = {}
    for dataset_id in dataset_ids:
        transitions = load_transitions(dataset_id, root=root)
        task = transitions.metadata.get("env_id")
        if not task:
            raise ValueError(f"dataset {dataset_id!r} names no env id in its metadata; its task is unknown")
        if max_episodes is not None:
            transitions = first_episodes(transitions, max_episodes)
        data.setdefault(task, []).append(transitions)
    return {task: parts[0] if len(parts) == 1 else concat_transitions(parts) for task, parts in data.items()}


def first_episodes(transitions: Transitions, k: int) -> Transitions:
    """The rows of the first `k` episodes (in recording order)."""
    if k < 1:
        raise ValueError(f"first_episodes: k must be >= 1, got {k}")
    order = list(dict.fromkeys(transitions.episode_index.tolist()))[:k]
    keep = np.isin(transitions.episode_index, order)
    take = lambda a: {key: v[keep] for key, v in a.items()} if isinstance(a, dict) else a[keep]
    fields = {f.name: getattr(transitions, f.name) for f in dataclasses.fields(transitions)}
    rows = {name: take(value) for name, value in fields.items()
            if name not in ("metadata", "sample_group", "group_ratios")}
    return dataclasses.replace(transitions, **rows)


def run_vgps(dataset_ids: Sequence[str], out: str | os.PathLike, steps: int = 10_000,
             config: CalQLConfig | None = None, seed: int = 0, save_every: int = 2_000,
             root: str | os.PathLike | None = None, resume: bool = False, progress: bool = True) -> ValueFunction:
    """Train (or resume) a V-GPS value function on mixed-quality datasets; returns it (also saved
    in out/value_function).

    Args:
        dataset_ids: dataset ids, one task each (sparse success rewards).
        out: run folder: run.json, offline.csv, checkpoints/offline and value_function/ (for
            steergym eval --steer vgps --critic DIR/value_function).
        steps: offline gradient steps in all.
        config: Cal-QL settings (default: `vgps_calql_config()`).
        seed: seeds the networks and the sampling.
        save_every: offline steps between checkpoints.
        root: dataset folder (default: $MINARI_DATASETS_PATH).
        resume: continue the run in `out` from checkpoints/offline.
        progress: show a progress bar.
    """
    out = Path(out)
    data = load_task_datasets(dataset_ids, root)
    tasks = tuple(data)
    ptr = _start(out, resume, lambda: PTR(*_task_spaces(tasks[0]), PTRConfig(tasks, calql=config or vgps_calql_config()),
                                         seed=seed), tasks)
    write_json(out / "run.json", {"trainer": "vgps", "datasets": list(dataset_ids), "tasks": list(tasks),
                                  "rows": {t: len(d) for t, d in data.items()}, "steps": steps, "seed": seed,
                                  "config": ptr.agent.config.to_dict()})
    _offline_phase(ptr, out, steps, save_every, progress, lambda n: ptr.pretrain(data, n, progress=progress))
    value = ValueFunction(ptr)
    value.save(out / "value_function")
    return value


def run_ptr(prior_ids: Sequence[str], target_id: str, out: str | os.PathLike, *, pretrain_steps: int = 20_000,
            adapt_steps: int = 10_000, env_steps: int = 0, demos: int | None = 10, calql: CalQLConfig | None = None,
            target_ratio: float = 0.1, seed: int = 0, eval_episodes: int = 20, eval_every: int = 2_000, save_every: int = 2_000,
            root: str | os.PathLike | None = None, resume: bool = False, progress: bool = True) -> PTR:
    """PTR end to end: multi-task pre-training on the prior datasets, adaptation to the target
    dataset's first `demos` episodes (mixed in at `config.target_ratio`), evaluation on the target
    task, then `env_steps` of online fine-tuning. Task order: the prior tasks, then the target.
    `calql` defaults to `ptr_calql_config()`. Returns the agent (saved in out/agent).

    Args:
        prior_ids: prior dataset ids, one task each (the env id in their metadata).
        target_id: dataset id of the new task's demos.
        out: run folder: run.json, offline.csv, checkpoints/offline, checkpoints/latest and agent/.
        pretrain_steps: multi-task offline steps on the prior datasets.
        adapt_steps: offline steps on the prior data plus the target demos.
        env_steps: online fine-tuning env steps on the target task (0: none).
        demos: target episodes used (None: all).
        calql: Cal-QL settings (default: `ptr_calql_config()`).
        target_ratio: share of target rows per adaptation batch.
        seed: seeds the networks and the sampling.
        eval_episodes: episodes of each evaluation on the target task.
        eval_every: online env steps between evaluations.
        save_every: offline steps between checkpoints.
        root: dataset folder (default: $MINARI_DATASETS_PATH).
        resume: continue the run in `out` from its last checkpoint.
        progress: show progress bars.
    """

    out = Path(out)
    prior = load_task_datasets(prior_ids, root)
    target_data = load_task_datasets([target_id], root, max_episodes=demos)
    (target, demo_data), = target_data.items()
    tasks = tuple(dict.fromkeys([*prior, target]))
    config = PTRConfig(tasks, target_ratio=target_ratio, **({"calql": calql} if calql is not None else {}))
    ptr = _start(out, resume, lambda: PTR(*_task_spaces(target), config, seed=seed), tasks)
    run = {"trainer": "ptr", "prior": list(prior_ids), "target": target_id, "target_task": target,
           "tasks": list(tasks), "demo_episodes": len(np.unique(demo_data.episode_index)),
           "rows": {t: len(d) for t, d in prior.items()}, "pretrain_steps": pretrain_steps,
           "adapt_steps": adapt_steps, "env_steps": env_steps, "seed": seed,
           "target_ratio": ptr.config.target_ratio, "config": ptr.agent.config.to_dict()}
    write_json(out / "run.json", run)
    _offline_phase(ptr, out, pretrain_steps, save_every, progress, lambda n: ptr.pretrain(prior, n, progress=progress))
    ptr.prior = concat_transitions(ptr.tag(prior))
    _offline_phase(ptr, out, pretrain_steps + adapt_steps, save_every, progress,
                   lambda n: ptr.adapt(target, demo_data, n, progress=progress))
    if ptr.offline is None:  # resumed after the adaptation: rebuild its mixture for the online phase
        ptr.adapt(target, demo_data, 0, progress=False)
    result = evaluate(target, ptr.policy(target), episodes=eval_episodes, seed=0, progress=False)
    run["offline_eval"] = {"success_rate": result.success_rate, "episodes": eval_episodes,
                           "ci95": [result.ci_low, result.ci_high]}
    write_json(out / "run.json", run)
    if env_steps > 0:
        if resume and (out / LATEST / "config.json").is_file():
            ptr.agent = CalQL.load(out / LATEST)  # the online phase had started: continue it
        done = ptr.agent.online.num_timesteps
        remaining = max(0, env_steps - done)  # online steps still to take
        env, eval_env = ptr.wrap(gym.make(target)), ptr.wrap(gym.make(target))
        try:  # a resumed run continues to env_steps in all
            if remaining > 0:
                ptr.learn(env, remaining, eval_env=eval_env, eval_every=eval_every, eval_episodes=eval_episodes,
                          out=out, progress=progress, reset_num_timesteps=False)
        finally:
            env.close()
            eval_env.close()
        run["online_curve"] = ptr.agent.curve
        write_json(out / "run.json", run)
    ptr.save(out / "agent")
    return ptr


def _start(out: Path, resume: bool, build: Any, tasks: tuple[str, ...]) -> PTR:
    checkpoint = out / OFFLINE
    if resume:
        if not (checkpoint / "config.json").is_file():
            raise ValueError(f"--resume: {checkpoint} holds no checkpoint")
        ptr = PTR.load(checkpoint, build().base_observation_space)
        if ptr.task_ids != tasks:
            raise ValueError(f"--resume: the run in {out} was trained on tasks {list(ptr.task_ids)}, "
                             f"these datasets give {list(tasks)}")
        keep_csv_rows(out / "offline.csv", lambda row: int(row["step"]) <= ptr.agent.offline_steps)
        return ptr
    if checkpoint.exists() or (out / "run.json").exists():
        raise ValueError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    return build()


def _offline_phase(ptr: PTR, out: Path, until: int, save_every: int, progress: bool, train: Any) -> None:
    """Offline steps up to `until` in all, in slices of `save_every`, logging and checkpointing each."""
    agent = ptr.agent
    while agent.offline_steps < until:
        before = len(agent.history)
        train(min(save_every, until - agent.offline_steps))
        for row in agent.history[before:]:
            append_csv(out / "offline.csv", row)
        ptr.save(out / OFFLINE)
