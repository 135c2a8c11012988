"""Small rotation helpers (numpy only).

Conventions (BridgeData / SIMPLER): Euler angles are (roll, pitch, yaw) about the *fixed* base axes
x, y, z applied in that order, i.e. R = Rz(yaw) @ Ry(pitch) @ Rx(roll). Quaternions are MuJoCo's
(w, x, y, z).
"""

from __future__ import annotations

import numpy as np


def euler_to_mat(rpy: np.ndarray) -> np.ndarray:
    """(3,) roll, pitch, yaw in rad -> (3, 3) rotation matrix R = Rz @ Ry @ Rx."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def mat_to_euler(mat: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (3,) roll, pitch, yaw in rad (inverse of `euler_to_mat`)."""
    pitch = np.arcsin(np.clip(-mat[2, 0], -1.0, 1.0))
    roll = np.arctan2(mat[2, 1], mat[2, 2])
    yaw = np.arctan2(mat[1, 0], mat[0, 0])
    return np.array([roll, pitch, yaw])


def mat_to_rotvec(mat: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (3,) axis * angle in rad (angle in [0, pi])."""
    cos_angle = np.clip((np.trace(mat) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos_angle)
    axis = np.array([mat[2, 1] - mat[1, 2], mat[0, 2] - mat[2, 0], mat[1, 0] - mat[0, 1]])
    sin_angle = np.sin(angle)
    if sin_angle > 1e-6:
        return axis * (angle / (2.0 * sin_angle))
    if cos_angle > 0:  # angle ~ 0: first-order expansion
        return axis / 2.0
    # angle ~ pi: axis from the diagonal of (R + I) / 2
    sym = (mat + np.eye(3)) / 2.0
    idx = int(np.argmax(np.diag(sym)))
    ax = sym[:, idx] / np.sqrt(max(sym[idx, idx], 1e-12))
    return ax * angle


def yaw_to_quat(yaw: float) -> np.ndarray:
    """Rotation about +z by `yaw` rad -> (4,) quaternion (w, x, y, z)."""
    return np.array([np.cos(yaw / 2.0), 0.0, 0.0, np.sin(yaw / 2.0)])


def quat_to_yaw(quat: np.ndarray) -> float:
    """(4,) quaternion (w, x, y, z) -> heading of the body's x axis about +z, in rad."""
    w, x, y, z = quat
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))

