"""A small openpi-style websocket policy server for any steergym generative policy (loopback tests,
trying `RemotePolicy` without a GPU box, serving a steergym checkpoint to other machines).

    server = serve_policy(policy, "127.0.0.1", 0)      # port 0: a free port, read server.port
    remote = RemotePolicy("127.0.0.1", server.port, env.observation_space, env.action_space,
                          noise_shape=policy.noise_shape)
    ...
    server.stop()

It speaks the protocol `steergym.policies.remote` describes: metadata first, then one reply
{"actions": (H, d) float32, "server_timing": {"infer_ms": ...}} per request, or a text frame with
the traceback (and the connection closed) when a request fails. GET /healthz answers 200 "OK".
The websockets asyncio server runs on its own event loop in a daemon thread; requests are
answered one at a time (the policy is called in a worker thread, so the loop keeps answering pings).
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import gymnasium as gym
import numpy as np

from steergym.policies.remote import import_websockets, packb, unpackb


def default_observation(observation_space: gym.Space) -> Callable[[Mapping[str, Any]], Any]:
    """The inverse of `remote.default_request`: request["observation/state"] for a Box space, the
    space's keys of the request for a Dict space."""
    if isinstance(observation_space, gym.spaces.Dict):
        def from_dict(request: Mapping[str, Any]) -> Any:
            missing = [key for key in observation_space.spaces if key not in request]
            if missing:
                raise KeyError(f"request lacks the observation entries {missing} (has {sorted(request)})")
            return {key: np.asarray(request[key]) for key in observation_space.spaces}
        return from_dict

    def from_box(request: Mapping[str, Any]) -> Any:
        if "observation/state" not in request:
            raise KeyError(f"request lacks 'observation/state' (has {sorted(request)})")
        return np.asarray(request["observation/state"])
    return from_box


class PolicyServer:
    """A running server (from `serve_policy`): `host`, `port`, `url`, `stop()`; a context manager."""

    def __init__(self, policy: Any, host: str, port: int, metadata: Mapping[str, Any] | None,
                 use_noise: bool, from_request: Callable[[Mapping[str, Any]], Any] | None) -> None:
        import_websockets()
        self.policy, self.host, self.port = policy, host, int(port)
        self.use_noise = bool(use_noise)
        self.from_request = from_request or default_observation(policy.observation_space)
        base = {"server": "steergym"}
        if hasattr(policy, "noise_shape"):
            base["noise_shape"] = [int(n) for n in policy.noise_shape]
        self.metadata = {**base, **dict(metadata or {})}
        self.requests = 0  # answered so far
        self._policy_lock = threading.Lock()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop_event: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"steergym-policy-server:{port}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise OSError(f"serve_policy: cannot listen on {host}:{port}: {self._error}") from self._error

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Close the listening socket and every connection (clients see the connection drop)."""
        if self._thread.is_alive() and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(timeout_s)

    def __enter__(self) -> "PolicyServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------------ internals
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as err:  # noqa: BLE001 - reported to the starting thread
            self._error = err
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._stop_event = asyncio.Event()
        async with serve(self._handle, self.host, self.port, compression=None, max_size=None,
                         process_request=_health_check) as server:
            self.port = int(next(iter(server.sockets)).getsockname()[1])
            self._ready.set()
            await self._stop_event.wait()

    async def _handle(self, websocket: Any) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.frames import CloseCode

        await websocket.send(packb(self.metadata))
        last_total = None
        while True:
            try:
                raw = await websocket.recv()
            except ConnectionClosed:
                return
            start = time.monotonic()
            try:
                if isinstance(raw, str):
                    raise ValueError("requests must be binary msgpack messages, got a text frame")
                request = unpackb(raw, what="request")
                if not isinstance(request, dict):
                    raise ValueError(f"request: expected a msgpack map, got {type(request).__name__}")
                infer_start = time.monotonic()
                actions = await asyncio.to_thread(self._infer, request)
                reply = {"actions": actions,
                         "server_timing": {"infer_ms": 1000 * (time.monotonic() - infer_start)}}
                if last_total is not None:
                    reply["server_timing"]["prev_total_ms"] = 1000 * last_total
                self.requests += 1  # before the send: a client that got its reply sees the count
                await websocket.send(packb(reply))
            except ConnectionClosed:
                return
            except Exception:  # noqa: BLE001 - the client gets the traceback, as openpi's server does
                await websocket.send(traceback.format_exc())
                await websocket.close(code=CloseCode.INTERNAL_ERROR, reason="Internal server error. "
                                      "Traceback included in previous frame.")
                return
            last_total = time.monotonic() - start

    def _infer(self, request: dict[str, Any]) -> np.ndarray:
        obs = self.from_request(request)
        noise = request.get("noise")
        with self._policy_lock:
            if noise is not None and self.use_noise:
                chunk = self.policy.sample(obs, np.asarray(noise, dtype=np.float32))
            else:
                chunk = self.policy.sample_n(obs, 1)[0]
        return np.asarray(chunk, dtype=np.float32)


def _health_check(connection: Any, request: Any) -> Any:
    if request.path == "/healthz":
        return connection.respond(HTTPStatus.OK, "OK\n")
    return None


def serve_policy(policy: Any, host: str = "127.0.0.1", port: int = 0, metadata: Mapping[str, Any] | None = None,
                 *, use_noise: bool = True,
                 from_request: Callable[[Mapping[str, Any]], Any] | None = None) -> PolicyServer:
    """Serve `policy` (`sample(obs, noise)`, `sample_n(obs, n)`, `observation_space`) at ws://host:port.

    Args:
        policy: a steergym generative policy (`DiffusionPolicy`, `FlowPolicy`, or alike).
        host, port: where to listen; port 0 picks a free port (the returned server's `port`).
        metadata: sent to each client on connect, on top of {"server": "steergym", "noise_shape": ...}.
        use_noise: True: a request's "noise" is the sampler's initial noise (`policy.sample`);
            False: the noise is ignored and each request draws fresh noise (a stock openpi
            server's behaviour, for testing `RemotePolicy.check_noise_is_used`).
        from_request: request dict -> observation; default: the inverse of RemotePolicy's default
            (request["observation/state"] for a Box space, the space's keys for a Dict space).

    Returns the running `PolicyServer`; `stop()` it (or use it as a context manager).
    """
    return PolicyServer(policy, host, port, metadata, use_noise, from_request)
