"""The robot server: one arm (a backend), one controlling client at a time, safety on every step.

Transport: a ZeroMQ ROUTER socket (`tcp://host:port`, loopback unless told otherwise); each
request is one msgpack message (`steergym.robot.protocol`) and gets exactly one reply, an error
reply included, so a malformed, oversized or unauthorised message never stops the server.

Sessions: `hello` with the shared token opens a session (a random 128-bit id every later request
carries); one client controls the arm at a time. A newer authenticated client pre-empts the current
one (its episode ends, the arm goes to its safe pose, and the old client's next request is told who
took over when), or, with `exclusive=True`, is refused ("busy"). A session is alive while any message
(heartbeats included) arrives within `SafetyLimits.client_timeout_s`; when it goes silent the arm is
held, returned to its safe pose and the episode log closed ("client_lost"). A client whose link
broke reclaims its own session with `hello(takeover=<its session>)`.

Safety, whatever the client sends (`steergym.robot.safety`): actions are validated (shape, finite),
deltas limited, the end-effector target clipped to the workspace box and rotation limits, joint
positions checked after each step (a fault holds the arm and ends the episode), steps faster than
`max_rate_hz` delayed, and `estop` holds the arm and latches until `clear_estop` (token needed).
Every episode is journalled to `log_dir` (`steergym.robot.episode_log`) as it runs.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from steergym.paths import robot_log_dir
from steergym.robot import protocol
from steergym.robot.episode_log import LOG_SUFFIX, EpisodeLog, plain_info
from steergym.robot.protocol import ProtocolError
from steergym.robot.safety import SafetyFilter, SafetyLimits

log = logging.getLogger("steergym.robot")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
POLL_MS = 10
HARD_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # zmq drops the peer beyond this; the app limit is far below


class RobotServer:
    """Serve `backend` on `tcp://host:port` to clients presenting `token`.

    Args:
        backend: a `steergym.robot.backends` backend (already constructed).
        token: the shared secret (a client's hello must carry it).
        host, port: where to bind; host defaults to loopback. port 0 picks a free port (see `.port`).
        limits: the `SafetyLimits` enforced on every step.
        log_dir: folder of the episode journals (default: `steergym.paths.robot_log_dir()`,
            $STEERGYM_DATA_DIR/robot_logs or ~/.local/share/steergym/robot_logs).
        fsync: force every journal record to disk (survives power loss; slower steps).
        exclusive: refuse a second client while one is connected ("busy") instead of letting the
            newer authenticated client pre-empt it (the default: the old session ends, the arm goes
            to its safe pose, and the old client is told who took over when).
    """

    def __init__(self, backend, token: str, *, host: str = "127.0.0.1", port: int = protocol.DEFAULT_PORT,
                 limits: SafetyLimits | None = None, log_dir: str | Path | None = None, fsync: bool = False,
                 exclusive: bool = False) -> None:
        if not token:
            raise ValueError("RobotServer: an empty token would let anyone drive the arm")
        self.backend, self.limits = backend, limits or SafetyLimits()
        self._token = token.encode()
        self.safety = SafetyFilter(self.limits, backend.scale_pos, backend.scale_rot)
        self.log_dir = Path(log_dir) if log_dir is not None else robot_log_dir()
        self.fsync, self.exclusive = fsync, exclusive
        self._preempted: dict[str, str] = {}  # recent pre-empted sessions -> when (for their error message)
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_MESSAGE_BYTES)
        if host not in LOOPBACK:
            log.warning("binding to %s: any machine that can reach this port and knows the token can drive the arm", host)
        if port == 0:
            self.port = self.socket.bind_to_random_port(f"tcp://{host}")
        else:
            self.socket.bind(f"tcp://{host}:{port}")
            self.port = port
        self.host = host
        self.session: str | None = None
        self.session_started = 0.0
        self.last_seen = 0.0
        self.estopped = False
        self.episode: EpisodeLog | None = None
        self.fault: str | None = None
        self._last_exec = -np.inf
        self._episode_seq = 0
        self.counters = {"requests": 0, "errors": 0, "steps": 0, "episodes": 0, "client_losses": 0, "faults": 0}
        self.at_safe_pose = backend.at_safe_pose()
        self._stop = threading.Event()

    # ------------------------------------------------------------------ loop
    def serve_forever(self) -> None:
        """Answer requests until `.stop()` is called (a signal handler may call it); then stop the arm
        and close."""
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        log.info("serving %s (%s backend) on tcp://%s:%d", self.backend.task, self.backend.kind, self.host, self.port)
        try:
            while not self._stop.is_set():
                if poller.poll(POLL_MS):
                    frames = self.socket.recv_multipart()
                    reply = self.handle(frames[-1])
                    self.socket.send_multipart([*frames[:-1], reply])
                self.check_client(time.monotonic())
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def check_client(self, now: float) -> None:
        """Drop a session that has been silent longer than the client timeout (arm to safe pose)."""
        if self.session is not None and now - self.last_seen > self.limits.client_timeout_s:
            log.warning("client silent for %.2f s (limit %.2f s): stopping the arm and returning to the safe pose",
                        now - self.last_seen, self.limits.client_timeout_s)
            self.counters["client_losses"] += 1
            self._end_session("client_lost")

    def close(self) -> None:
        if self.context.closed:
            return
        self._end_session("server_stop")
        self.backend.close()
        self.socket.close(0)
        self.context.term()

    # ------------------------------------------------------------------ requests
    def handle(self, payload: bytes) -> bytes:
        """One request's reply bytes; never raises for anything a client sends."""
        self.counters["requests"] += 1
        request_id = None
        try:
            message = protocol.check_request(protocol.decode(payload, max_bytes=protocol.MAX_REQUEST_BYTES))
            request_id = message["id"]
            handler = getattr(self, f"_on_{message['type']}")
            reply = {"id": request_id, "ok": True, **handler(message)}
        except ProtocolError as exc:
            reply = protocol.error_reply(request_id, exc.code, str(exc))
        except Exception as exc:  # noqa: BLE001 - a backend failure must not kill the server
            log.exception("backend error")
            self.fault = f"{type(exc).__name__}: {exc}"
            self._safe_stop("fault")
            reply = protocol.error_reply(request_id, "backend_error", f"the robot backend failed: {self.fault}; "
                                         "the arm is held and returned to its safe pose; reset to continue")
        if not reply["ok"]:
            self.counters["errors"] += 1
            log.info("refused request %s: %s", request_id, reply["error"]["message"])
        try:
            return protocol.encode(reply)
        except TypeError as exc:  # a backend returned something unsendable: report, don't die
            return protocol.encode(protocol.error_reply(request_id, "backend_error", str(exc)))

    def _check_token(self, token: Any) -> None:
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self._token):
            raise ProtocolError("auth", "wrong token: the robot server refused the handshake")

    def _check_session(self, message: dict) -> None:
        if self.session is None or not hmac.compare_digest(str(message.get("session")), self.session):
            when = self._preempted.get(str(message.get("session")))
            if when is not None:
                raise ProtocolError("no_session", f"another client took over the robot at {when}; this session "
                                    "ended (the arm went to its safe pose)")
            raise ProtocolError("no_session", "unknown session: connect again with hello (the server restarted, or "
                                f"dropped this client after {self.limits.client_timeout_s:.1f} s without a heartbeat)")
        self.last_seen = time.monotonic()

    def _on_hello(self, message: dict) -> dict:
        self._check_token(message["token"])
        expect = _checked_expect(message["expect"])
        b = self.backend
        if expect.get("task") not in (None, b.task):
            raise ProtocolError("task_mismatch", f"this robot serves {b.task!r}; the client expects {expect['task']!r}")
        for key in ("obs_mode", "image_size"):
            want, have = expect.get(key), b.options.get(key)
            if want is not None and list(np.atleast_1d(want)) != list(np.atleast_1d(have)):
                raise ProtocolError("task_mismatch", f"this robot serves {key}={have!r}; the client expects {want!r}")
        if self.session is not None and message["takeover"] != self.session:
            idle = time.monotonic() - self.last_seen
            if self.exclusive:
                raise ProtocolError("busy", f"the robot is in use by another client (last heard {idle:.2f} s ago); it "
                                    f"is released {self.limits.client_timeout_s:.1f} s after that client goes silent")
            log.warning("a new client pre-empts session %s... (last heard %.2f s ago)", self.session[:8], idle)
            self._preempted[self.session] = time.strftime("%H:%M:%S")
            while len(self._preempted) > 16:
                self._preempted.pop(next(iter(self._preempted)))
            self._end_session("preempted")
        elif self.session is not None:
            self._close_episode("reconnect")
        self.session = secrets.token_hex(16)
        self.session_started = self.last_seen = time.monotonic()
        log.info("client connected (session %s...)", self.session[:8])
        return {
            "session": self.session, "task": b.task, "instruction": b.instruction, "backend": b.kind,
            "max_episode_steps": b.max_episode_steps, "options": b.options,
            "observation_space": protocol.space_to_spec(b.observation_space),
            "action_space": protocol.space_to_spec(b.action_space),
            "limits": self.limits.to_dict(), "heartbeat_timeout_s": self.limits.client_timeout_s,
            "estopped": self.estopped,
        }

    def _refuse_if_estopped(self) -> None:
        if self.estopped:
            raise ProtocolError("estopped", "the robot is e-stopped: the arm is held until an operator clears it "
                                "(clear_estop with the token, e.g. `steergym robot clear-estop`)")

    def _on_reset(self, message: dict) -> dict:
        self._check_session(message)
        self._refuse_if_estopped()
        seed = message["seed"]
        if seed is not None and seed < 0:  # the backend's gymnasium env would raise: the client's fault, not its
            raise ProtocolError("malformed", f"reset: field 'seed' must be a non-negative integer or nil, got {seed}")
        self._close_episode("reset")
        self.fault = None
        obs, info = self.backend.reset(seed)
        self.at_safe_pose = False
        self._episode_seq += 1
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        path = self.log_dir / f"episode_{stamp}_{self._episode_seq:05d}_{secrets.token_hex(2)}{LOG_SUFFIX}"
        self.episode = EpisodeLog(path, {
            "task": self.backend.task, "backend": self.backend.kind, "options": self.backend.options,
            "instruction": self.backend.instruction, "safety": self.limits.to_dict(), "seed": message["seed"],
        }, fsync=self.fsync)
        self.episode.reset(obs, info)
        self.counters["episodes"] += 1
        return {"obs": obs, "info": plain_info(info)}

    def _on_step(self, message: dict) -> dict:
        self._check_session(message)
        self._refuse_if_estopped()
        if self.episode is None or self.episode.closed:
            reason = f" (the last one ended: {self.fault})" if self.fault else ""
            raise ProtocolError("no_episode", f"no episode is running{reason}; call reset first")
        try:
            action = self.safety.validate(message["action"])
        except ValueError as exc:
            raise ProtocolError("bad_action", str(exc)) from None
        wait = self._last_exec + self.limits.min_step_interval_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        filtered = self.safety.filter(action, *self.backend.target_pose())
        start = time.monotonic()
        self._last_exec = start
        obs, reward, terminated, truncated, info = self.backend.step(filtered.action)
        exec_s = time.monotonic() - start
        self.counters["steps"] += 1
        low, high = self.backend.joint_limits()
        fault = self.safety.joint_fault(self.backend.joints(), low, high) or info.get("physics_error")
        if fault:
            self.counters["faults"] += 1
            self.fault = fault
            self.backend.hold()
            truncated = True
            log.warning("fault: %s; the arm is held and the episode ended", fault)
        info = plain_info(info)
        # info holds what the same seed and actions reproduce (gymnasium's checker demands it);
        # timings go in the reply beside it and in the episode log
        info.update(safety=filtered.limited, action_executed=filtered.action, fault=fault)
        self.episode.step(action_requested=action, action_executed=filtered.action, safety=filtered.limited, obs=obs,
                          reward=float(reward), terminated=bool(terminated), truncated=bool(truncated),
                          is_success=bool(info.get("is_success", False)), fault=fault,
                          timing={"exec_s": exec_s, "rate_wait_s": max(wait, 0.0)})
        if fault:
            self._close_episode("fault")
        elif terminated or truncated:
            self._close_episode("done")
        return {"obs": obs, "reward": float(reward), "terminated": bool(terminated), "truncated": bool(truncated),
                "info": info, "timing": {"server_exec_s": exec_s, "rate_wait_s": max(wait, 0.0)}}

    def _on_render(self, message: dict) -> dict:
        self._check_session(message)
        return {"frame": self.backend.render()}

    def _state(self) -> str:
        if self.estopped:
            return "estopped"
        if self.session is None:
            return "idle"
        return "running" if self.episode is not None and not self.episode.closed else "connected"

    def _on_heartbeat(self, message: dict) -> dict:
        self._check_session(message)
        return {"state": self._state(), "fault": self.fault}

    def _on_estop(self, message: dict) -> dict:
        if "token" in message:
            self._check_token(message["token"])
        else:
            self._check_session(message)
        self.estopped = True
        self.backend.hold()
        self._close_episode("estop")
        log.warning("E-STOP: the arm is held; clear_estop with the token releases it")
        return {"state": self._state()}

    def _on_clear_estop(self, message: dict) -> dict:
        self._check_token(message["token"])
        self.estopped = False
        log.info("e-stop cleared")
        return {"state": self._state()}

    def _on_status(self, message: dict) -> dict:
        self._check_token(message["token"])
        pos, rpy = self.backend.tcp_pose()
        return {"state": self._state(), "task": self.backend.task, "backend": self.backend.kind,
                "at_safe_pose": bool(self.at_safe_pose), "tcp_pos": pos, "tcp_rpy": rpy, "fault": self.fault,
                "counters": dict(self.counters), "episode_log": str(self.episode.path) if self.episode else None,
                "limits": self.limits.to_dict()}

    def _on_bye(self, message: dict) -> dict:
        self._check_session(message)
        self._end_session("bye")
        return {"at_safe_pose": bool(self.at_safe_pose)}

    # ------------------------------------------------------------------ internals
    def _close_episode(self, reason: str) -> None:
        if self.episode is not None and not self.episode.closed:
            self.episode.close(reason)

    def _safe_stop(self, reason: str) -> None:
        """Hold the arm, close the episode log, and bring the arm to its safe pose (unless e-stopped)."""
        try:
            self.backend.hold()
        finally:
            self._close_episode(reason)
        if not self.estopped:
            self.at_safe_pose = bool(self.backend.move_to_safe_pose())
            log.info("arm %s its safe pose", "at" if self.at_safe_pose else "did NOT reach")

    def _end_session(self, reason: str) -> None:
        if self.session is None and (self.episode is None or self.episode.closed):
            return
        self.session = None
        self._safe_stop(reason)


def _checked_expect(expect: dict) -> dict:
    """hello's `expect`, its values type-checked (a ProtocolError, not a comparison failing inside the
    handler and taken for a backend fault): task and obs_mode a string or nil, image_size a list of
    two numbers or nil."""
    for key in ("task", "obs_mode"):
        if not isinstance(expect.get(key), (str, type(None))):
            raise ProtocolError("malformed", f"hello: expect.{key} must be a string or nil, got {expect[key]!r}")
    size = expect.get("image_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in size)):
        raise ProtocolError("malformed", f"hello: expect.image_size must be a list of two numbers or nil, got {size!r}")
    return expect
