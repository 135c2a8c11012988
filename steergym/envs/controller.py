"""End-effector delta control for the simulated WidowX 250 (BridgeData / SIMPLER convention).

Each control step the policy's delta is added to the previous *target* pose (not the measured one,
like the real robot's `use_target`), the target is clipped to the workspace box, and damped
least-squares inverse kinematics turns the target pose of the "tcp" site into joint position
targets for the arm's position servos.

Orientation targets are Euler angles (roll, pitch, yaw about the base axes, rad) *relative to the
gripper-pointing-down rotation* `DEFAULT_ROTATION`, exactly the Bridge `state` convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from steergym.envs.rotations import euler_to_mat, mat_to_euler

ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
# Gripper pointing straight down (its x axis along -z), fingers closing along the base y axis.
DEFAULT_ROTATION = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class ControlLimits:
    """Bounds of the end-effector controller; defaults from the real Bridge robot (REFERENCE.md 4).

    Attributes:
        max_delta_pos: largest position change per step, metres (Bridge clips to 0.05).
        max_delta_rot: largest roll/pitch/yaw change per step, rad (Bridge clips to 0.25).
        workspace_low / workspace_high: (3,) box for the target position in the base frame, metres.
            Bridge's real box is [0.10, 0.45] x [-0.15, 0.25] x [-0.10, 0.18]; the lower z bound is
            raised to 0.02 here: the table top is the plane z = 0 and the finger tips reach 19 mm
            below the tcp, so the lowest target puts the tips on the table.
        rotation_low / rotation_high: (3,) bounds of the relative roll, pitch, yaw target, rad
            (Bridge: yaw +-1.57; roll/pitch kept within +-0.8 so the gripper stays mostly downward).
    """

    max_delta_pos: float = 0.05
    max_delta_rot: float = 0.25
    workspace_low: tuple[float, float, float] = (0.10, -0.15, 0.02)
    workspace_high: tuple[float, float, float] = (0.45, 0.25, 0.18)
    rotation_low: tuple[float, float, float] = (-0.8, -0.8, -1.57)
    rotation_high: tuple[float, float, float] = (0.8, 0.8, 1.57)


@dataclass
class EndEffectorController:
    """Bridge-style delta-pose controller with damped least-squares IK.

    The controller owns a scratch `MjData` for IK so the simulation state is never touched.
    """

    model: mujoco.MjModel
    limits: ControlLimits = field(default_factory=ControlLimits)
    ik_iterations: int = 4
    damping: float = 1e-3
    tolerance: float = 1e-5  # stop when position error (m) and rotation error (rad) are below this

    def __post_init__(self) -> None:
        m = self.model
        self.joint_ids = np.array([m.joint(n).id for n in ARM_JOINTS])
        self.qpos_adr = m.jnt_qposadr[self.joint_ids]
        self.dof_adr = m.jnt_dofadr[self.joint_ids]
        self.joint_low = m.jnt_range[self.joint_ids, 0].copy()
        self.joint_high = m.jnt_range[self.joint_ids, 1].copy()
        self.site_id = m.site("tcp").id
        self._scratch = mujoco.MjData(m)
        # One (6, nv) Jacobian buffer; its two halves are the C-contiguous jacp / jacr MuJoCo fills.
        self._jac = np.zeros((6, m.nv))
        dofs = self.dof_adr
        if not np.array_equal(dofs, np.arange(dofs[0], dofs[0] + len(dofs))):
            raise ValueError(f"arm dofs {dofs} must be contiguous in the model")
        self._dofs = slice(int(dofs[0]), int(dofs[0]) + len(dofs))
        self._damping_eye = self.damping * np.eye(6)
        self._error = np.zeros(6)
        self._quat, self._quat_target, self._quat_err = np.zeros(4), np.zeros(4), np.zeros(4)
        self._ws_low = np.array(self.limits.workspace_low)
        self._ws_high = np.array(self.limits.workspace_high)
        self._rot_low = np.array(self.limits.rotation_low)
        self._rot_high = np.array(self.limits.rotation_high)
        self.target_pos = np.zeros(3)
        self.target_rpy = np.zeros(3)
        self.joint_target = np.zeros(len(ARM_JOINTS))

    # -- target bookkeeping ---------------------------------------------------------------
    def reset(self, pos: np.ndarray, rpy: np.ndarray, joint_seed: np.ndarray) -> np.ndarray:
        """Set the target pose and solve IK from `joint_seed`; returns (6,) joint targets, rad."""
        self.target_pos = np.clip(np.asarray(pos, float), self._ws_low, self._ws_high)
        self.target_rpy = np.clip(np.asarray(rpy, float), self._rot_low, self._rot_high)
        self.joint_target = np.asarray(joint_seed, float).copy()
        return self.solve(iterations=100)

    def apply_delta(self, delta_pos: np.ndarray, delta_rpy: np.ndarray) -> np.ndarray:
        """Add a delta (metres, rad; already limited per step) to the target and re-solve IK.

        Returns:
            (6,) joint position targets in rad.
        """
        self.target_pos = np.clip(self.target_pos + delta_pos, self._ws_low, self._ws_high)
        self.target_rpy = np.clip(self.target_rpy + delta_rpy, self._rot_low, self._rot_high)
        return self.solve()

    @property
    def target_rotation(self) -> np.ndarray:
        """(3, 3) world rotation of the tcp target."""
        return euler_to_mat(self.target_rpy) @ DEFAULT_ROTATION

    # -- inverse kinematics ---------------------------------------------------------------
    def tcp_pose(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        """Measured tcp position (3,) in metres and relative roll/pitch/yaw (3,) in rad."""
        rot = data.site_xmat[self.site_id].reshape(3, 3)
        return data.site_xpos[self.site_id].copy(), mat_to_euler(rot @ DEFAULT_ROTATION.T)

    def solve(self, iterations: int | None = None) -> np.ndarray:
        """Damped least-squares IK from the previous joint target toward the target pose."""
        m, d, err = self.model, self._scratch, self._error
        q = self.joint_target.copy()
        mujoco.mju_mat2Quat(self._quat_target, self.target_rotation.ravel())
        for _ in range(iterations or self.ik_iterations):
            d.qpos[self.qpos_adr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            err[:3] = self.target_pos - d.site_xpos[self.site_id]
            # Rotation error as a world-frame rotation vector of q_target * conj(q_current).
            mujoco.mju_mat2Quat(self._quat, d.site_xmat[self.site_id])
            mujoco.mju_negQuat(self._quat, self._quat)
            mujoco.mju_mulQuat(self._quat_err, self._quat_target, self._quat)
            mujoco.mju_quat2Vel(err[3:], self._quat_err, 1.0)
            if np.abs(err).max() < self.tolerance:
                break
            mujoco.mj_jacSite(m, d, self._jac[:3], self._jac[3:], self.site_id)
            step = self._damped_step(np.ascontiguousarray(self._jac[:, self._dofs]), err)
            q = np.minimum(np.maximum(q + step, self.joint_low), self.joint_high)
        self.joint_target = q
        return q

    def _damped_step(self, jac: np.ndarray, err: np.ndarray) -> np.ndarray:
        """jac.T (jac jac.T + damping I)^-1 err, (n,) for jac (6, n), with MuJoCo's own C routines.

        NumPy's matmul and solve go through OpenBLAS, whose results change in the last bits with its
        thread count (OMP_NUM_THREADS=1 against the default measurably moves a trajectory after ~400
        steps); MuJoCo's plain loops give the same bits whatever the threading, so the sim and its
        robot-link twin in another process stay identical.
        """
        gram = np.empty((6, 6))
        mujoco.mju_mulMatMatT(gram, jac, jac)
        gram += self._damping_eye
        mujoco.mju_cholFactor(gram, 0.0)
        weights = np.empty(6)
        mujoco.mju_cholSolve(weights, gram, err)
        step = np.empty(jac.shape[1])
        mujoco.mju_mulMatTVec(step, jac, weights)
        return step
