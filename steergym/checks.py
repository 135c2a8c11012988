"""One check for the arrays users hand us (actions, corrections): numeric, the right shape, finite."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

_REAL_KINDS = "biuf"  # bool, signed and unsigned int, float: what an action may be made of


def real_array(value: Any, *, owner: str, what: str = "action") -> np.ndarray:
    """`value` as a float64 array, or a ValueError naming `owner`, `what` and the value.

    Only real numbers are accepted: bool/int/float arrays, and (nested) sequences of real numbers.
    Strings (even "0.1"), bytes, complex numbers (their imaginary part would be dropped), dates,
    None and ragged nested lists are refused ("<owner>: <what> must be numeric, got ..."); a Python
    int beyond the float64 range is refused as not finite. Shape and finiteness are the caller's.
    """
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError, OverflowError) as exc:  # ragged nested lists, objects numpy rejects
        raise ValueError(f"{owner}: {what} must be numeric, got {value!r} ({type(value).__name__})") from exc
    kind = raw.dtype.kind
    if kind == "O" and all(_is_real(x) for x in raw.flat):  # e.g. a list mixing ints beyond int64 and floats
        try:
            return raw.astype(np.float64)
        except OverflowError:
            raise ValueError(f"{owner}: {what} must be finite, got {value!r} (beyond the float64 range)") from None
    if kind not in _REAL_KINDS:
        dtype = f" of dtype {raw.dtype}" if isinstance(value, np.ndarray) else ""
        raise ValueError(f"{owner}: {what} must be numeric, got {value!r} ({type(value).__name__}{dtype})")
    return raw.astype(np.float64, copy=False)


def finite_array(value: Any, shape: tuple[int, ...], *, owner: str, what: str = "action",
                 dtype: Any = np.float64) -> np.ndarray:
    """`value` as a `dtype` array of `shape`, or a ValueError that names `owner`, `what` and the value.

    Messages: "<owner>: <what> must be numeric, got ..." (see `real_array`), "... must have shape S,
    got shape T: ...", "... must be finite, got [...]" (NaN or inf anywhere). The checks run in
    float64; a finite value beyond the range of a narrower `dtype` becomes that dtype's largest
    finite value (callers clip to their bounds), never inf.
    """
    arr = real_array(value, owner=owner, what=what)
    if arr.shape != tuple(shape):
        raise ValueError(f"{owner}: {what} must have shape {tuple(shape)}, got shape {arr.shape}: {value!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{owner}: {what} must be finite, got {arr.tolist()}")
    return saturate(arr, dtype)


def saturate(arr: np.ndarray, dtype: Any) -> np.ndarray:
    """A finite float64 array as `dtype`, values beyond its range clipped to its largest finite value."""
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return arr
    limit = np.finfo(dtype).max
    return np.clip(arr, -limit, limit).astype(dtype)


def _is_real(x: Any) -> bool:
    return isinstance(x, (numbers.Real, np.bool_)) and not isinstance(x, (str, bytes))
