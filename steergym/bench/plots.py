"""Success-rate curves with matplotlib (Agg backend: works headless)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def success_curve_plot(
    curves: dict[str, Sequence[Sequence[dict[str, float]]]],
    path: str | os.PathLike,
    title: str = "",
    reference_lines: dict[str, float] | None = None,
    x_key: str = "env_steps",
    y_key: str = "success_rate",
) -> Path:
    """Plot success rate against env steps and save a PNG (written atomically).

    Args:
        curves: label -> one curve per seed, each a list of rows {x_key: .., y_key: ..}; several
            seeds are drawn as their mean with a band from min to max (seeds are evaluated at the
            same steps up to a chunk; each seed's curve is interpolated onto the first seed's steps).
        reference_lines: label -> a constant success rate (e.g. the base policy), dashed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, seeds in curves.items():
        seeds = [s for s in seeds if s]
        if not seeds:
            continue
        x = np.array([row[x_key] for row in seeds[0]], dtype=float)
        ys = np.array([np.interp(x, [r[x_key] for r in s], [r[y_key] for r in s]) for s in seeds])
        # seed counts are shown whenever curves are compared (a 1-seed curve beside a 3-seed band)
        shown = f"{label} (n={len(seeds)})" if len(seeds) > 1 or len(curves) > 1 else label
        line, = ax.plot(x, ys.mean(axis=0), marker="o", markersize=3, label=shown)
        if len(seeds) > 1:
            ax.fill_between(x, ys.min(axis=0), ys.max(axis=0), color=line.get_color(), alpha=0.2)
    for i, (label, value) in enumerate((reference_lines or {}).items()):
        ax.axhline(value, linestyle="--", color=f"C{7 + i % 3}", label=f"{label} ({value:.2f})")
    ax.set_xlabel("env steps" if x_key == "env_steps" else x_key)
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.partial.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
