"""The Ray-backed parts of the `steergym` command, for `steergym.cli`: `steergym run SPEC` (experiment
specs on Ray Tune, `steergym.experiments`) and the `--workers N [--address]` options of `eval` and
`collect` (episodes sharded over Ray actors, `steergym.distributed`). Ray is imported only when one of
them runs; without the `ray` extra they say `pip install -e ".[ray]"` in one line.
"""

from __future__ import annotations

import argparse

from steergym import cli_args


def add_worker_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """--workers N and --address for a command whose episodes can be sharded (eval, collect)."""
    p.add_argument("--workers", type=cli_args.positive_int, default=None, metavar="N",
                   help=f"run the {what} on N Ray actors, sharded by reset seed (same result as one process; "
                   'needs pip install -e ".[ray]")')
    p.add_argument("--address", metavar="auto|HOST:PORT",
                   help="with --workers: the Ray cluster to join (default: a local Ray on this machine's cores)")


def check_worker_arguments(args: argparse.Namespace, command: str) -> None:
    """--address only with --workers; with --workers, Ray must be installed (one-line error)."""
    if args.workers is None:
        if args.address:
            raise ValueError("--address needs --workers N")
        return
    from steergym.ray_support import require_ray

    try:
        require_ray(f"steergym {command} --workers")
    except ImportError as exc:
        raise ValueError(str(exc)) from None


def add_run(sub) -> None:
    p = sub.add_parser(
        "run", help="run an experiment spec (tasks x methods x seeds x configs) on Ray Tune",
        description="Run every trial of an experiment spec (JSON; see steergym/experiments/spec.py) as a Ray "
        "Tune trial into DIR/trials/<task>/<method>/seed<k>, then write DIR/results.json, best_config.json and "
        "a learning-curve plot per task. Re-running the same command skips finished trials and resumes the "
        "others from their run folders. Needs Ray: pip install -e \".[ray]\".",
    )
    p.add_argument("spec", metavar="SPEC", help="experiment spec file (.json)")
    p.add_argument("--out", required=True, metavar="DIR", help="experiment folder (created; reused to resume)")
    p.add_argument("--address", metavar="auto|HOST:PORT", default=None,
                   help="a running Ray cluster (default: start local Ray on this machine)")
    p.add_argument("--max-concurrent", type=cli_args.positive_int, default=None, metavar="N",
                   help="trials at once (default: as many as the resources allow)")
    p.add_argument("--num-cpus", type=cli_args.positive_int, default=None, metavar="N",
                   help="local Ray: CPUs to use (default: all of this machine's)")
    p.add_argument("--status", action="store_true",
                   help="print where each trial stands in DIR (finished, started, not started; env steps and "
                   "success of its last evaluation) and exit, running nothing (no Ray needed)")


def cmd_run(args: argparse.Namespace) -> int:
    from steergym.experiments.runner import run_experiment
    from steergym.experiments.spec import load_spec

    spec = load_spec(args.spec)  # validated before Ray starts
    if args.status:
        from steergym.experiments.runner import print_status, trial_status

        print_status(trial_status(spec, args.out))
        return 0
    command = f"steergym run {args.spec} --out {args.out}" + "".join(
        f" --{flag} {value}" for flag, value in (("address", args.address), ("max-concurrent", args.max_concurrent),
                                                 ("num-cpus", args.num_cpus)) if value is not None)
    results = run_experiment(spec, args.out, address=args.address, max_concurrent=args.max_concurrent,
                             num_cpus=args.num_cpus, command=command)
    return 1 if results["failed"] else 0
