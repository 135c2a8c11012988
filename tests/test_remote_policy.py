"""RemotePolicy against steergym's loopback policy server (and hand-made bad servers): the codec,
bit-for-bit equality with the local policy, DSRL and V-GPS through it, the noise check, server
errors, timeouts, unreachable and restarted servers. Loopback only; nothing is downloaded."""

from __future__ import annotations

import contextlib
import pickle
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import msgpack
import numpy as np
import pytest

pytest.importorskip("websockets", reason='needs the remote extra: pip install -e ".[remote]"')

from websockets.sync.server import serve as sync_serve  # noqa: E402

from steergym.policies import DiffusionPolicy, FlowPolicy, PolicyConfig  # noqa: E402
from steergym.policies.remote import (  # noqa: E402
    NoiseIgnoredError,
    RemotePolicy,
    RemotePolicyError,
    RemotePolicyServerError,
    RemotePolicyTimeout,
    packb,
    unpackb,
)
from steergym.policies.remote_server import serve_policy  # noqa: E402
from steergym.policies.value_guided import ValueGuidedPolicy  # noqa: E402
from steergym.wrappers import NoiseActionWrapper  # noqa: E402

LIFT = "steergym/WidowXLiftCube-v0"  # 17-d state, 7-d actions
H, D = 4, 7


def small_policy(env, kind="diffusion", seed=0, **overrides):
    cls = DiffusionPolicy if kind == "diffusion" else FlowPolicy
    config = PolicyConfig(kind=kind, hidden_dim=32, time_dim=8, sample_steps=4, conv_channels=(8, 8),
                          image_features=16, horizon=H, **overrides)
    return cls(env.observation_space, env.action_space, config, seed=seed)


@pytest.fixture
def lift(make_env):
    env = make_env(LIFT)
    return env, small_policy(env)


@contextlib.contextmanager
def served(policy, **kwargs):
    server = serve_policy(policy, "127.0.0.1", 0, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def remote_for(server, env, **kwargs):
    kwargs.setdefault("noise_shape", (H, D))
    kwargs.setdefault("timeout_s", 5.0)
    return RemotePolicy("127.0.0.1", server.port, env.observation_space, env.action_space, **kwargs)


@contextlib.contextmanager
def raw_server(reply_fn, metadata=b"default"):
    """A hand-made server: sends `metadata` (packed {} by default), then answers each request with
    reply_fn(request_bytes) (bytes or str sent as they are; None: never answer)."""
    done = threading.Event()

    def handler(ws):
        ws.send(packb({}) if metadata == b"default" else metadata)
        for message in ws:
            reply = reply_fn(message)
            if reply is None:
                done.wait(30)
                return
            ws.send(reply)

    server = sync_serve(handler, "127.0.0.1", 0, compression=None, max_size=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.socket.getsockname()[1]
    finally:
        done.set()
        server.shutdown()
        thread.join(5)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ codec
def test_codec_round_trips_nested_dicts_arrays_and_scalars():
    rng = np.random.default_rng(0)
    message = {
        "observation/state": rng.standard_normal(17).astype(np.float32),
        "images": {"wrist": rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
                   "flags": np.array([True, False])},
        "list": [np.arange(6, dtype=np.int64).reshape(2, 3)[:, ::2], 3, "x", None, b"raw"],  # non-contiguous
        "big_endian": np.arange(3, dtype=">f8"),
        "zero_d": np.array(2.5, dtype=np.float16),
        "empty": np.zeros((0, 7), np.float32),
        "scalars": {"f32": np.float32(1.25), "i64": np.int64(-7), "b": np.bool_(True)},
        "prompt": "pick up the cube",
        "py": [1.5, True, -3],
    }
    out = unpackb(packb(message))
    assert set(out) == set(message)

    def same(a, b):
        if isinstance(a, dict):
            assert set(a) == set(b)
            for k in a:
                same(a[k], b[k])
        elif isinstance(a, list):
            assert len(a) == len(b)
            for x, y in zip(a, b):
                same(x, y)
        elif isinstance(a, (np.ndarray, np.generic)):
            assert type(b) is type(a) and a.dtype == b.dtype and np.shape(a) == np.shape(b)
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b and type(a) is type(b)

    same(message, out)
    assert out["images"]["wrist"].flags.writeable  # a copy, not a view of the message bytes


def test_wire_format_is_openpis_msgpack_numpy():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw = msgpack.unpackb(packb({"a": arr, "s": np.float32(2.0)}), raw=False)
    assert raw["a"] == {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": "<f4", b"shape": [2, 3]}
    assert raw["s"] == {b"__npgeneric__": True, b"data": 2.0, b"dtype": "<f4"}


@pytest.mark.parametrize("value", [np.array([object()], dtype=object), np.zeros(2, np.complex64),
                                   np.zeros(2, dtype="V4"), np.zeros(2, dtype=[("x", "<f4")]),
                                   np.complex128(1j), {1: "int key"}, {1, 2}])
def test_encoder_refuses_what_cannot_travel_naming_the_field(value):
    with pytest.raises(ValueError, match=r"message\['obs'\]"):
        packb({"obs": value})


def _ndarray_map(over):
    m = {b"__ndarray__": True, b"data": np.zeros(4, np.float32).tobytes(), b"dtype": "<f4", b"shape": [2, 2]}
    m.update(over)
    return {k: v for k, v in m.items() if v is not None}


@pytest.mark.parametrize("bad, match", [
    (_ndarray_map({b"dtype": "|O"}), "object dtype"),
    (_ndarray_map({b"dtype": "<c8", b"data": bytes(32)}), "complex dtype"),
    (_ndarray_map({b"dtype": "|V4"}), "void dtype"),
    (_ndarray_map({b"dtype": "not-a-dtype"}), "unknown dtype 'not-a-dtype'"),
    (_ndarray_map({b"data": bytes(15)}), "15 bytes, expected 16"),
    (_ndarray_map({b"shape": [2, -2]}), "integers >= 0"),
    (_ndarray_map({b"shape": "2x2"}), "'shape' is a str"),
    (_ndarray_map({b"data": None}), "lacks 'data'"),
    (_ndarray_map({b"dtype": 4}), "'dtype' is a int"),
    ({b"__npgeneric__": True, b"data": 1.0, b"dtype": "|O"}, "object dtype"),
    ({b"__npgeneric__": True, b"data": 300, b"dtype": "|u1"}, "does not fit"),
])
def test_decoder_refuses_malformed_numpy_maps_naming_the_field(bad, match):
    data = msgpack.packb({"actions": [1, {"chunk": bad}]}, use_bin_type=True)
    with pytest.raises(ValueError, match=match) as info:
        unpackb(data, what="reply")
    assert "reply['actions'][1]['chunk']" in str(info.value)


def test_decoder_refuses_bytes_that_are_not_msgpack():
    with pytest.raises(ValueError, match="reply: not a valid msgpack message"):
        unpackb(b"\xc1", what="reply")


# ------------------------------------------------------------------------- against a server
def test_remote_sample_equals_the_local_policy_bit_for_bit(lift):
    env, policy = lift
    obs, _ = env.reset(seed=0)
    w = np.random.default_rng(1).standard_normal((3, H, D)).astype(np.float32)
    batch = np.stack([obs, obs * 0.5, obs + 0.1]).astype(np.float32)
    with served(policy) as server, remote_for(server, env) as remote:
        np.testing.assert_array_equal(remote.sample(obs, w[0]), policy.sample(obs, w[0]))
        np.testing.assert_array_equal(remote.sample(obs, w[1].reshape(-1)), policy.sample(obs, w[1]))
        per_item = np.stack([policy.sample(o, n) for o, n in zip(batch, w)])  # one request per item
        np.testing.assert_array_equal(remote.sample(batch, w), per_item)
        assert remote.metadata == {"server": "steergym", "noise_shape": [H, D]}
        assert "infer_ms" in remote.last_timing["server_timing"]
        assert remote.sample_n(obs, 3).shape == (3, H, D)
        assert remote.sample_n(batch, 2).shape == (3, 2, H, D)
        with pytest.raises(ValueError, match=r"noise must have shape \(4, 7\)"):
            remote.sample(obs, np.zeros(5, np.float32))


def test_act_executes_each_chunk_open_loop_for_action_steps(lift):
    env, policy = lift
    obs, _ = env.reset(seed=0)
    with served(policy) as server, remote_for(server, env, action_steps=2, seed=3) as remote:
        first = [remote.act(obs) for _ in range(4)]
        assert server.requests == 2  # 2 chunks for 4 steps
        remote.reset(seed=3)
        again = [remote.act(obs) for _ in range(2)]
        np.testing.assert_array_equal(first[:2], again)  # reseeded noise -> same chunk
        chunk = policy.sample(obs, np.random.default_rng(3).standard_normal((H, D)).astype(np.float32))
        np.testing.assert_array_equal(first[:2], chunk[:2])
        assert remote.act(np.stack([obs, obs])).shape == (2, D)


def test_dsrl_and_vgps_steer_the_remote_policy(lift, make_env):
    env, policy = lift
    with served(policy) as server, remote_for(server, env) as remote:
        dsrl = NoiseActionWrapper(make_env(LIFT), remote)
        obs, _ = dsrl.reset(seed=0)
        for w in np.random.default_rng(0).uniform(-1.5, 1.5, (2, H * D)).astype(np.float32):
            expected = policy.sample(obs, w)
            obs, reward, terminated, truncated, info = dsrl.step(w)
            np.testing.assert_array_equal(info["chunk"], expected)
        calls = []

        def critic(obs_batch, chunks):
            calls.append(len(chunks))
            return -np.abs(chunks[:, 0]).sum(-1)

        vgps = ValueGuidedPolicy(remote, critic, num_samples=3)
        obs, _ = env.reset(seed=0)
        vgps.reset(seed=0)
        for _ in range(2):
            obs, *_ = env.step(vgps.act(obs))
        assert calls == [3, 3]


def test_noise_check_passes_for_an_honest_server_and_raises_when_the_noise_is_ignored(lift):
    env, policy = lift
    obs, _ = env.reset(seed=0)
    with served(policy) as server, remote_for(server, env) as remote:
        remote.check_noise_is_used(obs)
        remote.sample(obs, np.zeros((H, D), np.float32))  # the first sample also checks, and passes
    with served(policy, use_noise=False) as server, remote_for(server, env) as remote:
        with pytest.raises(NoiseIgnoredError, match="different actions for the same noise.*DSRL cannot steer"):
            remote.sample(obs, np.zeros((H, D), np.float32))
        assert remote.sample_n(obs, 2).shape == (2, H, D)  # V-GPS still works
        unchecked = remote_for(server, env, check_noise=False)
        assert unchecked.sample(obs, np.zeros((H, D), np.float32)).shape == (H, D)
        unchecked.close()

    class Constant:  # deterministic and deaf to the noise
        observation_space, action_space, noise_shape = env.observation_space, env.action_space, (H, D)

        def sample(self, obs, noise):
            return np.zeros((H, D), np.float32)

        def sample_n(self, obs, n):
            return np.zeros((n, H, D), np.float32)

    with served(Constant()) as server, remote_for(server, env) as remote:
        with pytest.raises(NoiseIgnoredError, match="same actions for different noise"):
            remote.check_noise_is_used(obs)


def test_a_server_error_reply_raises_with_the_servers_message(lift):
    env, policy = lift
    obs, _ = env.reset(seed=0)

    class Flaky:
        observation_space, action_space, noise_shape = env.observation_space, env.action_space, (H, D)
        fail = True

        def sample(self, obs, noise):
            if self.fail:
                raise RuntimeError("boom from the policy server")
            return policy.sample(obs, noise)

    flaky = Flaky()
    with served(flaky) as server, remote_for(server, env, check_noise=False) as remote:
        with pytest.raises(RemotePolicyServerError, match="(?s)replied with an error.*boom from the policy server"):
            remote.sample(obs, np.zeros((H, D), np.float32))
        flaky.fail = False  # the server closed that connection; the next request reconnects
        assert remote.sample(obs, np.zeros((H, D), np.float32)).shape == (H, D)


@pytest.mark.parametrize("reply, match", [
    (packb([1, 2]), "expected a msgpack map, got list"),
    (packb({"act": np.zeros((H, D), np.float32)}), "no 'actions' entry"),
    (packb({"actions": np.zeros((H, 6), np.float32)}), r"'actions' has shape \(4, 6\), expected a chunk \(H, 7\)"),
    (packb({"actions": np.zeros(7, np.float32)}), r"'actions' has shape \(7,\)"),
    (packb({"actions": np.full((H, D), np.nan, np.float32)}), "NaN or inf"),
    (packb({"actions": "left"}), "must be a numeric array"),
    (msgpack.packb({"actions": {b"__ndarray__": True, b"data": b"", b"dtype": "|O", b"shape": [0]}}),
     r"\['actions'\]: object dtype"),
    (b"\xc1", "not a valid msgpack message"),
])
def test_malformed_replies_raise_value_error(make_env, reply, match):
    env = make_env(LIFT)
    obs, _ = env.reset(seed=0)
    with raw_server(lambda message: reply) as port:
        remote = RemotePolicy("127.0.0.1", port, env.observation_space, env.action_space, timeout_s=5)
        with pytest.raises(ValueError, match=match) as info:
            remote.act(obs)
        assert f"127.0.0.1:{port}" in str(info.value)
        remote.close()


def test_malformed_metadata_raises_value_error(make_env):
    env = make_env(LIFT)
    obs, _ = env.reset(seed=0)
    with raw_server(lambda m: None, metadata=packb([1])) as port:
        remote = RemotePolicy("127.0.0.1", port, env.observation_space, env.action_space, timeout_s=5)
        with pytest.raises(ValueError, match="metadata from .*expected a msgpack map"):
            remote.act(obs)


def test_a_silent_server_times_out(make_env):
    env = make_env(LIFT)
    obs, _ = env.reset(seed=0)
    with raw_server(lambda message: None) as port:
        remote = RemotePolicy("127.0.0.1", port, env.observation_space, env.action_space, timeout_s=0.5)
        start = time.monotonic()
        with pytest.raises(RemotePolicyTimeout, match=f"127.0.0.1:{port} sent no reply within 0.5 s"):
            remote.act(obs)
        assert time.monotonic() - start < 3
        remote.close()


def test_killed_or_unreachable_server_gives_a_clear_error_within_the_timeout(lift):
    env, policy = lift
    obs, _ = env.reset(seed=0)
    w = np.zeros((H, D), np.float32)
    with served(policy) as server:
        remote = remote_for(server, env, check_noise=False, timeout_s=1, retries=2, retry_delay_s=0.1)
        remote.sample(obs, w)
    start = time.monotonic()  # the server is gone now
    with pytest.raises(RemotePolicyError, match=f"cannot reach the policy server at ws://127.0.0.1:{server.port}"):
        remote.sample(obs, w)
    assert time.monotonic() - start < 3
    port = free_port()
    nowhere = RemotePolicy("127.0.0.1", port, env.observation_space, env.action_space, timeout_s=1, retries=0)
    with pytest.raises(RemotePolicyError, match=f"cannot reach the policy server at ws://127.0.0.1:{port}.*refused"):
        nowhere.act(obs)


def test_reconnects_after_the_server_restarts(lift):
    env, policy = lift
    obs, _ = env.reset(seed=0)
    w = np.random.default_rng(2).standard_normal((H, D)).astype(np.float32)
    with served(policy) as server:
        port = server.port
        remote = remote_for(server, env, check_noise=False, retries=3, retry_delay_s=0.05)
        before = remote.sample(obs, w)
    server = serve_policy(policy, "127.0.0.1", port)  # same port, new process state
    try:
        np.testing.assert_array_equal(remote.sample(obs, w), before)
        assert server.requests == 1
    finally:
        server.stop()
        remote.close()


def test_healthz_and_pickling(lift):
    env, policy = lift
    obs, _ = env.reset(seed=0)
    with served(policy) as server:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as response:
            assert response.status == 200 and response.read() == b"OK\n"
        remote = remote_for(server, env, check_noise=False)
        remote.act(obs)
        copy = pickle.loads(pickle.dumps(remote))  # the connection stays behind; the copy reconnects
        w = np.zeros((H, D), np.float32)
        np.testing.assert_array_equal(copy.sample(obs, w), remote.sample(obs, w))
        copy.close()
        remote.close()


def test_dict_observations_travel_as_their_items(make_env):
    env = make_env(LIFT, obs_mode="pixels_state", image_size=(32, 32))
    policy = small_policy(env, kind="flow")
    obs, _ = env.reset(seed=0)
    w = np.random.default_rng(4).standard_normal((H, D)).astype(np.float32)
    with served(policy) as server, remote_for(server, env, check_noise=False) as remote:
        np.testing.assert_array_equal(remote.sample(obs, w), policy.sample(obs, w))


def test_import_steergym_does_not_import_websockets():
    code = ("import sys, steergym, steergym.policies, steergym.policies.remote, steergym.policies.remote_server; "
            "assert 'websockets' not in sys.modules, 'websockets imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_without_websockets_the_error_says_how_to_install(monkeypatch, lift):
    env, policy = lift
    for name in list(sys.modules):
        if name == "websockets" or name.startswith("websockets."):
            monkeypatch.setitem(sys.modules, name, None)
    remote = RemotePolicy("127.0.0.1", free_port(), env.observation_space, env.action_space)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[remote\]"'):
        remote.act(env.reset(seed=0)[0])
    with pytest.raises(ImportError, match=r'pip install -e "\.\[remote\]"'):
        serve_policy(policy)


def test_dsrl_with_padded_noise_like_pi0(lift, make_env):
    """pi0 samples 32-dim padded actions and returns the env's d: noise (H, D > d), chunk (H, d)."""
    env, policy = lift

    class Padded:  # takes (H, 9) noise, decodes its first 7 columns
        observation_space, action_space, noise_shape = env.observation_space, env.action_space, (H, 9)

        def sample(self, obs, noise):
            return policy.sample(obs, np.asarray(noise)[:, :D])

    with served(Padded()) as server, remote_for(server, env, noise_shape=(H, 9)) as remote:
        dsrl = NoiseActionWrapper(make_env(LIFT), remote)
        assert dsrl.action_space.shape == (H * 9,)
        obs, _ = dsrl.reset(seed=0)
        w = np.random.default_rng(5).uniform(-1, 1, H * 9).astype(np.float32)
        expected = policy.sample(obs, w.reshape(H, 9)[:, :D])
        *_, info = dsrl.step(w)
        np.testing.assert_array_equal(info["chunk"], expected)


def test_api_key_travels_as_an_authorization_header(make_env):
    env = make_env(LIFT)
    obs, _ = env.reset(seed=0)
    seen = []

    def reply(message):
        return packb({"actions": np.zeros((2, D), np.float32)})

    def handler(ws):  # records the header, then answers like raw_server
        seen.append(ws.request.headers.get("Authorization"))
        ws.send(packb({}))
        for message in ws:
            ws.send(reply(message))

    server = sync_serve(handler, "127.0.0.1", 0, compression=None, max_size=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.socket.getsockname()[1]
        for key in ("s3cret", None):
            remote = RemotePolicy("127.0.0.1", port, env.observation_space, env.action_space, api_key=key)
            assert remote.act(obs).shape == (D,)
            remote.close()
    finally:
        server.shutdown()
        thread.join(5)
    assert seen == ["Api-Key s3cret", None]


def _openpi_style_pack(obj):
    """The encoding openpi's msgpack_numpy uses, written from its description (a `default` hook)."""
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _openpi_style_unpack(obj):
    if b"__ndarray__" in obj:
        return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(obj[b"dtype"]), shape=obj[b"shape"])
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def test_codec_interoperates_with_an_openpi_style_hook_codec():
    rng = np.random.default_rng(0)
    message = {"observation/state": rng.standard_normal(8).astype(np.float32),
               "image": rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), "prompt": "lift",
               "noise": rng.standard_normal((50, 32)).astype(np.float32), "t": np.float32(0.5),
               "server_timing": {"infer_ms": 12.5}}
    theirs = msgpack.unpackb(packb(message), object_hook=_openpi_style_unpack)  # ours -> theirs
    ours = unpackb(msgpack.packb(message, default=_openpi_style_pack))          # theirs -> ours
    for decoded in (theirs, ours):
        assert set(decoded) == set(message)
        for key, value in message.items():
            if isinstance(value, np.ndarray):
                assert decoded[key].dtype == value.dtype
                np.testing.assert_array_equal(decoded[key], value)
            else:
                assert decoded[key] == value


@pytest.mark.parametrize("kwargs, match", [
    ({"timeout_s": 0}, "timeout_s must be a finite number > 0"),
    ({"timeout_s": float("inf")}, "timeout_s"),
    ({"retries": -1}, "retries must be an integer >= 0"),
    ({"noise_shape": (4,)}, r"noise_shape must be \(H, D\)"),
    ({"action_steps": 0}, "action_steps must be an integer >= 1"),
])
def test_bad_arguments_are_refused(make_env, kwargs, match):
    env = make_env(LIFT)
    with pytest.raises(ValueError, match=match):
        RemotePolicy("127.0.0.1", 1, env.observation_space, env.action_space, **kwargs)
    with pytest.raises(ValueError, match="no noise_shape was given"):
        RemotePolicy("127.0.0.1", 1, env.observation_space, env.action_space).sample(
            env.reset(seed=0)[0], np.zeros((H, D), np.float32))
