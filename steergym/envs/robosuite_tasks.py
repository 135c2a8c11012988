"""robosuite manipulation tasks (Panda, OSC_POSE) as plain Gymnasium envs, robomimic-style.

    env = gymnasium.make("steergym/Robosuite-Lift-v0")                  # needs pip install -e ".[suites]"

A thin `gymnasium.Env` over `robosuite.make` (robosuite's own GymWrapper fails gymnasium's checker:
metadata None, horizon ends reported as terminations, global NumPy seeding). Conventions follow
robomimic / DPPO / DSRL (../shared/reference/envs.md section 4.4):

Action (7,) float32 in [-1, 1]: OSC_POSE deltas, end-effector position x 0.05 m and axis-angle
    rotation x 0.5 rad per 50 ms step (20 Hz control), then the gripper (-1 open, +1 close).
    Finite values outside [-1, 1] are clipped; NaN/inf or a wrong shape raise ValueError.
Observation: float32 vector, the robomimic low-dim keys in order
    robot0_eef_pos (3), robot0_eef_quat (4, xyzw), robot0_gripper_qpos (2), object (robosuite's
    "object-state": Lift 10, PickPlaceCan 14, NutAssemblySquare 14) -> 19 / 23 / 23 entries;
    `state_names` labels them. With `cameras=("agentview", ...)` the observation is a Dict
    {"state": that vector, "<camera>_image": uint8 (H, W, 3) upright image per camera}.
Reward: sparse, 1.0 when the task succeeds (robosuite's `_check_success`) else 0.0;
    `info["is_success"]` every step. `terminate_on_success=True` ends the episode at success;
    the registered horizon (DPPO's max_episode_steps: 300 / 300 / 400) truncates it.
Seeding: `reset(seed=s)` reseeds the robosuite env's own Generator (robot joint noise, object
    placement) from the env's `np_random`, so the same seed gives the same episode (in this env
    or a fresh one), and resets without a seed continue that stream. Resets are soft
    (`hard_reset=False`): the model is built once, from robosuite seed 0.
Rendering: `render_mode="rgb_array"` renders `render_camera` offscreen (EGL, CPU or GPU), upright.
Pickling (vector envs, `copy.deepcopy`, the steering wrappers): robosuite's own objects hold
    closures and cannot be pickled, so the pickle holds the constructor options, the episode's
    reset seed and the actions since that reset; unpickling builds a fresh env and replays them
    (MuJoCo is deterministic), so the copy continues exactly where the original was. That costs
    one reset plus the episode's steps so far (~9 ms each on a 2-core CPU).

robosuite is imported only when an env is built: `import steergym` stays light, and a missing
install gives an ImportError that says to install the `suites` extra.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from steergym.checks import finite_array

SUITES_HINT = 'pip install -e ".[suites]"'
CONTROL_FREQ = 20  # Hz, robomimic / DPPO
STATE_BOUND = 10.0  # |state entries| (metres, unit quaternions, finger positions) stay well inside
LOW_DIM_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object-state")
RENDER_MODES = (None, "rgb_array")


@dataclass(frozen=True)
class RobosuiteTask:
    """One registered robosuite task: robosuite's env name, robomimic's object state, a horizon."""

    env_name: str
    object_names: tuple[str, ...]  # labels of the "object-state" entries, in robosuite's order
    instruction: str  # (horizons: the registry's ROBOSUITE_TASKS)

    @property
    def obs_dim(self) -> int:
        return 9 + len(self.object_names)


def _names(prefix: str, parts: str) -> tuple[str, ...]:
    """Labels of a position ("xyz") or quaternion ("qx qy qz qw") observable."""
    return tuple(f"{prefix}_{k}" for k in parts.split())


TASKS: dict[str, RobosuiteTask] = {
    # robosuite's object-state orders: Lift cube_pos, cube_quat, gripper_to_cube_pos; PickPlace and
    # NutAssembly <obj>_to_robot0_eef_pos, <obj>_to_robot0_eef_quat, <obj>_pos, <obj>_quat
    # (tests/test_robosuite.py checks the labels against robosuite's named observables).
    "Lift": RobosuiteTask(
        "Lift", (*_names("cube", "x y z qx qy qz qw"), *_names("gripper_to_cube", "x y z")), "lift the cube"),
    "PickPlaceCan": RobosuiteTask(
        "PickPlaceCan",
        (*_names("can_to_eef", "x y z qx qy qz qw"), *_names("can", "x y z qx qy qz qw")),
        "put the can in its bin"),
    "NutAssemblySquare": RobosuiteTask(
        "NutAssemblySquare",
        (*_names("nut_to_eef", "x y z qx qy qz qw"), *_names("nut", "x y z qx qy qz qw")),
        "fit the square nut onto the square peg"),
}


def import_robosuite(who: str):
    """robosuite, imported quietly (its import logs setup advice); ImportError naming the extra."""
    try:
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)  # "No private macro file found!", optional-model notices
        try:
            import robosuite
            from robosuite.controllers import load_composite_controller_config  # noqa: F401
        finally:
            logging.disable(previous)
    except ImportError as exc:
        raise ImportError(
            f"{who} needs robosuite (with mujoco 3.8.1), which is not installed ({exc}); install the "
            f"suites extra: {SUITES_HINT}"
        ) from exc
    logging.getLogger("robosuite_logs").setLevel(logging.WARNING)  # keep its INFO chatter quiet
    return robosuite


def osc_pose_config(robosuite) -> dict[str, Any]:
    """robosuite's BASIC composite controller for a single Panda arm: OSC_POSE with robomimic's
    gains (kp 150, damping ratio 1, deltas x 0.05 m / x 0.5 rad) and the parallel-jaw gripper."""
    from robosuite.controllers import load_composite_controller_config

    config = load_composite_controller_config(controller="BASIC", robot="Panda")
    arm = dict(config["body_parts"]["right"])
    if arm.get("type") != "OSC_POSE":
        raise RuntimeError(f"robosuite {robosuite.__version__}: BASIC controller is {arm.get('type')}, "
                           "not OSC_POSE")
    config["body_parts"] = {"right": arm}  # a Panda has one arm: drop the other parts' configs
    return config


class RobosuiteEnv(gym.Env):
    """A robosuite task (`task`: a key of `TASKS`) with robomimic low-dim observations."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FREQ}

    def __init__(
        self,
        task: str = "Lift",
        render_mode: str | None = None,
        render_size: tuple[int, int] = (256, 256),
        render_camera: str = "agentview",
        cameras: tuple[str, ...] = (),
        camera_size: tuple[int, int] = (84, 84),
        terminate_on_success: bool = True,
        **unknown: Any,
    ) -> None:
        who = f"RobosuiteEnv({task!r})" if isinstance(task, str) else "RobosuiteEnv"
        if unknown:
            raise TypeError(f"{who}: unknown option(s) {sorted(unknown)}; "
                            f"valid options: {sorted(valid_options())}")
        if task not in TASKS:
            raise ValueError(f"RobosuiteEnv: task={task!r} is not one of {list(TASKS)}")
        if render_mode not in RENDER_MODES:
            raise ValueError(f"{who}: render_mode={render_mode!r} is not one of {list(RENDER_MODES)} "
                             "(rendering is offscreen only)")
        if isinstance(cameras, str):
            cameras = (cameras,)
        for label, size in (("render_size", render_size), ("camera_size", camera_size)):
            if len(size) != 2 or min(int(v) for v in size) < 8:
                raise ValueError(f"{who}: {label} must be (height, width) >= 8 pixels, got {size!r}")
        self.task = TASKS[task]
        self.name = who
        self.instruction = self.task.instruction
        self.render_mode = render_mode
        self.render_size = (int(render_size[0]), int(render_size[1]))
        self.render_camera = render_camera
        self.cameras = tuple(cameras)
        self.camera_size = (int(camera_size[0]), int(camera_size[1]))
        self.terminate_on_success = bool(terminate_on_success)
        self._options = dict(task=task, render_mode=render_mode, render_size=self.render_size,
                             render_camera=render_camera, cameras=self.cameras, camera_size=self.camera_size,
                             terminate_on_success=self.terminate_on_success)
        self._episode_seed: int | None = None  # robosuite's reseed of the current episode (pickling)
        self._episode_actions: list[np.ndarray] = []

        robosuite = import_robosuite(who)
        offscreen = bool(self.cameras) or render_mode == "rgb_array"
        self._env = robosuite.make(**make_kwargs(robosuite, self.task.env_name, offscreen, self.cameras,
                                                 self.camera_size))
        known_cameras = tuple(self._env.sim.model.camera_names)
        for cam in (*self.cameras, render_camera):
            if cam not in known_cameras:
                self._env.close()
                raise ValueError(f"{who}: camera {cam!r} is not one of {list(known_cameras)}")

        self.state_names = ["eef_x", "eef_y", "eef_z", "eef_qx", "eef_qy", "eef_qz", "eef_qw",
                            "finger_left", "finger_right", *self.task.object_names]
        low, high = self._env.action_spec
        self.action_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        state = spaces.Box(-STATE_BOUND, STATE_BOUND, shape=(self.task.obs_dim,), dtype=np.float32)
        if self.cameras:
            image = spaces.Box(0, 255, (*self.camera_size, 3), np.uint8)
            images = {f"{cam}_image": image for cam in self.cameras}
            self.observation_space = spaces.Dict({"state": state, **images})
        else:
            self.observation_space = state
        self._needs_reset = True
        self._last_obs: Any = None

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # robosuite draws the robot's initial joint noise and the object placement from env.rng,
        # a Generator its placement samplers hold by reference: reseed it in place.
        self._episode_seed = int(self.np_random.integers(2**63 - 1))
        self._episode_actions = []
        raw = self._reset_robosuite(self._episode_seed)
        self._needs_reset = False
        self._last_obs = self._observation(raw)
        return self._last_obs, {"is_success": bool(self._env._check_success())}

    def _reset_robosuite(self, episode_seed: int) -> dict[str, np.ndarray]:
        self._env.rng.bit_generator.state = np.random.default_rng(episode_seed).bit_generator.state
        return self._env.reset()

    def step(self, action):
        if self._needs_reset:
            raise gym.error.ResetNeeded(f"{self.name}: call reset() before step()")
        action = self._validate_action(action)
        self._episode_actions.append(action)
        raw, _, _, _ = self._env.step(action)
        success = bool(self._env._check_success())
        self._last_obs = self._observation(raw)
        terminated = success and self.terminate_on_success
        return self._last_obs, float(success), terminated, False, {"is_success": success}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self.camera_image(self.render_camera, self.render_size)

    def close(self) -> None:
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()

    # ------------------------------------------------------------------ pickling (see module doc)
    def __getstate__(self) -> dict[str, Any]:
        return {"options": self._options, "np_random": (self._np_random, self._np_random_seed),
                "episode_seed": self._episode_seed, "actions": list(self._episode_actions),
                "needs_reset": self._needs_reset, "spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["options"])
        (self._np_random, self._np_random_seed), self.spec = state["np_random"], state["spec"]
        self._needs_reset = state["needs_reset"]
        if state["episode_seed"] is None:
            return
        self._episode_seed = state["episode_seed"]
        raw = self._reset_robosuite(self._episode_seed)
        for action in state["actions"]:
            self._episode_actions.append(action)
            raw, _, _, _ = self._env.step(action)
        self._last_obs = self._observation(raw)

    # ------------------------------------------------------------------ helpers
    @property
    def robosuite_env(self):
        """The underlying robosuite env (its `sim`, `robots`, objects)."""
        return self._env

    def camera_image(self, camera: str, size: tuple[int, int]) -> np.ndarray:
        """Upright RGB uint8 (H, W, 3) image of the current state from a named camera."""
        image = self._env.sim.render(camera_name=camera, height=size[0], width=size[1])
        return np.ascontiguousarray(image[::-1])  # robosuite renders bottom row first (OpenGL)

    def _observation(self, raw: dict[str, np.ndarray]):
        state = np.concatenate([raw[k] for k in LOW_DIM_KEYS]).astype(np.float32)
        np.clip(state, -STATE_BOUND, STATE_BOUND, out=state)
        if not self.cameras:
            return state
        obs = {"state": state}
        for cam in self.cameras:
            obs[f"{cam}_image"] = np.ascontiguousarray(raw[f"{cam}_image"][::-1])
        return obs

    def _validate_action(self, action) -> np.ndarray:
        return np.clip(finite_array(action, self.action_space.shape, owner=self.name), -1.0, 1.0)


def make_kwargs(robosuite, env_name: str, offscreen: bool = False, cameras: tuple[str, ...] = (),
                camera_size: tuple[int, int] = (84, 84)) -> dict[str, Any]:
    """The `robosuite.make` arguments of a task (benchmarks/env_speed.py builds robosuite's own env
    from the same ones): robomimic's settings, no on-screen renderer, soft resets."""
    return dict(
        env_name=env_name,
        robots="Panda",
        controller_configs=osc_pose_config(robosuite),
        has_renderer=False,
        has_offscreen_renderer=offscreen,
        use_camera_obs=bool(cameras),
        camera_names=list(cameras) or "agentview",
        camera_heights=camera_size[0],
        camera_widths=camera_size[1],
        use_object_obs=True,
        reward_shaping=False,
        control_freq=CONTROL_FREQ,
        ignore_done=True,  # the registered TimeLimit truncates
        hard_reset=False,
        horizon=10**9,
        # The model itself is drawn from this seed once (Lift's cube size varies within 2 mm), so
        # every instance simulates the same scene; episodes are seeded in RobosuiteEnv.reset().
        seed=0,
    )


def valid_options() -> set[str]:
    import inspect

    params = inspect.signature(RobosuiteEnv.__init__).parameters
    return {p for p in params if p not in ("self", "unknown")}


def describe(task: str) -> dict[str, Any]:
    """Spaces of a task's default (state) observation without importing robosuite (`steergym list`)."""
    t = TASKS[task]
    return {"instruction": t.instruction, "obs_shape": [t.obs_dim], "action_shape": [7]}
