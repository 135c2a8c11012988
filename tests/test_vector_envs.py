"""gymnasium's AsyncVectorEnv with every start method gives the sync vector env's results.

Each async case runs in a fresh interpreter under a timeout, so a hang fails the test instead of CI:
the hang of issue 19 (forked workers of a steered id waiting forever in torch's OpenMP pool, after
the parent had run torch ops; `steergym.forking`) needs a parent whose torch uses more than one
thread, which this test process (conftest: one thread) never is. OMP_NUM_THREADS=2 makes the
subprocess's torch use two threads even on a one-core machine.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import steergym

STEERED = "steergym/WidowXPutCarrotOnPlate-DSRL-v0"
PLAIN = "steergym/WidowXPutCarrotOnPlate-v0"
NUM_ENVS, STEPS, SEEDS = 2, 3, [3, 4]
TIMEOUT_S = 120  # a case takes ~2-13 s
CONTEXTS = [None] + [c for c in ("fork", "forkserver", "spawn") if c in multiprocessing.get_all_start_methods()]

# Runs in the subprocess: argv = env id, context ("" for gymnasium's default), output .npz path.
ASYNC_RUN = """
import sys
import gymnasium as gym
import steergym
from test_vector_envs import rollout
env_id, context, out = sys.argv[1:]
vector_kwargs = {"context": context} if context else {}
env = gym.make_vec(env_id, num_envs=%d, vectorization_mode="async", vector_kwargs=vector_kwargs)
try:
    rollout(env, out)
finally:
    env.close()
""" % NUM_ENVS


def rollout(env: gym.vector.VectorEnv, out: str | os.PathLike) -> None:
    """Reset with SEEDS, take STEPS fixed actions, save every (obs, reward, terminated, truncated)."""
    space = env.single_action_space
    actions = np.random.default_rng(0).uniform(space.low, space.high, (STEPS, NUM_ENVS, *space.shape))
    obs, _ = env.reset(seed=SEEDS)
    result = {"obs_0": obs}
    for t, action in enumerate(actions.astype(space.dtype), 1):
        result[f"obs_{t}"], result[f"reward_{t}"], result[f"terminated_{t}"], result[f"truncated_{t}"], _ = (
            env.step(action))
    np.savez(out, **result)


@pytest.fixture(scope="module")
def sync_results(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    results = {}
    for env_id in (STEERED, PLAIN):
        out = tmp_path_factory.mktemp("sync") / "result.npz"
        env = gym.make_vec(env_id, num_envs=NUM_ENVS, vectorization_mode="sync")
        try:
            rollout(env, out)
        finally:
            env.close()
        results[env_id] = dict(np.load(out))
    return results


@pytest.mark.parametrize("env_id", [STEERED, PLAIN])
@pytest.mark.parametrize("context", CONTEXTS, ids=lambda c: c or "default")
def test_async_equals_sync_for_every_start_method(env_id, context, sync_results, tmp_path):
    out = tmp_path / "result.npz"
    tests, package = Path(__file__).resolve().parent, Path(steergym.__file__).resolve().parents[1]
    path = [str(tests), str(package), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=os.pathsep.join(path))
    # A session of its own, so that a hang's workers are killed with it, not left behind.
    proc = subprocess.Popen([sys.executable, "-c", ASYNC_RUN, env_id, context or "", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"make_vec({env_id!r}, async, context={context!r}) hung for {TIMEOUT_S} s; "
                    f"stderr: {stderr[-3000:]}", pytrace=False)
    assert proc.returncode == 0, stderr[-3000:]
    got, want = dict(np.load(out)), sync_results[env_id]
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
