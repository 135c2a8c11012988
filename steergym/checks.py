"""One check for the arrays users hand us (actions, corrections): numeric, the right shape, finite."""

from __future__ import annotations

from typing import Any

import numpy as np


def finite_array(value: Any, shape: tuple[int, ...], *, owner: str, what: str = "action",
                 dtype: Any = np.float64) -> np.ndarray:
    """`value` as a `dtype` array of `shape`, or a ValueError that names `owner`, `what` and the value.

    Messages: "<owner>: <what> must be numeric, got ...", "... must have shape S, got shape T: ...",
    "... must be finite, got [...]" (NaN or inf anywhere).
    """
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{owner}: {what} must be numeric, got {value!r} ({type(value).__name__})") from exc
    if arr.shape != tuple(shape):
        raise ValueError(f"{owner}: {what} must have shape {tuple(shape)}, got shape {arr.shape}: {value!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{owner}: {what} must be finite, got {arr.tolist()}")
    return arr
