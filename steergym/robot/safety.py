"""Server-side safety of the robot link: what the arm may be told to do, whatever a client sends.

`SafetyFilter.filter` turns a client's normalised 7-D action into the action the backend executes:
the per-step deltas are limited (metres / rad), the new end-effector *target* is clipped to the
workspace box and the roll/pitch/yaw limits, and the clipped target is turned back into a delta
from the backend's current target. Joint positions are checked after every step
(`joint_fault`); the rate limit is `min_step_interval_s`. What was limited is reported by name so
the client sees it in ``info["safety"]`` and the episode log keeps it.

Defaults are the real Bridge robot's (REFERENCE.md 4, envs.md 3.7): 5 cm and 0.25 rad per step,
the Bridge workspace box with the floor raised to 2 cm (our sim's), yaw +-1.57 rad.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from steergym.checks import finite_array
from steergym.envs.controller import ControlLimits

ACTION_DIM = 7
# A joint pressed against its stop overshoots it a little (MuJoCo's soft limits: at most 5.5 mrad
# over 1,200 random-action steps on LiftCube); only more than this past "limit - margin" is a fault.
JOINT_OVERSHOOT_RAD = 0.01
_DEFAULT = ControlLimits()


@dataclass(frozen=True)
class SafetyLimits:
    """Limits the server enforces on every step.

    Attributes:
        max_delta_pos_m: largest end-effector position change per step, metres (Bridge: 0.05).
        max_delta_rot_rad: largest roll/pitch/yaw change per step, rad (Bridge: 0.25).
        workspace_low / workspace_high: (3,) box of the end-effector target, metres, base frame.
        rotation_low / rotation_high: (3,) bounds of the relative roll, pitch, yaw target, rad.
        joint_margin_rad: a measured joint closer than this to its limit (less the 0.01 rad
            overshoot tolerance) is a fault: the arm is held and the episode ends.
        joint_low / joint_high: optional (6,) joint bounds, rad, tighter than the arm's own
            (None: the backend's limits).
        max_rate_hz: steps faster than this are delayed to keep the interval (0 = no limit; the
            WidowX runs at 5 Hz, so the default 10 Hz only stops runaway clients).
        client_timeout_s: no message (heartbeats included) from the client for this long -> the arm
            stops and returns to its safe pose.
    """

    max_delta_pos_m: float = _DEFAULT.max_delta_pos
    max_delta_rot_rad: float = _DEFAULT.max_delta_rot
    workspace_low: tuple[float, float, float] = _DEFAULT.workspace_low
    workspace_high: tuple[float, float, float] = _DEFAULT.workspace_high
    rotation_low: tuple[float, float, float] = _DEFAULT.rotation_low
    rotation_high: tuple[float, float, float] = _DEFAULT.rotation_high
    joint_margin_rad: float = 0.0
    joint_low: tuple[float, ...] | None = None
    joint_high: tuple[float, ...] | None = None
    max_rate_hz: float = 10.0
    client_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        low, high = np.asarray(self.workspace_low, float), np.asarray(self.workspace_high, float)
        if low.shape != (3,) or high.shape != (3,) or np.any(low >= high):
            raise ValueError(f"SafetyLimits: workspace_low {self.workspace_low} must be below workspace_high "
                             f"{self.workspace_high} on every axis")
        rlow, rhigh = np.asarray(self.rotation_low, float), np.asarray(self.rotation_high, float)
        if rlow.shape != (3,) or rhigh.shape != (3,) or np.any(rlow > rhigh):
            raise ValueError(f"SafetyLimits: rotation_low {self.rotation_low} must not exceed rotation_high "
                             f"{self.rotation_high}")
        for name in ("max_delta_pos_m", "max_delta_rot_rad", "max_rate_hz", "client_timeout_s", "joint_margin_rad"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"SafetyLimits: {name} must be finite and >= 0, got {value}")
        if self.client_timeout_s <= 0:
            raise ValueError(f"SafetyLimits: client_timeout_s must be > 0, got {self.client_timeout_s}")
        if (self.joint_low is None) != (self.joint_high is None):
            raise ValueError("SafetyLimits: give both joint_low and joint_high, or neither")

    @property
    def min_step_interval_s(self) -> float:
        return 0.0 if self.max_rate_hz == 0 else 1.0 / self.max_rate_hz

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass
class FilteredAction:
    """The action the backend executes and what the filter changed (names from `SafetyFilter`)."""

    action: np.ndarray  # (7,) float64 normalised, what the backend gets
    limited: list[str] = field(default_factory=list)


class SafetyFilter:
    """Limits one normalised action against the backend's current end-effector target.

    `scale_pos` / `scale_rot` are the backend's metres / rad per unit of normalised action (the
    WidowX tasks: 0.05 m, 0.25 rad).
    """

    def __init__(self, limits: SafetyLimits, scale_pos: float = _DEFAULT.max_delta_pos,
                 scale_rot: float = _DEFAULT.max_delta_rot) -> None:
        self.limits = limits
        self.scale_pos, self.scale_rot = float(scale_pos), float(scale_rot)
        self._ws_low, self._ws_high = np.asarray(limits.workspace_low, float), np.asarray(limits.workspace_high, float)
        self._rot_low, self._rot_high = np.asarray(limits.rotation_low, float), np.asarray(limits.rotation_high, float)

    @staticmethod
    def validate(action) -> np.ndarray:
        """(7,) float64, or a ValueError naming the value (the server answers it as "bad_action")."""
        return finite_array(action, (ACTION_DIM,), owner="robot server")

    def filter(self, action, target_pos: np.ndarray, target_rpy: np.ndarray) -> FilteredAction:
        """Limit `action` (7,) given the backend's current target position (3,) m and rpy (3,) rad."""
        arr = self.validate(action)
        limited: list[str] = []
        clipped = np.clip(arr, -1.0, 1.0)
        if not np.array_equal(clipped, arr):
            limited.append("action_range")
        delta_pos = clipped[:3] * self.scale_pos
        delta_rot = clipped[3:6] * self.scale_rot
        if np.abs(delta_pos).max() > self.limits.max_delta_pos_m:
            delta_pos = np.clip(delta_pos, -self.limits.max_delta_pos_m, self.limits.max_delta_pos_m)
            limited.append("delta_pos")
        if np.abs(delta_rot).max() > self.limits.max_delta_rot_rad:
            delta_rot = np.clip(delta_rot, -self.limits.max_delta_rot_rad, self.limits.max_delta_rot_rad)
            limited.append("delta_rot")
        target_pos = np.asarray(target_pos, float)
        target_rpy = np.asarray(target_rpy, float)
        new_pos = self._clip_target(target_pos, delta_pos, self._ws_low, self._ws_high, self.limits.max_delta_pos_m)
        if not np.allclose(new_pos, target_pos + delta_pos):
            limited.append("workspace")
        new_rpy = self._clip_target(target_rpy, delta_rot, self._rot_low, self._rot_high, self.limits.max_delta_rot_rad)
        if not np.allclose(new_rpy, target_rpy + delta_rot):
            limited.append("rotation")
        out = clipped.copy()  # unlimited components pass through bit-exact (the twin matches the sim)
        if {"delta_pos", "workspace"} & set(limited):
            out[:3] = (new_pos - target_pos) / self.scale_pos
        if {"delta_rot", "rotation"} & set(limited):
            out[3:6] = (new_rpy - target_rpy) / self.scale_rot
        return FilteredAction(out, limited)

    @staticmethod
    def _clip_target(target: np.ndarray, delta: np.ndarray, low: np.ndarray, high: np.ndarray,
                     max_step: float) -> np.ndarray:
        """target + delta clipped to [low, high]; a target outside the box (a narrower box than the
        backend's, or a start pose outside it) is brought in by at most `max_step` per step."""
        new = np.clip(target + delta, low, high)
        return target + np.clip(new - target, -max_step, max_step)

    def joint_fault(self, joints: np.ndarray, low: np.ndarray, high: np.ndarray) -> str | None:
        """A message if any measured joint (rad) is within the margin of its limit, else None."""
        if self.limits.joint_low is not None:
            low = np.maximum(low, np.asarray(self.limits.joint_low, float))
            high = np.minimum(high, np.asarray(self.limits.joint_high, float))
        m = self.limits.joint_margin_rad - JOINT_OVERSHOOT_RAD
        bad = np.flatnonzero((joints < low + m) | (joints > high - m))
        if bad.size == 0:
            return None
        k = int(bad[0])
        return (f"joint {k} at {joints[k]:.3f} rad is outside its safe range [{low[k] + m:.3f}, {high[k] - m:.3f}]"
                " (limits less the margin, plus the overshoot tolerance)")
