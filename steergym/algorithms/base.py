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

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steergym.algorithms.run_files import append_csv, keep_csv_rows

TRAIN_SEED_OFFSET = 2_000_000  # training resets draw from here; evaluation uses seeds 0.. (the shipped table's)


def learn_target(who: str, num_timesteps: int, total_timesteps: Any, reset_num_timesteps: bool) -> tuple[int, int]:
    """(start, target) step counts of a `learn(total_timesteps, reset_num_timesteps)` call made when
    the trainer has counted `num_timesteps`: start is 0 after a reset, else `num_timesteps`; target is
    start + total_timesteps. Raises ValueError naming `who` for a budget that is not an integer >= 1."""
    if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, (int, float)) \
            or total_timesteps != int(total_timesteps) or int(total_timesteps) < 1:
        raise ValueError(f"{who}: total_timesteps must be an integer >= 1 (steps to take now), got {total_timesteps!r}")
    start = 0 if reset_num_timesteps else int(num_timesteps)
    return start, start + int(total_timesteps)


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

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
