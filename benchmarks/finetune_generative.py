"""OGPO vs DSRL-SAC vs DSRL-NA vs residual SAC, fine-tuning a weak generative policy at equal env steps.

For each task (the shipped policy's task), method and seed, the method trains for `--env-steps`
primitive env steps on the task with DSRL's reward shaping (-1 per step until success,
`SteeringConfig.reward_offset`) and is evaluated every `--eval-every` env steps on reset seeds
0..`--eval-episodes`-1 (OGPO: the fine-tuned policy's deterministic sampler; DSRL-NA: the noise
actor's mean; DSRL-SAC: seeded noise samples, as DSRL evaluates; residual: the mean correction).

    python benchmarks/finetune_generative.py                           # the issue's protocol (GPU-sized)
    python benchmarks/finetune_generative.py --scale cpu --env-steps 2000 --seeds 0

`--scale cpu` shrinks networks, batches, groups and update ratios so that a run fits a 2-core CPU;
`--scale paper` keeps every trainer's paper defaults (OGPOConfig, DSRLNAConfig; SteeringConfig for the
SB3 methods, already CPU-sized) and needs a GPU for useful budgets. The scale and every config used
are written into the JSON, so a result always states what ran.

The runs are one experiment spec (`spec_of`) executed by the Ray Tune runner (`steergym run`): one
trial per policy x method x seed (dsrl-sac is the runner's `dsrl`), one torch thread each, `--jobs` at
once (or a cluster with `--address`); the trials' run folders go to `--trials`. Running the same
command again skips finished trials and resumes OGPO and DSRL-NA trials from their last checkpoint.
Needs the `ray` extra.

Results: benchmarks/results/finetune_generative.json (written atomically when the runs end) and
finetune_generative_<task>.png.
Issue 6's goal: OGPO reaches >= 0.9 success with no expert data online and beats the steering and
residual methods at equal budget; DSRL-NA is more sample-efficient than DSRL-SAC.

Policies: the default is the issue's "poorly initialised" pair, `weak:widowx-lift-flow-weak` (3
demos, 0.10 over seeds 0-99) and `weak:widowx-push-flow-weak` (10 demos, 0.18), flow policies made
by `recipes/shipped_policies.py`'s WEAK_RECIPES into `--work` on first use (about a minute each,
deterministic on one machine; a recipe whose success leaves the 0.05-0.2 band stops the run).
A shipped policy's name (e.g. `widowx-lift-flow`, 0.44) works too; its base is the success its index records.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from run_context import REPO, cpu_name, difference_interval, git_state, load_average, write_results  # benchmarks/ is on sys.path

METHODS = ("ogpo", "dsrl-na", "dsrl-sac", "residual")
RUNNER_METHOD = {"ogpo": "ogpo", "dsrl-na": "dsrl-na", "dsrl-sac": "dsrl", "residual": "residual"}
WEAK = "weak:"  # a policy name with this prefix is made by recipes/shipped_policies.py's WEAK_RECIPES
DEFAULT_POLICIES = ("weak:widowx-lift-flow-weak", "weak:widowx-push-flow-weak")
RESULTS = REPO / "benchmarks" / "results"


def weak_policy(policy_name: str, work: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The checkpoint folder and recipe entry of a `weak:NAME` policy, made once under `work`."""
    if str(REPO / "recipes") not in sys.path:
        sys.path.insert(0, str(REPO / "recipes"))
    from shipped_policies import make_weak

    return make_weak(policy_name.removeprefix(WEAK), Path(work))


def configs(scale: str) -> dict[str, dict[str, Any]]:
    """Per-method config overrides for `scale` ('paper': none), by this benchmark's method names."""
    if scale == "paper":
        return {m: {} for m in METHODS}
    steering = dict(learning_starts=100)
    return {
        "ogpo": dict(critic_hidden=[256, 256], batch_size=128, group_size=8, ppo_batch_size=32,
                     learning_starts=100, success_batch_size=64, log_every=50),
        # alpha_init: the reference's alpha starts at 1 but falls to ~0 within a few thousand env steps at 20-30
        # updates per env step; at utd 2 it stays ~0.5 for 20k env steps and its entropy bonus swamps the reward
        # (all 3 seeds fell from 0.65 to 0.05 from widowx-lift-flow; from 0.01 they end at 0.70, docs/benchmarks.md)
        "dsrl-na": dict(hidden=[256, 256], batch_size=128, utd=2, distill_steps=2, learning_starts=100,
                        alpha_init=0.01, log_every=50),
        "dsrl-sac": dict(steering), "residual": dict(steering),
    }


def config_setting(text: str) -> tuple[str, str, Any]:
    """`METHOD.FIELD=VALUE` (a --set argument) as (method, field, value); VALUE is JSON when it parses."""
    import json

    key, sep, raw = text.partition("=")
    method, dot, field = key.partition(".")
    if not sep or not dot or not field:
        raise argparse.ArgumentTypeError(f"{text!r} is not METHOD.FIELD=VALUE (e.g. dsrl-na.alpha_init=0.01)")
    if method not in METHODS:
        raise argparse.ArgumentTypeError(f"{text!r}: method {method!r} is not one of {', '.join(METHODS)}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return method, field, value


def spec_of(args: argparse.Namespace, tasks: list[str]):
    """This benchmark's runs as an experiment spec; `tasks` are shipped policy names or (weak) policy
    folders by absolute path (their trials are named by the folder's name)."""
    from steergym.experiments.spec import parse_spec

    overrides = configs(args.scale)
    for method, field, value in args.set or []:
        overrides[method] = {**overrides[method], field: value}
    return parse_spec({
        "name": "finetune_generative", "tasks": tasks, "methods": [RUNNER_METHOD[m] for m in args.methods],
        "seeds": list(args.seeds),
        "budget": {"env_steps": args.env_steps, "eval_every": args.eval_every, "eval_episodes": args.eval_episodes},
        "config": {RUNNER_METHOD[m]: overrides[m] for m in args.methods},
        "resources": {"cpus": 1, "gpus": 0}, "max_failures": 2})


def shipped_entry(policy_name: str):
    """The shipped-policy index entry of `policy_name` (its recorded success); exits naming it if none."""
    from steergym.policies.zoo import shipped_policy

    try:
        return shipped_policy(policy_name)
    except ValueError as error:
        raise SystemExit(f"--policies: {error} (or {WEAK}NAME for a weak recipe)") from None


def run_row(trial: dict[str, Any], policy_name: str) -> dict[str, Any]:
    """A runner trial record as one of this benchmark's runs (its results-file schema)."""
    method = {v: k for k, v in RUNNER_METHOD.items()}[trial["method"]]
    return {"policy": policy_name, "env_id": trial["env_id"], "method": method, "seed": trial["seed"],
            "wall_s": round(trial["wall_s"], 1), "curve": trial["curve"], "final_success": trial["final_success"],
            "config": trial["config"], "attempt": trial.get("attempt")}


def summarize(runs: list[dict[str, Any]], initial: dict[str, dict[str, float]], initial_episodes: dict[str, int],
              eval_episodes: int) -> dict[str, Any]:
    """Per policy: each method's mean first, final and best success over seeds, its final minus the base
    policy's success (`initial[policy]`: {env id: rate} over `initial_episodes[policy]` seeds, as the
    recipe measured it), and OGPO's final minus each other method's; intervals are 95% bootstraps over
    seeds with each rate redrawn from its binomial (evaluation noise on `eval_episodes` episodes), so
    they decide only beyond both noises. A policy missing from `initial` gets no base comparison."""
    summary = {}
    for policy in dict.fromkeys(r["policy"] for r in runs):
        rows = [r for r in runs if r["policy"] == policy]
        by = {m: [r for r in rows if r["method"] == m] for m in dict.fromkeys(r["method"] for r in rows)}
        finals = {m: [r["final_success"] for r in group] for m, group in by.items()}
        base = next(iter(initial[policy].values())) if policy in initial else None
        methods = {}
        for m, group in by.items():
            starts = [r["curve"][0]["success_rate"] for r in group]
            methods[m] = {"seeds": [r["seed"] for r in group], "final_per_seed": finals[m],
                          "first": round(float(sum(starts) / len(starts)), 4),
                          "final": round(float(sum(finals[m]) / len(group)), 4),
                          "best": round(float(sum(max(p["success_rate"] for p in r["curve"]) for r in group) / len(group)), 4)}
            if base is not None:
                methods[m]["final_minus_base"] = difference_interval(
                    finals[m], [base], episodes=(eval_episodes, initial_episodes[policy]))
        versus = {m: difference_interval(finals["ogpo"], finals[m], episodes=(eval_episodes, eval_episodes))
                  for m in by if m != "ogpo" and "ogpo" in by}
        summary[policy] = {"base_success": base, "base_episodes": initial_episodes.get(policy), "methods": methods,
                           "ogpo_minus": versus}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--env-steps", type=int, default=200_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--scale", choices=("paper", "cpu"), default="paper")
    parser.add_argument("--set", action="append", type=config_setting, metavar="METHOD.FIELD=VALUE",
                        help="change one config field of one method on top of --scale (repeatable), e.g. "
                        "dsrl-na.alpha_init=0.01; the value is read as JSON, else kept as a string")
    parser.add_argument("--out", default=str(RESULTS / "finetune_generative.json"))
    parser.add_argument("--jobs", type=int, default=2, help="trials at once (local Ray CPUs; one torch thread each)")
    parser.add_argument("--address", default=None, help="a Ray cluster (auto or HOST:PORT) instead of a local Ray")
    parser.add_argument("--trials", default=str(REPO / "runs" / "finetune_generative" / "trials"),
                        help="the runner's folder of trial run folders (a re-run skips finished trials)")
    parser.add_argument("--work", default=str(REPO / "runs" / "finetune_generative"),
                        help="where weak:NAME policies and their demos are made (reused when present)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    initial, initial_episodes, tasks, names = {}, {}, [], {}
    for policy_name in args.policies:  # made up front, so every trial starts from the same checkpoint
        if policy_name.startswith(WEAK):
            folder, entry = weak_policy(policy_name, args.work)
            initial[policy_name], initial_episodes[policy_name] = entry["success_rate"], entry["episodes"]
            print(f"{policy_name}: {folder} (success {entry['success_rate']} over {entry['episodes']} seeds)")
            task = str(Path(folder).resolve())
        else:  # a shipped policy: its index records its success over seeds 0..episodes-1
            entry = shipped_entry(policy_name)
            initial[policy_name], initial_episodes[policy_name] = entry.success_rate, entry.episodes
            task = policy_name
        tasks.append(task)
        names[task] = policy_name
    spec = spec_of(args, tasks)  # validated before anything starts

    from steergym.experiments.runner import run_experiment

    command = "python benchmarks/" + " ".join([Path(__file__).name, *(argv if argv is not None else sys.argv[1:])])
    load_start = load_average()
    ran = run_experiment(spec, args.trials, address=args.address, num_cpus=None if args.address else args.jobs,
                         command=command)
    runs = [run_row(trial, names[trial["task"]]) for trial in ran["trials"]]
    for row in runs:
        print(f"{row['policy']} {row['method']} seed {row['seed']}: final success {row['final_success']} "
              f"in {row['wall_s']} s")
    out = write_results(args.out, {
        "benchmark": "finetune_generative", "scale": args.scale, "env_steps": args.env_steps,
        "eval_every": args.eval_every, "eval_episodes": args.eval_episodes, "seeds": args.seeds,
        "cpu": cpu_name(), "python": platform.python_version(), **git_state(),
        "initial_success": initial, "command": command, "trials": str(args.trials),
        "note": ("cpu scale: networks, batches and update ratios shrunk to fit a 2-core CPU; not the "
                 "paper's settings" if args.scale == "cpu" else "each trainer's paper defaults"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average": [load_start, load_average()], "summary": summarize(runs, initial, initial_episodes, args.eval_episodes), "runs": runs,
        "failed": ran["failed"]})
    from steergym.bench.plots import success_curve_plot

    for policy_name in args.policies:
        curves = {m: [r["curve"] for r in runs if r["policy"] == policy_name and r["method"] == m] for m in args.methods}
        curves = {m: c for m, c in curves.items() if c}
        if curves:
            path = out.with_name(f"{out.stem}_{policy_name.removeprefix(WEAK)}.png")
            success_curve_plot(curves, path, title=f"{policy_name}: fine-tuning at equal env steps")
            print(f"plot: {path}")
    print(f"wrote {out}" + (f"; {len(ran['failed'])} trials failed" if ran["failed"] else ""))
    return 0 if not ran["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
