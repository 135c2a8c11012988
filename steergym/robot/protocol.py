"""The robot link's wire format: versioned, schema-checked msgpack messages (never pickle).

Every message is one msgpack map. A request carries ``v`` (the protocol version), ``type``,
``id`` (an integer the reply echoes) and the fields its type requires (`REQUEST_FIELDS`); a reply
carries ``v``, ``id``, ``ok`` and either the type's results or ``error = {"code", "message"}``.
NumPy arrays travel as msgpack extension type 1: a small msgpack header ``[dtype, shape]`` followed
by the array's raw bytes (C order), so a 256x256 RGB frame is 196,608 bytes plus a few, with no
image codec in the way. Only the dtypes in `ARRAY_DTYPES` are accepted and the byte count must
match the header exactly; anything else is a `ProtocolError` naming what was wrong.

Message types (client -> server):
    hello        token, expect{task, obs_mode, image_size}, takeover   -> session, task, spaces, ...
    reset        session, seed                                         -> obs, info
    step         session, action (7,) float                            -> obs, reward, terminated,
                                                                          truncated, info
    render       session                                               -> frame (H, W, 3) uint8
    heartbeat    session                                               -> state
    estop        session or token                                      -> state (arm held, latched)
    clear_estop  token                                                 -> state
    status       token                                                 -> state, arm pose, counters
    bye          session                                               -> (arm to safe pose)
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
DEFAULT_PORT = 5566  # not bridge_data_robot's 5556, so the two stacks never answer each other
MAX_REQUEST_BYTES = 64 * 1024  # the largest legitimate request (hello) is well under 1 KiB
MAX_REPLY_BYTES = 64 * 1024 * 1024  # replies hold camera frames
ARRAY_EXT = 1
ARRAY_DTYPES = frozenset({"|u1", "<f4", "<f8", "<i4", "<i8", "|b1"})

# Required request fields and their accepted Python types (after decoding). None = nil allowed.
_INT = (int,)
_STR = (str,)
REQUEST_FIELDS: dict[str, dict[str, tuple]] = {
    "hello": {"token": _STR, "expect": (dict,), "takeover": (str, type(None))},
    "reset": {"session": _STR, "seed": (int, type(None))},
    "step": {"session": _STR, "action": (np.ndarray, list)},
    "render": {"session": _STR},
    "heartbeat": {"session": _STR},
    "estop": {},  # session or token, checked by the server
    "clear_estop": {"token": _STR},
    "status": {"token": _STR},
    "bye": {"session": _STR},
}


class ProtocolError(ValueError):
    """A message that is not valid under this protocol; `code` is the reply's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------- encoding
def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        dtype = arr.dtype.str
        if dtype not in ARRAY_DTYPES:
            raise TypeError(f"cannot send an array of dtype {arr.dtype}; allowed: {sorted(ARRAY_DTYPES)}")
        header = msgpack.packb([dtype, list(arr.shape)])
        return msgpack.ExtType(ARRAY_EXT, header + arr.tobytes())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise TypeError(f"cannot send an object of type {type(obj).__name__}: {obj!r}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code != ARRAY_EXT:
        raise ProtocolError("malformed", f"unknown msgpack extension type {code}")
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data) + 1)
    unpacker.feed(data)
    try:
        dtype, shape = unpacker.unpack()
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the sender's fault
        raise ProtocolError("malformed", f"array header is not [dtype, shape]: {exc}") from None
    if dtype not in ARRAY_DTYPES:
        raise ProtocolError("malformed", f"array dtype {dtype!r} is not one of {sorted(ARRAY_DTYPES)}")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ProtocolError("malformed", f"array shape {shape!r} is not a list of non-negative ints")
    raw = data[unpacker.tell():]
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if len(raw) != expected:
        raise ProtocolError("malformed", f"array of dtype {dtype} and shape {shape} needs {expected} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def encode(message: dict[str, Any]) -> bytes:
    """One message as msgpack bytes (arrays as extension type 1); adds ``v``."""
    return msgpack.packb({"v": PROTOCOL_VERSION, **message}, default=_default, use_bin_type=True)


def decode(payload: bytes, *, max_bytes: int) -> dict[str, Any]:
    """Parse one message; raises ProtocolError("too_large" | "malformed" | "version", ...)."""
    if len(payload) > max_bytes:
        raise ProtocolError("too_large", f"message of {len(payload)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        message = msgpack.unpackb(payload, raw=False, ext_hook=_ext_hook, strict_map_key=True,
                                  max_bin_len=max_bytes, max_str_len=max_bytes, max_ext_len=max_bytes)
    except ProtocolError:
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types for bad bytes
        raise ProtocolError("malformed", f"not a msgpack message ({type(exc).__name__}: {exc})") from None
    if not isinstance(message, dict):
        raise ProtocolError("malformed", f"a message must be a msgpack map, got {type(message).__name__}")
    version = message.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError("version", f"protocol version {version!r} is not supported; this side speaks {PROTOCOL_VERSION}")
    return message


def stream_unpacker() -> msgpack.Unpacker:
    """An Unpacker for a stream of messages (the episode journal), arrays decoded as in `decode`."""
    return msgpack.Unpacker(raw=False, ext_hook=_ext_hook, strict_map_key=True)


def check_request(message: dict[str, Any]) -> dict[str, Any]:
    """Validate a decoded request against `REQUEST_FIELDS`; returns it, or raises ProtocolError."""
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in REQUEST_FIELDS:  # a list or map is unhashable: no `in` on it
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}; known: {sorted(REQUEST_FIELDS)}")
    if not isinstance(message.get("id"), int) or isinstance(message.get("id"), bool):
        raise ProtocolError("malformed", f"{kind}: field 'id' must be an integer, got {message.get('id')!r}")
    for field, types in REQUEST_FIELDS[kind].items():
        if field not in message:
            raise ProtocolError("malformed", f"{kind}: missing field {field!r}")
        value = message[field]
        if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
            names = [t.__name__ for t in types]
            raise ProtocolError("malformed", f"{kind}: field {field!r} must be {' or '.join(names)}, got {type(value).__name__}")
    return message


def error_reply(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id if isinstance(request_id, int) else None, "ok": False,
            "error": {"code": code, "message": message}}


# ----------------------------------------------------------------------------- spaces
def space_to_spec(space) -> dict[str, Any]:
    """A Box or Dict-of-Box gymnasium space as a msgpack-able spec (the hello reply carries it)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return {"type": "box", "low": space.low, "high": space.high, "dtype": space.dtype.str}
    if isinstance(space, spaces.Dict):
        return {"type": "dict", "spaces": {k: space_to_spec(s) for k, s in space.spaces.items()}}
    raise TypeError(f"the robot link sends Box and Dict spaces only, not {space}")


def spec_to_space(spec: dict[str, Any]):
    """Inverse of `space_to_spec`; raises ProtocolError for a spec it cannot read."""
    from gymnasium import spaces

    try:
        if spec["type"] == "box":
            low, high = np.asarray(spec["low"]), np.asarray(spec["high"])
            return spaces.Box(low=low, high=high, shape=low.shape, dtype=np.dtype(spec["dtype"]))
        if spec["type"] == "dict":
            return spaces.Dict({k: spec_to_space(s) for k, s in spec["spaces"].items()})
    except ProtocolError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("malformed", f"bad space spec {spec!r}: {exc}") from None
    raise ProtocolError("malformed", f"unknown space type {spec.get('type')!r}")
