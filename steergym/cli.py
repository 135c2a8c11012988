"""The `steergym` command: a small dispatcher, one function per subcommand.

    steergym list [--json]
    steergym eval [--env ID] [--policy expert|random|NAME|DIR] [--episodes N] [--seed S]
                  [--video out.mp4] [--obs-mode MODE] [--json out.json]
                  [--steer vgps --critic DIR [--num-samples K] [--temperature T] [--rerank-every N]]
                  [--workers N [--address auto|HOST:PORT]]
    steergym policies [--json]
    steergym train bc|dsrl|residual|sac|calql|cql|ogpo|dsrl-na|ptr|vgps --out DIR ...
                   (each trainer's options come from its run function and config dataclasses: --help)
    steergym demo [--policy NAME] [--env-steps N] [--minutes M] [--episodes N] [--seed S] [--out DIR] ...
    steergym render-tasks --out DIR [--size WxH]
    steergym collect --env ID --episodes N --quality expert|noisy|failing|mixed --out NAME
                     [--seed S] [--obs-mode MODE] [--root DIR] [--overwrite]
                     [--workers N [--address auto|HOST:PORT]]
    steergym export-lerobot DATASET_ID OUT [--repo-id ID] [--root DIR] [--fps N] [--proprio-dim P] [--overwrite]
    steergym import-lerobot ROOT DATASET_ID [--env ID] [--repo-id ID] [--root DIR] [--overwrite]
    steergym run SPEC --out DIR [--address auto|HOST:PORT] [--max-concurrent N] [--num-cpus N]
    steergym serve [--backend sim|interbotix] [--task ID] [--port P] [--token-file F] ...
    steergym robot status|estop|clear-estop|export ...

A user mistake (unknown id, bad option, unwritable path) prints one line on stderr and exits 2.
To add a subcommand: write `cmd_<name>(args) -> int` and its `_add_<name>` parser, list both in
`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steergym import cli_args

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one `--help` away)."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------------ list
def _add_list(sub) -> None:
    p = sub.add_parser("list", help="registered environments", description="List the registered ids.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cmd_list(args: argparse.Namespace) -> int:
    """Every registered id with its instruction, horizon and the spaces of its default obs mode."""
    from steergym.bench.catalog import env_rows

    rows = env_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [
        [r["id"], r["instruction"], str(r["horizon"] or "(served)"), *map(_shape_text, (r["obs_shape"], r["action_shape"]))]
        for r in rows
    ]
    _print_table(["id", "instruction", "horizon", "obs", "action"], table)
    return 0


def _shape_text(shape: list[int] | dict | None) -> str:
    if shape is None:
        return "-"  # the robot client (the served task's) or a task whose suite is not installed
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {_shape_text(v)}" for k, v in shape.items()) + "}"
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


# ------------------------------------------------------------------------------ eval
def _add_eval(sub) -> None:
    from steergym.bench.evaluate import POLICY_NAMES
    from steergym.envs.widowx import OBS_MODES, REWARD_TYPES

    p = sub.add_parser("eval", help="evaluate a policy on a task", description="Success rate (Wilson 95% "
                       "interval), mean return and length of a policy; episode i is reset with seed S+i.")
    p.add_argument("--env", metavar="ID",
                   help="environment id (see `steergym list`); default: the policy's own task")
    p.add_argument("--policy", default="expert", metavar="POLICY",
                   help=f"{', '.join(POLICY_NAMES)}, a shipped policy name (see `steergym policies`) or a "
                   "checkpoint folder (a LeRobot policy folder with --env) (default: expert)")
    p.add_argument("--episodes", type=cli_args.positive_int, default=20, metavar="N", help="episodes (default: 20)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of episode 0 (default: 0)")
    p.add_argument("--video", metavar="PATH", help="write the first episodes to an .mp4 or .gif")
    p.add_argument("--video-episodes", type=cli_args.positive_int, default=3, metavar="K", help="episodes recorded (default: 3)")
    p.add_argument("--obs-mode", choices=OBS_MODES, help="observation mode (default: the env's, state)")
    p.add_argument("--reward-type", choices=REWARD_TYPES, help="reward type (default: the env's, sparse)")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    p.add_argument("--steer", choices=("vgps",), help="vgps: re-rank the policy's samples with --critic")
    p.add_argument("--critic", metavar="DIR", help="V-GPS value function (steergym train vgps ... value_function)")
    p.add_argument("--num-samples", type=cli_args.positive_int, default=10, metavar="K", help="V-GPS candidates (default: 10)")
    p.add_argument("--temperature", type=float, default=0.0, help="V-GPS softmax temperature; 0: argmax")
    p.add_argument("--rerank-every", type=cli_args.positive_int, default=1, metavar="N",
                   help="V-GPS: re-rank every N control steps, executing N actions of the chosen chunk "
                        "(default: 1, the paper's; the policy's chunk length re-ranks once per chunk)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    ray_cli.add_worker_arguments(p, "episodes")


def cmd_eval(args: argparse.Namespace) -> int:
    from steergym.bench.evaluate import evaluate
    from steergym.distributed import PolicySpec

    env_kwargs = {k: v for k, v in (("obs_mode", args.obs_mode), ("reward_type", args.reward_type)) if v}
    json_path = Path(args.json) if args.json else None
    if json_path is not None and json_path.is_dir():
        raise ValueError(f"--json {args.json!r} is a directory")
    ray_cli.check_worker_arguments(args, "eval")
    if args.workers is not None and args.video:
        raise ValueError("--video records in one process: drop --workers to write a video")
    spec = PolicySpec(args.policy, steer=args.steer, critic=args.critic, num_samples=args.num_samples,
                      temperature=args.temperature, action_steps=args.rerank_every)
    if args.workers is None:
        policy, env_id, _ = spec.build(args.env, args.seed)
        result = evaluate(env_id, policy=policy, episodes=args.episodes, seed=args.seed, video=args.video,
                          env_kwargs=env_kwargs, progress=not args.quiet, video_episodes=args.video_episodes)
    else:
        from steergym.distributed import evaluate_distributed

        result = evaluate_distributed(args.env, spec, episodes=args.episodes, seed=args.seed, workers=args.workers,
                                      address=args.address, env_kwargs=env_kwargs, progress=not args.quiet)
    print(f"{result.env_id}  policy={result.policy}  episodes={result.episodes}  seed={result.seed}")
    print(f"success rate {result.success_rate:.3f} ({result.successes}/{result.episodes}), "
          f"95% CI [{result.ci_low:.3f}, {result.ci_high:.3f}]")
    print(f"mean return {result.mean_return:.3f}, mean length {result.mean_length:.1f} steps")
    if result.video:
        print(f"video: {result.video}")
    if json_path is not None:
        _write_text_atomic(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"json: {json_path}")
    return 0


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ policies
def _add_policies(sub) -> None:
    p = sub.add_parser("policies", help="shipped base policies",
                       description="List the base policies shipped in steergym/assets/policies.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cmd_policies(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from steergym.policies.zoo import shipped_policies

    table = shipped_policies()
    if args.json:
        print(json.dumps({k: {**asdict(v), "path": str(v.path)} for k, v in table.items()}, indent=2))
        return 0
    rows = []
    for entry in table.values():
        rates = ", ".join(f"{entry.success_rate[t]:.2f}" for t in entry.env_ids)
        tasks = entry.env_ids[0].split("/")[-1] if len(entry.env_ids) == 1 else f"{len(entry.env_ids)} tasks"
        rows.append([entry.name, entry.kind, tasks, rates, entry.description])
    _print_table(["name", "kind", "task", "success (100 seeds)", "description"], rows)
    return 0


# ------------------------------------------------------------------------------ train
def trainers() -> dict[str, cli_args.Command]:
    """The trainer table: name -> Command."""
    from functools import partial

    from steergym.algorithms import runs
    from steergym.algorithms.bc import BCConfig
    from steergym.algorithms.calql import CalQLConfig
    from steergym.algorithms.dsrl_na import DSRLNAConfig
    from steergym.algorithms.multitask_runs import run_ptr, run_vgps
    from steergym.algorithms.ogpo import OGPOConfig
    from steergym.algorithms.ptr import ptr_calql_config
    from steergym.algorithms.steering import SteeringConfig
    from steergym.algorithms.vgps import vgps_calql_config
    from steergym.policies.config import PolicyConfig

    Command = cli_args.Command
    both = ("actor_hidden", "critic_hidden")
    steering = {"run": runs.run_steering, "configs": {"config": SteeringConfig}, "report": _report_steering,
                "aliases": {"--lr": "learning_rate", "--scale": "residual_scale"}}
    calql = {"run": runs.run_calql, "report": _report_calql, "skip": ("calibrated",),
             "aliases": {"--hidden": both, "--no-normalize-obs": "normalize_observations"},
             "derive": lambda v: {"log_every": runs.offline_log_every(v["pretrain_steps"])}}
    chunk = {"run": runs.run_chunk_trainer, "report": _report_chunk}
    return {
        "bc": Command(runs.run_bc, {"config": BCConfig, "policy_config": PolicyConfig},
                      "behaviour cloning of a diffusion or flow policy", _report_bc, skip=("kind", "task_ids", "extra")),
        "dsrl": Command(**steering, help="DSRL: SAC in the latent-noise space of a frozen diffusion/flow policy",
                        fixed={"method": "dsrl"}, skip=("normalize_like",)),
        "residual": Command(**steering, help="residual SAC: bounded corrections to a frozen policy's actions",
                            fixed={"method": "residual"}, skip=("normalize_like",)),
        "sac": Command(**steering, help="SAC from scratch on the task (the baseline; no base policy)",
                       fixed={"method": "sac", "policy": None}),
        "calql": Command(**calql, configs={"config": partial(CalQLConfig, calibrated=True)},
                         help="Cal-QL: offline pre-training on a dataset, then online fine-tuning (calibrated CQL)"),
        "cql": Command(**calql, configs={"config": partial(CalQLConfig, calibrated=False)},
                       help="CQL: the same trainer with Cal-QL's calibration off"),
        "ogpo": Command(**chunk, configs={"config": OGPOConfig}, fixed={"algorithm": "ogpo"},
                        help="OGPO: fine-tune all weights of a diffusion/flow policy (off-policy critics, PPO over "
                        "the denoising chain)",
                        aliases={"--hidden": "critic_hidden", "--no-success-bc": "success_buffer_bc",
                                 "--no-conservative": "conservative_advantages", "--q-vr": "q_variance_reduction"},
                        derive=lambda v: {"conservative_advantages": False} if v.get("chi2") else {}),
        "dsrl-na": Command(**chunk, configs={"config": DSRLNAConfig}, fixed={"algorithm": "dsrl-na"},
                           help="DSRL-NA: noise-aliased DSRL (Q on executed chunks, distilled into the noise space)"),
        "ptr": Command(run_ptr, {"calql": ptr_calql_config}, report=_report_ptr,
                       help="PTR: multi-task CQL pre-training, then a new task from a few demos",
                       names={"prior_ids": "--prior", "target_id": "--target"}, aliases={"--hidden": "critic_hidden"},
                       derive=lambda v: {"log_every": runs.offline_log_every(v["pretrain_steps"] + v["adapt_steps"])}),
        "vgps": Command(run_vgps, {"config": vgps_calql_config}, report=_report_vgps,
                        help="V-GPS: a task-conditioned Cal-QL value function for re-ranking a generalist",
                        names={"dataset_ids": "--dataset"}, aliases={"--hidden": both},
                        derive=lambda v: {"log_every": runs.offline_log_every(v["steps"])}),
    }


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a policy", description="Train a policy; see the trainer.")
    subs = p.add_subparsers(dest="trainer", metavar="TRAINER", parser_class=_Parser)
    subs.required = True
    for name, trainer in trainers().items():
        folder = cli_args.docstring_args(trainer.run)["out"]
        t = subs.add_parser(name, help=trainer.help, description=f"{trainer.help}. The {folder}")
        trainer.add_to(t)
        t.add_argument("--threads", type=cli_args.positive_int, default=None, help="torch CPU threads")
        t.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    trainer = trainers()[args.trainer]
    run = trainer.arguments(args)
    trainer.report(trainer.run(**run), run)
    return 0


def _report_bc(trainer: Any, run: dict[str, Any]) -> None:
    print(f"{run['out']}: {trainer.step} steps, final loss {trainer.last_loss:.4f}, "
          f"{len(trainer.data)} samples over {len(trainer.data.task_ids)} task(s)")
    for row in trainer.evaluations[-1:]:
        print(f"last evaluation (step {row['step']}): mean success {row['mean_success']:.2f}")
    _print_policy(Path(run["out"]) / "policy")


def _report_steering(result: Any, run: dict[str, Any]) -> None:
    first, last = result.curve[0], result.curve[-1]
    print(f"{run['out']}: {run['method']} on {result.env_id}, {result.env_steps:,d} env steps in {result.wall_s:.0f} s")
    print(f"eval success ({run['eval_episodes']} episodes): {first['success_rate']:.2f} at start -> "
          f"{last['success_rate']:.2f} at the end")
    _print_policy(Path(run["out"]) / "policy")


def _report_calql(result: Any, run: dict[str, Any]) -> None:
    agent = result.agent
    summary = (f"{result.out}: {'calql' if agent.config.calibrated else 'cql'} on {result.env_id}, "
               f"{agent.offline_steps:,d} offline steps + {agent.online.num_timesteps:,d} env steps "
               f"({agent.step:,d} updates) in {result.wall_s:.0f} s")
    if agent.curve:
        summary += (f"; eval success ({run['eval_episodes']} episodes) {agent.curve[0]['success_rate']:.2f} after "
                    f"pre-training -> {agent.curve[-1]['success_rate']:.2f}")
    print(summary)
    print(f"agent: {result.out / 'agent'}  (CalQL.load)")


def _report_chunk(result: Any, run: dict[str, Any]) -> None:
    agent, curve = result.agent, result.agent.eval_history
    print(f"{result.out}: {run['algorithm']} on {result.env_id}, {agent.num_timesteps:,d} env steps, "
          f"{agent.updates:,d} updates")
    if curve:
        print(f"eval success ({run['eval_episodes']} episodes): {curve[0]['success_rate']:.2f} at the first "
              f"evaluation -> {curve[-1]['success_rate']:.2f} at the last")
    if run["algorithm"] == "ogpo":
        _print_policy(result.out / "agent" / "policy")


def _report_ptr(ptr: Any, run: dict[str, Any]) -> None:
    info = json.loads((Path(run["out"]) / "run.json").read_text())
    print(f"{run['out']}: PTR, {ptr.agent.offline_steps:,d} offline steps over {len(ptr.task_ids)} tasks "
          f"+ {ptr.agent.online.num_timesteps:,d} env steps")
    print(f"{info['target_task']}: success {info['offline_eval']['success_rate']:.2f} after adaptation "
          f"({info['offline_eval']['episodes']} episodes)"
          + (f", {ptr.agent.curve[-1]['success_rate']:.2f} after online fine-tuning" if ptr.agent.curve else ""))
    print(f"agent: {Path(run['out']) / 'agent'}  (PTR.load)")


def _report_vgps(value: Any, run: dict[str, Any]) -> None:
    folder = Path(run["out"]) / "value_function"
    print(f"{run['out']}: V-GPS value function over {len(value.task_ids)} task(s), "
          f"{value.ptr.agent.offline_steps:,d} steps")
    print(f"value function: {folder}  (steergym eval --policy NAME --env ID --steer vgps --critic {folder})")


def _print_policy(folder: Path) -> None:
    print(f"policy: {folder}  (steergym eval --policy {folder})")


# ------------------------------------------------------------------------------ demo
def _demo() -> cli_args.Command:
    from steergym.bench.demo import run_demo

    return cli_args.Command(run_demo, skip=("config", "log"), names={"gradient_steps": "--utd"})


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="steer a shipped diffusion policy with DSRL on the CPU (before/after, video, plot)",
        description="Evaluate a shipped base policy, train DSRL (SB3 SAC in its noise space) for a budget "
        "in env steps, evaluate the steered policy on the same reset seeds, and write results.json, "
        "learning_curve.png and side_by_side.mp4 to --out. About 6-8 minutes on 2 cores at the defaults; "
        "deterministic given --seed. --minutes alone replaces the env-step budget; with --env-steps "
        "training stops at whichever ends first (not reproducible: depends on the machine's load).",
    )
    _demo().add_to(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_demo(args: argparse.Namespace) -> int:
    run = _demo().arguments(args)
    if args.minutes is not None and "env_steps" not in cli_args.given(args):
        run["env_steps"] = None  # the time budget alone
    _demo().run(**run)
    return 0


# ------------------------------------------------------------------------------ render-tasks
def _add_render_tasks(sub) -> None:
    p = sub.add_parser(
        "render-tasks",
        help="render one PNG per task",
        description="Render every task after reset(seed=0): <Name>-vN.png from the 'front' camera and "
        "<Name>-vN_third_person.png from the policy camera.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--size", type=cli_args.width_by_height, default=(240, 320), metavar="WxH",
                   help="width x height (default: 320x240)")
    p.add_argument("--env", action="append", metavar="ID", help="only this id (repeatable; default: all)")


def cmd_render_tasks(args: argparse.Namespace) -> int:
    from steergym.bench.catalog import render_tasks

    for path in render_tasks(args.out, args.size, args.env):
        print(path)
    return 0


# ------------------------------------------------------------------------------ collect
def _add_collect(sub) -> None:
    from steergym.data.collect import QUALITIES

    p = sub.add_parser(
        "collect",
        help="record scripted-expert episodes as a Minari dataset",
        description="Record episodes of the scripted expert at a chosen quality into a local Minari "
        "dataset ($MINARI_DATASETS_PATH or ~/.minari/datasets; --root overrides).",
    )
    p.add_argument("--env", required=True, help="registered id, e.g. steergym/WidowXLiftCube-v0")
    p.add_argument("--episodes", type=cli_args.positive_int, required=True)
    p.add_argument("--quality", choices=QUALITIES, default="expert",
                   help="expert, noisy, failing, or mixed (40/30/30 of the three)")
    p.add_argument("--out", required=True, metavar="NAME", help="dataset id, e.g. steergym/lift/mixed-v0")
    p.add_argument("--seed", type=int, default=0, help="episode k resets with seed+k")
    p.add_argument("--obs-mode", choices=("state", "pixels", "pixels_state"), default=None)
    p.add_argument("--root", default=None, help="dataset folder (default: $MINARI_DATASETS_PATH)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that id")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    ray_cli.add_worker_arguments(p, "collection")


def cmd_collect(args: argparse.Namespace) -> int:
    import numpy as np

    from steergym.data.collect import collect
    from steergym.registry import entry

    try:
        entry(args.env)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    ray_cli.check_worker_arguments(args, "collect")
    env_kwargs = {"obs_mode": args.obs_mode} if args.obs_mode else {}
    if args.workers is None:
        folder, episodes = collect(
            args.env, args.episodes, args.quality, args.out, seed=args.seed, env_kwargs=env_kwargs,
            root=args.root, overwrite=args.overwrite, progress=not args.quiet,
        )
    else:
        from steergym.distributed import collect_distributed

        folder, episodes = collect_distributed(
            args.env, args.episodes, args.quality, args.out, seed=args.seed, workers=args.workers,
            address=args.address, env_kwargs=env_kwargs, root=args.root, overwrite=args.overwrite,
            progress=not args.quiet,
        )
    steps = sum(len(e) for e in episodes)
    success = np.mean([bool(e.successes.any()) for e in episodes])
    print(f"{args.out}: {len(episodes)} episodes, {steps} steps, success {success:.2f} -> {folder}")
    return 0


# ------------------------------------------------------------------------------ LeRobot datasets
def _add_export_lerobot(sub) -> None:
    p = sub.add_parser(
        "export-lerobot",
        help="write a steergym dataset as a LeRobotDataset (needs the lerobot extra)",
        description="Write a local steergym dataset as a LeRobotDataset folder that lerobot-train reads "
        "with --dataset.root=OUT (see steergym.data.lerobot_format).",
    )
    p.add_argument("dataset_id", metavar="DATASET_ID", help="steergym dataset id, e.g. steergym/lift/mixed-v0")
    p.add_argument("out", metavar="OUT", help="the LeRobot dataset folder to write")
    p.add_argument("--repo-id", default=None, help="LeRobot owner/name label (default from DATASET_ID)")
    p.add_argument("--root", default=None, help="steergym dataset folder (default: $MINARI_DATASETS_PATH)")
    p.add_argument("--fps", type=cli_args.positive_int, default=None, help="default: the env's control rate")
    p.add_argument("--proprio-dim", type=cli_args.positive_int, default=None,
                   help="split the state: observation.state = first P entries, the rest "
                   "observation.environment_state (7 for WidowX; ACT and Diffusion need it on state tasks)")
    p.add_argument("--overwrite", action="store_true", help="replace a LeRobot dataset already at OUT")


def cmd_export_lerobot(args: argparse.Namespace) -> int:
    from steergym.data.lerobot_format import export_to_lerobot

    try:
        out = export_to_lerobot(args.dataset_id, args.out, args.repo_id, datasets_root=args.root,
                                overwrite=args.overwrite, fps=args.fps, proprio_dim=args.proprio_dim)
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    print(f"{args.dataset_id} -> {out}")
    return 0


def _add_import_lerobot(sub) -> None:
    p = sub.add_parser(
        "import-lerobot",
        help="write a LeRobotDataset folder as a steergym dataset (needs the lerobot extra)",
        description="Write a local LeRobotDataset folder as a steergym dataset for the offline trainers.",
    )
    p.add_argument("lerobot_root", metavar="ROOT", help="the LeRobot dataset folder")
    p.add_argument("dataset_id", metavar="DATASET_ID", help="steergym dataset id to write")
    p.add_argument("--env", default=None, help="steergym env id (default: the one an export recorded)")
    p.add_argument("--repo-id", default=None, help="LeRobot owner/name label")
    p.add_argument("--root", default=None, help="steergym dataset folder (default: $MINARI_DATASETS_PATH)")
    p.add_argument("--overwrite", action="store_true", help="replace a steergym dataset of that id")


def cmd_import_lerobot(args: argparse.Namespace) -> int:
    from steergym.data.lerobot_format import import_from_lerobot

    try:
        import_from_lerobot(args.lerobot_root, args.dataset_id, repo_id=args.repo_id, datasets_root=args.root,
                            env_id=args.env, overwrite=args.overwrite)
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    print(f"{args.lerobot_root} -> {args.dataset_id}")
    return 0


# ------------------------------------------------------------------------------ dispatch
from steergym import ray_cli
from steergym.robot import cli as robot_cli

SUBCOMMANDS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], int]]] = {
    "list": (_add_list, cmd_list),
    "eval": (_add_eval, cmd_eval),
    "render-tasks": (_add_render_tasks, cmd_render_tasks),
    "collect": (_add_collect, cmd_collect),
    "export-lerobot": (_add_export_lerobot, cmd_export_lerobot),
    "import-lerobot": (_add_import_lerobot, cmd_import_lerobot),
    "train": (_add_train, cmd_train),
    "policies": (_add_policies, cmd_policies),
    "demo": (_add_demo, cmd_demo),
    "run": (ray_cli.add_run, ray_cli.cmd_run),
    "serve": (robot_cli.add_serve, robot_cli.cmd_serve),
    "robot": (robot_cli.add_robot, robot_cli.cmd_robot),
}


def build_parser() -> argparse.ArgumentParser:
    from steergym import __version__

    parser = _Parser(prog="steergym", description="Gymnasium tasks for steering pretrained robot policies.")
    parser.add_argument("--version", action="version", version=f"steergym {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add, _ in SUBCOMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `steergym` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return SUBCOMMANDS[args.command][1](args)
    except (ValueError, OSError) as exc:  # user mistakes: bad id/option/value, unwritable path
        message = " ".join(str(exc).split())  # one line, even for multi-line library messages
        print(f"steergym {args.command}: error: {message}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"steergym {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
