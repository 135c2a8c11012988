"""Evaluation and collection sharded over Ray actors give the single-process results, on a local Ray
and on a simulated two-node cluster; the CLI's --workers prints the same numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import ray
from test_cli import run

from steergym.bench.catalog import eval_policy
from steergym.bench.evaluate import evaluate
from steergym.data.collect import collect
from steergym.data.dataset import load_episodes, read_metadata
from steergym.distributed import PolicySpec, collect_distributed, evaluate_distributed

LIFT = "steergym/WidowXLiftCube-v0"
POLICY = "widowx-lift-diffusion"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (2 CPUs, what this machine has); shut down after it."""
    was_running = ray.is_initialized()
    if not was_running:
        # address='local': a new local Ray even when RAY_ADDRESS was left by another module's session
        ray.init(address="local", num_cpus=2, log_to_driver=False, include_dashboard=False, configure_logging=False)
    yield ray
    if not was_running:
        ray.shutdown()


@pytest.fixture(scope="module")
def single():
    """The single-process evaluation the sharded ones must reproduce: 6 episodes from seed 0."""
    policy, _ = eval_policy(POLICY, LIFT, seed=0)
    result = evaluate(LIFT, policy, episodes=6, seed=0, progress=False)
    assert 0 < result.successes < 6  # a mix of outcomes, so the seed order matters
    return result


run_cli = run  # (exit code, stdout, stderr) of `steergym argv...`, from test_cli


def test_eval_two_workers_equals_single_process(ray_session, single):
    sharded = evaluate_distributed(LIFT, POLICY, episodes=6, seed=0, workers=2, progress=False)
    assert sharded.to_dict() == single.to_dict()  # rate, CI, failed seeds, per-episode returns and lengths
    assert len(sharded.returns) == len(sharded.lengths) == 6


def test_eval_noisy_expert_is_independent_of_the_sharding(ray_session):
    """The noisy expert is reseeded per episode, so sharded runs match."""
    knobs = {"noise": 0.3, "random_action_prob": 0.1}
    alone = evaluate(LIFT, "expert", episodes=6, seed=3, progress=False, expert_kwargs=knobs)
    sharded = evaluate_distributed(LIFT, PolicySpec("expert", knobs), episodes=6, seed=3, workers=2,
                                   progress=False)
    assert sharded.to_dict() == alone.to_dict()
    assert len(set(alone.lengths)) > 1  # the noise made the episodes differ


def _same_datasets(a_id: str, b_id: str, root: Path) -> None:
    a, meta_a = load_episodes(a_id, root)
    b, meta_b = load_episodes(b_id, root)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.observations, y.observations)
        for name in ("actions", "rewards", "terminations", "truncations", "successes"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
        assert x.quality == y.quality
    assert meta_a == meta_b and read_metadata(a_id, root) == read_metadata(b_id, root)


def test_collect_with_one_and_two_workers_equals_single_process(ray_session, tmp_path, capsys):
    collect(LIFT, 6, "mixed", "steergym/lift/single-v0", seed=4, root=tmp_path, progress=False)
    folder, episodes = collect_distributed(LIFT, 6, "mixed", "steergym/lift/workers1-v0", seed=4, workers=1,
                                           root=tmp_path, progress=False)
    assert folder == tmp_path / "steergym/lift/workers1-v0"
    assert [e.seed for e in episodes] == [4, 5, 6, 7, 8, 9]
    _same_datasets("steergym/lift/single-v0", "steergym/lift/workers1-v0", tmp_path)
    # Two workers, through the CLI.
    code, out, err = run_cli(capsys, "collect", "--env", LIFT, "--episodes", "6", "--quality", "mixed", "--seed", "4",
                             "--out", "steergym/lift/workers2-v0", "--root", str(tmp_path), "--workers", "2", "--quiet")
    assert code == 0, err
    assert out.startswith("steergym/lift/workers2-v0: 6 episodes")
    _same_datasets("steergym/lift/single-v0", "steergym/lift/workers2-v0", tmp_path)
    metadata = read_metadata("steergym/lift/workers2-v0", tmp_path)
    assert metadata["episode_seeds"] == [4, 5, 6, 7, 8, 9] and len(set(metadata["episode_quality"])) == 3
    with pytest.raises(FileExistsError, match="overwrite=True"):  # refused before collecting anything
        collect_distributed(LIFT, 2, "expert", "steergym/lift/workers2-v0", workers=2, root=tmp_path, progress=False)


def test_cli_eval_with_workers_prints_the_same_numbers(ray_session, single, capsys, tmp_path):
    args = ("eval", "--env", LIFT, "--policy", POLICY, "--episodes", "6", "--seed", "0", "--quiet")
    code, alone, _ = run_cli(capsys, *args, "--json", str(tmp_path / "a.json"))
    assert code == 0
    code, sharded, err = run_cli(capsys, *args, "--workers", "2", "--json", str(tmp_path / "b.json"))
    assert code == 0, err
    assert sharded.replace("b.json", "a.json") == alone
    assert f"success rate {single.success_rate:.3f} ({single.successes}/6)" in sharded
    assert json.loads((tmp_path / "b.json").read_text()) == single.to_dict()


@pytest.mark.parametrize("argv, needle", [
    (("eval", "--env", LIFT, "--workers", "0"), "--workers"),
    (("collect", "--env", LIFT, "--episodes", "1", "--out", "x/y-v0", "--workers", "-1"), "--workers"),
    (("eval", "--env", LIFT, "--address", "auto"), "--address needs --workers"),
    (("eval", "--env", LIFT, "--workers", "2", "--video", "v.mp4"), "drop --workers"),
])
def test_bad_workers_options_are_refused_in_one_line(capsys, argv, needle):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_workers_without_ray_name_the_install_command(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without the extra
    code, _, err = run_cli(capsys, "eval", "--env", LIFT, "--episodes", "1", "--workers", "2")
    assert code == 2 and 'steergym eval --workers needs Ray' in err and 'pip install -e ".[ray]"' in err
    assert len(err.strip().splitlines()) == 1


CLUSTER_SCRIPT = textwrap.dedent("""
    import json, sys
    import ray
    from ray.cluster_utils import Cluster
    from steergym.distributed import evaluate_distributed

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, include_dashboard=False, configure_logging=False)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        result = evaluate_distributed(sys.argv[1], sys.argv[2], episodes=6, seed=0, workers=2,
                                      address=cluster.address, progress=False)
        print(json.dumps({"nodes": len(nodes), "cpus": ray.cluster_resources()["CPU"], "result": result.to_dict()}))
    finally:
        ray.shutdown()
        cluster.shutdown()
""")


def test_simulated_two_node_cluster_equals_single_process(single, tmp_path):
    """Two nodes of one CPU each (its own Ray, in a subprocess): one actor per node."""
    script = tmp_path / "cluster.py"
    script.write_text(CLUSTER_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(script), LIFT, POLICY], check=False, capture_output=True, text=True,
                          env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["nodes"] == 2 and report["cpus"] == 2.0
    assert report["result"] == single.to_dict()
