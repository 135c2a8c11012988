"""The robot server's request handling, safety and episode log, driven in-process (no network)."""

from __future__ import annotations

import itertools
import time

import gymnasium as gym
import numpy as np
import pytest

from steergym.data.dataset import load_episodes
from steergym.policies.scripted import make_expert
from steergym.robot import protocol
from steergym.robot.backends import SimBackend, make_backend
from steergym.robot.episode_log import export_logs, log_files, read_episode_log
from steergym.robot.safety import SafetyLimits
from steergym.robot.server import RobotServer

LIFT = "steergym/WidowXLiftCube-v0"
TOKEN = "test-token"
_ids = itertools.count(1)


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def _make(task=LIFT, exclusive=False, **limits):
        limits = {"max_rate_hz": 0.0, **limits}
        server = RobotServer(SimBackend(task), TOKEN, port=0, limits=SafetyLimits(**limits),
                             log_dir=tmp_path / "logs", exclusive=exclusive)
        servers.append(server)
        return server

    yield _make
    for server in servers:
        server.close()


def call(server: RobotServer, kind: str, **fields) -> dict:
    return protocol.decode(server.handle(protocol.encode({"type": kind, "id": next(_ids), **fields})),
                           max_bytes=protocol.MAX_REPLY_BYTES)


def hello(server, **expect):
    reply = call(server, "hello", token=TOKEN, expect=expect, takeover=None)
    assert reply["ok"], reply
    return reply["session"]


def error_code(reply) -> str:
    assert not reply["ok"], reply
    return reply["error"]["code"]


def test_handshake_needs_the_token_and_the_expected_task(make_server):
    server = make_server()
    assert error_code(call(server, "hello", token="wrong", expect={}, takeover=None)) == "auth"
    reply = call(server, "hello", token=TOKEN, expect={"task": "steergym/WidowXPushCube-v0"}, takeover=None)
    assert error_code(reply) == "task_mismatch" and "serves 'steergym/WidowXLiftCube-v0'" in reply["error"]["message"]
    assert error_code(call(server, "hello", token=TOKEN, expect={"obs_mode": "pixels"}, takeover=None)) == "task_mismatch"
    reply = call(server, "hello", token=TOKEN, expect={"task": LIFT, "obs_mode": "state"}, takeover=None)
    assert reply["ok"] and reply["instruction"] == "lift the red cube" and reply["max_episode_steps"] == 40
    sim = gym.make(LIFT)
    assert protocol.spec_to_space(reply["observation_space"]) == sim.observation_space
    assert server.counters["errors"] == 3  # refused, answered, and still serving


def test_requests_need_a_session_and_an_episode(make_server):
    server = make_server()
    assert error_code(call(server, "reset", session="forged", seed=0)) == "no_session"
    session = hello(server)
    reply = call(server, "step", session=session, action=np.zeros(7, np.float32))
    assert error_code(reply) == "no_episode" and "call reset first" in reply["error"]["message"]


def test_twin_steps_equal_the_simulated_task(make_server):
    """A whole episode inside every safety limit: the twin must be the sim at every step (obs, reward,
    terminated, truncated, success). The half-speed scripted expert keeps every per-step delta and
    target inside the default limits and still lifts the cube, so the server's filter passes each
    action through bit-exact; a step that was limited would compare the clipped path instead, so it
    fails the test rather than ending the comparison."""
    server = make_server()
    session = hello(server)
    sim = gym.make(LIFT)
    obs = call(server, "reset", session=session, seed=5)["obs"]
    sim_obs, _ = sim.reset(seed=5)
    assert np.array_equal(obs, sim_obs)
    expert = make_expert(sim)
    for steps in itertools.count(1):
        action = expert.act(sim_obs)
        action[:6] *= 0.5  # half speed: a longer episode (15 steps), still inside every limit
        reply = call(server, "step", session=session, action=action)
        sim_obs, reward, terminated, truncated, info = sim.step(action)
        assert reply["ok"] and reply["info"]["safety"] == [] and not reply["info"]["fault"], (steps, reply)
        assert np.array_equal(reply["obs"], sim_obs), f"obs differ at step {steps}"
        assert (reply["reward"], reply["terminated"], reply["truncated"], reply["info"]["is_success"]) == \
            (reward, terminated, truncated, info["is_success"]), f"step {steps}"
        if terminated or truncated:
            break
    # the episode ended by success before the 40-step horizon (the server leaves the horizon to its
    # client, so a time-limit truncation would not be the server's to report)
    assert terminated and info["is_success"] and steps >= 10


def test_bad_actions_are_refused_and_the_arm_does_not_move(make_server):
    server = make_server()
    session = hello(server)
    call(server, "reset", session=session, seed=0)
    before = server.backend.joints()
    for action, needle in ((np.array([0, 0, np.nan, 0, 0, 0, 0]), "must be finite"),
                           (np.zeros(3), r"shape (7,)"), ([0.1] * 8, r"shape (7,)")):
        reply = call(server, "step", session=session, action=action)
        assert error_code(reply) == "bad_action" and needle in reply["error"]["message"]
    assert np.array_equal(server.backend.joints(), before)
    assert call(server, "step", session=session, action=np.zeros(7))["ok"]  # still serving


def test_out_of_workspace_actions_are_clipped_server_side(make_server):
    server = make_server(workspace_high=(0.33, 0.25, 0.18))  # narrower than the sim's 0.45 m
    session = hello(server)
    call(server, "reset", session=session, seed=0)
    limited = []
    for _ in range(10):
        reply = call(server, "step", session=session, action=np.array([1, 0, 0, 0, 0, 0, 1], np.float32))
        limited += reply["info"]["safety"]
    assert "workspace" in limited
    assert server.backend.target_pose()[0][0] == pytest.approx(0.33)
    assert server.backend.tcp_pose()[0][0] < 0.335  # the measured arm stays in the box too


def test_rate_limit_spaces_steps(make_server):
    server = make_server(max_rate_hz=25.0)
    session = hello(server)
    call(server, "reset", session=session, seed=0)
    start = time.monotonic()
    for _ in range(5):
        assert call(server, "step", session=session, action=np.zeros(7))["ok"]
    assert time.monotonic() - start >= 4 * 0.04 - 1e-3  # 5 steps at <= 25 Hz: >= 4 intervals of 40 ms


def test_estop_latches_until_cleared_with_the_token(make_server):
    server = make_server()
    session = hello(server)
    call(server, "reset", session=session, seed=0)
    assert call(server, "estop", session=session)["state"] == "estopped"
    assert error_code(call(server, "step", session=session, action=np.zeros(7))) == "estopped"
    assert error_code(call(server, "reset", session=session, seed=0)) == "estopped"
    assert error_code(call(server, "clear_estop", token="wrong")) == "auth"
    assert call(server, "clear_estop", token=TOKEN)["ok"]
    assert call(server, "reset", session=session, seed=0)["ok"]
    log = read_episode_log(log_files(server.log_dir)[0])
    assert log["end"]["reason"] == "estop"


def test_joint_fault_holds_the_arm_and_ends_the_episode(make_server):
    server = make_server(joint_low=(-0.2, -3, -3, -3, -3, -3), joint_high=(0.2, 3, 3, 3, 3, 3))
    session = hello(server)
    call(server, "reset", session=session, seed=0)
    for _ in range(8):  # sideways: the waist turns past 0.2 rad
        reply = call(server, "step", session=session, action=np.array([0, 1, 0, 0, 0, 0, 1], np.float32))
        if reply["info"]["fault"]:
            break
    assert reply["truncated"] and "joint 0" in reply["info"]["fault"]
    reply = call(server, "step", session=session, action=np.zeros(7))
    assert error_code(reply) == "no_episode" and "joint 0" in reply["error"]["message"]
    assert read_episode_log(log_files(server.log_dir)[0])["end"]["reason"] == "fault"


def test_silent_client_is_dropped_and_the_arm_returns_to_its_safe_pose(make_server):
    server = make_server(client_timeout_s=0.5)
    session = hello(server)
    call(server, "reset", session=session, seed=0)
    for _ in range(4):
        call(server, "step", session=session, action=np.array([1, 0, -1, 0, 0, 0, -1], np.float32))
    assert not server.backend.at_safe_pose()
    server.check_client(time.monotonic())  # heard from just now: kept
    assert server.session == session
    server.check_client(time.monotonic() + 0.6)
    assert server.session is None and server.backend.at_safe_pose() and server.at_safe_pose
    log = read_episode_log(log_files(server.log_dir)[0])
    assert log["complete"] and log["end"]["reason"] == "client_lost" and len(log["steps"]) == 4
    assert error_code(call(server, "heartbeat", session=session)) == "no_session"


def test_a_new_client_preempts_or_is_refused_when_exclusive(make_server):
    server = make_server()
    first = hello(server)
    second = hello(server)
    reply = call(server, "heartbeat", session=first)
    assert error_code(reply) == "no_session" and "another client took over" in reply["error"]["message"]
    assert call(server, "heartbeat", session=second)["ok"]
    # reclaiming one's own session is not a pre-emption
    reply = call(server, "hello", token=TOKEN, expect={}, takeover=second)
    assert reply["ok"]
    exclusive = make_server(exclusive=True)
    hello(exclusive)
    assert error_code(call(exclusive, "hello", token=TOKEN, expect={}, takeover=None)) == "busy"


def test_episode_log_is_complete_and_exports_to_a_minari_dataset(make_server, tmp_path):
    server = make_server()
    session = hello(server)
    actions = []
    for seed in (1, 2):
        call(server, "reset", session=session, seed=seed)
        for k in range(6):
            action = np.array([0.1 * k, 0.05 * k, -0.1 * k, 0, 0, 0.1, 1], np.float32)  # inside every limit
            actions.append(action)
            call(server, "step", session=session, action=action)
    call(server, "bye", session=session)
    files = log_files(server.log_dir)
    logs = [read_episode_log(f) for f in files]
    assert [log["end"]["reason"] for log in logs] == ["reset", "bye"]
    assert [log["header"]["seed"] for log in logs] == [1, 2]
    assert all(len(log["steps"]) == 6 for log in logs)
    folder = export_logs(server.log_dir, "test/robot-lift-v0", root=tmp_path / "datasets")
    episodes, metadata = load_episodes("test/robot-lift-v0", root=tmp_path / "datasets",
                                       observation_space=gym.make(LIFT).observation_space)
    assert folder.exists() and len(episodes) == 2 and metadata["algorithm"] == "steergym.robot"
    assert metadata["episode_quality"] == ["robot:sim", "robot:sim"]
    assert np.allclose(np.concatenate([e.actions for e in episodes]), np.stack(actions))
    assert episodes[0].observations.shape == (7, gym.make(LIFT).observation_space.shape[0])


def test_a_log_cut_short_by_a_crash_keeps_every_complete_step(make_server, tmp_path):
    server = make_server()
    session = hello(server)
    call(server, "reset", session=session, seed=0)
    for _ in range(5):
        call(server, "step", session=session, action=np.zeros(7))
    path = log_files(server.log_dir)[0]
    cut = tmp_path / "episode_cut.msgpack"
    cut.write_bytes(path.read_bytes()[:-7])  # the server died while writing step 5
    log = read_episode_log(cut)
    assert not log["complete"] and len(log["steps"]) == 4
    with pytest.raises(ValueError, match="not a steergym robot episode log"):
        bad = tmp_path / "episode_bad.msgpack"
        bad.write_bytes(b"\x93\x01\x02\x03")
        read_episode_log(bad)


def test_backend_errors_are_named():
    with pytest.raises(ValueError, match="unknown robot backend 'ros'"):
        make_backend("ros", LIFT)
    with pytest.raises(RuntimeError, match="interbotix_xs_modules"):
        make_backend("interbotix", LIFT)
    with pytest.raises(ValueError, match="serves the simulated WidowX tasks"):
        SimBackend("steergym/WidowXRealLiftCube-v0")
