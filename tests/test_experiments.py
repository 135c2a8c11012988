"""`steergym run`: experiment specs and the Ray Tune runner.

One local Ray session (2 CPUs) serves the module. Trials are tiny (a few hundred env steps, 16-unit
networks, 2 evaluation episodes): what is tested is the runner, not learning. Covered: spec
validation names the field; the runner's per-trial numbers equal direct calls of the run functions;
a re-run skips finished trials; a worker killed mid-trial is retried and the run completes; a killed
driver leaves finished trials finished and a re-run runs only the rest; a grid sweep (with ASHA)
writes best_config.json.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steergym.experiments.methods import METHODS
from steergym.experiments.spec import expand, load_spec, parse_spec

ray = pytest.importorskip("ray")

from steergym.experiments import runner
from steergym.experiments.runner import RESULT, attempts, run_experiment, run_trial, trial_folder

ROOT = Path(__file__).resolve().parent.parent
TINY = {"hidden": [16], "learning_starts": 50, "batch_size": 32}
BUDGET = {"env_steps": 200, "eval_every": 100, "eval_episodes": 2}
SPEC = {"name": "tiny", "tasks": ["widowx-carrot-diffusion", "widowx-lift-diffusion"], "methods": ["dsrl", "sac"],
        "seeds": [0, 1], "budget": BUDGET, "config": {"dsrl": TINY, "sac": TINY},
        "resources": {"cpus": 1}, "max_failures": 1}


def spec_with(**changes):
    return {**copy.deepcopy(SPEC), **changes}


# ------------------------------------------------------------------------------ the spec (no Ray)
@pytest.mark.parametrize("changes, field, value", [
    ({"methods": ["dsrl", "nope"]}, "methods[1]", "'nope'"),
    ({"tasks": []}, "tasks", "[]"),
    ({"seeds": []}, "seeds", "[]"),
    ({"tasks": ["widowx-carrot-diffusion", "no-such-policy"]}, "tasks[1]", "'no-such-policy'"),
    ({"budget": {**BUDGET, "env_steps": 0}}, "budget.env_steps", "0"),
    ({"budget": {**BUDGET, "eval_episodes": -2}}, "budget.eval_episodes", "-2"),
    ({"budget": {"env_steps": 100, "eval_every": 10}}, "budget.eval_episodes", "missing"),
    ({"config": {"dsrl": {"hiden": [16]}}}, "config.dsrl.hiden", "[16]"),
    ({"config": {"dsrl": {"learning_rate": -1.0}}}, "config.dsrl", "-1.0"),
    ({"config": {"ogpo": {}}}, "config.ogpo", "{}"),
    ({"config": {"dsrl": {"learning_rate": {"loguniform": [0, 1]}}}}, "config.dsrl.learning_rate.loguniform", "[0, 1]"),
    ({"config": {"dsrl": {"learning_rate": {"grid": []}}}}, "config.dsrl.learning_rate.grid", "[]"),
    ({"resources": {"cpus": 0}}, "resources.cpus", "0"),
    ({"max_failures": -1}, "max_failures", "-1"),
    ({"scheduler": "hyperband"}, "scheduler", "'hyperband'"),
    ({"scheduler": "asha"}, "scheduler", "'asha'"),
    ({"seed": [0]}, "seed", "[0]"),
    ({"budget": {**BUDGET, "eval_seed": -1}}, "budget.eval_seed", "-1"),
    ({"tasks": ["/a/lift", "/b/lift"], "methods": ["dsrl"]}, "tasks[1]", "'/b/lift'"),
    ({"tasks": ["widowx-carrot-diffusion", "../up"]}, "tasks[1]", "'../up'"),
    ({"datasets": {"widowx-carrot-diffusion": {"env": "steergym/Nope-v0", "episodes": 3}}},
     "datasets.widowx-carrot-diffusion.env", "'steergym/Nope-v0'"),
    ({"datasets": {"widowx-carrot-diffusion": {"env": "steergym/WidowXLiftCube-v0", "episodes": 0}}},
     "datasets.widowx-carrot-diffusion.episodes", "0"),
    ({"datasets": {"widowx-carrot-diffusion": {"env": "steergym/WidowXLiftCube-v0", "episodes": 2,
                                               "quality": "great"}}},
     "datasets.widowx-carrot-diffusion.quality", "'great'"),
    ({"datasets": {"not/a-task-v0": {"env": "steergym/WidowXLiftCube-v0", "episodes": 2}}},
     "datasets.not/a-task-v0", "'env'"),
])
def test_a_bad_spec_is_refused_naming_the_field_and_value(changes, field, value):
    with pytest.raises(ValueError) as info:
        parse_spec(spec_with(**changes))
    message = str(info.value)
    assert f"spec field {field}" in message and value in message, message


def test_the_cli_refuses_a_bad_spec_before_anything_starts(tmp_path, capsys):
    from steergym.cli import main

    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec_with(methods=["dsrl", "nope"])))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "spec field methods[1] = 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_expand_gives_stable_ids_and_sweep_variants():
    ids = [t.id for t in expand(parse_spec(SPEC))]
    assert ids[:4] == ["widowx-carrot-diffusion/dsrl/seed0", "widowx-carrot-diffusion/dsrl/seed1",
                       "widowx-carrot-diffusion/sac/seed0", "widowx-carrot-diffusion/sac/seed1"]
    assert len(ids) == len(set(ids)) == 8
    sweep = spec_with(methods=["sac"], num_samples=2, config={"sac": {
        "learning_rate": {"loguniform": [1e-4, 1e-3]}, "batch_size": {"grid": [32, 64]}}})
    first, again = expand(parse_spec(sweep)), expand(parse_spec(sweep))
    assert first == again  # random draws are seeded by the spec: a re-run expands to the same trials
    assert len(first) == 2 * 2 * 2 * 2  # tasks x (grid 2 x samples 2) x seeds
    assert first[0].id == "widowx-carrot-diffusion/sac/cfg0/seed0"
    assert all(1e-4 <= t.overrides["learning_rate"] <= 1e-3 for t in first)


def test_methods_are_names_of_the_trainer_table_and_a_spec_file_loads(tmp_path):
    from steergym.cli import trainers

    assert set(METHODS) <= set(trainers())
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    assert load_spec(path) == parse_spec(SPEC)
    shipped = load_spec(ROOT / "benchmarks" / "specs" / "steering.json")
    assert len(expand(shipped)) == 2 * 3 * 3
    calql = load_spec(ROOT / "benchmarks" / "specs" / "calql_finetune.json")  # its datasets are declared
    assert len(expand(calql)) == 2 * 2 * 3 and calql.budget.pretrain_steps == 4000
    assert set(calql.datasets) == set(calql.tasks) and calql.budget.eval_seed == 10_000
    utd = load_spec(ROOT / "benchmarks" / "specs" / "dsrl_utd.json")
    assert sorted(t.overrides["gradient_steps"] for t in expand(utd)) == [1, 1, 1, 4, 4, 4, 8, 8, 8]


def test_the_benchmark_scripts_run_the_shipped_specs(monkeypatch):
    """benchmarks/calql_finetune.py with its defaults runs exactly benchmarks/specs/calql_finetune.json
    (so `steergym run` on the file and the script measure the same trials)."""
    import importlib

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    script = importlib.import_module("calql_finetune")
    assert script.spec_of(script.build_parser().parse_args([])) == \
        load_spec(ROOT / "benchmarks" / "specs" / "calql_finetune.json")


def test_the_fine_tuning_summary_decides_only_beyond_seed_and_evaluation_noise(monkeypatch):
    """benchmarks/finetune_generative.py's summary: per method the mean first/final/best success over
    seeds and its final minus the base policy's success, and OGPO's final minus each other method's,
    with intervals that hold both the seeds' spread and the binomial noise of 20-episode evaluations."""
    import importlib

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    script = importlib.import_module("finetune_generative")

    def run(method, seed, final, first=0.1, peak=None):
        curve = [{"env_steps": 0, "success_rate": first}, {"env_steps": 500, "success_rate": peak or final},
                 {"env_steps": 1000, "success_rate": final}]
        return {"policy": "weak:p", "method": method, "seed": seed, "final_success": final, "curve": curve}

    runs = [run("ogpo", 0, 0.8), run("ogpo", 1, 0.7), run("ogpo", 2, 0.9, peak=1.0),
            run("dsrl-na", 0, 0.15), run("dsrl-na", 1, 0.15), run("dsrl-na", 2, 0.15),
            run("residual", 0, 0.9), run("residual", 1, 0.1), run("residual", 2, 0.5)]
    summary = script.summarize(runs, {"weak:p": {"env": 0.1}}, {"weak:p": 100}, eval_episodes=20)["weak:p"]
    ogpo, na = summary["methods"]["ogpo"], summary["methods"]["dsrl-na"]
    assert ogpo["final"] == pytest.approx(0.8) and ogpo["first"] == pytest.approx(0.1)
    assert ogpo["best"] == pytest.approx((0.8 + 0.7 + 1.0) / 3, abs=1e-4) and ogpo["final_per_seed"] == [0.8, 0.7, 0.9]
    assert ogpo["final_minus_base"]["decided"] and ogpo["final_minus_base"]["mean"] == pytest.approx(0.7)
    # every seed ends at 0.15 (3 of 20) against a 0.10 base: no seed spread, and still not a finding
    assert na["final_minus_base"]["mean"] == pytest.approx(0.05) and not na["final_minus_base"]["decided"]
    over_na, over_residual = summary["ogpo_minus"]["dsrl-na"], summary["ogpo_minus"]["residual"]
    assert over_na["mean"] == pytest.approx(0.65) and over_na["decided"] and over_na["ci95"][0] > 0
    assert over_residual["mean"] == pytest.approx(0.3) and not over_residual["decided"]  # 0.1-0.9 spread
    assert set(summary["ogpo_minus"]) == {"dsrl-na", "residual"}


def test_the_fine_tuning_benchmark_compares_a_shipped_policy_with_its_recorded_success(monkeypatch):
    """A shipped policy's base is the success its index records (what `steergym policies` prints), so its
    methods get a final-minus-base interval like a weak recipe's; an unknown name stops with its value."""
    import importlib

    from steergym.policies.zoo import shipped_policies

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    script = importlib.import_module("finetune_generative")
    entry = script.shipped_entry("widowx-lift-flow")
    assert entry.success_rate == shipped_policies()["widowx-lift-flow"].success_rate and entry.episodes == 100
    with pytest.raises(SystemExit, match="no shipped policy 'widowx-lift-flw'"):
        script.shipped_entry("widowx-lift-flw")


def test_the_fine_tuning_benchmark_sets_one_config_field_on_top_of_its_scale(monkeypatch):
    """--set METHOD.FIELD=VALUE changes that field alone (the rest of --scale cpu stays); a misspelt field is
    refused by the spec with its name, and a malformed setting names itself."""
    import argparse
    import importlib

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    script = importlib.import_module("finetune_generative")
    args = argparse.Namespace(scale="cpu", methods=["dsrl-na"], seeds=[0], env_steps=100, eval_every=50,
                              eval_episodes=2, set=[script.config_setting("dsrl-na.alpha_init=0.05")])
    config = script.spec_of(args, ["widowx-lift-flow"]).config["dsrl-na"]
    assert config == {**script.configs("cpu")["dsrl-na"], "alpha_init": 0.05}
    args.set = [script.config_setting("dsrl-na.alpha_innit=0.01")]
    with pytest.raises(ValueError, match="alpha_innit"):
        script.spec_of(args, ["widowx-lift-flow"])
    for bad in ("dsrl-na.alpha_init", "dsrl.alpha_init=1"):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(bad))):
            script.config_setting(bad)


def test_a_yaml_spec_loads_like_its_json(tmp_path):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    assert load_spec(path) == parse_spec(SPEC)


def test_the_experiment_modules_do_not_import_ray():
    code = ("import sys, steergym.experiments.spec, steergym.experiments.runner; "
            "sys.exit(1 if 'ray' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120, cwd=ROOT, check=False).returncode == 0


def test_a_calql_trial_trains_on_a_dataset_and_resumes_from_its_folder(tmp_path, monkeypatch):
    """The dataset path of the method table (no Ray: run_trial is what each Tune trial calls)."""
    import torch

    from steergym.data.collect import collect

    torch.set_num_threads(1)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    collect("steergym/WidowXLiftCube-v0", 3, "mixed", "steergym/test-lift/mixed-v0", seed=0, progress=False)
    spec = parse_spec({"name": "c", "tasks": ["steergym/test-lift/mixed-v0"], "methods": ["cql"], "seeds": [0],
                       "budget": {"env_steps": 100, "eval_every": 50, "eval_episodes": 2, "pretrain_steps": 50},
                       "config": {"cql": {"actor_hidden": [16], "critic_hidden": [16], "batch_size": 32}}})
    (trial,) = expand(spec)
    assert trial.id == "steergym/test-lift/mixed-v0/cql/seed0"
    first = run_trial(trial, tmp_path / "out")
    assert first["env_id"] == "steergym/WidowXLiftCube-v0" and not first["resumed"]
    assert first["config"]["calibrated"] is False and [r["env_steps"] for r in first["curve"]] == [0, 50, 100]
    again = run_trial(trial, tmp_path / "out")  # a finished run folder: resumed, nothing left to train
    assert again["resumed"] and _curve(again["curve"]) == _curve(first["curve"])


def test_a_missing_dataset_task_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(ValueError, match=r"spec field tasks\[0\] = 'steergym/none/mixed-v0': unknown task"):
        parse_spec({"name": "c", "tasks": ["steergym/none/mixed-v0"], "methods": ["cql"], "seeds": [0],
                    "budget": {"env_steps": 100, "eval_every": 50, "eval_episodes": 2}})


def test_declared_datasets_are_collected_once_into_the_run_and_trials_use_them(tmp_path, monkeypatch):
    """A spec's `datasets` are collected before the trials into DIR/datasets (not the user's Minari
    folder), once; the calql trial trains on that copy and evaluates from budget.eval_seed."""
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "elsewhere"))
    name = "steergym/spec-lift/mixed-v0"
    spec = parse_spec({"name": "c", "tasks": [name], "methods": ["calql"], "seeds": [0],
                       "datasets": {name: {"env": "steergym/WidowXLiftCube-v0", "episodes": 3, "quality": "mixed",
                                           "seed": 7}},
                       "budget": {"env_steps": 60, "eval_every": 30, "eval_episodes": 2, "pretrain_steps": 20,
                                  "eval_seed": 10_000},
                       "config": {"calql": {"actor_hidden": [16], "critic_hidden": [16], "batch_size": 32}}})
    out = tmp_path / "out"
    (trial,) = expand(spec, out)
    assert trial.data_root == str(out.resolve() / "datasets")
    runner.prepare_datasets(spec, out, io.StringIO())
    data = out / "datasets" / name
    stamp = next(data.rglob("*.hdf5")).stat().st_mtime_ns
    log = io.StringIO()
    runner.prepare_datasets(spec, out, log)  # already there: kept
    assert log.getvalue() == "" and next(data.rglob("*.hdf5")).stat().st_mtime_ns == stamp
    assert not (tmp_path / "elsewhere").exists()
    from steergym.data.dataset import read_metadata

    meta = read_metadata(name, root=out / "datasets")
    assert meta["seed"] == 7 and len(meta["episode_quality"]) == 3
    record = run_trial(trial, out)
    assert record["env_id"] == "steergym/WidowXLiftCube-v0" and [r["env_steps"] for r in record["curve"]] == [0, 30, 60]
    run = json.loads((trial_folder(out, trial) / "run.json").read_text())
    assert run["eval_seed"] == 10_000, run


# ------------------------------------------------------------------------------ on Ray
@pytest.fixture(scope="module")
def ray_session():
    from steergym.ray_support import init_ray

    was_up = ray.is_initialized()
    init_ray(num_cpus=2)
    yield ray
    if not was_up:
        ray.shutdown()


def _weights(folder: Path, sub: str = "policy") -> str:
    digest = hashlib.sha256()
    paths = sorted((folder / sub).rglob("*.safetensors"))
    assert paths, f"no weights in {folder / sub}"
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _curve(rows):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


@pytest.fixture(scope="module")
def tiny_run(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    spec = parse_spec(SPEC)
    results = run_experiment(spec, out, max_concurrent=2, stream=io.StringIO())
    return spec, out, results


def test_runner_matches_direct_calls_of_the_run_functions(tiny_run, tmp_path):
    import torch

    from steergym.algorithms.runs import run_steering
    from steergym.algorithms.steering import SteeringConfig
    from steergym.policies.zoo import shipped_policies

    spec, out, results = tiny_run
    assert not results["failed"] and len(results["trials"]) == 8
    torch.set_num_threads(1)  # as the runner's trials (resources.cpus = 1)
    records = {r["id"]: r for r in results["trials"]}
    for trial in expand(spec):
        kwargs = ({"policy": trial.task} if trial.method == "dsrl" else
                  {"policy": None, "env": shipped_policies()[trial.task].env_ids[0], "normalize_like": trial.task})
        direct = run_steering(trial.method, out=tmp_path / trial.id, config=SteeringConfig(**TINY), seed=trial.seed,
                              progress=False, **BUDGET, **kwargs)
        record = records[trial.id]
        assert _curve(record["curve"]) == _curve(direct.curve), trial.id
        assert record["final_success"] == direct.curve[-1]["success_rate"]
        assert _weights(trial_folder(out, trial)) == _weights(tmp_path / trial.id), trial.id
        assert (record["task"], record["method"], record["seed"]) == (trial.task, trial.method, trial.seed)
        assert record["config"]["hidden"] == [16] and record["git_commit"] and record["machine"]["hostname"]
    saved = json.loads((out / "results.json").read_text())
    assert [r["id"] for r in saved["trials"]] == [t.id for t in expand(spec)]
    assert {row["method"] for row in saved["summary"]} == {"dsrl", "sac"}
    for task in spec.tasks:
        assert (out / f"curves_{task}.png").stat().st_size > 1000


def test_a_rerun_skips_finished_trials(tiny_run):
    spec, out, _ = tiny_run
    stamps = {t.id: (trial_folder(out, t) / RESULT).stat().st_mtime_ns for t in expand(spec)}
    log = io.StringIO()
    again = run_experiment(spec, out, stream=log)
    assert "8 finished already, 0 to run" in log.getvalue()
    assert len(again["trials"]) == 8 and not again["failed"]
    for trial in expand(spec):
        assert attempts(out, trial) == 1, trial.id  # started once, ever
        assert (trial_folder(out, trial) / RESULT).stat().st_mtime_ns == stamps[trial.id]


def _killed_on_first_report(trial, out, *, report=None, **kwargs):
    """A trial whose worker process is SIGKILLed mid-run on its first attempt only: after its first
    evaluation, or for a trainer with checkpoints, after its first checkpoint (so it resumes)."""
    marker = Path(out) / "killed-once"
    latest = trial_folder(out, trial) / "checkpoints" / "latest"

    def report_then_die(metrics):
        report(metrics)
        ready = trial.method == "sac" or (latest / "meta.json").is_file() or latest.is_dir()
        if ready and not marker.exists():
            marker.write_text(str(metrics))
            os.kill(os.getpid(), signal.SIGKILL)

    return run_trial(trial, out, report=report_then_die, **kwargs)


def test_a_killed_worker_is_retried_and_the_run_completes(tiny_run, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    _, _, first = tiny_run
    spec = parse_spec(spec_with(tasks=["widowx-lift-diffusion"], methods=["sac"], seeds=[1],
                                config={"sac": TINY}))
    results = run_experiment(spec, tmp_path, trial_fn=_killed_on_first_report, stream=io.StringIO())
    (trial,) = expand(spec)
    assert (tmp_path / "killed-once").exists() and not results["failed"]
    assert attempts(tmp_path, trial) == 2
    (record,) = results["trials"]
    # restarted from its run folder, it ends where an uninterrupted run of the same trial ends
    assert _curve(record["curve"]) == _curve(next(r for r in first["trials"] if r["id"] == trial.id)["curve"])


def _fails_on_carrot(trial, out, **kwargs):
    if trial.task == "widowx-carrot-diffusion":
        raise RuntimeError(f"planted failure in {trial.id}")
    return run_trial(trial, out, **kwargs)


def test_a_killed_trial_with_checkpoints_resumes_them_bit_exactly(ray_session, tmp_path):
    """dsrl-na saves checkpoints/latest at each evaluation: the retried trial continues from it (resume=True)
    and ends with the curve and weights of an uninterrupted direct run."""
    import torch

    from steergym.algorithms.dsrl_na import DSRLNAConfig
    from steergym.algorithms.runs import run_chunk_trainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    tiny = {"hidden": [16], "utd": 1, "distill_steps": 1, "learning_starts": 10, "batch_size": 32}
    budget = {"env_steps": 400, "eval_every": 100, "eval_episodes": 2}
    spec = parse_spec(spec_with(tasks=["widowx-lift-diffusion"], methods=["dsrl-na"], seeds=[0], budget=budget,
                                config={"dsrl-na": tiny}))
    (trial,) = expand(spec)
    results = run_experiment(spec, tmp_path / "out", trial_fn=_killed_on_first_report, stream=io.StringIO())
    assert (tmp_path / "out" / "killed-once").exists() and not results["failed"]
    (record,) = results["trials"]
    assert attempts(tmp_path / "out", trial) == 2 and record["resumed"] is True
    torch.set_num_threads(1)
    direct = run_chunk_trainer("dsrl-na", out=tmp_path / "direct", policy=trial.task, config=DSRLNAConfig(**tiny),
                               seed=0, progress=False, **budget)
    assert _curve(record["curve"]) == _curve(direct.agent.eval_history)
    assert _weights(trial_folder(tmp_path / "out", trial), "agent") == _weights(tmp_path / "direct", "agent")


def test_a_larger_env_steps_budget_grows_finished_trials_from_their_checkpoints(ray_session, tmp_path):
    """A long protocol in stages: the same folder re-run with more env steps resumes each finished dsrl-na
    trial from its checkpoint (its first evaluations kept, not re-trained); any other budget change is
    refused before anything runs."""
    tiny = {"hidden": [16], "utd": 1, "distill_steps": 1, "learning_starts": 10, "batch_size": 32}
    stage = lambda steps, every=100: parse_spec(spec_with(  # noqa: E731
        tasks=["widowx-lift-diffusion"], methods=["dsrl-na"], seeds=[0], config={"dsrl-na": tiny},
        budget={"env_steps": steps, "eval_every": every, "eval_episodes": 2}))
    out = tmp_path / "out"
    (first,) = run_experiment(stage(200), out, stream=io.StringIO())["trials"]
    assert [r["env_steps"] for r in first["curve"]][-1] == 200
    log = io.StringIO()
    results = run_experiment(stage(400), out, stream=log)
    assert "0 finished already, 1 to run" in log.getvalue() and "1 finished trials grow" in log.getvalue()
    (grown,) = results["trials"]
    assert not results["failed"] and grown["resumed"] is True and grown["attempt"] == 2
    steps = [r["env_steps"] for r in grown["curve"]]
    assert steps[-1] >= 400 and steps == sorted(set(steps)), steps  # whole chunks: may pass 400 by < H
    assert _curve(grown["curve"][:len(first["curve"])]) == _curve(first["curve"])  # kept, not re-trained
    (trial,) = expand(stage(400))
    assert json.loads((trial_folder(out, trial) / runner.PREVIOUS_RESULT).read_text())["budget"]["env_steps"] == 200
    for other in (stage(300), stage(800, every=200)):  # fewer steps; another evaluation schedule
        with pytest.raises(ValueError, match="only budget.env_steps may grow"):
            run_experiment(other, out, stream=io.StringIO())
    assert json.loads((trial_folder(out, trial) / RESULT).read_text())["budget"]["env_steps"] == 400


def test_status_says_where_each_trial_stands_without_running_anything(tiny_run, tmp_path, capsys):
    """`steergym run SPEC --out DIR --status`: finished trials with their last evaluation, a started
    (interrupted) one with the env steps its eval.csv reached, the rest not started; no trial runs."""
    from steergym.cli import main

    spec, out, results = tiny_run
    rows = runner.trial_status(spec, out)
    assert [r["state"] for r in rows] == ["finished"] * len(results["trials"])
    finals = {r["id"]: r["final_success"] for r in results["trials"]}
    assert all(r["env_steps"] >= r["budget"] and r["success_rate"] == finals[r["id"]] for r in rows)
    fresh = tmp_path / "fresh"
    first, second, *_ = expand(spec, fresh)
    trial_folder(fresh, first).mkdir(parents=True)
    (trial_folder(fresh, first) / "eval.csv").write_text("env_steps,success_rate\n0,0.1\n100,0.25\n")
    rows = {r["id"]: r for r in runner.trial_status(spec, fresh)}
    assert rows[first.id]["state"] == "started" and rows[first.id]["env_steps"] == 100
    assert rows[first.id]["success_rate"] == 0.25 and rows[second.id]["state"] == "not started"
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    assert main(["run", str(path), "--out", str(fresh), "--status"]) == 0
    printed = capsys.readouterr().out
    (line,) = [x for x in printed.splitlines() if x.startswith(first.id)]
    assert line.split()[1:] == ["started", "100/200", "0.25", "0"]
    assert "0/8 trials finished" in printed and not (fresh / "results.json").exists()


def test_a_trial_failing_every_attempt_is_reported_and_the_others_finish(ray_session, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    spec = parse_spec(spec_with(methods=["sac"], seeds=[0], max_failures=1, config={"sac": TINY}))
    log = io.StringIO()
    results = run_experiment(spec, tmp_path, trial_fn=_fails_on_carrot, stream=log)
    assert [r["id"] for r in results["trials"]] == ["widowx-lift-diffusion/sac/seed0"]
    (failed,) = results["failed"]
    assert failed["id"] == "widowx-carrot-diffusion/sac/seed0"
    assert "planted failure" in failed["error"], failed
    assert "FAILED widowx-carrot-diffusion/sac/seed0" in log.getvalue()
    assert json.loads((tmp_path / "results.json").read_text())["failed"] == [failed]


def test_a_killed_driver_leaves_finished_trials_and_a_rerun_runs_only_the_rest(ray_session, tmp_path):
    spec_data = spec_with(tasks=["widowx-lift-diffusion"], methods=["sac"], seeds=[0, 1, 2], config={"sac": TINY})
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec_data))
    out = tmp_path / "out"
    trials = expand(parse_spec(spec_data))
    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen([sys.executable, "-m", "steergym.cli", "run", str(path), "--out", str(out),
                               "--address", address, "--max-concurrent", "1"],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (trial_folder(out, trials[0]) / RESULT).exists():
            assert driver.poll() is None and time.time() < deadline, "the driver ended before a trial finished"
            time.sleep(0.2)
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    time.sleep(3)  # Ray ends the dead driver's workers (a trial it had running is not finished)
    done = [t for t in trials if (trial_folder(out, t) / RESULT).exists()]
    assert 1 <= len(done) < len(trials)
    stamps = {t.id: (trial_folder(out, t) / RESULT).stat().st_mtime_ns for t in done}
    started = {t.id: attempts(out, t) for t in trials}
    log = io.StringIO()
    results = run_experiment(parse_spec(spec_data), out, stream=log)
    assert f"{len(done)} finished already, {len(trials) - len(done)} to run" in log.getvalue()
    assert len(results["trials"]) == 3 and not results["failed"]
    for trial in trials:
        if trial in done:
            assert attempts(out, trial) == 1
            assert (trial_folder(out, trial) / RESULT).stat().st_mtime_ns == stamps[trial.id]
        else:
            assert attempts(out, trial) == started[trial.id] + 1


def test_a_trial_asking_for_more_than_the_cluster_has_is_refused(ray_session, tmp_path):
    spec = parse_spec(spec_with(resources={"cpus": 64}))
    with pytest.raises(ValueError, match=r"resources.cpus = 64: more than the Ray cluster has"):
        run_experiment(spec, tmp_path, stream=io.StringIO())
    assert not (tmp_path / "trials").exists()


def test_a_grid_sweep_with_asha_writes_the_best_config(ray_session, tmp_path):
    spec = parse_spec(spec_with(tasks=["widowx-lift-diffusion"], methods=["sac"], seeds=[0], scheduler="asha",
                                budget={**BUDGET, "env_steps": 300},
                                config={"sac": {**TINY, "learning_rate": {"grid": [1e-4, 1e-3]}}}))
    results = run_experiment(spec, tmp_path, stream=io.StringIO())
    assert len(results["trials"]) == 2 and not results["failed"]
    best = json.loads((tmp_path / "best_config.json").read_text())
    chosen = best["widowx-lift-diffusion"]["sac"]
    assert chosen["variant"] in (0, 1) and chosen["config"]["learning_rate"] in (1e-4, 1e-3)
    finals = {r["variant"]: r["final_mean"] for r in results["summary"]}
    assert chosen["final_mean"] == max(finals.values())
    assert runner.best_configs(results) == best


CLUSTER_SCRIPT = """
import json, sys
import ray
from ray.cluster_utils import Cluster
from steergym.experiments.runner import run_experiment
from steergym.experiments.spec import parse_spec

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
try:
    results = run_experiment(parse_spec(json.loads(sys.argv[1])), "out", address=cluster.address)
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
finally:
    ray.shutdown()
    cluster.shutdown()
json.dump({"results": results, "nodes": nodes}, open("cluster.json", "w"))
"""


def test_a_simulated_two_node_cluster_runs_a_spec_with_a_relative_policy_folder(tiny_run, tmp_path):
    """Two Ray nodes (ray.cluster_utils.Cluster, one CPU each) share the trials; the task is a policy
    folder given relative to where the driver starts (Ray workers start elsewhere), and each trial ends
    as the same trial of the local run (shipped name, one node) does."""
    import shutil

    from steergym.policies.zoo import SHIPPED_DIR, shipped_policies

    _, _, local = tiny_run
    shutil.copytree(SHIPPED_DIR / shipped_policies()["widowx-lift-diffusion"].folder, tmp_path / "policies" / "lift")
    spec = spec_with(tasks=["policies/lift"], methods=["dsrl"], seeds=[0, 1], config={"dsrl": TINY})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CLUSTER_SCRIPT, json.dumps(spec)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "cluster.json").read_text())
    results, nodes = saved["results"], saved["nodes"]
    assert len(nodes) == 2 and not results["failed"]
    records = {r["id"]: r for r in results["trials"]}
    assert sorted(records) == ["policies/lift/dsrl/seed0", "policies/lift/dsrl/seed1"]
    assert {r["ray_node_id"] for r in records.values()} == set(nodes)  # one trial on each node
    same = {r["id"]: r for r in local["trials"]}
    for seed in (0, 1):
        mine, theirs = records[f"policies/lift/dsrl/seed{seed}"], same[f"widowx-lift-diffusion/dsrl/seed{seed}"]
        assert mine["env_id"] == theirs["env_id"] and _curve(mine["curve"]) == _curve(theirs["curve"]), seed
