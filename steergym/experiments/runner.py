"""Run an experiment spec on Ray Tune: one function trainable per trial, resumable, retried on failure.

    run_experiment(load_spec("benchmarks/specs/steering.json"), "runs/steering")   # steergym run ...

Layout of DIR (`out`):
    spec.json              the spec as last run
    trials/<trial id>/     the trainer's own run folder (run.json, eval.csv, checkpoints/, ...) and
                           trial_result.json, written when the trial finished: its presence means done
    attempts/<trial id>    how many times the trial was started (retries and re-runs count)
    tune/                  Ray Tune's experiment folders
    results.json           every finished trial (task, method, seed, config, curve, wall time, command,
                           commit, machine) and every failed one with its error
    best_config.json       the best config variant per (task, method) by mean final success over seeds
    curves_<task>.png      success against env steps per method (mean over seeds, min-max band)

Re-running the same command skips finished trials and restarts the others from their run folders
(`resume=True` where the trainer has a checkpoint: calql/cql, ogpo, dsrl-na; the SB3 steering trainers
have none and start again, deterministically, from scratch). A spec whose budget.env_steps has grown
grows its finished trials the same way (a long protocol in stages: read the curves at 20k, go on to
100k); any other change to a finished trial's config or budget is refused. A trial that raises, or whose worker
dies, is retried up to the spec's `max_failures` (Tune's FailureConfig); the others go on.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from steergym.algorithms.run_files import write_json
from steergym.experiments.methods import METHODS, resumable, run_method
from steergym.experiments.spec import ExperimentSpec, Trial, expand
from steergym.machine_info import cpu_name

RESULT = "trial_result.json"
PREVIOUS_RESULT = "trial_result.previous.json"  # a grown trial's record at its earlier budget
METRIC = "success_rate"  # reported after every evaluation; ASHA's metric
TIME_ATTR = "env_steps"


# ------------------------------------------------------------------------------ one trial
def trial_folder(out: str | os.PathLike, trial: Trial) -> Path:
    return Path(out) / "trials" / trial.id


def _bump_attempts(out: Path, trial: Trial) -> int:
    path = out / "attempts" / trial.id
    path.parent.mkdir(parents=True, exist_ok=True)
    count = int(path.read_text() or 0) + 1 if path.exists() else 1
    path.write_text(str(count))
    return count


def attempts(out: str | os.PathLike, trial: Trial) -> int:
    """How many times `trial` was started in `out` (0: never)."""
    path = Path(out) / "attempts" / trial.id
    return int(path.read_text() or 0) if path.exists() else 0


def machine() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "python": platform.python_version()}


def git_commit() -> dict[str, Any]:
    """The commit of the steergym source tree (None outside a git checkout) and whether it is dirty."""
    root = Path(__file__).resolve().parents[2]
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, check=True,
                                        timeout=20).stdout
        return {"git_commit": run("rev-parse", "HEAD").strip(),
                "git_dirty": bool(run("status", "--porcelain", "--", "steergym").strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def _eval_rows(folder: Path) -> list[dict[str, Any]]:
    path = folder / "eval.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


class _EvalTail:
    """Reports each new row of the run folder's eval.csv (success after an evaluation) to Tune, from a
    side thread while the trainer runs, so that a scheduler (ASHA) sees every evaluation."""

    def __init__(self, folder: Path, report: Callable[[dict[str, Any]], None], trial_id: str):
        self.folder, self.report, self.trial_id = folder, report, trial_id
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(0.5):
            self.flush()

    def flush(self) -> None:
        try:
            rows = [r for r in _eval_rows(self.folder) if r.get("success_rate") not in (None, "")]
        except (OSError, csv.Error):
            return
        for row in rows[self.sent:]:
            self.report({METRIC: float(row["success_rate"]), TIME_ATTR: int(float(row.get("env_steps") or 0)),
                         "trial_id": self.trial_id})
            self.sent += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.flush()


def run_trial(trial: Trial, out: str | os.PathLike, *, report: Callable[[dict[str, Any]], None] | None = None,
              threads: int | None = None, context: dict[str, Any] | None = None, device: str = "cpu") -> dict[str, Any]:
    """Train one trial into out/trials/<id> (resuming its run folder where the trainer can), write its
    trial_result.json and return that record. `report(metrics)` gets the success after each evaluation;
    `device` is the trainer's torch device ("cuda" for a spec with resources.gpus > 0)."""
    out = Path(out)
    method = METHODS[trial.method]
    folder = trial_folder(out, trial)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    attempt = _bump_attempts(out, trial)
    resume = resumable(method, folder)
    config = method.make_config(trial.overrides, trial.budget)
    start = time.perf_counter()
    if not resume and folder.exists():  # a killed attempt's partial files (no checkpoint): start clean
        import shutil

        shutil.rmtree(folder)
    tail = _EvalTail(folder, report, trial.id) if report is not None else None
    try:
        env_id, curve = run_method(method, trial.source, config, trial.budget, trial.seed, folder,
                                   data_root=trial.data_root, device=device)
    finally:
        if tail is not None:
            tail.close()
    curve = _jsonable(curve)  # the trainer's evaluation rows as they are (env_steps, success_rate, ...)
    record = {
        "id": trial.id, "task": trial.task, "env_id": env_id, "method": trial.method, "seed": trial.seed,
        "variant": trial.variant, "overrides": trial.overrides, "config": _jsonable(dataclasses.asdict(config)),
        "budget": dataclasses.asdict(trial.budget),
        "final_success": curve[-1]["success_rate"] if curve else None,
        "best_success": max(r["success_rate"] for r in curve) if curve else None,
        "curve": curve, "wall_s": round(time.perf_counter() - start, 2), "attempt": attempt, "device": device,
        "resumed": resume, "status": "finished", "machine": machine(),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), **(context or {}),
    }
    write_json(folder / RESULT, record)
    return record


def _number(text: str | None) -> Any:
    """A CSV cell as the number it holds (None when empty)."""
    if text in (None, ""):
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _trainable(tune_config: dict[str, Any], trials: dict[str, dict[str, Any]] | None = None, out: str = "",
               threads: int = 1, context: dict[str, Any] | None = None, trial_fn: Callable | None = None,
               device: str = "cpu") -> None:
    """Tune's function trainable: the trial named in its config, reporting each evaluation."""
    import ray
    from ray import tune

    trial = Trial.from_dict(trials[tune_config["trial_id"]])
    context = {**(context or {}), "ray_node_id": ray.get_runtime_context().get_node_id()}  # which node ran it
    (trial_fn or run_trial)(trial, out, report=tune.report, threads=threads, context=context, device=device)


# ------------------------------------------------------------------------------ progress
def _progress_callback(total: int, already: int, stream: Any) -> Any:
    from ray.tune import Callback

    class Progress(Callback):
        """One line per change: trials done / running / failed / retried, ETA from the finished ones."""

        def __init__(self) -> None:
            self.done, self.failed, self.retried, self.running = already, 0, 0, set()
            self.start = time.time()
            self.finished_here = 0

        def _line(self) -> None:
            remaining = total - self.done - self.failed
            eta = ""
            if self.finished_here and remaining:
                per = (time.time() - self.start) / self.finished_here
                eta = f", ETA {_duration(per * remaining)}"
            print(f"[steergym run] {self.done}/{total} done, {len(self.running)} running, {self.failed} failed"
                  f"{f', {self.retried} retried' if self.retried else ''}, {_duration(time.time() - self.start)} "
                  f"elapsed{eta}", file=stream, flush=True)

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running.add(trial.trial_id)
            self._line()

        def on_trial_recover(self, iteration, trials, trial, **info):
            self.retried += 1
            self._line()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.running.discard(trial.trial_id)
            self.done += 1
            self.finished_here += 1
            self._line()

        def on_trial_error(self, iteration, trials, trial, **info):
            self.running.discard(trial.trial_id)
            self.failed += 1
            self._line()

    return Progress()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


# ------------------------------------------------------------------------------ the experiment
def run_experiment(spec: ExperimentSpec, out: str | os.PathLike, *, address: str | None = None,
                   max_concurrent: int | None = None, num_cpus: int | None = None, command: str | None = None,
                   trial_fn: Callable | None = None, stream: Any = None) -> dict[str, Any]:
    """Run every unfinished trial of `spec` on Ray Tune (local Ray on this machine's cores, `num_cpus` to
    cap them, or the cluster at `address`), then write results.json, best_config.json and the plots.

    Returns the results (as in results.json). `trial_fn` replaces `run_trial` (tests inject failures)."""
    from steergym.ray_support import require_ray

    require_ray("steergym run")
    stream = stream or sys.stdout
    out = Path(out).resolve()
    trials = expand(spec, out)
    table = {t.id: t for t in trials}
    grow = _check_same_trials(out, trials)
    write_json(out / "spec.json", spec.to_dict())
    prepare_datasets(spec, out, stream)
    for trial in trials:  # no longer finished: kept beside the run folder until the larger budget is done
        if trial.id in grow:
            os.replace(trial_folder(out, trial) / RESULT, trial_folder(out, trial) / PREVIOUS_RESULT)
    finished = {t.id for t in trials if (trial_folder(out, t) / RESULT).is_file()}
    pending = [t for t in trials if t.id not in finished]
    context = {"command": command or " ".join(sys.argv), **git_commit()}
    print(f"[steergym run] {spec.name}: {len(trials)} trials, {len(finished)} finished already, "
          f"{len(pending)} to run -> {out}" + (f" ({len(grow)} finished trials grow to budget.env_steps = "
          f"{spec.budget.env_steps}: resumed from their checkpoints, the SB3 methods run again)" if grow else ""),
          file=stream, flush=True)
    errors: dict[str, str] = {}
    started = time.time()
    if pending:
        errors = _fit(spec, out, pending, len(trials), len(finished), address, max_concurrent, num_cpus, context,
                      trial_fn, stream)
    results = gather(spec, out, trials, errors, context, table)
    results["meta"]["run_wall_s"] = round(time.time() - started, 1)
    write_json(out / "results.json", results)
    write_json(out / "best_config.json", best_configs(results))
    plot_curves(results, out)
    print_summary(results, stream)
    return results


def prepare_datasets(spec: ExperimentSpec, out: Path, stream: Any = None) -> None:
    """Collect the spec's declared datasets into out/datasets (once: a dataset already there is kept)."""
    if not spec.datasets:
        return
    from steergym.data import collect
    from steergym.data.dataset import dataset_exists

    root = out / "datasets"
    for name, recipe in spec.datasets.items():
        if dataset_exists(name, root):  # collect writes into a temporary folder and renames it
            continue
        print(f"[steergym run] collecting {name}: {recipe.episodes} {recipe.quality} episodes of {recipe.env} "
              f"(seed {recipe.seed}) -> {root}", file=stream or sys.stdout, flush=True)
        collect(recipe.env, recipe.episodes, recipe.quality, name, seed=recipe.seed, root=root, progress=False)


def _check_same_trials(out: Path, trials: list[Trial]) -> set[str]:
    """The ids of finished trials to grow to a larger budget; a finished trial of another config or
    budget under the same id would be skipped wrongly: refuse it.

    A finished trial whose spec now asks for more env steps (same config, same evaluation schedule and
    pretraining) is grown: it resumes from its last checkpoint (calql/cql, ogpo, dsrl-na) or, for the
    SB3 methods, runs again from the start, seeded as before."""
    grow = set()
    for trial in trials:
        path = trial_folder(out, trial) / RESULT
        if not path.is_file():
            continue
        old = json.loads(path.read_text())
        old_budget, new_budget = old.get("budget") or {}, dataclasses.asdict(trial.budget)
        same_config = old.get("overrides") == _jsonable(trial.overrides)
        if same_config and old_budget == new_budget:
            continue
        fixed = [k for k in new_budget if k != "env_steps"]
        if (same_config and all(old_budget.get(k) == new_budget[k] for k in fixed)
                and int(old_budget.get("env_steps", 0)) < new_budget["env_steps"]):
            grow.add(trial.id)
            continue
        raise ValueError(f"{out} holds trial {trial.id} with another config or budget "
                         f"({old.get('overrides')}, {old_budget}): use another --out (only budget.env_steps "
                         f"may grow between runs of one folder)")
    return grow


def _fit(spec: ExperimentSpec, out: Path, pending: list[Trial], total: int, already: int, address: str | None,
         max_concurrent: int | None, num_cpus: int | None, context: dict[str, Any], trial_fn: Callable | None,
         stream: Any) -> dict[str, str]:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")
    from steergym.ray_support import init_ray

    ray = init_ray(address, num_cpus)
    from ray import tune

    available = ray.cluster_resources()
    for name, need in (("CPU", spec.resources.cpus), ("GPU", spec.resources.gpus)):
        if need > available.get(name, 0):  # Tune would wait for them forever
            raise ValueError(f"spec field resources.{name.lower()}s = {need}: more than the Ray cluster has "
                             f"({available.get(name, 0):g} {name}s)")

    threads = max(1, int(spec.resources.cpus))
    trainable = tune.with_parameters(_trainable, trials={t.id: t.to_dict() for t in pending}, out=str(out),
                                     threads=threads, context=context, trial_fn=trial_fn,
                                     device="cuda" if spec.resources.gpus > 0 else "cpu")
    trainable = tune.with_resources(trainable, {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus})
    scheduler = None
    if spec.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr=TIME_ATTR, metric=METRIC, mode="max", max_t=spec.budget.env_steps + spec.budget.eval_every,
                                  grace_period=spec.budget.eval_every, reduction_factor=2)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    tuner = tune.Tuner(
        trainable,
        param_space={"trial_id": tune.grid_search([t.id for t in pending])},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=max_concurrent, reuse_actors=True,
                                    trial_name_creator=lambda t: t.config["trial_id"].replace("/", "_"),
                                    trial_dirname_creator=lambda t: f"{t.trial_id}"),
        run_config=tune.RunConfig(name=f"{spec.name}-{stamp}", storage_path=str(out / "tune"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                                  callbacks=[_progress_callback(total, already, stream)],
                                  log_to_file=True),
    )
    grid = tuner.fit()
    errors = {}
    for result in grid:
        if result.error is not None:
            errors[result.config["trial_id"]] = _error_text(result.error)
    return errors


def _error_text(error: BaseException) -> str:
    text = " ".join(str(error).split())
    cause = getattr(error, "cause", None)
    if cause is not None:
        text = f"{type(cause).__name__}: {' '.join(str(cause).split())}"
    return text[-600:]


# ------------------------------------------------------------------------------ results
def gather(spec: ExperimentSpec, out: Path, trials: list[Trial], errors: dict[str, str], context: dict[str, Any],
           table: dict[str, Trial]) -> dict[str, Any]:
    records, failed = [], []
    for trial in trials:
        path = trial_folder(out, trial) / RESULT
        if path.is_file():
            records.append(json.loads(path.read_text()))
            continue
        rows = _eval_rows(trial_folder(out, trial))
        error = errors.get(trial.id)
        if error is None and spec.scheduler == "asha" and rows:
            # stopped early by ASHA: its evaluations so far are its result (and it is not run again);
            # a trial stopped on its last evaluation is simply finished
            curve = [{k: _number(v) for k, v in r.items()} for r in rows]
            record = {"id": trial.id, "task": trial.task, "method": trial.method, "seed": trial.seed,
                      "variant": trial.variant, "overrides": _jsonable(trial.overrides),
                      "budget": dataclasses.asdict(trial.budget), "final_success": curve[-1]["success_rate"],
                      "best_success": max(r["success_rate"] for r in curve), "curve": curve,
                      "status": "finished" if curve[-1]["env_steps"] >= trial.budget.env_steps else "stopped early",
                      "attempt": attempts(out, trial), "machine": machine(), **context}
            write_json(trial_folder(out, trial) / RESULT, record)
            records.append(record)
            continue
        failed.append({"id": trial.id, "task": trial.task, "method": trial.method, "seed": trial.seed,
                       "attempts": attempts(out, trial), "error": error or "did not finish (interrupted?)"})
    return {"spec": spec.to_dict(), "trials": records, "failed": failed, "summary": summarize(records),
            "meta": {**context, "machine": machine(), "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "trials_total": len(trials)}}


def _group_key(record: dict[str, Any]) -> tuple[str, str, Any]:
    return record["task"], record["method"], record.get("variant")


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(_group_key(record), []).append(record)
    rows = []
    for (task, method, variant), group in groups.items():
        finals = [r["final_success"] for r in group if r["final_success"] is not None]
        rows.append({"task": task, "method": method, "variant": variant, "overrides": group[0]["overrides"],
                     "seeds": [r["seed"] for r in group],
                     "final_mean": sum(finals) / len(finals) if finals else None,
                     "final_min": min(finals) if finals else None, "final_max": max(finals) if finals else None,
                     "best_mean": sum(r["best_success"] for r in group) / len(group),
                     "wall_s_mean": round(sum(r.get("wall_s") or 0 for r in group) / len(group), 1)})
    return rows


def best_configs(results: dict[str, Any]) -> dict[str, Any]:
    """{task: {method: best variant}} by mean final success over seeds (ties: mean best success, then the
    first variant)."""
    best: dict[str, dict[str, Any]] = {}
    for row in results["summary"]:
        if row["final_mean"] is None:
            continue
        current = best.setdefault(row["task"], {}).get(row["method"])
        key = (row["final_mean"], row["best_mean"])
        if current is None or key > (current["final_mean"], current["best_mean"]):
            best[row["task"]][row["method"]] = {"config": row["overrides"], "variant": row["variant"],
                                                "final_mean": row["final_mean"], "best_mean": row["best_mean"],
                                                "seeds": row["seeds"]}
    return best


def _print_table(header: list[str], rows: list[list[str]], stream: Any) -> None:
    """Left-aligned columns under a header and a dashed rule."""
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=stream)


def trial_status(spec: ExperimentSpec, out: str | os.PathLike) -> list[dict[str, Any]]:
    """Where each trial of `spec` stands in `out`, without running anything (no Ray): state
    ("finished", "started": an unfinished run folder, interrupted or still running, "not started"),
    env steps and success of its last evaluation, and attempts. For long protocols spread over stops."""
    out = Path(out).resolve()
    rows = []
    for trial in expand(spec, out):
        folder = trial_folder(out, trial)
        finished = (folder / RESULT).is_file()
        evals = [r for r in _eval_rows(folder) if r.get("success_rate") not in (None, "")]
        last = evals[-1] if evals else {}
        rows.append({"id": trial.id, "state": "finished" if finished else "started" if folder.exists() else "not started",
                     "env_steps": _number(last.get("env_steps")), "budget": trial.budget.env_steps,
                     "success_rate": _number(last.get("success_rate")), "attempts": attempts(out, trial)})
    return rows


def print_status(rows: list[dict[str, Any]], stream: Any = None) -> None:
    stream = stream or sys.stdout
    header = ["trial", "state", "env steps", "last success", "attempts"]
    table = [[r["id"], r["state"], f"{r['env_steps'] or 0:,}/{r['budget']:,}",
              "-" if r["success_rate"] is None else f"{r['success_rate']:.2f}", str(r["attempts"])] for r in rows]
    _print_table(header, table, stream)
    done = sum(r["state"] == "finished" for r in rows)
    print(f"{done}/{len(rows)} trials finished", file=stream, flush=True)


def print_summary(results: dict[str, Any], stream: Any = None) -> None:
    stream = stream or sys.stdout
    header = ["task", "method", "seeds", "final success", "(min-max)", "best", "wall s"]
    rows = []
    for r in results["summary"]:
        name = r["method"] + (f"/cfg{r['variant']}" if r["variant"] is not None else "")
        rows.append([r["task"], name, str(len(r["seeds"])), f"{r['final_mean']:.2f}" if r["final_mean"] is not None else "-",
                     f"({r['final_min']:.2f}-{r['final_max']:.2f})" if r["final_mean"] is not None else "",
                     f"{r['best_mean']:.2f}", f"{r['wall_s_mean']:.0f}"])
    _print_table(header, rows, stream)
    for f in results["failed"]:
        print(f"FAILED {f['id']} after {f['attempts']} attempt(s): {f['error']}", file=stream)
    print(f"{len(results['trials'])}/{results['meta']['trials_total']} trials finished, {len(results['failed'])} failed",
          file=stream, flush=True)


def plot_curves(results: dict[str, Any], out: Path) -> list[Path]:
    """curves_<task>.png per task: success against env steps, mean over seeds and min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by_task: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for record in results["trials"]:
        name = record["method"] + (f"/cfg{record['variant']}" if record.get("variant") is not None else "")
        by_task.setdefault(record["task"], {}).setdefault(name, []).append(record)
    paths = []
    for task, methods in by_task.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, group in sorted(methods.items()):
            steps = sorted({row["env_steps"] for r in group for row in r["curve"]})
            table = np.full((len(group), len(steps)), np.nan)
            for i, r in enumerate(group):
                for row in r["curve"]:
                    table[i, steps.index(row["env_steps"])] = row["success_rate"]
            mean = np.nanmean(table, axis=0)
            line, = ax.plot(steps, mean, label=f"{name} ({len(group)} seeds)")
            if len(group) > 1:
                ax.fill_between(steps, np.nanmin(table, axis=0), np.nanmax(table, axis=0), alpha=0.2,
                                color=line.get_color())
        ax.set(title=task, xlabel="env steps", ylabel="eval success", ylim=(-0.05, 1.05))
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"curves_{task.replace('/', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
