"""Behaviour cloning of diffusion / flow policies on action chunks, resumable, with logs and evaluation.

    trainer = BCTrainer(policy, load_chunk_data(["steergym/carrot/expert-v0"], horizon=4),
                        BCConfig(steps=5000), run_dir="runs/carrot")
    trainer.learn()                     # writes runs/carrot/policy (EMA weights), logs, state
    trainer = BCTrainer.resume("runs/carrot"); trainer.learn(extra_steps)

Run folder: `run.json` (what was trained on what, written once), `last/` (resumable state: weights,
EMA weights, optimiser moments, generator states), `policy/` (the EMA policy checkpoint, the thing
to use), `progress.csv`, `eval.csv`, and TensorBoard events under `tb/`.

Same seed, same data, same config -> the same weights, also across an interruption and resume.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from steergym.algorithms import state as trainer_state
from steergym.algorithms.base import RunLog
from steergym.algorithms.run_files import keep_csv_rows, write_json
from steergym.data.chunks import ChunkData, dataset_spaces, load_chunk_data
from steergym.data.dataset import read_metadata
from steergym.policies.checkpoint import policy_classes
from steergym.policies.config import PolicyConfig, config_from_dict
from steergym.policies.generative import GenerativePolicy
from steergym.rollout import evaluate
from steergym.space_json import space_from_json, space_to_json

RUN_FILE = "run.json"


@dataclass
class BCConfig:
    """Behaviour-cloning hyper-parameters; sources in the comments.

    DPPO's robomimic pre-training recipe (reference/algorithms.md 4.5): batch 256, lr 1e-4,
    weight decay 1e-6, cosine schedule with 100 warm-up steps down to 1e-5, EMA decay 0.995,
    8000 epochs. On a 2-core CPU we train for thousands of steps instead, with a 3x larger
    learning rate.
    """

    steps: int = 10_000  # gradient steps (CPU budget; DPPO trains 8000 epochs)
    batch_size: int = 256  # DPPO
    lr: float = 3e-4  # DPPO 1e-4; higher for short CPU runs
    min_lr: float = 1e-5  # DPPO cosine floor
    warmup_steps: int = 100  # DPPO
    weight_decay: float = 1e-6  # DPPO (AdamW)
    ema_decay: float = 0.995  # DPPO; the EMA weights are what gets saved and evaluated
    ema_start: int = 200  # steps before the EMA starts tracking (DPPO: epoch 20)
    grad_clip: float = 1.0  # max global gradient norm (ours; 0 disables)
    log_every: int = 100  # steps between progress.csv / TensorBoard rows
    save_every: int = 1000  # steps between resumable states (and policy/ checkpoints)
    eval_every: int = 0  # steps between evaluations on the dataset's task(s); 0 = never
    eval_episodes: int = 10  # episodes per task per evaluation
    eval_seed: int = 100_000  # evaluation reset seeds (disjoint from collection seeds 0..N)
    seed: int = 0  # batch order and diffusion noise

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "save_every", "eval_episodes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"BCConfig: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "eval_every", "warmup_steps", "ema_start"):
            if getattr(self, name) < 0:
                raise ValueError(f"BCConfig: {name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"BCConfig: ema_decay must be in [0, 1), got {self.ema_decay}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BCConfig":
        return config_from_dict(cls, data)


def learning_rate(step: int, config: BCConfig) -> float:
    """Linear warm-up to `lr`, then cosine decay to `min_lr` at `steps`."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1.0 + math.cos(math.pi * progress))


class BCTrainer:
    """Behaviour cloning of a `GenerativePolicy` on `ChunkData`.

    Args:
        policy: the policy to train (its normalisers are fitted on `data` unless `fit_normalization`
            is False, e.g. when resuming).
        data: samples from `load_chunk_data`; chunk shape must equal `policy.noise_shape`. A
            task-conditioned policy must know every task of the data.
        config: `BCConfig`.
        run_dir: where logs, states and the policy checkpoint go (None: keep everything in memory).
        progress: show a tqdm bar.
        eval_env_kwargs: options for `gymnasium.make` during evaluation (e.g. obs_mode).
    """

    def __init__(self, policy: GenerativePolicy, data: ChunkData, config: BCConfig | None = None,
                 run_dir: str | os.PathLike | None = None, progress: bool = True,
                 fit_normalization: bool = True, eval_env_kwargs: dict[str, Any] | None = None,
                 run_info: dict[str, Any] | None = None) -> None:
        self.config = config or BCConfig()
        self.policy, self.data = policy, data
        if data.chunks.shape[1:] != policy.noise_shape:
            raise ValueError(
                f"BCTrainer: data chunks are {data.chunks.shape[1:]} (H, d) but the policy's are "
                f"{policy.noise_shape}; collect with the same action space and set horizon to match"
            )
        self._task_map = self._map_tasks(policy, data)
        if fit_normalization:
            policy.fit_normalization(data.observations, data.actions)
        self.ema = type(policy)(policy.observation_space, policy.action_space, policy.config).to(policy.device)
        self.ema.load_state_dict(policy.state_dict())
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=self.config.lr,
                                           weight_decay=self.config.weight_decay)
        self.rng = np.random.default_rng(self.config.seed)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        torch.manual_seed(self.config.seed)
        self.step = 0
        self.progress = progress
        self.eval_env_kwargs = dict(eval_env_kwargs or {})
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.run_info = dict(run_info or {})
        self.last_loss = float("nan")
        self.history: list[dict[str, float]] = []
        self.evaluations: list[dict[str, Any]] = []
        self._log_files: RunLog | None = None  # opened at the first row (run_dir only)
        if self.run_dir is not None and not (self.run_dir / RUN_FILE).exists():
            self._write_run_file()

    # ------------------------------------------------------------------------------ training
    def learn(self, steps: int | None = None) -> GenerativePolicy:
        """Train until `config.steps` (or for `steps` more); returns the EMA policy."""
        target = self.config.steps if steps is None else self.step + int(steps)
        if target > self.config.steps:
            self.config.steps = target  # extends the schedule's horizon
        self.policy.train()
        window_start, window_samples = time.perf_counter(), 0
        bar = tqdm(total=target, initial=self.step, desc=f"bc {self.policy.kind}", unit="step",
                   disable=not self.progress, leave=False)
        try:
            while self.step < target:
                loss = self._update()
                self.step += 1
                window_samples += self.config.batch_size
                bar.update(1)
                if self.step % self.config.log_every == 0 or self.step == target:
                    elapsed = time.perf_counter() - window_start
                    row = {"step": self.step, "loss": loss, "lr": self.optimizer.param_groups[0]["lr"],
                           "samples_per_s": window_samples / max(elapsed, 1e-9)}
                    self._log(row)
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                    window_start, window_samples = time.perf_counter(), 0
                if self.config.eval_every and self.step % self.config.eval_every == 0:
                    self.evaluate()
                if self.run_dir is not None and (self.step % self.config.save_every == 0 or self.step == target):
                    self.save()
        finally:
            bar.close()
            self.policy.eval()
            if self._log_files is not None:
                self._log_files.flush()
        return self.ema

    def _update(self) -> float:
        cfg = self.config
        index = self.rng.integers(0, len(self.data), cfg.batch_size)
        obs, chunks, tasks = self.data.batch(index)
        task = self._task_map[tasks] if self._task_map is not None else None
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, cfg)
        loss = self.policy.loss(obs, chunks, task=task, generator=self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self._update_ema()
        self.last_loss = float(loss.detach())
        return self.last_loss

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = 0.0 if self.step < self.config.ema_start else self.config.ema_decay
        ema_state, state = self.ema.state_dict(), self.policy.state_dict()
        for name, value in state.items():
            if value.is_floating_point() and decay > 0:
                ema_state[name].mul_(decay).add_(value, alpha=1.0 - decay)
            else:
                ema_state[name].copy_(value)

    # ---------------------------------------------------------------------------- evaluation
    def evaluate(self, episodes: int | None = None) -> dict[str, Any]:
        """Success of the EMA policy on each task of the data (reset seeds from `eval_seed`)."""
        episodes = episodes or self.config.eval_episodes
        results = {}
        for env_id in self.data.task_ids:
            policy = self.ema.for_task(env_id) if self.ema.task_ids else self.ema
            result = evaluate(env_id, policy, episodes=episodes, seed=self.config.eval_seed,
                              env_kwargs=self.eval_env_kwargs, progress=False)
            results[env_id] = result.success_rate
        row = {"step": self.step, "mean_success": float(np.mean(list(results.values()))), **results}
        self.evaluations.append(row)
        if self._run_log() is not None:
            self._run_log().write("eval", row, self.step)
        return row

    # ------------------------------------------------------------------------- persistence
    def save(self) -> Path:
        """Write the resumable state (`last/`) and the EMA policy checkpoint (`policy/`)."""
        if self.run_dir is None:
            raise ValueError("BCTrainer.save: no run_dir was given")
        tensors = {**trainer_state.module_tensors(self.policy, "model"),
                   **trainer_state.module_tensors(self.ema, "ema")}
        optim_tensors, optim_meta = trainer_state.optimizer_state(self.optimizer, "optim")
        tensors.update(optim_tensors)
        tensors["generator"] = self.generator.get_state()
        meta = {"step": self.step, "config": asdict(self.config), "optimizer": optim_meta,
                "numpy_rng": trainer_state.numpy_rng_state(self.rng), "last_loss": self.last_loss,
                "evaluations": self.evaluations}
        trainer_state.write_state(self.run_dir / "last", tensors, meta)
        metadata = {"trainer": "bc", "steps": self.step, "final_loss": self.last_loss,
                    "bc_config": asdict(self.config), "datasets": list(self.data.sources),
                    "evaluations": self.evaluations, **self.run_info}
        self.ema.save(self.run_dir / "policy", metadata)
        return self.run_dir

    @classmethod
    def resume(cls, run_dir: str | os.PathLike, progress: bool = True, root: str | os.PathLike | None = None,
               data: ChunkData | None = None) -> "BCTrainer":
        """Rebuild a trainer from `run_dir` (run.json + last/) and continue where it stopped.

        The datasets named in run.json are reloaded from the local dataset folder (`root`) unless
        `data` is given.
        """

        run_dir = Path(run_dir)
        run_file = run_dir / RUN_FILE
        if not run_file.exists():
            raise ValueError(f"{run_dir}: no {RUN_FILE}; not a steergym BC run folder")
        run = json.loads(run_file.read_text())
        if run.get("trainer") != "bc":
            raise ValueError(f"{run_file}: trainer {run.get('trainer')!r} is not 'bc'")
        tensors, meta = trainer_state.read_state(run_dir / "last")
        policy_config = PolicyConfig.from_dict(run["policy_config"])
        policy = policy_classes()[run["kind"]](
            space_from_json(run["observation_space"]),
            space_from_json(run["action_space"]),
            policy_config,
        )
        if data is None:
            options = run.get("data_options", {})
            data = load_chunk_data(run["datasets"], policy_config.horizon, root=root, **options)
        trainer = cls(policy, data, BCConfig.from_dict(meta["config"]), run_dir=run_dir, progress=progress,
                      fit_normalization=False, eval_env_kwargs=run.get("eval_env_kwargs"),
                      run_info=run.get("run_info"))
        trainer_state.load_module_tensors(trainer.policy, "model", tensors)
        trainer_state.load_module_tensors(trainer.ema, "ema", tensors)
        trainer_state.load_optimizer_state(trainer.optimizer, "optim", tensors, meta["optimizer"])
        trainer.generator.set_state(tensors["generator"])
        trainer_state.set_numpy_rng_state(trainer.rng, meta["numpy_rng"])
        trainer.step = int(meta["step"])
        trainer.last_loss = float(meta.get("last_loss", float("nan")))
        trainer.evaluations = list(meta.get("evaluations", []))
        for log in ("progress.csv", "eval.csv"):  # drop rows logged after the saved state
            keep_csv_rows(run_dir / log, lambda row: int(float(row["step"])) <= trainer.step)
        return trainer

    # ------------------------------------------------------------------------------ internals
    @staticmethod
    def _map_tasks(policy: GenerativePolicy, data: ChunkData) -> np.ndarray | None:
        """Data task index -> policy task index (None for an unconditioned policy)."""
        if not policy.task_ids:
            return None
        unknown = [t for t in data.task_ids if t not in policy.task_ids]
        if unknown:
            raise ValueError(f"BCTrainer: the data has tasks {unknown} the policy is not conditioned on "
                             f"(policy tasks: {list(policy.task_ids)})")
        return np.array([policy.task_ids.index(t) for t in data.task_ids], dtype=np.int64)

    def _write_run_file(self) -> None:
        run = {
            "trainer": "bc",
            "kind": self.policy.kind,
            "policy_config": self.policy.config.to_dict(),
            "observation_space": space_to_json(self.policy.observation_space),
            "action_space": space_to_json(self.policy.action_space),
            "datasets": list(self.data.sources),
            "task_ids": list(self.data.task_ids),
            "data_options": self.data.options,
            "eval_env_kwargs": self.eval_env_kwargs,
            "run_info": self.run_info,
        }
        write_json(self.run_dir / RUN_FILE, run)

    def _log(self, row: dict[str, float]) -> None:
        self.history.append(row)
        if self._run_log() is not None:
            self._run_log().write("progress", row, row["step"], prefix="train")

    def _run_log(self) -> RunLog | None:
        """The run folder's progress.csv / eval.csv and TensorBoard events (None without a run_dir)."""
        if self._log_files is None and self.run_dir is not None:
            self._log_files = RunLog(self.run_dir)
        return self._log_files


def train_bc(
    dataset_ids: list[str] | tuple[str, ...],
    kind: str = "diffusion",
    run_dir: str | os.PathLike | None = None,
    *,
    policy_config: dict[str, Any] | None = None,
    config: BCConfig | None = None,
    conditioned: bool | None = None,
    success_only: bool = False,
    max_episodes: int | None = None,
    root: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> BCTrainer:
    """Build (or resume) a BC run on local datasets and train it to `config.steps`.

    Args:
        dataset_ids: datasets to clone (one task per distinct env id among them).
        kind: "diffusion" or "flow".
        run_dir: run folder (see module docstring); required for `resume`.
        policy_config: `PolicyConfig` fields other than kind and task_ids (e.g. {"hidden_dim": 128}).
        conditioned: condition on the task one-hot; default: True when the data spans several tasks.
        resume: continue the run in `run_dir` (its config and data options win).

    Raises:
        ValueError: `run_dir` holds a run and `resume` is False, or `resume` without a run.
    """
    if run_dir is not None and (Path(run_dir) / RUN_FILE).exists():
        if not resume:
            raise ValueError(f"{run_dir} already holds a run; pass resume=True (--resume) or choose another folder")
        trainer = BCTrainer.resume(run_dir, progress=progress, root=root)
        if config is not None and config.steps > trainer.config.steps:
            trainer.config.steps = config.steps
        trainer.learn()
        return trainer
    if resume:
        raise ValueError(f"cannot resume: {run_dir} holds no run ({RUN_FILE} missing)")
    if kind not in policy_classes():
        raise ValueError(f"unknown policy kind {kind!r}; valid: {', '.join(policy_classes())}")
    options = dict(policy_config or {})
    horizon = int(options.get("horizon", PolicyConfig().horizon))
    data = load_chunk_data(list(dataset_ids), horizon, root=root, success_only=success_only,
                           max_episodes=max_episodes)
    if conditioned is None:
        conditioned = len(data.task_ids) > 1
    if conditioned:
        options["task_ids"] = data.task_ids
    obs_space, act_space = dataset_spaces(dataset_ids[0], root)
    config = config or BCConfig()
    torch.manual_seed(config.seed)
    policy = policy_classes()[kind](obs_space, act_space, PolicyConfig(kind=kind, **options), seed=config.seed)
    env_kwargs = read_metadata(dataset_ids[0], root).get("env_kwargs", {}) or {}
    run_info = {"env_id": data.task_ids[0] if len(data.task_ids) == 1 else None, "task_ids": list(data.task_ids)}
    trainer = BCTrainer(policy, data, config, run_dir=run_dir, progress=progress,
                        eval_env_kwargs=env_kwargs, run_info=run_info)
    trainer.learn()
    return trainer
