"""The robot link's wire format and safety filter, without a network."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from steergym.robot import protocol
from steergym.robot.protocol import ProtocolError, check_request, decode, encode
from steergym.robot.safety import SafetyFilter, SafetyLimits


def roundtrip(message):
    return decode(encode(message), max_bytes=protocol.MAX_REPLY_BYTES)


def test_arrays_and_nested_values_roundtrip_exactly():
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    action = np.array([0.1, -0.2, 0.3, 0, 0, 0, 1], np.float32)
    out = roundtrip({"type": "x", "obs": {"pixels": image, "state": action.astype(np.float64)}, "n": np.int64(3)})
    assert out["v"] == protocol.PROTOCOL_VERSION and out["n"] == 3
    assert out["obs"]["pixels"].dtype == np.uint8 and np.array_equal(out["obs"]["pixels"], image)
    assert out["obs"]["state"].dtype == np.float64 and np.array_equal(out["obs"]["state"], action)
    # raw bytes, no codec: the frame costs its size plus a small header
    assert len(encode({"frame": image})) < image.nbytes + 64


@pytest.mark.parametrize("payload, code, needle", [
    (b"\xc1\xc1 not msgpack", "malformed", "not a msgpack message"),
    (msgpack.packb([1, 2, 3]), "malformed", "must be a msgpack map"),
    (msgpack.packb({"v": 99, "type": "step"}), "version", "protocol version 99"),
    (msgpack.packb({"v": 1, "pad": b"x" * 70_000}), "too_large", "exceeds the limit"),
    # an array header that promises 7 float32 (28 bytes) but carries 5
    (msgpack.packb({"v": 1, "a": msgpack.ExtType(1, msgpack.packb(["<f4", [7]]) + b"12345")}), "malformed",
     "needs 28 bytes, got 5"),
    (msgpack.packb({"v": 1, "a": msgpack.ExtType(1, msgpack.packb(["|O", [1]]) + b"x" * 8)}), "malformed",
     "dtype '|O'"),
    (msgpack.packb({"v": 1, "a": msgpack.ExtType(7, b"")}), "malformed", "extension type 7"),
])
def test_bad_messages_raise_protocol_errors_with_a_code(payload, code, needle):
    with pytest.raises(ProtocolError, match=needle) as info:
        decode(payload, max_bytes=protocol.MAX_REQUEST_BYTES)
    assert info.value.code == code


@pytest.mark.parametrize("message, needle", [
    ({"type": "fly", "id": 1}, "unknown message type 'fly'"),
    ({"type": "step", "id": 1, "session": "s"}, "missing field 'action'"),
    ({"type": "reset", "id": 1, "session": "s", "seed": "7"}, "field 'seed' must be int or NoneType, got str"),
    ({"type": "reset", "id": 1, "session": "s", "seed": True}, "field 'seed'"),
    ({"type": "heartbeat", "id": "1", "session": "s"}, "field 'id' must be an integer"),
])
def test_requests_are_schema_checked(message, needle):
    with pytest.raises(ProtocolError, match=needle):
        check_request(message)


def test_unsendable_values_are_refused_on_the_sending_side():
    with pytest.raises(TypeError, match="dtype complex128"):
        encode({"a": np.zeros(2, complex)})
    with pytest.raises(TypeError, match="object of type"):
        encode({"a": object()})


def test_space_specs_roundtrip(make_env):
    env = make_env("steergym/WidowXLiftCube-v0", obs_mode="pixels_state", image_size=(32, 48))
    for space in (env.observation_space, env.action_space):
        assert protocol.spec_to_space(roundtrip({"s": protocol.space_to_spec(space)})["s"]) == space
    with pytest.raises(ProtocolError, match="unknown space type"):
        protocol.spec_to_space({"type": "tuple"})


# ----------------------------------------------------------------------------- safety filter
START = np.array([0.30, 0.0, 0.15]), np.zeros(3)


def test_actions_inside_every_limit_pass_bit_exact():
    action = np.array([0.123456789, -0.3, 0.5, 0.1, -0.2, 0.33, -0.5])
    out = SafetyFilter(SafetyLimits()).filter(action, *START)
    assert out.limited == [] and np.array_equal(out.action, action)


def test_target_is_clipped_to_the_workspace_box():
    f = SafetyFilter(SafetyLimits(workspace_high=(0.32, 0.25, 0.18)))
    out = f.filter([1, 0, 0, 0, 0, 0, 1], *START)  # wants x 0.30 -> 0.35; the box stops it at 0.32
    assert out.limited == ["workspace"]
    assert out.action[0] == pytest.approx(0.02 / 0.05) and out.action[6] == 1


def test_target_outside_a_narrower_box_comes_back_at_most_one_delta_per_step():
    f = SafetyFilter(SafetyLimits(workspace_low=(0.10, -0.15, 0.02), workspace_high=(0.20, 0.25, 0.18)))
    out = f.filter(np.zeros(7), *START)  # x = 0.30 is 10 cm outside: one step of 5 cm inward
    assert "workspace" in out.limited and out.action[0] == pytest.approx(-1.0)
    out = f.filter([1, 0, 0, 0, 0, 0, 0], *START)  # pushing outward never moves it outward
    assert out.action[0] <= 0


def test_per_step_deltas_range_and_rotation_limits():
    f = SafetyFilter(SafetyLimits(max_delta_pos_m=0.02, max_delta_rot_rad=0.1, rotation_high=(0.8, 0.8, 0.05)))
    out = f.filter([2.0, -1, 0, 0, 0, 1, 0], *START)
    assert set(out.limited) == {"action_range", "delta_pos", "delta_rot", "rotation"}
    assert out.action[:2] == pytest.approx([0.4, -0.4])  # 2 cm of the 5 cm per unit
    assert out.action[5] == pytest.approx(0.05 / 0.25)  # yaw stops at its 0.05 rad bound


@pytest.mark.parametrize("action, needle", [([0.0] * 6, r"shape \(7,\), got shape \(6,\)"),
                                            ([0, 0, np.nan, 0, 0, 0, 0], "must be finite"),
                                            (["a"] * 7, "must be numeric")])
def test_bad_actions_are_named(action, needle):
    with pytest.raises(ValueError, match=needle):
        SafetyFilter(SafetyLimits()).filter(action, *START)


def test_joint_fault_uses_margin_and_tighter_bounds():
    f = SafetyFilter(SafetyLimits(joint_margin_rad=0.1, joint_low=(-0.5,) * 6, joint_high=(0.5,) * 6))
    low, high = -np.ones(6) * 3, np.ones(6) * 3
    assert f.joint_fault(np.zeros(6), low, high) is None
    assert f.joint_fault(np.array([0, 0, 0.405, 0, 0, 0]), low, high) is None  # within the overshoot tolerance
    message = f.joint_fault(np.array([0, 0, 0.45, 0, 0, 0]), low, high)
    assert message is not None and "joint 2 at 0.450 rad" in message


@pytest.mark.parametrize("kwargs, needle", [
    ({"workspace_low": (0.5, 0, 0)}, "must be below workspace_high"),
    ({"max_rate_hz": -1}, "max_rate_hz must be finite and >= 0"),
    ({"client_timeout_s": 0}, "client_timeout_s must be > 0"),
    ({"joint_low": (0,) * 6}, "both joint_low and joint_high"),
])
def test_bad_limits_are_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SafetyLimits(**kwargs)
