"""What the robot server drives: the simulated digital twin ("sim") or a real WidowX ("interbotix").

A backend executes already-safety-filtered normalised actions and reports what the safety layer
needs (the end-effector target, joint positions and limits). The server never talks to hardware
except through these methods:

    observation_space, action_space, task, instruction, max_episode_steps
    reset(seed) -> (obs, info)                 start an episode (arm at its start pose)
    step(action) -> (obs, reward, terminated, truncated, info)
    target_pose() -> (pos (3,) m, rpy (3,) rad)  the end-effector target the next delta adds to
    joints() -> (6,) rad;  joint_limits() -> (low (6,), high (6,)) rad
    hold()                                     stop moving now (e-stop, fault)
    move_to_safe_pose() -> bool                back to the start pose, gripper open; True on arrival
    at_safe_pose() -> bool
    render() -> (H, W, 3) uint8                a frame of the scene camera
    close()

`SimBackend` serves any registered WidowX task: the same server code path used in tests and for
rehearsing a deployment. `InterbotixBackend` drives the arm through the Interbotix Python API; no
arm is attached in CI, so that class is not exercised there (see the README).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

from steergym.envs.controller import DEFAULT_ROTATION
from steergym.envs.rotations import euler_to_mat, mat_to_euler
from steergym.envs.widowx import START_POS, START_RPY
from steergym.registry import entry

SAFE_POSE_TOLERANCE_M = 0.015  # tcp within 1.5 cm of the start pose counts as "at the safe pose"
SAFE_POSE_MAX_STEPS = 40  # 8 s at 5 Hz: from anywhere in the workspace, 5 cm per step


class SimBackend:
    """A registered simulated WidowX task served as if it were the arm.

    Args:
        task: a simulated WidowX id, e.g. "steergym/WidowXPutCarrotOnPlate-v0".
        obs_mode, image_size, wrist_camera, reward_type: the task's own options.
        render_size: frames `render` returns (the task's "front" camera).
    """

    kind = "sim"

    def __init__(self, task: str, obs_mode: str = "state", image_size: tuple[int, int] = (128, 128),
                 wrist_camera: bool = False, reward_type: str = "sparse",
                 render_size: tuple[int, int] = (256, 256)) -> None:
        row = entry(task)  # KeyError listing the known ids
        if row.family != "widowx":
            raise ValueError(f"SimBackend serves the simulated WidowX tasks (env_ids()), not {task!r} "
                             f"(family {row.family!r})")
        self.task = task
        self.max_episode_steps = row.max_episode_steps
        self.env = gym.make(task, obs_mode=obs_mode, image_size=tuple(image_size), wrist_camera=wrist_camera,
                            reward_type=reward_type, render_mode="rgb_array", render_size=tuple(render_size),
                            max_episode_steps=None, disable_env_checker=True).unwrapped
        self.options = {"obs_mode": obs_mode, "image_size": list(image_size), "wrist_camera": wrist_camera,
                        "reward_type": reward_type}
        self.observation_space = self.env.observation_space
        self.action_space = self.env.action_space
        self.instruction = self.env.instruction
        limits = self.env.controller.limits
        self.scale_pos, self.scale_rot = limits.max_delta_pos, limits.max_delta_rot
        self._needs_reset = True

    def reset(self, seed: int | None = None):
        obs, info = self.env.reset(seed=seed)
        self._needs_reset = False
        return obs, info

    def step(self, action: np.ndarray):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if "physics_error" in info:
            self._needs_reset = True
        return obs, reward, terminated, truncated, info

    def target_pose(self) -> tuple[np.ndarray, np.ndarray]:
        c = self.env.controller
        return c.target_pos.copy(), c.target_rpy.copy()

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self.env.tcp_pose()

    def joints(self) -> np.ndarray:
        return self.env.data.qpos[self.env.controller.qpos_adr].copy()

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        c = self.env.controller
        return c.joint_low.copy(), c.joint_high.copy()

    def hold(self) -> None:
        """The simulated arm holds its servo set-points between steps: nothing to do."""

    def move_to_safe_pose(self) -> bool:
        """Step the twin toward the start pose (5 cm / 0.25 rad per step, gripper open)."""
        if self._needs_reset:  # after a physics error the twin restarts at the start pose
            self.reset()
            return self.at_safe_pose()
        for _ in range(SAFE_POSE_MAX_STEPS):
            if self.at_safe_pose():
                return True
            pos, rpy = self.target_pose()
            action = np.zeros(7)
            action[:3] = np.clip((START_POS - pos) / self.scale_pos, -1, 1)
            action[3:6] = np.clip((START_RPY - rpy) / self.scale_rot, -1, 1)
            action[6] = 1.0
            self.env.step(action)
        return self.at_safe_pose()

    def at_safe_pose(self) -> bool:
        pos, _ = self.tcp_pose()
        return bool(np.linalg.norm(pos - START_POS) < SAFE_POSE_TOLERANCE_M and self.env.gripper_opening() > 0.8)

    def render(self) -> np.ndarray:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class InterbotixBackend:
    """A real WidowX 250 6DOF through the Interbotix Python API (ROS 1 `interbotix_xs_modules`).

    Observations are camera frames ("pixels") and the Bridge proprio; the real arm has no object
    pose sensor, so the sim tasks' "state" observations (which include object poses) are refused.
    Rewards are 0 and `is_success` False: there is no success detector on the real arm; label
    episodes from the server's log afterwards.

    NOT exercised in CI (no arm attached there). The calls used are the public Interbotix API:
    `InterbotixManipulatorXS(robot_model, "arm", "gripper")`, `arm.set_ee_pose_matrix`,
    `arm.get_ee_pose`, `arm.get_joint_commands`, `gripper.open/close`, `core.joint_states`.
    """

    kind = "interbotix"

    def __init__(self, task: str, obs_mode: str = "pixels", image_size: tuple[int, int] = (128, 128),
                 camera_index: int = 0, robot_model: str = "wx250s", control_period_s: float = 0.2,
                 render_size: tuple[int, int] = (256, 256), **unused: Any) -> None:
        try:
            from interbotix_xs_modules.arm import InterbotixManipulatorXS
        except ImportError as exc:
            raise RuntimeError(
                "backend 'interbotix' needs the Interbotix ROS Python API (interbotix_xs_modules), which is "
                "not importable here; run `steergym serve --backend interbotix` on the robot computer inside the "
                "Interbotix/ROS environment (e.g. bridge_data_robot's container), or use --backend sim"
            ) from exc
        if obs_mode not in ("pixels",):
            raise ValueError(f"InterbotixBackend: obs_mode {obs_mode!r} needs object poses the real arm cannot "
                             "sense; use obs_mode='pixels'")
        try:
            import cv2
        except ImportError as exc:
            raise RuntimeError("backend 'interbotix' reads its camera with OpenCV: pip install opencv-python") from exc
        from gymnasium import spaces

        row = entry(task)
        self.task, self.max_episode_steps = task, row.max_episode_steps
        self.instruction = task_instruction(task)
        self._cv2 = cv2
        self.bot = InterbotixManipulatorXS(robot_model, "arm", "gripper")
        self.camera = cv2.VideoCapture(camera_index)
        self.image_size, self.render_size = tuple(image_size), tuple(render_size)
        self.control_period_s = control_period_s
        self.options = {"obs_mode": obs_mode, "image_size": list(image_size)}
        self.observation_space = spaces.Box(0, 255, shape=(*self.image_size, 3), dtype=np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(7,), dtype=np.float32)
        self.scale_pos, self.scale_rot = 0.05, 0.25
        self._target_pos, self._target_rpy = START_POS.copy(), START_RPY.copy()
        self._low = np.array([-3.14, -1.88, -2.15, -3.14, -1.75, -3.14])  # wx250s URDF (envs.md 1.3)
        self._high = np.array([3.14, 1.99, 1.61, 3.14, 2.15, 3.14])

    def _frame(self, size: tuple[int, int]) -> np.ndarray:
        ok, bgr = self.camera.read()
        if not ok:
            raise RuntimeError("InterbotixBackend: the camera returned no frame")
        rgb = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)
        return self._cv2.resize(rgb, (size[1], size[0]), interpolation=self._cv2.INTER_AREA)

    def _command(self, blocking: bool, moving_time: float) -> None:
        pose = np.eye(4)
        pose[:3, 3] = self._target_pos
        pose[:3, :3] = euler_to_mat(self._target_rpy) @ DEFAULT_ROTATION
        self.bot.arm.set_ee_pose_matrix(pose, custom_guess=self.bot.arm.get_joint_commands(),
                                        moving_time=moving_time, accel_time=moving_time / 2, blocking=blocking)

    def reset(self, seed: int | None = None):
        self.bot.gripper.open(delay=0.5)
        self._target_pos, self._target_rpy = START_POS.copy(), START_RPY.copy()
        self._command(blocking=True, moving_time=2.0)
        return self._frame(self.image_size), {"is_success": False, "instruction": self.instruction}

    def step(self, action: np.ndarray):
        t0 = time.monotonic()
        self._target_pos = self._target_pos + action[:3] * self.scale_pos
        self._target_rpy = self._target_rpy + action[3:6] * self.scale_rot
        self._command(blocking=False, moving_time=self.control_period_s)
        (self.bot.gripper.open if action[6] > 0 else self.bot.gripper.close)(delay=0.0)
        time.sleep(max(0.0, self.control_period_s - (time.monotonic() - t0)))
        return self._frame(self.image_size), 0.0, False, False, {"is_success": False, "instruction": self.instruction}

    def target_pose(self):
        return self._target_pos.copy(), self._target_rpy.copy()

    def tcp_pose(self):
        pose = np.asarray(self.bot.arm.get_ee_pose())
        return pose[:3, 3].copy(), mat_to_euler(pose[:3, :3] @ DEFAULT_ROTATION.T)

    def joints(self) -> np.ndarray:
        return np.asarray(self.bot.arm.get_joint_commands(), float)

    def joint_limits(self):
        return self._low.copy(), self._high.copy()

    def hold(self) -> None:
        pos, rpy = self.tcp_pose()
        self._target_pos, self._target_rpy = pos, rpy
        self._command(blocking=False, moving_time=0.5)

    def move_to_safe_pose(self) -> bool:
        self.bot.gripper.open(delay=0.5)
        self._target_pos, self._target_rpy = START_POS.copy(), START_RPY.copy()
        self._command(blocking=True, moving_time=3.0)
        return self.at_safe_pose()

    def at_safe_pose(self) -> bool:
        pos, _ = self.tcp_pose()
        return bool(np.linalg.norm(pos - START_POS) < SAFE_POSE_TOLERANCE_M)

    def render(self) -> np.ndarray:
        return self._frame(self.render_size)

    def close(self) -> None:
        self.camera.release()


def task_instruction(task: str) -> str:
    """The language instruction of a simulated task, read from its class (no model is built)."""
    from gymnasium.envs.registration import load_env_creator

    return str(getattr(load_env_creator(gym.spec(task).entry_point), "instruction", ""))


BACKENDS = {"sim": SimBackend, "interbotix": InterbotixBackend}


def make_backend(kind: str, task: str, **options: Any):
    """A backend by name ("sim" or "interbotix"); raises ValueError naming the known kinds."""
    if kind not in BACKENDS:
        raise ValueError(f"unknown robot backend {kind!r}; known: {sorted(BACKENDS)}")
    return BACKENDS[kind](task, **options)
