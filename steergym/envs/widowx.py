"""The simulated WidowX 250 table-top environment shared by every WidowX task.

Action (7,) float32 in [-1, 1], the BridgeData convention scaled to a normalised box:
    a[0:3]  end-effector delta x, y, z in the base frame       x 0.05 m   (per 0.2 s step)
    a[3:6]  delta roll, pitch, yaw about the base axes          x 0.25 rad (about the tcp point)
    a[6]    gripper command: -1 fully closed ... +1 fully open (absolute, not a delta)
Finite values outside [-1, 1] are clipped; NaN/inf, non-numbers (strings, complex, None) or a wrong
shape raise ValueError. Deltas are added to the previous *target* pose, which is clipped to the
workspace box (see `ControlLimits`).
Control runs at 5 Hz: one step is 0.2 s = 50 physics steps of 4 ms; the servo set-points ramp
linearly to the new IK solution over the first 60% of the step and hold it for the rest.

Observation (`obs_mode`):
    "state"         float32 vector: the Bridge proprio [x, y, z, roll, pitch, yaw, gripper_open]
                    then, per task object, position (3), quaternion wxyz (4), position - tcp (3),
                    then task extras; `state_names` labels every entry.
    "pixels"        uint8 (H, W, 3) from the "third_person" camera (Bridge image_0), 128x128 default.
    "pixels_state"  Dict with "pixels", "state" (and "wrist_pixels" when wrist_camera=True).
Reward (`reward_type`): "sparse" = 1.0 on success else 0.0 (the papers' setting); "dense" = a
shaped value in [0, 1] that is 1.0 on success. `info["is_success"]` is set every step.
"""

from __future__ import annotations

import atexit
import functools
import math
import numbers
import os
import sys
import weakref
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from steergym.checks import finite_array
from steergym.envs.controller import ARM_JOINTS, ControlLimits, EndEffectorController
from steergym.envs.scene import BodyGeometry, body_geometry, build_model

CONTROL_DT = 0.2  # s per control step (5 Hz, Bridge / SIMPLER)
PHYSICS_DT = 0.004  # s, set in the MJCF; 50 substeps per control step
SERVO_RAMP_CHUNKS = 3  # servo set-point updates, over the first 60% of a control step
SERVO_RAMP_FRACTION = 0.6  # the rest of the step holds the final set-point so the joints settle
SETTLE_STEPS = 50  # physics steps (0.2 s) for objects to come to rest after a reset
START_POS = np.array([0.30, 0.0, 0.15])  # Bridge start pose of the tcp, metres
START_RPY = np.zeros(3)  # gripper pointing down
FINGER_CLOSED, FINGER_OPEN = 0.007, 0.037
# Envs whose GL renderers must be freed before the interpreter tears EGL down (else noisy errors).
_LIVE_ENVS: weakref.WeakSet = weakref.WeakSet()
TABLE_TAG, LEFT_PAD_TAG, RIGHT_PAD_TAG, OBJECT_TAG0 = 0, 1, 2, 3  # contact groups, see contact_pairs
_TAG_BASE = 1024  # pair code = lower tag * _TAG_BASE + higher tag  # slide range of each finger, metres
STATE_BOUND = 10.0  # |state entries| (metres, rad, unit quaternions) never exceed this; clipped
# MuJoCo warnings after which it has reset the simulation (state or control was NaN/inf/huge).
UNSTABLE_WARNING_NAMES = ("mjWARN_BADQPOS", "mjWARN_BADQVEL", "mjWARN_BADQACC", "mjWARN_BADCTRL")
UNSTABLE_WARNINGS = np.array([int(getattr(mujoco.mjtWarning, n)) for n in UNSTABLE_WARNING_NAMES])
OBS_MODES = ("state", "pixels", "pixels_state")
REWARD_TYPES = ("sparse", "dense")


class WidowXEnv(gym.Env):
    """Base class of the WidowX tasks; a task subclass sets the class attributes and hooks.

    Subclasses set `objects` (fragments in assets/objects), `instruction`, `max_episode_steps` and
    implement `_place_objects`, `_evaluate` and `_dense_reward`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array", "human"], "render_fps": 5}

    objects: ClassVar[tuple[str, ...]] = ()
    instruction: ClassVar[str] = ""
    max_episode_steps: ClassVar[int] = 60

    def __init__(
        self,
        obs_mode: str = "state",
        reward_type: str = "sparse",
        render_mode: str | None = None,
        image_size: tuple[int, int] = (128, 128),
        render_size: tuple[int, int] = (256, 256),
        camera: str = "third_person",
        render_camera: str = "front",
        wrist_camera: bool = False,
        terminate_on_success: bool = True,
        control_limits: ControlLimits | None = None,
        **unknown: Any,
    ) -> None:
        name = type(self).__name__
        if unknown:
            raise TypeError(
                f"{name}: unknown option(s) {sorted(unknown)}; valid options: {sorted(valid_options())}"
            )
        _check_choice(name, "obs_mode", obs_mode, OBS_MODES)
        _check_choice(name, "reward_type", reward_type, REWARD_TYPES)
        _check_choice(name, "render_mode", render_mode, (None, *self.metadata["render_modes"]))
        sizes = {label: _check_size(name, label, size) for label, size in (("image_size", image_size),
                                                                            ("render_size", render_size))}
        for label, flag in (("wrist_camera", wrist_camera), ("terminate_on_success", terminate_on_success)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name}: {label} must be True or False, got {flag!r} ({type(flag).__name__})")
        if control_limits is not None and not isinstance(control_limits, ControlLimits):
            raise TypeError(f"{name}: control_limits must be a steergym.envs.controller.ControlLimits or None, got "
                            f"{control_limits!r} ({type(control_limits).__name__})")
        if render_mode == "human" and not _has_display():
            raise RuntimeError(
                f"{name}: render_mode='human' opens a window and needs a display (DISPLAY/WAYLAND_DISPLAY "
                "is unset); use render_mode='rgb_array' (headless, MUJOCO_GL=egl) instead"
            )
        self.obs_mode, self.reward_type, self.render_mode = obs_mode, reward_type, render_mode
        self.image_size, self.render_size = sizes["image_size"], sizes["render_size"]
        self.camera, self.render_camera, self.wrist_camera = camera, render_camera, bool(wrist_camera)
        self.terminate_on_success = bool(terminate_on_success)

        self.model = build_model(self.objects)
        self.data = mujoco.MjData(self.model)
        for label, cam in (("camera", camera), ("render_camera", render_camera)):
            _check_choice(name, label, cam, tuple(self.model.camera(i).name for i in range(self.model.ncam)))
        framebuffer = (int(self.model.vis.global_.offheight), int(self.model.vis.global_.offwidth))
        for label, size in sizes.items():  # MuJoCo's offscreen buffer: a larger image fails at the first render
            if size[0] > framebuffer[0] or size[1] > framebuffer[1]:
                raise ValueError(f"{name}: {label}={size} exceeds the offscreen framebuffer (height, width) "
                                 f"{framebuffer} of the model")
        self.controller = EndEffectorController(self.model, control_limits or ControlLimits())
        self._arm_qpos_adr = self.controller.qpos_adr
        self._finger_qpos_adr = self.model.jnt_qposadr[
            [self.model.joint("left_finger").id, self.model.joint("right_finger").id]
        ]
        self._arm_actuators = np.array([self.model.actuator(n).id for n in ARM_JOINTS])
        self._gripper_actuator = self.model.actuator("gripper").id
        self.geometry: dict[str, BodyGeometry] = {
            obj: body_geometry(self.model, obj) for obj in self.objects if obj != "goal_marker"
        }
        self._body_ids = {obj: self.model.body(obj).id for obj in self.objects}
        self._object_body_ids = np.array([self._body_ids[obj] for obj in self.objects], dtype=int)
        self._geom_tags = self._make_geom_tags()
        substeps = int(round(CONTROL_DT / self.model.opt.timestep))
        ramp = int(round(substeps * SERVO_RAMP_FRACTION)) // SERVO_RAMP_CHUNKS
        # Physics steps per set-point update: SERVO_RAMP_CHUNKS ramp chunks, then the hold.
        self._substep_schedule = [ramp] * SERVO_RAMP_CHUNKS + [substeps - ramp * SERVO_RAMP_CHUNKS]
        self._contacts: set[int] = set()
        self._contacts_time = -1.0
        self._home_joints = self.controller.reset(START_POS, START_RPY, np.array([0, 0, 0.3, 0, 1.27, 0]))

        self.state_names = self._make_state_names()
        self.action_space = spaces.Box(-1.0, 1.0, shape=(7,), dtype=np.float32)
        self.observation_space = self._make_observation_space()

        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        _LIVE_ENVS.add(self)
        self._viewer = None
        self._needs_reset = True
        self._last_obs: Any = None
        self.initial_positions: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ task hooks
    def _place_objects(self, rng: np.random.Generator) -> None:
        """Set the initial object poses (free-joint qpos / mocap pos) for a new episode."""
        raise NotImplementedError

    def _evaluate(self) -> dict[str, Any]:
        """Task metrics for the current state; must contain "is_success" (bool)."""
        raise NotImplementedError

    def _dense_reward(self, metrics: dict[str, Any]) -> float:
        """Shaped reward in [0, 1) for a state that is not a success."""
        raise NotImplementedError

    def _task_state(self) -> np.ndarray:
        """Extra state features of the task (e.g. a goal position); empty by default."""
        return np.zeros(0)

    def _task_state_names(self) -> list[str]:
        return []

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[self._arm_qpos_adr] = self._home_joints
        d.qpos[self._finger_qpos_adr] = (FINGER_OPEN, -FINGER_OPEN)
        d.ctrl[self._arm_actuators] = self._home_joints
        d.ctrl[self._gripper_actuator] = FINGER_OPEN
        self.controller.reset(START_POS, START_RPY, self._home_joints)
        self._place_objects(self.np_random)
        mujoco.mj_forward(m, d)
        mujoco.mj_step(m, d, nstep=SETTLE_STEPS)
        self._contacts_time = -1.0  # every reset ends at the same sim time: drop cached contacts
        self.initial_positions = {obj: d.xpos[bid].copy() for obj, bid in self._body_ids.items()}
        self._needs_reset = False
        metrics = self._evaluate()
        self._last_obs = self._observation()
        if self.render_mode == "human":
            self.render()
        return self._last_obs, self._info(metrics)

    def step(self, action):
        if self._needs_reset:
            raise gym.error.ResetNeeded(
                f"{type(self).__name__}: call reset() before step() (and after an episode ends "
                "with a physics error)"
            )
        action = self._validate_action(action)
        m, d = self.model, self.data
        q_start = d.ctrl[self._arm_actuators].copy()
        q_goal = self.controller.apply_delta(
            action[:3] * self.controller.limits.max_delta_pos,
            action[3:6] * self.controller.limits.max_delta_rot,
        )
        d.ctrl[self._gripper_actuator] = FINGER_CLOSED + (action[6] + 1.0) / 2.0 * (FINGER_OPEN - FINGER_CLOSED)
        warnings_before = d.warning.number[UNSTABLE_WARNINGS].copy()
        for k, substeps in enumerate(self._substep_schedule, start=1):
            d.ctrl[self._arm_actuators] = q_start + (q_goal - q_start) * min(k / SERVO_RAMP_CHUNKS, 1.0)
            mujoco.mj_step(m, d, nstep=substeps)

        error = self._physics_error(warnings_before)
        if error is not None:
            self._needs_reset = True
            info = self._info({"is_success": False})
            info["physics_error"] = error
            return _copy_obs(self._last_obs), 0.0, False, True, info

        metrics = self._evaluate()
        success = bool(metrics["is_success"])
        if self.reward_type == "sparse":
            reward = float(success)
        else:
            reward = 1.0 if success else float(self._dense_reward(metrics))
        self._last_obs = self._observation()
        if self.render_mode == "human":
            self.render()
        return self._last_obs, reward, success and self.terminate_on_success, False, self._info(metrics)

    def render(self):
        if self.render_mode == "rgb_array":
            return self.render_camera_image(self.render_camera, self.render_size)
        if self.render_mode == "human":
            if self._viewer is None:
                import mujoco.viewer

                self._viewer = mujoco.viewer.launch_passive(self.model, self.data)
            self._viewer.sync()
        return None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - best effort during garbage collection
            pass

    def __getstate__(self) -> dict:
        """Pickle without the OpenGL renderers and viewer (ctypes handles); they are rebuilt lazily."""
        state = self.__dict__.copy()
        state["_renderers"] = {}
        state["_viewer"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        _LIVE_ENVS.add(self)

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        if self._viewer is not None:
            self._viewer.close()
            self._viewer = None

    # ------------------------------------------------------------------ public helpers
    def render_camera_image(self, camera: str, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 (H, W, 3) image of the current state from a named camera."""
        renderer = self._renderers.get(size)
        if renderer is None:
            renderer = mujoco.Renderer(self.model, height=size[0], width=size[1])
            _close_renderers_at_exit()
            self._renderers[size] = renderer
        renderer.update_scene(self.data, camera=camera)
        return renderer.render()

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Measured tcp position (3,) in metres and relative roll/pitch/yaw (3,) in rad."""
        return self.controller.tcp_pose(self.data)

    def gripper_opening(self) -> float:
        """Measured jaw opening in [0, 1] (0 fully closed, 1 fully open)."""
        q = self.data.qpos[self._finger_qpos_adr[0]]
        return float(np.clip((q - FINGER_CLOSED) / (FINGER_OPEN - FINGER_CLOSED), 0.0, 1.0))

    def body_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) and quaternion wxyz (4,) of a task object."""
        bid = self._body_ids[name]
        return self.data.xpos[bid].copy(), self.data.xquat[bid].copy()

    def contact_pairs(self) -> set[int]:
        """Codes `pair_code(tag_a, tag_b)` of the geom groups touching now.

        Tags: `TABLE_TAG`, `LEFT_PAD_TAG`, `RIGHT_PAD_TAG`, then one tag per task object in the order
        of `objects` (see `object_tag`); geoms of anything else (arm links, floor) are tag -1.
        Computed once per simulation time and cached.
        """
        if self._contacts_time != self.data.time:
            ncon = self.data.ncon
            tags = self._geom_tags[self.data.contact.geom[:ncon]]
            tags = tags[(tags >= 0).all(axis=1)]
            self._contacts = set((tags.min(axis=1) * _TAG_BASE + tags.max(axis=1)).tolist())
            self._contacts_time = self.data.time
        return self._contacts

    def object_tag(self, obj: str) -> int:
        return OBJECT_TAG0 + self.objects.index(obj)

    def touching(self, tag_a: int, tag_b: int) -> bool:
        return min(tag_a, tag_b) * _TAG_BASE + max(tag_a, tag_b) in self.contact_pairs()

    def is_grasped(self, obj: str) -> bool:
        """Both finger pads touch `obj` (SIMPLER's check_grasp without the impulse angle test)."""
        tag = self.object_tag(obj)
        return self.touching(LEFT_PAD_TAG, tag) and self.touching(RIGHT_PAD_TAG, tag)

    def touches_table(self, obj: str) -> bool:
        return self.touching(TABLE_TAG, self.object_tag(obj))

    def touches_gripper(self, obj: str) -> bool:
        tag = self.object_tag(obj)
        return self.touching(LEFT_PAD_TAG, tag) or self.touching(RIGHT_PAD_TAG, tag)

    def set_free_body_pose(self, name: str, pos: np.ndarray, yaw: float = 0.0) -> None:
        """Place a free-joint object at `pos` (metres) rotated by `yaw` (rad) about +z."""
        joint = self.model.joint(f"{name}_joint")
        adr = self.model.jnt_qposadr[joint.id]
        self.data.qpos[adr : adr + 3] = pos
        self.data.qpos[adr + 3 : adr + 7] = (np.cos(yaw / 2.0), 0.0, 0.0, np.sin(yaw / 2.0))

    def set_mocap_pose(self, name: str, pos: np.ndarray, yaw: float = 0.0) -> None:
        """Place a fixed (mocap) scene body at `pos` (metres), rotated by `yaw` (rad) about +z."""
        mocap_id = self.model.body_mocapid[self._body_ids[name]]
        self.data.mocap_pos[mocap_id] = pos
        self.data.mocap_quat[mocap_id] = (np.cos(yaw / 2.0), 0.0, 0.0, np.sin(yaw / 2.0))

    # ------------------------------------------------------------------ internals
    def _validate_action(self, action) -> np.ndarray:
        return np.clip(finite_array(action, (7,), owner=type(self).__name__), -1.0, 1.0)

    def _physics_error(self, warnings_before: np.ndarray) -> str | None:
        """Why the last step's physics is not to be trusted, or None.

        MuJoCo resets the whole simulation when a position, velocity, acceleration or control goes
        non-finite or beyond 1e10 (and only raises a warning), so the warning counters are checked
        as well as the state itself.
        """
        d = self.data
        if not (np.all(np.isfinite(d.qpos)) and np.all(np.isfinite(d.qvel))):
            return "non-finite simulation state (NaN/inf in qpos or qvel)"
        raised = d.warning.number[UNSTABLE_WARNINGS] > warnings_before
        if raised.any():
            names = [UNSTABLE_WARNING_NAMES[i] for i in np.flatnonzero(raised)]
            return f"MuJoCo reported an unstable simulation ({', '.join(names)}) at t={d.time:.3f} s"
        if np.abs(d.qvel).max() > 1e3:
            return f"simulation diverged: joint speed {np.abs(d.qvel).max():.3g} exceeds 1e3"
        return None

    def _make_geom_tags(self) -> np.ndarray:
        m = self.model
        tags = np.full(m.ngeom, -1)
        tags[m.geom("table").id] = TABLE_TAG
        tags[m.geom("left_pad").id] = LEFT_PAD_TAG
        tags[m.geom("right_pad").id] = RIGHT_PAD_TAG
        for k, obj in enumerate(self.objects):
            tags[m.geom_bodyid == self._body_ids[obj]] = OBJECT_TAG0 + k
        return tags

    def _proprio(self) -> np.ndarray:
        pos, rpy = self.tcp_pose()
        return np.concatenate([pos, rpy, [self.gripper_opening()]])

    def _state(self) -> np.ndarray:
        tcp = self.data.site_xpos[self.controller.site_id]
        pos = self.data.xpos[self._object_body_ids]
        quat = self.data.xquat[self._object_body_ids]
        quat = np.where(quat[:, :1] < 0, -quat, quat)  # one sign per rotation: w >= 0
        objects = np.hstack([pos, quat, pos - tcp]).ravel()
        state = np.concatenate([self._proprio(), objects, self._task_state()])
        return np.clip(state, -STATE_BOUND, STATE_BOUND).astype(np.float32)

    def _make_state_names(self) -> list[str]:
        names = ["tcp_x", "tcp_y", "tcp_z", "tcp_roll", "tcp_pitch", "tcp_yaw", "gripper_open"]
        for obj in self.objects:
            names += [f"{obj}_{k}" for k in ("x", "y", "z", "qw", "qx", "qy", "qz", "dx", "dy", "dz")]
        return names + self._task_state_names()

    def _make_observation_space(self) -> spaces.Space:
        state = spaces.Box(-STATE_BOUND, STATE_BOUND, shape=(len(self.state_names),), dtype=np.float32)
        pixels = spaces.Box(0, 255, shape=(*self.image_size, 3), dtype=np.uint8)
        if self.obs_mode == "state":
            return state
        if self.obs_mode == "pixels":
            return pixels
        parts: dict[str, spaces.Space] = {"pixels": pixels, "state": state}
        if self.wrist_camera:
            parts["wrist_pixels"] = pixels
        return spaces.Dict(parts)

    def _observation(self):
        if self.obs_mode == "state":
            return self._state()
        pixels = self.render_camera_image(self.camera, self.image_size)
        if self.obs_mode == "pixels":
            return pixels
        obs = {"pixels": pixels, "state": self._state()}
        if self.wrist_camera:
            obs["wrist_pixels"] = self.render_camera_image("wrist", self.image_size)
        return obs

    def _info(self, metrics: dict[str, Any]) -> dict[str, Any]:
        info = {k: v for k, v in metrics.items()}
        info["is_success"] = bool(metrics["is_success"])
        info["instruction"] = self.instruction
        return info


def _close_live_envs() -> None:
    for env in list(_LIVE_ENVS):
        env.close()


@functools.cache
def _close_renderers_at_exit() -> None:
    """Register `_close_live_envs` once, *after* MuJoCo's GL backend registered its own teardown
    (atexit runs last-in first-out), so renderers are freed while the GL display still exists."""
    atexit.register(_close_live_envs)


def _copy_obs(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: v.copy() for k, v in obs.items()}
    return obs.copy()


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True  # macOS and Windows always have a window server


def _check_size(env_name: str, option: str, size: Any) -> tuple[int, int]:
    """`size` as (height, width) ints >= 8, or a ValueError naming the option and the value."""
    try:
        height, width = size
        ok = all(_whole(v) and v >= 8 for v in (height, width))
    except (TypeError, ValueError):  # not a pair
        ok = False
    if not ok:
        raise ValueError(f"{env_name}: {option} must be (height, width), two whole numbers >= 8 pixels, got {size!r}")
    return int(height), int(width)


def _whole(v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    return isinstance(v, numbers.Integral) or (isinstance(v, numbers.Real) and math.isfinite(v) and float(v).is_integer())


def _check_choice(env_name: str, option: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{env_name}: {option}={value!r} is not one of {list(choices)}")


def valid_options() -> set[str]:
    """Keyword options every WidowX task accepts (for error messages and the CLI)."""
    import inspect

    params = inspect.signature(WidowXEnv.__init__).parameters
    return {p for p in params if p not in ("self", "unknown")}
