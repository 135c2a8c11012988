"""What every steergym trainer shares: the training seeds, the step budget of `learn`, run-folder logs.

- `TRAIN_SEED_OFFSET`: training episodes reset with seeds from 2,000,000 (+ trainer seed + episode
  index), far from the evaluation seeds 0.. that every benchmark and the shipped-policy table use.
- `learn_target`: Stable-Baselines3's meaning of `learn(total_timesteps, reset_num_timesteps)` for
  every online trainer (Cal-QL/CQL, PTR's online phase, OGPO, DSRL-NA): `total_timesteps` *more*
  steps; with `reset_num_timesteps=True` (the default, as SB3) the step counter restarts at 0, with
  False it continues (how a resumed run reaches its total: `learn(total - agent.num_timesteps,
  reset_num_timesteps=False)`). BC counts gradient steps the same way (`learn(steps)`: that many more).
- `RunLog`: a run folder's `progress.csv` / `eval.csv` and TensorBoard events under `tb/`, dropping
  on resume the rows a killed run wrote after its checkpoint.
- `tensorboard_writer`: the one way to open a TensorBoard writer (None if TensorBoard is missing:
  the CSV logs are always written).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steergym.algorithms.run_files import append_csv, keep_csv_rows

TRAIN_SEED_OFFSET = 2_000_000  # training resets draw from here; evaluation uses seeds 0.. (the shipped table's)


def learn_target(who: str, num_timesteps: int, total_timesteps: Any, reset_num_timesteps: bool) -> int:
    """The step count a `learn(total_timesteps, reset_num_timesteps)` call made when the trainer has
    counted `num_timesteps` runs to: total_timesteps after a reset, else num_timesteps + total_timesteps.
    Raises ValueError naming `who` for a budget that is not an integer >= 1."""
    if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, (int, float)) \
            or not math.isfinite(total_timesteps) or total_timesteps != int(total_timesteps) or total_timesteps < 1:
        raise ValueError(f"{who}: total_timesteps must be an integer >= 1 (steps to take now), got {total_timesteps!r}")
    return (0 if reset_num_timesteps else int(num_timesteps)) + int(total_timesteps)


def tensorboard_writer(folder: str | os.PathLike, purge_step: int | None = None):
    """A `SummaryWriter` on `folder` (events after `purge_step` are dropped: a resumed run's), or
    None when TensorBoard cannot be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: slow, so only here
    except ImportError:  # a dependency, but a broken install must not stop training: CSVs are written
        return None
    return SummaryWriter(str(folder), purge_step=purge_step if purge_step else None)


class RunLog:
    """A run folder's CSV logs (`{kind}.csv`) and TensorBoard events (`tb/`, scalars `{kind}/{key}`).

    `keep` maps a log kind to a predicate over its existing CSV rows: rows failing it are dropped when
    the log opens (a resumed run writes them again); `purge_step` does the same for TensorBoard.
    """

    def __init__(self, out: str | os.PathLike, keep: dict[str, Callable[[dict[str, str]], bool]] | None = None,
                 purge_step: int | None = None) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        for kind, kept in (keep or {}).items():
            keep_csv_rows(self.out / f"{kind}.csv", kept)
        self.tb = tensorboard_writer(self.out / "tb", purge_step)

    def write(self, kind: str, row: dict[str, Any], step: int, scalars: dict[str, Any] | None = None,
              prefix: str | None = None) -> None:
        """Append `row` to `{kind}.csv` and its numbers (or `scalars`) to TensorBoard at `step` under
        `{prefix or kind}/`; a column named "step" is not a scalar."""
        append_csv(self.out / f"{kind}.csv", row)
        if self.tb is None:
            return
        for key, value in (row if scalars is None else scalars).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                self.tb.add_scalar(f"{prefix or kind}/{key}", value, step)

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class OffPolicyTrainer:
    """The online loop every off-policy trainer shares (Cal-QL/CQL and PTR's online phase, OGPO,
    DSRL-NA): collect, train, evaluate on schedule, checkpoint between episodes, log to a run folder.

    A subclass owns its losses, its updates and how it acts; it implements the hooks below and
    calls `_run_loop` from its `learn` (whose signature is its own: Cal-QL takes the env per call,
    the chunk trainers at construction, as SB3 does). One loop iteration, top to bottom:

      1. `_train_owed(log)`: updates owed for the transitions collected last (Cal-QL's UTD; the
         chunk trainers update inside `_collect` and owe none);
      2. an evaluation when `num_timesteps >= _next_eval` (`_evaluate_row`, logged to eval.csv);
      3. stop at `target` env steps (or `time_budget_s`);
      4. `_collect(log) -> n`: one step of the env(s) with the exploration policy, n steps counted;
      5. a checkpoint (`save(out/checkpoints/latest)`) when `num_timesteps >= _next_checkpoint`
         and `_between_episodes()`: the env's state mid-episode is not saved, so a checkpoint
         taken there would resume into another trajectory than the uninterrupted run's.
    At the end: a last evaluation (unless one was just made), then checkpoints/latest.

    Subclass state the loop reads and writes: `num_timesteps`, `_next_eval`, `_next_checkpoint`
    (saved with a checkpoint, so a resumed run keeps its schedules), `_eval_rows()` (the curve).
    """

    algorithm = ""

    num_timesteps: int
    _next_eval: int
    _next_checkpoint: int

    # hooks ---------------------------------------------------------------------------------
    def _train_owed(self, log: RunLog | None) -> None:
        """Run the updates owed for the transitions collected so far (default: none)."""

    def _collect(self, log: RunLog | None) -> int:
        """One step of the training env(s); returns the env steps it counted."""
        raise NotImplementedError

    def _between_episodes(self) -> bool:
        """Whether a checkpoint now resumes exactly (no episode in progress that would be lost)."""
        raise NotImplementedError

    def _evaluate_row(self, eval_env: Any, episodes: int, seed: int) -> dict[str, Any]:
        """Evaluate, append the row to the curve and return it (must hold "env_steps")."""
        raise NotImplementedError

    def _eval_rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _log_keep(self) -> dict[str, Callable[[dict[str, str]], bool]]:
        """Predicates over a run folder's existing CSV rows: those failing are dropped when `learn`
        opens it (rows a killed run wrote after its checkpoint; all rows of a fresh run)."""
        return {}

    def _log_purge_step(self) -> int:
        """TensorBoard step after which a resumed run's events are purged."""
        return 0

    def save(self, path: str | os.PathLike) -> Path:
        raise NotImplementedError

    # the loop ------------------------------------------------------------------------------
    def _run_loop(self, target: int, *, eval_env: Any, eval_every: int | None, eval_episodes: int,
                  eval_seed: int, out: str | os.PathLike | None, checkpoint_every: int | None,
                  progress: bool, desc: str, time_budget_s: float | None = None,
                  on_eval: Callable[[dict[str, Any]], Any] | None = None, unit: str = "step") -> None:
        """Collect and train until `num_timesteps >= target` (see the class docstring)."""
        import time

        from tqdm.auto import tqdm

        eval_every = int(eval_every) if eval_every and eval_env is not None else None
        checkpoint_every = int(checkpoint_every or eval_every or 0) or None
        if checkpoint_every is not None and self._next_checkpoint == 0:
            self._next_checkpoint = checkpoint_every
        log = RunLog(out, self._log_keep(), self._log_purge_step()) if out is not None else None
        latest = Path(out) / "checkpoints" / "latest" if out is not None else None
        self._bar = bar = tqdm(total=target, initial=min(self.num_timesteps, target), unit=unit, leave=False,
                               disable=not progress, desc=desc)
        started = time.perf_counter()

        def evaluate() -> None:
            row = self._evaluate_row(eval_env, int(eval_episodes), int(eval_seed))
            if log is not None:
                log.write("eval", row, self.num_timesteps)
            bar.set_postfix(eval_success=f"{row['success_rate']:.2f}", refresh=False)
            if on_eval is not None:
                on_eval(row)

        try:
            while True:
                self._train_owed(log)
                if eval_every is not None and self.num_timesteps >= self._next_eval:
                    self._next_eval = self.num_timesteps + eval_every
                    evaluate()
                if self.num_timesteps >= target:
                    break
                if time_budget_s is not None and time.perf_counter() - started > time_budget_s:
                    break
                bar.update(self._collect(log))
                if (latest is not None and checkpoint_every is not None
                        and self.num_timesteps >= self._next_checkpoint and self._between_episodes()):
                    self._next_checkpoint = self.num_timesteps + checkpoint_every
                    self.save(latest)
            rows = self._eval_rows()
            if eval_every is not None and (not rows or rows[-1]["env_steps"] != self.num_timesteps):
                self._next_eval = self.num_timesteps + eval_every  # a continuing `learn` keeps the schedule
                evaluate()
            if latest is not None:
                self.save(latest)
        finally:
            bar.close()
            self._bar = None
            if log is not None:
                log.close()
