"""Steering a frozen base policy with Stable-Baselines3 SAC: DSRL, residual RL, and SAC from scratch.

    result = train_steering("steergym/WidowXPutCarrotOnPlate-v0", "dsrl",
                            policy=load_shipped("widowx-carrot-diffusion"), env_steps=20_000, out="runs/dsrl")
    result.policy.act(obs)            # a SteeredPolicy; result.curve holds the evaluations

The learner is plain SB3 SAC on a wrapped env (`NoiseActionWrapper` for DSRL,
`ResidualActionWrapper` for residual, the bare env for "sac"), so anything SB3 can do applies; this
module only adds what a run needs around it: a budget in *primitive env steps* (one DSRL step is a
chunk of H env steps, so methods are compared at equal robot time), periodic evaluation on
fixed seeds (seeded samples of the noise policy for DSRL, the mean action otherwise), CSV and TensorBoard logs, a tqdm bar, and `SteeredPolicy` checkpoints.

Run folder:
    run.json            config, env id, base policy, budget, seed
    eval.csv            env_steps, agent_steps, wall_s, success_rate, mean_return, train_success
    progress.csv        SB3's training metrics (losses, entropy coefficient), also in tb/
    checkpoints/latest  the SteeredPolicy at the latest evaluation (atomic folder)
    policy/             the final SteeredPolicy (`steergym eval --policy RUN/policy`)

Resume: not supported; SB3's replay buffer is only saved by pickling, which steergym never does.
A stopped run keeps its latest checkpoint and logs.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from steergym.algorithms.base import TRAIN_SEED_OFFSET
from steergym.algorithms.run_files import append_csv, write_json
from steergym.policies.config import config_from_dict
from steergym.policies.steered import ACTIVATIONS, CLIP_OBS, METHODS, NORM_EPS, SteeredPolicy
from steergym.registry import make_env
from steergym.rollout import score_episodes, with_observation_history
from steergym.wrappers.chunk import ActionChunkWrapper, bind_task, chunk_length
from steergym.wrappers.noise import NoiseActionWrapper
from steergym.wrappers.residual import ResidualActionWrapper
from steergym.wrappers.sb3 import NoiseActionVecEnvWrapper


@dataclass
class SteeringConfig:
    """SAC settings for steering; the DSRL paper's values where it has one, scaled to a CPU.

    Sources: DSRL = Wagenmaker et al. 2025 (ajwagen/dsrl configs, reference/algorithms.md 4.3).
    """

    noise_bound: float = 1.5  # DSRL b (action_magnitude 1.5 for robomimic lift/can/square)
    shared_noise: bool = False  # dsrl: one noise row (D,) repeated over the chunk (dsrl_pi0's low-dimensional
    #   noise space for long chunks, e.g. pi0's 50 x 32); False: the whole (H, D) chunk noise, as DSRL
    residual_scale: float = 0.1  # residual: correction weight in action units (small, ResiP-style; ours)
    learning_rate: float = 3e-4  # DSRL configs (actor, critics and entropy share it)
    batch_size: int = 256  # DSRL configs
    gradient_steps: int = 1  # UTD; DSRL uses 20-30 on a GPU with 2048-wide nets. 1 fits a CPU budget
    learning_starts: int = 500  # agent steps of uniform-random warm-up (DSRL init_rollout_steps ~1500 x 4 envs)
    buffer_size: int = 1_000_000  # DSRL: 2e7, more than any run here fills
    gamma: float = 0.99  # DSRL robomimic; per agent step (per chunk for DSRL)
    tau: float = 0.005  # DSRL / SB3
    hidden: tuple[int, ...] = (256, 256)  # DSRL 2048 x 3 + LayerNorm on a GPU; 256 x 2 on a CPU
    activation: str = "tanh"  # DSRL configs use Tanh
    target_entropy: float | None = None  # None: 0.0 for dsrl (DSRL configs), -dim for residual/sac (SAC)
    init_entropy_coef: float = 0.01  # SB3 "auto_<x>"; DSRL starts at 1.0 but with UTD 20-30 it falls
    #   20x faster per env step; at UTD 1 a start of 1.0 buries a 0/1 success reward under the entropy
    #   bonus for >10k steps (measured on carrot: no gain in 28k env steps)
    num_envs: int = 1  # parallel training envs (DummyVecEnv; DSRL decodes all noise in one call)
    reward_offset: float = 1.0  # the learner gets r - offset per env step: DSRL's robomimic setting
    #   (sparse 0/1 success shifted to {-1, 0}, a chunk sums H of them), so every step costs and
    #   faster success scores higher; 0 gives the task's reward unchanged. Evaluation counts successes
    normalize_observations: bool = True  # DSRL feeds DPPO-normalised observations; we use the base
    #   policy's own (BC data) mean/std, fixed. Raw WidowX states vary by 1-5 cm: without it the
    #   tanh critics barely tell states apart

    def __post_init__(self) -> None:
        if isinstance(self.reward_offset, bool) or not isinstance(self.reward_offset, (int, float)) \
                or not math.isfinite(self.reward_offset):
            raise ValueError(f"SteeringConfig.reward_offset must be a finite number, got {self.reward_offset!r}")
        for name in ("noise_bound", "residual_scale", "learning_rate", "gamma", "tau", "init_entropy_coef"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"SteeringConfig.{name} must be a finite number > 0, got {value!r}")
        if self.gamma > 1:
            raise ValueError(f"SteeringConfig.gamma must be in (0, 1], got {self.gamma}")
        for name in ("batch_size", "gradient_steps", "buffer_size", "num_envs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"SteeringConfig.{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.learning_starts, bool) or not isinstance(self.learning_starts, int) or self.learning_starts < 0:
            raise ValueError(f"SteeringConfig.learning_starts must be an integer >= 0, got {self.learning_starts!r}")
        self.hidden = tuple(int(h) for h in self.hidden)
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"SteeringConfig.hidden must be positive layer widths, got {self.hidden!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"SteeringConfig.activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")

    def entropy_target(self, method: str) -> float | str:
        if self.target_entropy is not None:
            return float(self.target_entropy)
        return 0.0 if method == "dsrl" else "auto"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SteeringConfig":
        return config_from_dict(cls, data)


@dataclass
class SteeringResult:
    """What `train_steering` returns: the steered policy, the SB3 model and the evaluation curve."""

    method: str
    env_id: str
    policy: SteeredPolicy
    model: Any
    curve: list[dict[str, float]] = field(default_factory=list)
    env_steps: int = 0
    agent_steps: int = 0
    wall_s: float = 0.0
    out: str | None = None
    selected_env_steps: int | None = None  # with keep_best: the evaluation whose actor `policy` holds


def make_steering_env(env_id: str, method: str, policy: Any = None, config: SteeringConfig | None = None,
                      **env_kwargs: Any) -> gym.Env:
    """The env a learner sees for `method`: noise (dsrl), residual correction, or the bare task (sac)."""
    config = config or SteeringConfig()
    check_method(method, policy)
    env = with_observation_history(policy, make_task_env(env_id, config, **env_kwargs))
    if method == "dsrl":
        return NoiseActionWrapper(env, policy, config.noise_bound, config.shared_noise)
    if method == "residual":
        return ResidualActionWrapper(env, policy, config.residual_scale)
    return env


def make_task_env(env_id: str, config: SteeringConfig, **env_kwargs: Any) -> gym.Env:
    """The task as the learner's reward sees it: `make_env`, then `RewardOffset` when configured."""
    env = make_env(env_id, **env_kwargs)
    return RewardOffset(env, config.reward_offset) if config.reward_offset else env


class RewardOffset(gym.RewardWrapper, gym.utils.RecordConstructorArgs):
    """reward - offset at every env step (a module-level class, so SubprocVecEnv can pickle it)."""

    def __init__(self, env: gym.Env, offset: float) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, offset=offset)
        super().__init__(env)
        self.offset = float(offset)

    def reward(self, reward: float) -> float:
        return float(reward) - self.offset


def check_method(method: str, policy: Any) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown steering method {method!r}; valid methods: {', '.join(METHODS)}")
    if method != "sac" and policy is None:
        raise ValueError(f"method {method!r} steers a base policy: pass policy=")
    if method == "sac" and policy is not None:
        raise ValueError("method 'sac' learns from scratch and takes no base policy (policy=None)")


def train_steering(
    env_id: str,
    method: str = "dsrl",
    policy: Any = None,
    config: SteeringConfig | None = None,
    env_steps: int | None = 50_000,
    time_budget_s: float | None = None,
    eval_every: int = 10_000,
    eval_episodes: int = 20,
    eval_seed: int = 0,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    env_kwargs: dict[str, Any] | None = None,
    on_eval: Any = None,
    obs_stats: tuple[np.ndarray, np.ndarray] | None = None,
    deterministic: bool | None = None,
    keep_best: bool = False,
    device: str = "cpu",
) -> SteeringResult:
    """Train SAC on `method`'s wrapped `env_id` until `env_steps` primitive steps or `time_budget_s`.

    Args:
        env_id: a registered task id, e.g. "steergym/WidowXPutCarrotOnPlate-v0".
        method: "dsrl" (noise space of a generative `policy`), "residual" (corrections to
            `policy.act`), or "sac" (from scratch, `policy=None`).
        config: SAC settings (`SteeringConfig`).
        env_steps: budget in primitive env steps (None: only the time budget).
        time_budget_s: wall-clock budget in seconds for training (evaluations included).
        eval_every: evaluate every this many env steps (and at the start and the end).
        eval_episodes: deterministic evaluation episodes, reset seeds eval_seed + i.
        seed: seeds SB3 (networks, sampling) and the training envs' resets (TRAIN_SEED_OFFSET + seed).
        out: run folder (logs and checkpoints); None keeps everything in memory.
        on_eval: optional callable(row) after every evaluation (the demo prints with it).
        obs_stats: (mean, std) of the observations for the learner's input normalisation; default
            the base policy's normaliser (method "sac" has none: pass one to compare methods on
            equal inputs, as benchmarks/steering.py does). Box observations only.
        deterministic: evaluate (and save) the actor's mean (True) or seeded samples (False);
            None: stochastic for dsrl (as the DSRL code evaluates), deterministic otherwise.
        keep_best: return (and save as `policy/`) the actor of the best evaluation instead of the last
            one (the first best on ties; also kept in `checkpoints/best`). Early stopping on the
            evaluation seeds: report its success on other seeds than `eval_seed`'s.
        device: torch device of SB3's networks ("cpu", "cuda"); the base policy stays where it is.

    Returns: a `SteeringResult`; `result.curve` rows have env_steps, agent_steps, wall_s,
    success_rate, mean_return and train_success (success of the last 50 training episodes; None before
    the first one ends).
    """
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import Logger, configure
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    config = config or SteeringConfig()
    check_method(method, policy)
    if env_steps is None and time_budget_s is None:
        raise ValueError("give a budget: env_steps, time_budget_s or both")
    if env_steps is not None and (isinstance(env_steps, bool) or int(env_steps) < 1):
        raise ValueError(f"env_steps must be an integer >= 1, got {env_steps!r}")
    if time_budget_s is not None and not (float(time_budget_s) > 0):
        raise ValueError(f"time_budget_s must be > 0, got {time_budget_s!r}")
    if int(eval_every) < 1 or int(eval_episodes) < 1:
        raise ValueError(f"eval_every and eval_episodes must be >= 1, got {eval_every}, {eval_episodes}")
    env_kwargs = dict(env_kwargs or {})

    def make_one(index: int):
        def thunk():
            return make_steering_env(env_id, method, _fork(policy, seed + index), config, **env_kwargs)
        return thunk

    if method == "dsrl" and config.num_envs > 1:
        def make_chunked(index: int):  # sub-envs execute chunks; the wrapper decodes all noise in one call
            def thunk():
                env = with_observation_history(policy, make_task_env(env_id, config, **env_kwargs))
                return ActionChunkWrapper(env, chunk_length(policy))
            return thunk

        venv = NoiseActionVecEnvWrapper(DummyVecEnv([make_chunked(i) for i in range(config.num_envs)]), policy,
                                        config.noise_bound, config.shared_noise)
    else:
        venv = DummyVecEnv([make_one(i) for i in range(config.num_envs)])
    eval_env = make_steering_env(env_id, method, _fork(policy, seed), config, **env_kwargs)
    stats = None
    if config.normalize_observations and isinstance(venv.observation_space, gym.spaces.Box):
        stats = obs_stats if obs_stats is not None else observation_stats(policy)
    if stats is not None:
        # fixed statistics: SB3 stores raw observations and normalises when it samples a batch
        venv = VecNormalize(venv, training=False, norm_obs=True, norm_reward=False, clip_obs=CLIP_OBS,
                            epsilon=NORM_EPS)
        mean, std = (np.asarray(x, dtype=np.float64) for x in stats)
        if mean.shape != venv.observation_space.shape or std.shape != mean.shape:
            raise ValueError(f"obs_stats must be two arrays of shape {venv.observation_space.shape}, "
                             f"got {mean.shape} and {std.shape}")
        venv.obs_rms.mean, venv.obs_rms.var = mean.copy(), std.copy() ** 2

    run_dir = Path(out) if out is not None else None
    model = SAC(
        "MultiInputPolicy" if isinstance(venv.observation_space, gym.spaces.Dict) else "MlpPolicy",
        venv,
        learning_rate=config.learning_rate,
        buffer_size=config.buffer_size,
        learning_starts=config.learning_starts,
        batch_size=config.batch_size,
        tau=config.tau,
        gamma=config.gamma,
        train_freq=1,
        gradient_steps=config.gradient_steps,
        ent_coef=f"auto_{config.init_entropy_coef}",
        target_entropy=config.entropy_target(method),
        policy_kwargs={"net_arch": list(config.hidden), "activation_fn": ACTIVATIONS[config.activation]},
        seed=seed,
        device=device,
        verbose=0,
    )
    model.env.seed(TRAIN_SEED_OFFSET + seed)  # after SAC(seed=...), which seeds the env with `seed`
    if run_dir is None:  # SB3's default logger would make an empty /tmp/SB3-<date> folder every run
        model.set_logger(Logger(folder=None, output_formats=[]))
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        model.set_logger(configure(str(run_dir), ["csv", "tensorboard"]))
        write_json(run_dir / "run.json", {
            "method": method, "env_id": env_id, "base_policy": getattr(policy, "name", None),
            "config": asdict(config), "env_steps": env_steps, "time_budget_s": time_budget_s,
            "eval_every": eval_every, "eval_episodes": eval_episodes, "eval_seed": eval_seed, "seed": seed,
            "env_kwargs": env_kwargs,
        })

    base = _fork(bind_task("train_steering", policy, env_id), seed) if policy is not None else None
    steered = SteeredPolicy(method, base, model.policy, eval_env.observation_space,  # the learner's (stacked) input
                            eval_env.unwrapped.action_space, config.noise_bound, config.residual_scale,
                            env_id, config.hidden, config.activation, obs_stats=stats,
                            deterministic=deterministic, shared_noise=config.shared_noise)
    callback = _SteeringCallback(model, eval_env, steered, env_steps, time_budget_s, int(eval_every),
                                 int(eval_episodes), int(eval_seed), run_dir, progress, on_eval, keep_best)
    try:
        model.learn(total_timesteps=10**12, callback=callback, reset_num_timesteps=True)
        callback.evaluate()  # the final point of the curve (skipped when this env step was evaluated)
    finally:
        callback.close()
        model.logger.close()  # SB3's CSV writer keeps progress.csv open until closed (a ResourceWarning later)
        venv.close()
        eval_env.close()
    if keep_best:
        model.policy.actor.load_state_dict(callback.best_actor)
    selected = callback.best_env_steps if keep_best else callback.env_steps
    if run_dir is not None:
        steered.save(run_dir / "policy")
    return SteeringResult(method, env_id, steered, model, callback.curve, callback.env_steps,
                          int(model.num_timesteps), time.perf_counter() - callback.start,
                          str(run_dir) if run_dir is not None else None, selected)


def observation_stats(policy: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) of the base policy's observation normaliser (a Box-observation policy), else None."""
    normalizers = getattr(policy, "obs_normalizers", None)
    if normalizers is None or "obs" not in normalizers:
        return None
    return normalizers["obs"].loc.detach().cpu().numpy().copy(), normalizers["obs"].scale.detach().cpu().numpy().copy()


def evaluate_steered(env: gym.Env, steered: SteeredPolicy, episodes: int, seed: int) -> dict[str, float]:
    """Episodes of the learner's actor on the wrapped `env`, reset seeds seed + i (the actor's sampling
    reseeded with the same seed: a stochastic evaluation is reproducible too)."""
    return score_episodes(env, steered.actor_output, episodes, seed, lambda s: steered.reset(seed=s))


def _fork(policy: Any, seed: int) -> Any:
    """A view of `policy` with its own episode state (shared weights), when it can make one."""
    return policy.fork(seed) if policy is not None and hasattr(policy, "fork") else policy


class _SteeringCallback:
    """Counts env steps, evaluates on schedule, logs, checkpoints, and stops at the budget.

    Built lazily as an SB3 `BaseCallback` subclass so that importing this module does not import SB3.
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        from stable_baselines3.common.callbacks import BaseCallback

        class Callback(BaseCallback):
            def __init__(self, model, eval_env, steered, env_steps, time_budget_s, eval_every, eval_episodes,
                         eval_seed, run_dir, progress, on_eval, keep_best):
                super().__init__()
                self.init_callback(model)
                self.eval_env, self.steered = eval_env, steered
                self.budget_steps, self.budget_s = env_steps, time_budget_s
                self.eval_every, self.eval_episodes, self.eval_seed = eval_every, eval_episodes, eval_seed
                self.run_dir, self.on_eval = run_dir, on_eval
                self.keep_best, self.best_success, self.best_actor, self.best_env_steps = keep_best, -1.0, None, None
                self.env_steps, self.next_eval = 0, 0
                self.curve: list[dict[str, float]] = []
                self.train_successes: list[bool] = []
                self.start = time.perf_counter()
                from tqdm.auto import tqdm

                total = env_steps if env_steps is not None else None
                self.bar = tqdm(total=total, unit="env step", disable=not progress, leave=False,
                                desc=f"{steered.method} {steered.env_id}")

            def _on_training_start(self) -> None:
                self.start = time.perf_counter()
                self.evaluate()

            def _on_step(self) -> bool:
                steps = 0
                for info, done in zip(self.locals["infos"], self.locals["dones"]):
                    steps += int(info.get("steps", 1))
                    if done:
                        self.train_successes.append(bool(info.get("is_success", False)))
                self.env_steps += steps
                self.bar.update(steps)
                if self.env_steps >= self.next_eval:
                    self.evaluate()
                if self.budget_steps is not None and self.env_steps >= self.budget_steps:
                    return False
                return self.budget_s is None or time.perf_counter() - self.start < self.budget_s

            def evaluate(self) -> None:
                if self.curve and self.curve[-1]["env_steps"] == self.env_steps:
                    return
                scores = evaluate_steered(self.eval_env, self.steered, self.eval_episodes, self.eval_seed)
                recent = self.train_successes[-50:]
                row = {
                    "env_steps": self.env_steps,
                    "agent_steps": int(self.model.num_timesteps),
                    "wall_s": round(time.perf_counter() - self.start, 2),
                    **scores,
                    "train_success": float(np.mean(recent)) if recent else None,
                }
                self.curve.append(row)
                self.next_eval = self.env_steps + self.eval_every
                self.bar.set_postfix(eval_success=f"{row['success_rate']:.2f}", refresh=False)
                self.logger.record("eval/success_rate", row["success_rate"])
                self.logger.record("eval/env_steps", row["env_steps"])
                if self.run_dir is not None:
                    append_csv(self.run_dir / "eval.csv", row)
                    self.steered.save(self.run_dir / "checkpoints" / "latest")
                if self.keep_best and row["success_rate"] > self.best_success:
                    self.best_success, self.best_env_steps = row["success_rate"], self.env_steps
                    self.best_actor = {k: v.detach().clone() for k, v in self.model.policy.actor.state_dict().items()}
                    if self.run_dir is not None:
                        self.steered.save(self.run_dir / "checkpoints" / "best")
                if self.on_eval is not None:
                    self.on_eval(row)

            def close(self) -> None:
                self.bar.close()

        return Callback(*args, **kwargs)


