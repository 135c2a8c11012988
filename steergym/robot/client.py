"""The client side of the robot link: requests with timeouts, and a heartbeat thread.

`RobotClient.request` sends one message on a ZeroMQ DEALER socket and waits for the reply with the
same id until `timeout_s`; a late reply to an earlier request is discarded, and a timeout raises
`RobotConnectionError` (the socket is rebuilt so nothing stale is read later). A server's error
reply raises `RobotServerError` with the server's code and message.

While connected, a background thread sends a heartbeat every `heartbeat_s` on its own socket (ZeroMQ
sockets are not shared across threads). The server drops a client it has not heard from within
its timeout; the client, when heartbeats go unanswered for `timeout_s`, records why in
`link_error`, and the next request fails at once with that reason instead of waiting again.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from steergym.robot import protocol

TOKEN_ENV = "STEERGYM_ROBOT_TOKEN"
DEFAULT_TOKEN_FILE = Path("~/.config/steergym/robot_token")


class RobotLinkError(RuntimeError):
    """Base class of the robot link's errors."""


class RobotConnectionError(RobotLinkError):
    """The server did not answer in time (not running, unreachable, or died)."""


class RobotServerError(RobotLinkError):
    """The server answered with an error; `code` is its error code (auth, busy, estopped, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"robot server refused: {message} [{code}]")
        self.code = code


def resolve_token(token: str | None = None, token_file: str | os.PathLike | None = None) -> str:
    """The shared token: `token`, else the file `token_file`, else $STEERGYM_ROBOT_TOKEN, else the
    default file ~/.config/steergym/robot_token (what `steergym serve` creates)."""
    if token:
        return token
    if token_file is None and os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = Path(token_file or DEFAULT_TOKEN_FILE).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"robot token file {path} does not exist: pass token= or token_file= (the file "
                                f"`steergym serve` wrote), or set ${TOKEN_ENV}")
    text = path.read_text().strip()
    if not text:
        raise ValueError(f"robot token file {path} is empty")
    return text


class RobotClient:
    """One connection to a robot server.

    Args:
        host, port: the server's address.
        token: the shared secret.
        timeout_s: the longest wait for any reply, and for heartbeats (seconds).
        heartbeat_s: heartbeat period while connected.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = protocol.DEFAULT_PORT, token: str = "", *,
                 timeout_s: float = 2.0, heartbeat_s: float = 0.25) -> None:
        if timeout_s <= 0 or heartbeat_s <= 0:
            raise ValueError(f"RobotClient: timeout_s ({timeout_s}) and heartbeat_s ({heartbeat_s}) must be > 0")
        self.address = f"tcp://{host}:{port}"
        self.token, self.timeout_s, self.heartbeat_s = token, float(timeout_s), float(heartbeat_s)
        self.context = zmq.Context()
        self._socket = self._new_socket()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.session: str | None = None
        self.hello: dict[str, Any] = {}
        self.link_error: str | None = None
        self.server_state: str | None = None
        self._heartbeat_stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def _new_socket(self) -> zmq.Socket:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_REPLY_BYTES)
        sock.connect(self.address)
        return sock

    # ------------------------------------------------------------------ requests
    def _exchange(self, sock: zmq.Socket, kind: str, fields: dict[str, Any], timeout_s: float) -> tuple[dict, zmq.Socket]:
        """Send one request on `sock`, return (reply, socket to keep using)."""
        request_id = next(self._ids)
        sock.send(protocol.encode({"type": kind, "id": request_id, **fields}))
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1):
                if time.monotonic() < deadline:
                    continue
                sock.close(0)  # drop anything in flight; a late reply must never be read as a new one
                raise RobotConnectionError(f"robot server at {self.address} did not answer a {kind!r} request "
                                           f"within {timeout_s:.2f} s (is `steergym serve` running there?)")
            try:
                reply = protocol.decode(sock.recv(), max_bytes=protocol.MAX_REPLY_BYTES)
            except protocol.ProtocolError as exc:
                raise RobotLinkError(f"robot server at {self.address} sent an unreadable reply: {exc}") from None
            if reply.get("id") in (request_id, None):
                break  # id None: the server could not read our request's id
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise RobotServerError(str(error.get("code", "unknown")), str(error.get("message", reply)))
        return reply, sock

    def request(self, kind: str, *, timeout_s: float | None = None, with_session: bool = True, **fields: Any) -> dict:
        """Send one request (adding the session) and return the server's reply fields."""
        if with_session:
            if self.link_error is not None:
                raise RobotConnectionError(f"the link to {self.address} is down: {self.link_error}")
            if self.session is None:
                raise RobotConnectionError(f"not connected to {self.address}: call connect() first")
            fields["session"] = self.session
        with self._lock:
            try:
                reply, self._socket = self._exchange(self._socket, kind, fields, timeout_s or self.timeout_s)
            except RobotConnectionError:
                self._socket = self._new_socket()
                raise
        return reply

    # ------------------------------------------------------------------ session
    def connect(self, expect: dict[str, Any] | None = None, *, timeout_s: float | None = None) -> dict:
        """hello: authenticate, open a session (reclaiming our previous one if it is still open)."""
        self._stop_heartbeat()
        reply = self.request("hello", with_session=False, timeout_s=timeout_s, token=self.token,
                             expect=dict(expect or {}), takeover=self.session)
        self.session, self.hello, self.link_error = reply["session"], reply, None
        self._heartbeat_stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, args=(self._heartbeat_stop,),
                                           name="steergym-robot-heartbeat", daemon=True)
        self._heartbeat.start()
        return reply

    def _heartbeat_loop(self, stop: threading.Event) -> None:
        sock = self._new_socket()
        try:
            while not stop.wait(self.heartbeat_s):
                try:
                    reply, sock = self._exchange(sock, "heartbeat", {"session": self.session}, self.timeout_s)
                    self.server_state = reply.get("state")
                except RobotConnectionError as exc:
                    self.link_error = f"heartbeats unanswered: {exc}"
                    sock = self._new_socket()
                except RobotLinkError as exc:
                    self.link_error = str(exc)
                    return  # the server dropped the session; reconnecting is the owner's decision
        finally:
            sock.close(0)

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat_stop.set()
            self._heartbeat.join(timeout=self.timeout_s + 1.0)
            self._heartbeat = None

    def close(self, *, bye: bool = True, timeout_s: float = 15.0) -> None:
        """End the session (the server returns the arm to its safe pose) and release the sockets."""
        self._stop_heartbeat()
        if bye and self.session is not None and self.link_error is None and not self.context.closed:
            try:
                self.request("bye", timeout_s=timeout_s)
            except RobotLinkError:
                pass  # the server drops silent clients on its own
        self.session = None
        if not self.context.closed:
            self._socket.close(0)
            self.context.term()

    # ------------------------------------------------------------------ operator requests (token)
    def status(self) -> dict:
        return self.request("status", with_session=False, token=self.token)

    def estop(self) -> dict:
        return self.request("estop", with_session=False, token=self.token)

    def clear_estop(self) -> dict:
        return self.request("clear_estop", with_session=False, token=self.token)
