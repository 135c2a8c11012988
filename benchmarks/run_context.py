"""What every benchmark records beside its figures: the CPU, the commit, the load."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from steergym.machine_info import cpu_name  # noqa: F401  (re-exported: the benchmarks import it from here)

REPO = Path(__file__).resolve().parent.parent


def _read_git_state() -> dict[str, Any]:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, check=True).stdout

    try:
        commit, status = git("rev-parse", "HEAD"), git("status", "--porcelain", "--", "steergym")
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": None, "git_dirty_library_files": None}
    return {"git_commit": commit.strip(),
            "git_dirty_library_files": [line[3:] for line in status.splitlines() if line.strip()]}


# read when a benchmark starts (it imports this module first): the code it measures, even if the tree
# moves on while a long run goes (a result written at the end used to name the commit of that moment)
_AT_START = _read_git_state()


def git_state() -> dict[str, Any]:
    """Commit of the measured tree and its uncommitted library files, as they were when the benchmark started."""
    return dict(_AT_START)


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def write_results(path: str | os.PathLike, results: dict[str, Any]) -> Path:
    """`results` as indented JSON at `path`, written to a temporary sibling and renamed into place."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (temporary sibling, then rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def timings_ms(call: Any, calls: int, warmup: int = 20) -> dict[str, float]:
    """Run `call` `warmup` times, then time `calls` calls: median, p10 and p90 in ms."""
    import statistics
    import time

    for _ in range(warmup):
        call()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        samples.append(1000 * (time.perf_counter() - start))
    deciles = statistics.quantiles(samples, n=10) if calls >= 2 else [samples[0]] * 9
    return {"median": statistics.median(samples), "p10": deciles[0], "p90": deciles[-1], "calls": calls}


def difference_interval(a: list[float], b: list[float], resamples: int = 10_000, seed: int = 0,
                        episodes: tuple[int, int] | None = None, redrawn: tuple | None = None) -> dict:
    """mean(a) - mean(b) with a 95% percentile bootstrap interval (seeds resampled within each group)
    and `decided`: the interval excludes 0. With `episodes` (n_a, n_b), each value is a success rate
    over that many evaluation episodes and every resampled rate is also redrawn from its binomial, so
    the interval holds the evaluation noise too (a 1-in-20 difference is not a finding). For a figure
    built from several rates (a dip: one rate minus the least of others), pass `redrawn` (R_a, R_b)
    instead: arrays (resamples, seeds) of the figure recomputed from redrawn rates, one column per
    seed; each bootstrap draw then takes its resampled seeds' redrawn figures (`episodes` is then only
    recorded)."""
    import numpy as np

    a_arr, b_arr = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    draws = []
    for k, (values, n) in enumerate(zip((a_arr, b_arr), episodes or (None, None))):
        if redrawn is not None:
            figures = np.asarray(redrawn[k], float)
            if figures.shape != (resamples, values.size):
                raise ValueError(f"redrawn[{k}] has shape {figures.shape}; expected (resamples, seeds) = "
                                 f"({resamples}, {values.size})")
            rates = np.take_along_axis(figures, rng.integers(0, values.size, (resamples, values.size)), 1)
        else:
            rates = rng.choice(values, (resamples, values.size))
            if n is not None:
                rates = rng.binomial(int(n), rates) / int(n)
        draws.append(rates.mean(1))
    low, high = np.percentile(draws[0] - draws[1], [2.5, 97.5])
    return {"mean": round(float(a_arr.mean() - b_arr.mean()), 4), "ci95": [round(float(low), 4), round(float(high), 4)],
            "decided": bool(low > 0 or high < 0), "seeds": [int(a_arr.size), int(b_arr.size)],
            **({"episodes": list(episodes)} if episodes else {})}
