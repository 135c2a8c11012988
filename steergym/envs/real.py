"""The real WidowX as a Gymnasium env: a client of a robot server (`steergym serve`).

`gymnasium.make("steergym/WidowXRealPutCarrotOnPlate-v0", host=..., port=..., token_file=...)` is a
drop-in for `steergym/WidowXPutCarrotOnPlate-v0`: the same 7-D normalised action, the same
observation space (the server's task and options, checked at connection), the same instruction and
horizon, so a policy, wrapper or trainer moves from sim to the arm by changing the id. Behind the
server may be the real arm (backend "interbotix") or the simulated twin (backend "sim").

Timing: a step is due `control_period_s` (0.2 s, 5 Hz) after the previous one was sent; calling
`step` earlier waits for the deadline, calling it later is an *overrun*, reported as
``info["overrun_s"]`` and ``info["deadline_missed"]`` (the policy or learner was too slow). Each step
also reports what the server's safety layer limited (``info["safety"]``, e.g. ["workspace"]) and
the action it executed (``info["action_executed"]``); timings (round trip, server time, rate-limit
wait) are in `env.unwrapped.last_timing`, not in `info`, so that the same seed and actions give the
same infos (gymnasium's env checker requires it). Pass ``control_period_s=0`` to run as fast as the server
answers (the simulated twin, tests).

Failures: a server that does not answer within `timeout_s` raises `RobotConnectionError`; the next
`reset()` reconnects (to a restarted server too). Errors the server reports (wrong token, task
mismatch, e-stop, busy) raise `RobotServerError` with the server's reason.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from steergym.checks import finite_array
from steergym.robot import protocol
from steergym.robot.client import RobotClient, RobotConnectionError, RobotServerError, resolve_token

CONTROL_PERIOD_S = 0.2  # the WidowX's 5 Hz


class RealWidowXEnv(gym.Env):
    """Client env of a WidowX robot server.

    Args:
        task: the simulated task id the robot must serve (None: whatever it serves).
        host, port: the robot server (`steergym serve` prints both).
        token, token_file: the shared secret (see `steergym.robot.client.resolve_token`).
        obs_mode, image_size: if given, the server must serve exactly these.
        render_mode: None or "rgb_array" (frames of the robot's scene camera).
        control_period_s: the step rhythm in seconds (0: none).
        timeout_s: the longest wait for a reply; connect_timeout_s for the first hello.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(self, task: str | None = None, host: str = "127.0.0.1", port: int = protocol.DEFAULT_PORT,
                 token: str | None = None, token_file: str | None = None, obs_mode: str | None = None,
                 image_size: tuple[int, int] | None = None, render_mode: str | None = None,
                 control_period_s: float = CONTROL_PERIOD_S, timeout_s: float = 2.0,
                 connect_timeout_s: float = 5.0, heartbeat_s: float = 0.25) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"RealWidowXEnv: render_mode={render_mode!r} is not one of [None, 'rgb_array']")
        if control_period_s < 0:
            raise ValueError(f"RealWidowXEnv: control_period_s must be >= 0, got {control_period_s}")
        self.render_mode = render_mode
        self.control_period_s = float(control_period_s)
        self.expect = {"task": task, "obs_mode": obs_mode, "image_size": list(image_size) if image_size else None}
        self.client = RobotClient(host, port, resolve_token(token, token_file), timeout_s=timeout_s,
                                  heartbeat_s=heartbeat_s)
        try:
            hello = self.client.connect(self.expect, timeout_s=connect_timeout_s)
        except BaseException:
            self.client.close(bye=False)
            raise
        self.task: str = hello["task"]
        self.instruction: str = hello["instruction"]
        self.backend: str = hello["backend"]
        self.max_episode_steps: int | None = hello["max_episode_steps"]
        self.observation_space = protocol.spec_to_space(hello["observation_space"])
        self.action_space = protocol.spec_to_space(hello["action_space"])
        self._needs_reset = True
        self._link_failed = False
        self._steps = 0
        self._next_deadline: float | None = None
        self.last_timing: dict[str, float] = {}  # the last step's round trip, server time, waits (seconds)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self.client.link_error is not None or self._link_failed:
            self._reconnect()  # the server went away or dropped us: reconnect (to a restarted one too)
        try:
            reply = self.client.request("reset", seed=seed)
        except RobotServerError as exc:
            if exc.code != "no_session":
                raise
            self._reconnect()  # the server restarted between our last request and this one
            reply = self.client.request("reset", seed=seed)
        self._needs_reset, self._steps, self._next_deadline = False, 0, None
        return reply["obs"], reply["info"]

    def step(self, action):
        if self._needs_reset:
            raise gym.error.ResetNeeded("RealWidowXEnv: call reset() before step() (and after an episode ends or "
                                        "the link fails)")
        arr = finite_array(action, self.action_space.shape, owner="RealWidowXEnv", dtype=np.float32)
        overrun = 0.0
        if self._next_deadline is not None:
            wait = self._next_deadline - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                overrun = -wait
        sent = time.monotonic()
        try:
            reply = self.client.request("step", action=arr)
        except Exception as exc:
            self._needs_reset = True
            self._link_failed = isinstance(exc, RobotConnectionError)
            raise
        round_trip = time.monotonic() - sent
        self._next_deadline = sent + self.control_period_s if self.control_period_s > 0 else None
        self._steps += 1
        info = dict(reply["info"])
        info.update(overrun_s=overrun, deadline_missed=overrun > 0)
        self.last_timing = {"round_trip_s": round_trip, "overrun_s": overrun, **reply.get("timing", {})}
        terminated = bool(reply["terminated"])
        truncated = bool(reply["truncated"]) or (self.max_episode_steps is not None
                                                 and self._steps >= self.max_episode_steps)
        if terminated or truncated:
            self._needs_reset = True
        return reply["obs"], float(reply["reward"]), terminated, truncated, info

    def render(self):
        if self.render_mode == "rgb_array":
            return self.client.request("render")["frame"]
        return None

    def close(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()

    def __getstate__(self):
        raise TypeError("RealWidowXEnv holds a live connection to a robot and cannot be pickled; pass an env "
                        "factory (e.g. lambda: gymnasium.make(id, ...)) to vector envs instead")

    # ------------------------------------------------------------------ operator helpers
    def estop(self) -> dict:
        """Stop the arm now and latch the e-stop (clearing it needs the token: `clear_estop`)."""
        self._needs_reset = True
        return self.client.estop()

    def clear_estop(self) -> dict:
        return self.client.clear_estop()

    # ------------------------------------------------------------------ internals
    def _reconnect(self) -> None:
        self.client.connect(self.expect)
        self._link_failed = False
