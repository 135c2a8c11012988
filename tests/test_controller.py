"""The end-effector controller: Bridge frame conventions, IK accuracy, workspace clipping."""

import numpy as np
import pytest

from steergym.envs.controller import DEFAULT_ROTATION, EndEffectorController
from steergym.envs.rotations import euler_to_mat, mat_to_euler, mat_to_rotvec, quat_to_yaw, yaw_to_quat
from steergym.envs.scene import build_model
from steergym.envs.tasks import LiftCube


def test_euler_round_trip_and_axis_order():
    rng = np.random.default_rng(0)
    for _ in range(50):
        rpy = rng.uniform([-1.2, -1.2, -3.0], [1.2, 1.2, 3.0])
        np.testing.assert_allclose(mat_to_euler(euler_to_mat(rpy)), rpy, atol=1e-9)
    # Pure yaw is a rotation about +z: x axis goes to +y for +90 degrees.
    np.testing.assert_allclose(euler_to_mat([0, 0, np.pi / 2]) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    # Roll is applied first, about the fixed x axis: R = Rz Ry Rx.
    rx = euler_to_mat([0.3, 0, 0])
    rz = euler_to_mat([0, 0, 0.5])
    np.testing.assert_allclose(euler_to_mat([0.3, 0, 0.5]), rz @ rx, atol=1e-12)


def test_rotvec_and_yaw_helpers():
    np.testing.assert_allclose(mat_to_rotvec(euler_to_mat([0, 0, 0.7])), [0, 0, 0.7], atol=1e-9)
    np.testing.assert_allclose(mat_to_rotvec(euler_to_mat([np.pi, 0, 0])), [np.pi, 0, 0], atol=1e-6)
    np.testing.assert_allclose(mat_to_rotvec(np.eye(3)), [0, 0, 0], atol=1e-12)
    assert quat_to_yaw(yaw_to_quat(1.1)) == pytest.approx(1.1)


def test_default_rotation_points_gripper_down():
    # The gripper's forward (x) axis points down; fingers close along the base y axis.
    np.testing.assert_allclose(DEFAULT_ROTATION @ [1, 0, 0], [0, 0, -1])
    np.testing.assert_allclose(DEFAULT_ROTATION @ [0, 1, 0], [0, 1, 0])


def test_ik_reaches_targets_across_the_workspace():
    model = build_model(())
    ctrl = EndEffectorController(model)
    seed = ctrl.reset(np.array([0.3, 0.0, 0.15]), np.zeros(3), np.array([0, 0, 0.3, 0, 1.27, 0]))
    data = ctrl._scratch
    rng = np.random.default_rng(1)
    for _ in range(20):
        pos = rng.uniform([0.15, -0.12, 0.02], [0.42, 0.22, 0.17])
        rpy = rng.uniform([-0.3, -0.3, -1.4], [0.3, 0.3, 1.4])
        q = ctrl.reset(pos, rpy, seed)
        data.qpos[ctrl.qpos_adr] = q
        import mujoco

        mujoco.mj_kinematics(model, data)
        reached_pos, reached_rpy = ctrl.tcp_pose(data)
        np.testing.assert_allclose(reached_pos, pos, atol=1e-3)
        np.testing.assert_allclose(reached_rpy, rpy, atol=1e-2)


def test_actions_move_along_bridge_axes():
    env = LiftCube()
    env.reset(seed=0)
    start, _ = env.tcp_pose()
    for axis, sign in ((0, 1.0), (1, 1.0), (2, -1.0)):  # the start is 3 cm below the z ceiling
        env.reset(seed=0)
        action = np.zeros(7)
        action[axis] = sign
        action[6] = 1.0
        for _ in range(2):
            env.step(action)
        moved = env.tcp_pose()[0] - start
        # Two full steps = 0.10 m along the commanded base axis, little along the others.
        assert moved[axis] == pytest.approx(0.10 * sign, abs=0.01), (axis, moved)
        assert np.abs(np.delete(moved, axis)).max() < 0.01, (axis, moved)
    env.reset(seed=0)
    env.step(np.array([0, 0, 0, 0, 0, 1.0, 1.0]))
    assert env.tcp_pose()[1][2] == pytest.approx(0.25, abs=0.02)  # +0.25 rad of yaw
    env.close()


def test_target_is_clipped_to_the_workspace_box():
    env = LiftCube()
    env.reset(seed=0)
    for _ in range(15):
        env.step(np.array([1.0, -1.0, 1.0, 0, 0, 1.0, 1.0]))
    limits = env.controller.limits
    np.testing.assert_allclose(
        env.controller.target_pos, [limits.workspace_high[0], limits.workspace_low[1], limits.workspace_high[2]]
    )
    assert env.controller.target_rpy[2] == pytest.approx(limits.rotation_high[2])
    # That corner is beyond the arm's reach with the gripper down (like the real arm's box): the
    # arm stretches toward it; a reachable corner of the box is tracked closely.
    assert np.linalg.norm(env.tcp_pose()[0] - env.controller.target_pos) < 0.03
    for _ in range(15):
        env.step(np.array([-1.0, 1.0, -1.0, 0, 0, -1.0, 1.0]))
    np.testing.assert_allclose(
        env.controller.target_pos, [limits.workspace_low[0], limits.workspace_high[1], limits.workspace_low[2]]
    )
    np.testing.assert_allclose(env.tcp_pose()[0], env.controller.target_pos, atol=0.005)
    env.close()
