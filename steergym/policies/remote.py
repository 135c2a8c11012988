"""A policy served elsewhere (an openpi-style websocket policy server, e.g. pi0 on a GPU box) as a
steergym generative policy, so DSRL and V-GPS can steer it from a CPU machine.

    policy = RemotePolicy("gpu-box", 8000, env.observation_space, env.action_space, noise_shape=(50, 7))
    env = NoiseActionWrapper(env, policy)          # DSRL: the agent picks the noise sent to the server
    vgps = ValueGuidedPolicy(policy, critic)       # V-GPS: K requests with fresh noise, re-ranked

Protocol (openpi's `websocket_policy_server` / `websocket_client_policy`): the client opens
ws://host:port (no compression, no message size limit); the server first sends one binary msgpack
message, its metadata dict. Each request is one binary msgpack message, the observation dict; the
reply is a msgpack dict with "actions" (an action chunk (H, d)) and optional timing entries
("server_timing", "policy_timing"), or a text frame holding the server's error (a traceback), which
`RemotePolicy` raises as `RemotePolicyServerError`. numpy arrays travel as msgpack maps
{b"__ndarray__": True, b"data": raw C-order bytes, b"dtype": dtype.str, b"shape": shape} and numpy
scalars as {b"__npgeneric__": True, b"data": item, b"dtype": dtype.str} (`packb` / `unpackb` here,
written for steergym: never pickle; object, void and complex dtypes are refused).

Noise convention: `sample(obs, noise)` adds the noise as the request's "noise" entry, a float32
array `noise_shape` (H, D): the initial noise of the server's diffusion / flow sampler. An openpi
server uses it only if its policy reads it (openpi's `Policy.infer(obs, noise=...)` takes one; a
stock server does not pass it on): `check_noise_is_used` finds out (run once at the first
`sample` unless `check_noise=False`).

`websockets` is imported only when a connection is opened (`pip install -e ".[remote]"`).
"""

from __future__ import annotations

import inspect
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import msgpack
import numpy as np

from steergym.policies.base import is_batched

INSTALL_HINT = 'pip install -e ".[remote]"'
_REFUSED_KINDS = {"O": "object", "V": "void", "c": "complex"}


class RemotePolicyError(RuntimeError):
    """The policy server could not be reached, dropped the connection, or sent something unusable."""


class RemotePolicyTimeout(RemotePolicyError, TimeoutError):
    """The server did not answer (connect or reply) within the timeout."""


class RemotePolicyServerError(RemotePolicyError):
    """The server replied with an error (its text, usually a traceback, is in the message)."""


class NoiseIgnoredError(RemotePolicyError):
    """The server's actions do not follow the noise sent with the request: DSRL cannot steer it."""


def import_websockets() -> Any:
    """The websockets package, or an ImportError saying how to install it."""
    try:
        import websockets  # noqa: F401
        import websockets.sync.client  # noqa: F401
    except ImportError as err:  # tests/test_remote_policy.py hides the package to check this
        raise ImportError(f"the remote policy client/server needs the websockets package: {INSTALL_HINT}") from err
    return websockets


# ------------------------------------------------------------------------------------ codec
def packb(obj: Any) -> bytes:
    """`obj` (dicts, lists, tuples, str, bytes, numbers, None, numpy arrays and scalars) as msgpack.

    ValueError naming the field for object / void / complex dtypes and unsupported types.
    """
    return msgpack.packb(_encode(obj, "message"), use_bin_type=True)


def unpackb(data: bytes | bytearray | memoryview, what: str = "message") -> Any:
    """Decode a msgpack message, turning the numpy maps back into arrays and scalars.

    ValueError naming the field for malformed numpy maps (missing keys, bad dtype, wrong data
    length) and for bytes that are not msgpack.
    """
    try:
        raw = msgpack.unpackb(bytes(data), raw=False, strict_map_key=False)
    except Exception as err:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...)
        raise ValueError(f"{what}: not a valid msgpack message ({type(err).__name__}: {err})") from err
    return _decode(raw, what)


def _check_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.kind in _REFUSED_KINDS or dtype.hasobject or dtype.fields is not None:
        raise ValueError(f"{where}: {_REFUSED_KINDS.get(dtype.kind, 'structured')} dtype {dtype.str!r} "
                         "cannot travel (object, void, complex and structured dtypes are refused)")


def _encode(obj: Any, where: str) -> Any:
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype, where)
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        _check_dtype(obj.dtype, where)
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, (str, bytes)):
                raise ValueError(f"{where}: dict key {key!r} is not a str")
            out[key] = _encode(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_encode(value, f"{where}[{i}]") for i, value in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    raise ValueError(f"{where}: cannot send a {type(obj).__name__} (send numpy arrays, numbers, str, dicts)")


def _decode(obj: Any, where: str) -> Any:
    if isinstance(obj, dict):
        if b"__ndarray__" in obj:
            return _decode_array(obj, where)
        if b"__npgeneric__" in obj:
            return _decode_scalar(obj, where)
        return {key: _decode(value, f"{where}[{key!r}]") for key, value in obj.items()}
    if isinstance(obj, list):
        return [_decode(value, f"{where}[{i}]") for i, value in enumerate(obj)]
    return obj


def _field(obj: dict, key: bytes, types: tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise ValueError(f"{where}: numpy map lacks {key.decode()!r} (has {sorted(k for k in obj)})")
    value = obj[key]
    if not isinstance(value, types):
        raise ValueError(f"{where}: numpy map's {key.decode()!r} is a {type(value).__name__}, expected "
                         f"{' or '.join(t.__name__ for t in types)}")
    return value


def _dtype(obj: dict, where: str) -> np.dtype:
    text = _field(obj, b"dtype", (str,), where)
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: unknown dtype {text!r}") from err
    _check_dtype(dtype, where)
    return dtype


def _decode_array(obj: dict, where: str) -> np.ndarray:
    data = _field(obj, b"data", (bytes,), where)
    dtype = _dtype(obj, where)
    shape = _field(obj, b"shape", (list,), where)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ValueError(f"{where}: shape {shape!r} must be a list of integers >= 0")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{where}: array data has {len(data)} bytes, expected {expected} "
                         f"(shape {tuple(shape)}, dtype {dtype.str})")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def _decode_scalar(obj: dict, where: str) -> np.generic:
    dtype = _dtype(obj, where)
    if b"data" not in obj:
        raise ValueError(f"{where}: numpy scalar map lacks 'data'")
    value = obj[b"data"]
    if dtype.kind in "iu" and not (isinstance(value, int) and np.iinfo(dtype).min <= value <= np.iinfo(dtype).max):
        raise ValueError(f"{where}: scalar {value!r} does not fit dtype {dtype.str}")
    try:
        return dtype.type(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{where}: scalar {obj[b'data']!r} does not fit dtype {dtype.str}") from err


# ------------------------------------------------------------------------------- the client
def default_request(obs: Any) -> dict[str, Any]:
    """The default observation -> request mapping (one unbatched observation): a Dict observation
    goes as its items, a Box (array) observation as {"observation/state": obs}."""
    if isinstance(obs, Mapping):
        return {str(key): np.asarray(value) for key, value in obs.items()}
    return {"observation/state": np.asarray(obs)}


class RemotePolicy:
    """A policy on an openpi-style websocket policy server, as a steergym generative policy.

    Args:
        host, port: where the server listens (ws://host:port).
        observation_space, action_space: the env's spaces (the action space: a 1-D Box of d; each
            reply's chunk must be (H, d) with finite values).
        noise_shape: (H, D), the initial noise the server's sampler takes in the request's "noise"
            entry (D may differ from d: pi0 samples 32-dim padded actions; the chunk's H should be
            noise_shape[0], as `NoiseActionWrapper` executes H actions per noise). None: the server
            takes no noise; `sample` then raises and `sample_n` / `act` send plain requests (V-GPS
            works, DSRL does not).
        to_request: observation (one, unbatched) -> request dict. Default: a Box observation as
            {"observation/state": obs}, a Dict one as its items. Add what the server's model needs,
            e.g. `lambda obs: {"observation/state": obs, "prompt": "pick up the cube"}`.
        action_steps: actions of each chunk `act` executes open loop before asking again; None:
            the whole chunk.
        timeout_s: the most seconds to wait for the connection to open and for each reply.
        retries: reconnect attempts after a dropped or refused connection, `retry_delay_s` apart;
            then RemotePolicyError naming ws://host:port.
        check_noise: run `check_noise_is_used` on the first `sample` call (3 extra requests).
        noise_check_atol: actions for the same noise may differ by this much, for different noise
            they must differ by more.
        seed: seed of the noise `act` and `sample_n` draw (N(0, I), float32); `reset(seed)` reseeds.
        api_key: sent as the header "Authorization: Api-Key <key>" when the server wants one.

    Batched observations (a leading B axis) are sent one request per item. Not thread-safe beyond
    a lock that serialises requests. Picklable (the connection is not carried; it reopens lazily).
    """

    def __init__(self, host: str, port: int, observation_space: gym.Space, action_space: gym.Space, *,
                 noise_shape: tuple[int, int] | None = None,
                 to_request: Callable[[Any], Mapping[str, Any]] | None = None,
                 action_steps: int | None = None, timeout_s: float = 30.0, retries: int = 3,
                 retry_delay_s: float = 0.5, check_noise: bool = True, noise_check_atol: float = 1e-5,
                 seed: int = 0, api_key: str | None = None) -> None:
        who = "RemotePolicy"
        if not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
            raise ValueError(f"{who}: action space must be a 1-D Box, got {action_space}")
        if noise_shape is not None:
            noise_shape = tuple(int(n) for n in noise_shape)
            if len(noise_shape) != 2 or min(noise_shape) < 1:
                raise ValueError(f"{who}: noise_shape must be (H, D) with H, D >= 1, got {noise_shape}")
        if action_steps is not None and (isinstance(action_steps, bool) or int(action_steps) != action_steps
                                         or action_steps < 1):
            raise ValueError(f"{who}: action_steps must be an integer >= 1 or None, got {action_steps!r}")
        for name, value, least in (("timeout_s", timeout_s, "> 0"), ("retry_delay_s", retry_delay_s, ">= 0")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (value == 0 and least == "> 0"):
                raise ValueError(f"{who}: {name} must be a finite number {least}, got {value!r}")
        if isinstance(retries, bool) or int(retries) != retries or retries < 0:
            raise ValueError(f"{who}: retries must be an integer >= 0, got {retries!r}")
        self.host, self.port = str(host), int(port)
        self.observation_space, self.action_space = observation_space, action_space
        self.action_dim = int(action_space.shape[0])
        self.noise_shape = noise_shape
        self.to_request = to_request if to_request is not None else default_request
        self.action_steps = None if action_steps is None else int(action_steps)
        self.timeout_s, self.retries, self.retry_delay_s = float(timeout_s), int(retries), float(retry_delay_s)
        self.check_noise, self.noise_check_atol = bool(check_noise), float(noise_check_atol)
        self.metadata: dict[str, Any] | None = None  # the server's, once connected
        self.last_timing: dict[str, Any] = {}  # the last reply's timing entries
        self._seed = int(seed)
        self._headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        self._rng = np.random.default_rng(self._seed)
        self._noise_checked = False
        self._conn: Any = None
        self._lock = threading.Lock()
        self._queue: np.ndarray | None = None
        self._queue_batched = False

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    # ------------------------------------------------------------------- policy protocol
    def reset(self, seed: int | None = None) -> None:
        """Forget the chunk in progress; optionally reseed the noise."""
        self._queue = None
        if seed is not None:
            self._rng = np.random.default_rng(int(seed))

    def act(self, obs: Any) -> np.ndarray:
        """(d,) for one observation, (B, d) for a batch; a chunk is executed open loop for
        `action_steps` steps (fresh noise per chunk when `noise_shape` is set)."""
        batched = is_batched(obs, self.observation_space)
        items = self._items(obs, batched)
        if self._queue is None or self._queue.shape[1] == 0 or self._queue.shape[0] != len(items) \
                or self._queue_batched != batched:
            chunks = np.stack([self._infer(o, self._fresh_noise()) for o in items])
            self._queue = chunks[:, : self.action_steps]
            self._queue_batched = batched
        action, self._queue = self._queue[:, 0], self._queue[:, 1:]
        return action if batched else action[0]

    def sample(self, obs: Any, noise: Any) -> np.ndarray:
        """The server's chunk for `noise` (sent as the request's "noise"): (H, d), or (B, H, d).

        `noise` is `noise_shape` or flat (H*D,) per item, with a leading B axis for a batch.
        """
        if self.noise_shape is None:
            raise ValueError(f"RemotePolicy({self.url}): no noise_shape was given, so the server is not "
                             "steered through noise (DSRL); pass noise_shape=(H, D) if it takes a 'noise' entry")
        batched = is_batched(obs, self.observation_space)
        items = self._items(obs, batched)
        noise = self._check_noise_array(noise, batched, len(items))
        if self.check_noise and not self._noise_checked:
            self.check_noise_is_used(items[0])
        chunks = np.stack([self._infer(o, w) for o, w in zip(items, noise)])
        return chunks if batched else chunks[0]

    def sample_n(self, obs: Any, n: int) -> np.ndarray:
        """`n` chunks, one request each with fresh noise (none if `noise_shape` is None):
        (n, H, d) for one observation, (B, n, H, d) for a batch."""
        if isinstance(n, bool) or int(n) != n or n < 1:
            raise ValueError(f"RemotePolicy.sample_n: n must be an integer >= 1, got {n!r}")
        batched = is_batched(obs, self.observation_space)
        items = self._items(obs, batched)
        chunks = np.stack([np.stack([self._infer(o, self._fresh_noise()) for _ in range(int(n))]) for o in items])
        return chunks if batched else chunks[0]

    def check_noise_is_used(self, obs: Any) -> None:
        """Send one noise twice and another once for `obs` (one observation); NoiseIgnoredError
        unless the same noise gives the same chunk and different noise a different one."""
        if self.noise_shape is None:
            raise ValueError(f"RemotePolicy({self.url}).check_noise_is_used: no noise_shape was given")
        rng = np.random.default_rng(12345)
        w1, w2 = rng.standard_normal((2, *self.noise_shape)).astype(np.float32)
        a, b, c = (self._infer(obs, w) for w in (w1, w1, w2))
        hint = "so DSRL cannot steer it through the noise (V-GPS, which only needs samples, still works)"
        if np.max(np.abs(a - b)) > self.noise_check_atol:
            raise NoiseIgnoredError(
                f"the policy server at {self.url} returned different actions for the same noise (max difference "
                f"{np.max(np.abs(a - b)):.3g}): it ignores the request's 'noise' or adds its own randomness, {hint}")
        if np.max(np.abs(a - c)) <= self.noise_check_atol:
            raise NoiseIgnoredError(
                f"the policy server at {self.url} returned the same actions for different noise: it ignores the "
                f"request's 'noise', {hint}")
        self._noise_checked = True

    def close(self) -> None:
        """Close the connection (a later request reopens it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass

    def __enter__(self) -> "RemotePolicy":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_conn"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RemotePolicy({self.url}, action_dim={self.action_dim}, noise_shape={self.noise_shape})"

    # ------------------------------------------------------------------------ internals
    def _items(self, obs: Any, batched: bool) -> list[Any]:
        if not batched:
            return [obs]
        if isinstance(obs, Mapping):
            n = len(next(iter(obs.values())))
            return [{k: v[i] for k, v in obs.items()} for i in range(n)]
        return list(obs)

    def _fresh_noise(self) -> np.ndarray | None:
        if self.noise_shape is None:
            return None
        return self._rng.standard_normal(self.noise_shape).astype(np.float32)

    def _check_noise_array(self, noise: Any, batched: bool, batch: int) -> np.ndarray:
        arr = np.asarray(noise, dtype=np.float32)
        flat = int(np.prod(self.noise_shape))
        per_item = arr.shape[1:] if batched else arr.shape
        lead = (batch,) if batched else ()
        if per_item not in (self.noise_shape, (flat,)) or (batched and arr.shape[0] != batch):
            raise ValueError(f"RemotePolicy.sample: noise must have shape {(*lead, *self.noise_shape)} or "
                             f"{(*lead, flat)}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("RemotePolicy.sample: noise contains NaN or inf")
        return arr.reshape(batch, *self.noise_shape)

    def _infer(self, obs: Any, noise: np.ndarray | None) -> np.ndarray:
        request = dict(self.to_request(obs))
        if noise is not None:
            if "noise" in request:
                raise ValueError("RemotePolicy: to_request returned a 'noise' entry; the noise is added by "
                                 "RemotePolicy (sample's argument)")
            request["noise"] = np.ascontiguousarray(noise, dtype=np.float32)
        reply = self._request(packb(request))
        return self._check_reply(reply)

    def _check_reply(self, reply: Any) -> np.ndarray:
        if not isinstance(reply, dict):
            raise ValueError(f"reply from {self.url}: expected a msgpack map, got {type(reply).__name__}")
        if "actions" not in reply:
            raise ValueError(f"reply from {self.url}: no 'actions' entry (keys {sorted(map(str, reply))})")
        actions = reply["actions"]
        if not isinstance(actions, np.ndarray) or actions.dtype.kind not in "fiu":
            what = f"{actions.dtype} array" if isinstance(actions, np.ndarray) else type(actions).__name__
            raise ValueError(f"reply from {self.url}: 'actions' must be a numeric array (H, d), got a {what}")
        if actions.ndim != 2 or actions.shape[1] != self.action_dim or actions.shape[0] < 1:
            raise ValueError(f"reply from {self.url}: 'actions' has shape {actions.shape}, expected a chunk "
                             f"(H, {self.action_dim}) for the env's {self.action_dim}-dimensional actions")
        if not np.all(np.isfinite(actions)):
            raise ValueError(f"reply from {self.url}: 'actions' contains NaN or inf")
        self.last_timing = {k: v for k, v in reply.items() if k != "actions" and "timing" in str(k)}
        return actions.astype(np.float32)

    def _request(self, message: bytes) -> Any:
        """Send one request and return the decoded reply; reconnects on a dropped connection."""
        websockets = import_websockets()
        closed = websockets.exceptions.ConnectionClosed
        with self._lock:
            last: BaseException | None = None
            for attempt in range(self.retries + 1):
                if attempt:
                    time.sleep(self.retry_delay_s)
                try:
                    conn = self._connect()
                    conn.send(message)
                except RemotePolicyError:  # a timeout (a TimeoutError is an OSError) or bad metadata
                    self.close()
                    raise
                except (closed, OSError) as err:  # refused, reset, dropped: try again
                    last = err
                    self.close()
                    continue
                except websockets.exceptions.InvalidHandshake as err:
                    self.close()
                    raise RemotePolicyError(f"{self.url} did not open a websocket (is it a policy server?): "
                                            f"{err}") from err
                try:
                    reply = conn.recv(timeout=self.timeout_s)
                except TimeoutError as err:
                    self.close()  # a late reply would answer the next request
                    raise RemotePolicyTimeout(f"the policy server at {self.url} sent no reply within "
                                              f"{self.timeout_s:g} s") from err
                except (closed, OSError) as err:
                    last = err  # dropped mid-request: reconnect and ask again (inference is pure)
                    self.close()
                    continue
                if isinstance(reply, str):
                    self.close()  # openpi's server closes the connection after an error
                    raise RemotePolicyServerError(f"the policy server at {self.url} replied with an error:\n{reply}")
                return unpackb(reply, what=f"reply from {self.url}")
            raise RemotePolicyError(f"cannot reach the policy server at {self.url} ({self.retries + 1} attempts): "
                                    f"{type(last).__name__}: {last}") from last

    def _connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        from websockets.sync.client import connect

        # websockets 17 warns unless a directly used connection opts in with legacy=True (13-16 lack it)
        legacy = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
        try:
            conn = connect(self.url, compression=None, max_size=None, open_timeout=self.timeout_s,
                           additional_headers=self._headers, **legacy)
        except TimeoutError as err:
            raise RemotePolicyTimeout(f"connecting to the policy server at {self.url} timed out after "
                                      f"{self.timeout_s:g} s") from err
        try:
            first = conn.recv(timeout=self.timeout_s)
        except TimeoutError as err:
            conn.close()
            raise RemotePolicyTimeout(f"the policy server at {self.url} sent no metadata within "
                                      f"{self.timeout_s:g} s") from err
        except BaseException:
            conn.close()
            raise
        if isinstance(first, str):
            conn.close()
            raise RemotePolicyServerError(f"the policy server at {self.url} sent text instead of its metadata:\n"
                                          f"{first}")
        try:
            metadata = unpackb(first, what=f"metadata from {self.url}")
        except ValueError:
            conn.close()
            raise
        if not isinstance(metadata, dict):
            conn.close()
            raise ValueError(f"metadata from {self.url}: expected a msgpack map, got {type(metadata).__name__}")
        self.metadata, self._conn = metadata, conn
        return conn
