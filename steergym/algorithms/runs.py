"""Whole training runs into a run folder, as `steergym train` does them, callable from Python.

    run_bc(["me/lift/expert-v0"], "runs/lift-bc", config=BCConfig(steps=10_000))
    run_steering("dsrl", out="runs/dsrl", policy="widowx-carrot-diffusion", env_steps=50_000)
    run_calql("lift/mixed-v0", "runs/lift-calql", pretrain_steps=10_000, env_steps=10_000)
    run_chunk_trainer("ogpo", out="runs/lift-ogpo", policy="widowx-lift-flow", env_steps=200_000)
    # PTR and V-GPS: steergym.algorithms.multitask_runs.run_ptr / run_vgps

Each resolves names (shipped policies, dataset ids, the task a dataset or policy belongs to), builds
or resumes the trainer (`resume=True` continues the run in `out` from its last checkpoint; without
it, a folder that holds a run is an error), trains to the budget in all and saves the result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym

from steergym.algorithms.bc import BCConfig, BCTrainer, train_bc
from steergym.algorithms.calql import CalQL, CalQLConfig
from steergym.algorithms.dsrl_na import DSRLNA, DSRLNAConfig
from steergym.algorithms.ogpo import OGPO, OGPOConfig
from steergym.algorithms.run_files import append_csv
from steergym.algorithms.steering import (
    SteeringConfig,
    SteeringResult,
    make_task_env,
    observation_stats,
    train_steering,
)
from steergym.data import load_transitions
from steergym.policies.config import PolicyConfig
from steergym.policies.zoo import resolve_policy
from steergym.registry import make_env

LATEST = Path("checkpoints") / "latest"  # the trainers' resumable checkpoint in a run folder
PRETRAINED = Path("pretrained")  # Cal-QL's agent after the offline phase


@dataclass
class TrainRun:
    """What `run_calql` and `run_chunk_trainer` return: the trained agent, its task and run folder."""

    agent: Any
    env_id: str
    out: Path
    wall_s: float


def offline_log_every(steps: int) -> int:
    """Rows of offline metrics every 1% of `steps` offline steps (at most every 1000, at least every step)."""
    return max(1, min(1000, int(steps) // 100))


def run_bc(dataset: Sequence[str], out: str | os.PathLike, *, policy: Literal["diffusion", "flow"] = "diffusion",
           config: BCConfig | None = None, policy_config: PolicyConfig | None = None,
           conditioned: bool | None = None, success_only: bool = False, max_episodes: int | None = None,
           root: str | os.PathLike | None = None, resume: bool = False, progress: bool = True) -> BCTrainer:
    """Behaviour-clone a diffusion or flow policy (`train_bc` with a `PolicyConfig`).

    Args:
        dataset: dataset ids; several tasks give a task-conditioned policy.
        out: run folder: run.json, last/ (resumable state), policy/ (the EMA policy), progress.csv, eval.csv, tb/.
        policy: the policy kind.
        config: training settings (`BCConfig`).
        policy_config: architecture and sampler (`PolicyConfig`; its kind and task_ids are set here).
        conditioned: condition on the task (default: when the datasets span several tasks).
        success_only: train on successful episodes only.
        max_episodes: first K episodes per dataset.
        root: dataset folder (default: $MINARI_DATASETS_PATH).
        resume: continue the run in `out` (its config wins; a larger config.steps extends it).
        progress: show a progress bar.
    """
    options = None
    if policy_config is not None:
        options = {k: v for k, v in asdict(policy_config).items() if k not in ("kind", "task_ids", "extra")}
    return train_bc(list(dataset), policy, out, policy_config=options, config=config, conditioned=conditioned,
                    success_only=success_only, max_episodes=max_episodes, root=root, resume=resume,
                    progress=progress)


def run_steering(method: str, *, out: str | os.PathLike, policy: str | None = "widowx-carrot-diffusion",
                 config: SteeringConfig | None = None, env: str | None = None, normalize_like: str | None = None,
                 env_steps: int = 50_000, minutes: float | None = None, eval_every: int = 5_000,
                 eval_episodes: int = 20, eval_seed: int = 0, seed: int = 0, obs_mode: str | None = None,
                 device: str = "cpu", progress: bool = True) -> SteeringResult:
    """SB3 SAC steering a base policy (`train_steering` with names resolved).

    Args:
        method: "dsrl", "residual" or "sac" (from scratch: no policy).
        out: run folder: run.json, eval.csv, progress.csv, tb/, checkpoints/latest and policy/ (a steered
            policy: steergym eval --policy RUN/policy).
        policy: base policy: a shipped name (steergym policies), a checkpoint folder or a LeRobot policy folder
            (with env) (None for sac).
        config: SAC settings (`SteeringConfig`).
        env: task id (default: the base policy's own task; required for sac).
        normalize_like: sac: normalise observations with this base policy's statistics, as dsrl and residual do
            with theirs (compare methods on equal inputs; default: raw observations).
        env_steps: budget in primitive env steps (one DSRL step is a chunk of H).
        minutes: also stop after this many minutes.
        eval_every: env steps between evaluations.
        eval_episodes: episodes per evaluation.
        eval_seed: evaluation episodes reset with seeds eval_seed + i.
        seed: seeds the learner and the training resets.
        obs_mode: observation mode of the task (default: the env's, state).
        device: torch device of the learner ("cpu", "cuda").
        progress: show a progress bar.
    """
    base, env_id = None, env
    if method != "sac":
        base, env_id = resolve_policy(policy, env, seed=seed)
        base.name = policy
    elif env_id is None:
        raise ValueError("--env is required for sac (there is no base policy to take the task from)")
    obs_stats = None
    if method == "sac" and normalize_like is not None:
        reference, _ = resolve_policy(normalize_like, env_id, seed=seed)
        obs_stats = observation_stats(reference)
        if obs_stats is None:
            raise ValueError(f"--normalize-like {normalize_like}: that policy has no observation normaliser "
                             "(an image-observation policy?)")
    return train_steering(env_id, method, base, config or SteeringConfig(), env_steps=env_steps, obs_stats=obs_stats,
                          time_budget_s=None if minutes is None else 60.0 * minutes, eval_every=eval_every,
                          eval_episodes=eval_episodes, eval_seed=eval_seed, seed=seed, out=out, progress=progress,
                          env_kwargs={"obs_mode": obs_mode} if obs_mode else {}, device=device)


def run_calql(dataset: str, out: str | os.PathLike, *, config: CalQLConfig | None = None, env: str | None = None,
              pretrain_steps: int = 10_000, env_steps: int = 10_000, eval_every: int = 2_000,
              eval_episodes: int = 20, eval_seed: int = 0, seed: int = 0, num_envs: int = 1,
              root: str | os.PathLike | None = None, device: str = "cpu", resume: bool = False,
              progress: bool = True) -> TrainRun:
    """Cal-QL (or CQL: config.calibrated=False): offline pre-training on a dataset, then online fine-tuning.

    Args:
        dataset: dataset id (steergym collect ...).
        out: run folder: run.json, offline.csv, progress.csv, eval.csv, tb/, pretrained/ (the agent after
            pre-training), checkpoints/latest (agent + replay buffer) and agent/.
        config: hyper-parameters (`CalQLConfig`; default: its defaults, a row of offline metrics every 1%).
        env: task id (default: the dataset's).
        pretrain_steps: offline gradient steps in all.
        env_steps: online env steps (transitions) in all; 0: offline only.
        eval_every: online env steps between evaluations (Cal-QL's scripts: 2000).
        eval_episodes: episodes per evaluation.
        eval_seed: evaluation episodes reset with seeds eval_seed + i.
        seed: seeds the networks, sampling and training resets.
        num_envs: parallel training envs (a vector env).
        root: dataset folder (default: $MINARI_DATASETS_PATH).
        device: torch device of the networks and the offline data ("cpu", "cuda").
        resume: continue the run in `out` from checkpoints/latest, else from pretrained/.
        progress: show progress bars.
    """
    out = Path(out)
    data = load_transitions(dataset, root=root)
    env_id = env or data.metadata.get("env_id")
    if not env_id:
        raise ValueError(f"dataset {dataset!r} names no env: pass --env")
    config = config or CalQLConfig(log_every=offline_log_every(pretrain_steps))
    name = lambda calibrated: "calql" if calibrated else "cql"
    if resume:
        source = next((out / p for p in (LATEST, PRETRAINED) if (out / p).is_dir()), None)
        if source is None:
            raise ValueError(f"--resume: {out} holds no checkpoint (checkpoints/latest or pretrained/)")
        agent = CalQL.load(source, device=device)
        if agent.config.calibrated != config.calibrated:
            raise ValueError(f"--resume: {source} is a {name(agent.config.calibrated)} run, "
                             f"not {name(config.calibrated)}")
    else:
        if (out / LATEST).exists() or (out / PRETRAINED).exists():
            raise ValueError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
        probe = make_env(env_id)
        try:
            agent = CalQL(probe, config, seed=seed, device=device)
        finally:
            probe.close()
    start = time.perf_counter()
    offline = max(0, pretrain_steps - agent.offline_steps) if agent.online.num_timesteps == 0 else 0
    if offline:
        before = len(agent.history)
        agent.pretrain(data, offline, progress=progress)  # `offline` more steps
        out.mkdir(parents=True, exist_ok=True)
        for row in agent.history[before:]:
            append_csv(out / "offline.csv", row)
        agent.save(out / PRETRAINED)
    else:
        agent.set_offline_data(data, "run_calql")
    remaining = env_steps - agent.online.num_timesteps  # online steps still to take
    if remaining > 0:
        train_env = gym.make_vec(env_id, num_envs=num_envs) if num_envs > 1 else make_env(env_id)
        try:  # `remaining` more, counting on from a resumed agent's steps
            agent.learn(train_env, remaining, eval_every=eval_every, eval_episodes=eval_episodes,
                        eval_seed=eval_seed, out=out, progress=progress, reset_num_timesteps=False)
        finally:
            train_env.close()
    else:
        agent.save(out / "agent", replay=False)
    return TrainRun(agent, env_id, out, time.perf_counter() - start)


def run_chunk_trainer(algorithm: Literal["ogpo", "dsrl-na"], *, out: str | os.PathLike,
                      policy: str = "widowx-lift-diffusion", config: OGPOConfig | DSRLNAConfig | None = None,
                      env: str | None = None, obs_mode: str | None = None, env_steps: int = 200_000,
                      eval_every: int = 10_000, eval_episodes: int = 20, eval_seed: int = 0, seed: int = 0,
                      reward_offset: float = 1.0, device: str = "cpu", resume: bool = False,
                      progress: bool = True) -> TrainRun:
    """OGPO or DSRL-NA on a base policy's task: build (or resume) the agent, learn to `env_steps` in all,
    save agent/ (OGPO: agent/policy is the fine-tuned policy).

    Args:
        algorithm: "ogpo" or "dsrl-na".
        out: run folder: run.json, progress.csv, eval.csv, tb/, checkpoints/latest (the full trainer state)
            and agent/.
        policy: base policy: a shipped name (steergym policies) or a checkpoint folder.
        config: hyper-parameters (`OGPOConfig` or `DSRLNAConfig`; default: the paper's, GPU-sized).
        env: task id (default: the base policy's own task).
        obs_mode: observation mode of the task, the one the policy was trained on (default: state);
            pixels / pixels_state train conv-encoder critics.
        env_steps: budget in primitive env steps, in all.
        eval_every: env steps between evaluations.
        eval_episodes: episodes per evaluation.
        eval_seed: evaluation episodes reset with seeds eval_seed + i.
        seed: seeds the networks, sampling and training resets.
        reward_offset: the learner gets the task's reward minus this per env step (DSRL's shaping; 0: none).
        device: torch device of the networks ("cpu", "cuda").
        resume: continue the run in `out` from checkpoints/latest.
        progress: show a progress bar.
    """
    trainers = {"ogpo": (OGPO, OGPOConfig), "dsrl-na": (DSRLNA, DSRLNAConfig)}
    if algorithm not in trainers:
        raise ValueError(f"unknown chunk trainer {algorithm!r}; valid: {', '.join(trainers)}")
    cls, config_cls = trainers[algorithm]
    out = Path(out)
    latest = out / LATEST
    if resume and not latest.is_dir():
        raise ValueError(f"--resume: {latest} does not exist (no checkpoint to continue from)")
    if not resume and latest.exists():
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    base, env_id = resolve_policy(policy, env, seed=seed)
    shaping = SteeringConfig(reward_offset=reward_offset)
    env_kwargs = {"obs_mode": obs_mode} if obs_mode else {}
    train_env, eval_env = (make_task_env(env_id, shaping, **env_kwargs) for _ in range(2))
    start = time.perf_counter()
    try:
        if resume:
            agent = cls.load(latest, env=train_env, device=device, **({} if cls is OGPO else {"policy": base}))
        else:
            agent = cls(train_env, base, config or config_cls(), seed=seed, device=device)
        remaining = env_steps - agent.num_timesteps  # env steps still to take
        if remaining > 0:  # that many more, counting on from a resumed agent's steps
            agent.learn(remaining, eval_env=eval_env, eval_every=eval_every, eval_episodes=eval_episodes,
                        eval_seed=eval_seed, out=out, progress=progress, reset_num_timesteps=False)
        agent.save(out / "agent")
    finally:
        train_env.close()
        eval_env.close()
    return TrainRun(agent, env_id, out, time.perf_counter() - start)
