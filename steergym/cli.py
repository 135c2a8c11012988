"""The `steergym` command: a small dispatcher, one function per subcommand.

    steergym list [--json]
    steergym eval [--env ID] [--policy expert|random|NAME|DIR] [--episodes N] [--seed S]
                  [--video out.mp4] [--obs-mode MODE] [--json out.json]
                  [--steer vgps --critic DIR [--num-samples K] [--temperature T]]
    steergym policies [--json]
    steergym train bc --dataset NAME [--dataset NAME ...] --policy diffusion|flow --out DIR
                      [--steps N] [--resume] [--eval-every N] ...
    steergym train dsrl|residual --policy NAME|DIR --out DIR [--env ID] [--env-steps N] [--minutes M] ...
    steergym train sac --env ID --out DIR [--env-steps N] ...
    steergym train calql|cql --dataset NAME --out DIR [--env ID] [--pretrain-steps N] [--env-steps N]
                             [--resume] ...
    steergym train ogpo|dsrl-na --policy NAME|DIR --out DIR [--env ID] [--obs-mode M] [--env-steps N] [--resume] ...
    steergym train ptr --prior NAME [--prior NAME ...] --target NAME --out DIR [--demos 10] [--resume] ...
    steergym train vgps --dataset NAME [--dataset NAME ...] --out DIR [--steps N] [--resume] ...
    steergym demo [--policy NAME] [--env-steps N] [--minutes M] [--episodes N] [--seed S] [--out DIR]
    steergym render-tasks --out DIR [--size WxH]
    steergym collect --env ID --episodes N --quality expert|noisy|failing|mixed --out NAME
                     [--seed S] [--obs-mode MODE] [--root DIR] [--overwrite]
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

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one `--help` away)."""

    def error(self, message: str):  # noqa: D401  (argparse hook)
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------------ list
def _add_list(sub) -> None:
    p = sub.add_parser("list", help="registered environments", description="List the registered ids.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cmd_list(args: argparse.Namespace) -> int:
    """Every registered id with its instruction, horizon and the spaces of its default obs mode."""
    from steergym.bench.evaluate import make_env
    from steergym.registry import ENVS
    from steergym.registry import entry as registry_entry

    rows = []
    listed: dict[str, dict] = {}
    for entry in ENVS:
        if entry.family == "real" and entry.base_id is None:
            # the generic robot client takes whatever task its server serves: nothing to show offline
            rows.append({"id": entry.id, "family": entry.family, "instruction": "(the served task's)",
                         "horizon": None, "obs_shape": None, "action_shape": [7]})
            continue
        if entry.family in ("robosuite", "dmc"):
            # the adapters' spaces are known without importing (or installing) robosuite/dm_control,
            # and building those envs would make listing slow; dm_control's own limit ends its tasks
            from steergym.envs import dmc, robosuite_tasks

            info = (robosuite_tasks.describe(entry.kwargs["task"]) if entry.family == "robosuite"
                    else dmc.describe(entry.kwargs["domain"], entry.kwargs["task"]))
            rows.append({"id": entry.id, "family": entry.family, "instruction": info["instruction"],
                         "horizon": entry.max_episode_steps or dmc.HORIZON, "obs_shape": info["obs_shape"],
                         "action_shape": info["action_shape"]})
            continue
        if entry.family == "real":
            # a robot client's row is its simulated task's (the server must serve that task; the
            # tasks come first in ENVS), so listing never connects to a robot or builds a task twice
            rows.append({**listed[entry.base_id], "id": entry.id, "family": entry.family})
            continue
        env = make_env(entry.id)
        # a steered env ends when its base task's time limit does
        horizon = entry.max_episode_steps or registry_entry(entry.base_id).max_episode_steps
        try:
            rows.append(
                {
                    "id": entry.id,
                    "family": entry.family,
                    "instruction": getattr(env.unwrapped, "instruction", ""),
                    "horizon": horizon,
                    "obs_shape": _shape(env.observation_space),
                    "action_shape": _shape(env.action_space),
                }
            )
            listed[entry.id] = rows[-1]
        finally:
            env.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [
        [r["id"], r["instruction"], str(r["horizon"] or "(served)"), *map(_shape_text, (r["obs_shape"], r["action_shape"]))]
        for r in rows
    ]
    _print_table(["id", "instruction", "horizon", "obs", "action"], table)
    return 0


def _shape(space) -> Any:
    """JSON-able shape of a space: a list, or {key: list} for a Dict space."""
    if getattr(space, "shape", None) is not None:
        return list(space.shape)
    return {key: _shape(sub) for key, sub in getattr(space, "spaces", {}).items()}


def _shape_text(shape: list[int] | dict | None) -> str:
    if shape is None:
        return "(served)"
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

    p = sub.add_parser(
        "eval",
        help="evaluate a policy on a task",
        description="Success rate (Wilson 95% interval), mean return and length of a policy; "
        "episode i is reset with seed S+i.",
    )
    p.add_argument("--env", metavar="ID",
                   help="environment id (see `steergym list`); default: the policy's own task")
    p.add_argument("--policy", default="expert", metavar="POLICY",
                   help=f"{', '.join(POLICY_NAMES)}, a shipped policy name (see `steergym policies`) or a "
                   "checkpoint folder (default: expert)")
    p.add_argument("--episodes", type=_positive_int, default=20, metavar="N", help="episodes (default: 20)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of episode 0 (default: 0)")
    p.add_argument("--video", metavar="PATH", help="write the first episodes to an .mp4 or .gif")
    p.add_argument(
        "--video-episodes", type=_positive_int, default=3, metavar="K", help="episodes recorded (default: 3)"
    )
    p.add_argument("--obs-mode", choices=OBS_MODES, help="observation mode (default: the env's, state)")
    p.add_argument("--reward-type", choices=REWARD_TYPES, help="reward type (default: the env's, sparse)")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    p.add_argument("--steer", choices=("vgps",), help="vgps: re-rank the policy's samples with --critic")
    p.add_argument("--critic", metavar="DIR", help="V-GPS value function (steergym train vgps ... value_function)")
    p.add_argument("--num-samples", type=_positive_int, default=10, metavar="K", help="V-GPS candidates (default: 10)")
    p.add_argument("--temperature", type=float, default=0.0, help="V-GPS softmax temperature; 0: argmax")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_eval(args: argparse.Namespace) -> int:
    from steergym.bench.evaluate import evaluate

    env_kwargs: dict[str, Any] = {}
    if args.obs_mode:
        env_kwargs["obs_mode"] = args.obs_mode
    if args.reward_type:
        env_kwargs["reward_type"] = args.reward_type
    json_path = Path(args.json) if args.json else None
    if json_path is not None and json_path.is_dir():
        raise ValueError(f"--json {args.json!r} is a directory")
    policy, env_id = _eval_policy(args.policy, args.env, args.seed)
    if args.steer == "vgps":
        policy = _value_guided(policy, env_id, args)
    elif args.critic:
        raise ValueError("--critic needs --steer vgps")
    result = evaluate(
        env_id,
        policy=policy,
        episodes=args.episodes,
        seed=args.seed,
        video=args.video,
        env_kwargs=env_kwargs,
        progress=not args.quiet,
        video_episodes=args.video_episodes,
    )
    print(f"{result.env_id}  policy={result.policy}  episodes={result.episodes}  seed={result.seed}")
    print(
        f"success rate {result.success_rate:.3f} ({result.successes}/{result.episodes}), "
        f"95% CI [{result.ci_low:.3f}, {result.ci_high:.3f}]"
    )
    print(f"mean return {result.mean_return:.3f}, mean length {result.mean_length:.1f} steps")
    if result.video:
        print(f"video: {result.video}")
    if json_path is not None:
        _write_text_atomic(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"json: {json_path}")
    return 0


def _value_guided(policy: Any, env_id: str, args: argparse.Namespace) -> Any:
    """`policy` wrapped in V-GPS re-ranking with the value function in --critic, for `env_id`."""
    from steergym.algorithms.vgps import ValueFunction
    from steergym.policies.value_guided import ValueGuidedPolicy

    if not args.critic:
        raise ValueError("--steer vgps needs --critic DIR (a value function: steergym train vgps ...)")
    if isinstance(policy, str) or not callable(getattr(policy, "sample_n", None)):
        raise ValueError(f"--steer vgps needs a diffusion or flow policy to sample from, not {args.policy!r}")
    value = ValueFunction.load(args.critic)
    if env_id not in value.task_ids:
        raise ValueError(f"--critic {args.critic} knows tasks {list(value.task_ids)}, not {env_id!r}")
    steered = ValueGuidedPolicy(policy, value.critic(env_id), num_samples=args.num_samples,
                                temperature=args.temperature, seed=args.seed)
    steered.name = f"{getattr(policy, 'name', 'policy')}+vgps(K={args.num_samples})"
    return steered


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def _eval_policy(name: str, env_id: str | None, seed: int) -> tuple[Any, str]:
    """(policy for `evaluate`, env id): built-in names pass through; others are loaded."""
    from steergym.bench.evaluate import POLICY_NAMES

    if name in POLICY_NAMES:
        if env_id is None:
            raise ValueError(f"--env is required with --policy {name}")
        return name, env_id
    from steergym.policies.zoo import resolve_policy, shipped_policies

    if name not in shipped_policies() and not Path(name).is_dir():
        shipped = ", ".join(shipped_policies()) or "none"
        raise ValueError(f"unknown policy {name!r}: not one of {', '.join(POLICY_NAMES)}, a shipped policy "
                         f"({shipped}) or a checkpoint folder")
    policy, env_id = resolve_policy(name, env_id, seed=seed)
    policy.name = name
    return policy, env_id


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
def _add_train(sub) -> None:
    from steergym.algorithms.bc import BCConfig
    from steergym.policies.config import PolicyConfig

    p = sub.add_parser("train", help="train a policy", description="Train a policy; see the trainer.")
    trainers = p.add_subparsers(dest="trainer", metavar="TRAINER", parser_class=_Parser)
    trainers.required = True
    bc = trainers.add_parser(
        "bc", help="behaviour cloning of a diffusion or flow policy",
        description="Behaviour-clone a diffusion or flow policy on local datasets. The run folder gets "
        "run.json, last/ (resumable state), policy/ (the EMA policy checkpoint), progress.csv, eval.csv "
        "and TensorBoard events in tb/.",
    )
    defaults, pdefaults = BCConfig(), PolicyConfig()
    bc.add_argument("--dataset", action="append", required=True, metavar="NAME",
                    help="dataset id (repeat for several; several tasks -> a task-conditioned policy)")
    bc.add_argument("--policy", choices=("diffusion", "flow"), default="diffusion")
    bc.add_argument("--out", required=True, metavar="DIR", help="run folder")
    bc.add_argument("--resume", action="store_true", help="continue the run in --out")
    bc.add_argument("--steps", type=_positive_int, default=defaults.steps)
    bc.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size)
    bc.add_argument("--lr", type=float, default=defaults.lr)
    bc.add_argument("--seed", type=int, default=defaults.seed)
    bc.add_argument("--horizon", type=_positive_int, default=pdefaults.horizon, help="action chunk length H")
    bc.add_argument("--hidden-dim", type=_positive_int, default=pdefaults.hidden_dim)
    bc.add_argument("--num-blocks", type=_positive_int, default=pdefaults.num_blocks)
    bc.add_argument("--sample-steps", type=_positive_int, default=pdefaults.sample_steps,
                    help="DDIM / Euler steps at sampling time")
    bc.add_argument("--train-steps", type=_positive_int, default=pdefaults.train_steps,
                    help="diffusion steps K of the DDPM schedule")
    bc.add_argument("--conditioned", action="store_true", default=None,
                    help="condition on the task (default: when the datasets span several tasks)")
    bc.add_argument("--success-only", action="store_true", help="train on successful episodes only")
    bc.add_argument("--max-episodes", type=_positive_int, default=None, help="first K episodes per dataset")
    bc.add_argument("--eval-every", type=int, default=defaults.eval_every, metavar="N",
                    help="evaluate every N steps on the datasets' tasks (0: never)")
    bc.add_argument("--eval-episodes", type=_positive_int, default=defaults.eval_episodes)
    bc.add_argument("--save-every", type=_positive_int, default=defaults.save_every)
    bc.add_argument("--threads", type=_positive_int, default=None,
                    help="torch CPU threads (default: torch's); 1 avoids oversubscription next to other jobs")
    bc.add_argument("--root", default=None, help="dataset folder (default: $MINARI_DATASETS_PATH)")
    bc.add_argument("--quiet", action="store_true", help="no progress bar")
    for method, text in (
        ("dsrl", "DSRL: SAC in the latent-noise space of a frozen diffusion/flow policy"),
        ("residual", "residual SAC: bounded corrections to a frozen policy's actions"),
        ("sac", "SAC from scratch on the task (the baseline; no base policy)"),
    ):
        _add_steering_trainer(trainers, method, text)
    for method, text in (
        ("calql", "Cal-QL: offline pre-training on a dataset, then online fine-tuning (calibrated CQL)"),
        ("cql", "CQL: the same trainer with Cal-QL's calibration off"),
    ):
        _add_calql_trainer(trainers, method, text)
    for method, text in (
        ("ogpo", "OGPO: fine-tune all weights of a diffusion/flow policy (off-policy critics, PPO over "
                 "the denoising chain)"),
        ("dsrl-na", "DSRL-NA: noise-aliased DSRL (Q on executed chunks, distilled into the noise space)"),
    ):
        _add_chunk_trainer(trainers, method, text)
    _add_multitask_trainers(trainers)


def _add_multitask_trainers(trainers) -> None:
    from steergym.algorithms.ptr import ptr_calql_config
    from steergym.algorithms.vgps import vgps_calql_config

    ptr, vgps = ptr_calql_config(), vgps_calql_config()
    p = trainers.add_parser(
        "ptr", help="PTR: multi-task CQL pre-training, then a new task from a few demos",
        description="Pre-train a task-conditioned CQL agent on the prior datasets (one task each, the env id "
        "in their metadata), adapt it to the target dataset's first --demos episodes mixed into every batch "
        "at --target-ratio, evaluate it on the target task, optionally fine-tune online. The run folder gets "
        "run.json, offline.csv, checkpoints/offline (--resume continues from it) and agent/.")
    p.add_argument("--prior", action="append", required=True, metavar="NAME", help="prior dataset id (repeat)")
    p.add_argument("--target", required=True, metavar="NAME", help="dataset id of the new task's demos")
    p.add_argument("--demos", type=_positive_int, default=10, help="target episodes used (default: 10)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--pretrain-steps", type=_non_negative_int, default=20_000, metavar="N")
    p.add_argument("--adapt-steps", type=_non_negative_int, default=10_000, metavar="N")
    p.add_argument("--env-steps", type=_non_negative_int, default=0, metavar="N",
                   help="online fine-tuning env steps on the target task (default: 0, none)")
    p.add_argument("--target-ratio", type=float, default=0.1, help="target rows per batch (default: 0.1)")
    p.add_argument("--batch-size", type=_positive_int, default=ptr.batch_size)
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=list(ptr.critic_hidden), metavar="W")
    p.add_argument("--cql-alpha", type=float, default=ptr.cql_alpha)
    p.add_argument("--discount", type=float, default=ptr.discount)
    p.add_argument("--eval-episodes", type=_positive_int, default=20, metavar="N")
    p.add_argument("--eval-every", type=_positive_int, default=2_000, metavar="N", help="online env steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    p.add_argument("--root", default=None, help="dataset folder (default: $MINARI_DATASETS_PATH)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = trainers.add_parser(
        "vgps", help="V-GPS: a task-conditioned Cal-QL value function for re-ranking a generalist",
        description="Train a V-GPS value function on mixed-quality datasets (one task each, sparse success "
        "rewards). The run folder gets run.json, offline.csv, checkpoints/offline (--resume continues from "
        "it) and value_function/, which `steergym eval --steer vgps --critic DIR/value_function` uses.")
    p.add_argument("--dataset", action="append", required=True, metavar="NAME", help="dataset id (repeat)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--steps", type=_positive_int, default=10_000, help="offline gradient steps (default: 10000)")
    p.add_argument("--batch-size", type=_positive_int, default=vgps.batch_size)
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=list(vgps.critic_hidden), metavar="W")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    p.add_argument("--root", default=None, help="dataset folder (default: $MINARI_DATASETS_PATH)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _train_multitask(args: argparse.Namespace) -> int:
    """`steergym train ptr|vgps`."""
    from steergym.algorithms.multitask_runs import run_ptr, run_vgps
    from steergym.algorithms.ptr import ptr_calql_config
    from steergym.algorithms.vgps import vgps_calql_config

    hidden = tuple(args.hidden)
    if args.trainer == "vgps":
        config = vgps_calql_config(batch_size=args.batch_size, critic_hidden=hidden, actor_hidden=hidden,
                                   log_every=max(1, min(1000, args.steps // 100)))
        value = run_vgps(args.dataset, args.out, args.steps, config=config, seed=args.seed, root=args.root,
                         resume=args.resume, progress=not args.quiet)
        print(f"{args.out}: V-GPS value function over {len(value.task_ids)} task(s), "
              f"{value.ptr.agent.offline_steps:,d} steps")
        print(f"value function: {Path(args.out) / 'value_function'}  (steergym eval --policy NAME --env ID "
              f"--steer vgps --critic {Path(args.out) / 'value_function'})")
        return 0
    steps = args.pretrain_steps + args.adapt_steps
    calql = ptr_calql_config(batch_size=args.batch_size, critic_hidden=hidden, cql_alpha=args.cql_alpha,
                             discount=args.discount, log_every=max(1, min(1000, steps // 100)))
    ptr = run_ptr(args.prior, args.target, args.out, pretrain_steps=args.pretrain_steps,
                  adapt_steps=args.adapt_steps, env_steps=args.env_steps, demos=args.demos,
                  calql=calql, target_ratio=args.target_ratio, seed=args.seed,
                  eval_episodes=args.eval_episodes, eval_every=args.eval_every, root=args.root,
                  resume=args.resume, progress=not args.quiet)
    run = json.loads((Path(args.out) / "run.json").read_text())
    print(f"{args.out}: PTR, {ptr.agent.offline_steps:,d} offline steps over {len(ptr.task_ids)} tasks "
          f"+ {ptr.agent.online.num_timesteps:,d} env steps")
    print(f"{run['target_task']}: success {run['offline_eval']['success_rate']:.2f} after adaptation "
          f"({run['offline_eval']['episodes']} episodes)"
          + (f", {ptr.agent.curve[-1]['success_rate']:.2f} after online fine-tuning" if ptr.agent.curve else ""))
    print(f"agent: {Path(args.out) / 'agent'}  (PTR.load)")
    return 0


def _add_chunk_trainer(trainers, method: str, text: str) -> None:
    from steergym.envs.widowx import OBS_MODES

    p = trainers.add_parser(
        method, help=text,
        description=f"{text}. The budget counts primitive env steps; the reward is the task's minus 1 "
        "per step (DSRL's shaping). The run folder gets run.json, progress.csv, eval.csv, TensorBoard "
        "events, checkpoints/latest (the full trainer state; --resume continues from it) and agent/"
        + (" (agent/policy is the fine-tuned policy: steergym eval --policy RUN/agent/policy)."
           if method == "ogpo" else "."),
    )
    p.add_argument("--policy", default="widowx-lift-diffusion", metavar="NAME|DIR",
                   help="base policy: a shipped name (steergym policies) or a checkpoint folder "
                   "(default: widowx-lift-diffusion)")
    p.add_argument("--env", metavar="ID", help="task id (default: the base policy's own task)")
    p.add_argument("--obs-mode", choices=OBS_MODES, default=None,
                   help="observation mode of the task, the one the policy was trained on (default: state); "
                   "pixels / pixels_state train conv-encoder critics")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--env-steps", type=_positive_int, default=200_000,
                   help="total budget in env steps (default: 200000)")
    p.add_argument("--eval-every", type=_positive_int, default=10_000, metavar="N", help="env steps between evaluations")
    p.add_argument("--eval-episodes", type=_positive_int, default=20, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--learning-starts", type=_non_negative_int, default=None, metavar="N",
                   help="warm-up agent steps (chunks) before updates (default: the paper's)")
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=None, metavar="W",
                   help="critic hidden widths (default: the paper's, GPU-sized)")
    if method == "ogpo":
        p.add_argument("--group-size", type=_positive_int, default=None, help="chains per state (default: 32)")
        p.add_argument("--no-success-bc", action="store_true", help="turn success-buffer regularisation off")
        p.add_argument("--no-conservative", action="store_true", help="turn conservative advantages off")
        p.add_argument("--chi2", action="store_true", help="chi^2 regularisation (needs --no-conservative)")
        p.add_argument("--q-vr", action="store_true", help="Q-variance reduction of the TD target")
    else:
        p.add_argument("--utd", type=_positive_int, default=None, help="critic and actor updates per agent step")
    p.add_argument("--config", default="{}", metavar="JSON",
                   help="further config overrides as JSON, e.g. '{\"critic_lr\": 1e-4}'")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_calql_trainer(trainers, method: str, text: str) -> None:
    from steergym.algorithms.calql import CalQLConfig

    defaults = CalQLConfig()
    p = trainers.add_parser(
        method, help=text,
        description=f"{text}. Offline gradient steps on the dataset, then online env steps mixing the "
        "dataset with finished online episodes. The run folder gets run.json, offline.csv, progress.csv, "
        "eval.csv, TensorBoard events in tb/, pretrained/ (the agent after pre-training), "
        "checkpoints/latest (agent + replay buffer; --resume continues from it) and agent/.",
    )
    p.add_argument("--dataset", required=True, metavar="NAME", help="dataset id (steergym collect ...)")
    p.add_argument("--env", metavar="ID", help="task id (default: the dataset's)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--pretrain-steps", type=_non_negative_int, default=10_000, metavar="N",
                   help="offline gradient steps (default: 10000)")
    p.add_argument("--env-steps", type=_non_negative_int, default=10_000, metavar="N",
                   help="online env steps (transitions); 0: offline only (default: 10000)")
    p.add_argument("--eval-every", type=_positive_int, default=2_000, metavar="N",
                   help="online env steps between evaluations (default: 2000; Cal-QL's scripts)")
    p.add_argument("--eval-episodes", type=_positive_int, default=20, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-envs", type=_positive_int, default=1, help="parallel training envs (a vector env)")
    p.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size)
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=list(defaults.critic_hidden), metavar="W",
                   help="hidden layer widths of actor and critics")
    p.add_argument("--cql-alpha", type=float, default=defaults.cql_alpha, help="weight of the CQL term")
    p.add_argument("--discount", type=float, default=defaults.discount)
    p.add_argument("--online-ratio", type=float, default=defaults.online_ratio,
                   help="fraction of each online-phase batch from online data (default: 0.5)")
    p.add_argument("--utd", type=_positive_int, default=defaults.utd, help="updates per online env step")
    p.add_argument("--reward-scale", type=float, default=defaults.reward_scale, help="r' = scale * r + bias")
    p.add_argument("--reward-bias", type=float, default=defaults.reward_bias)
    p.add_argument("--failure-reward", type=float, default=defaults.failure_reward, metavar="R",
                   help="raw reward of a failed sparse episode: such episodes get r'/(1-discount) as reference "
                   "value (Cal-QL's sparse rule; e.g. 0 for 0/1 success rewards)")
    p.add_argument("--no-normalize-obs", action="store_true",
                   help="feed raw observations (default: normalised with the dataset's mean and std)")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    p.add_argument("--root", default=None, help="dataset folder (default: $MINARI_DATASETS_PATH)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _add_steering_trainer(trainers, method: str, text: str) -> None:
    from steergym.algorithms.steering import SteeringConfig

    defaults = SteeringConfig()
    p = trainers.add_parser(
        method, help=text,
        description=f"{text}. Stable-Baselines3 SAC; the budget counts primitive env steps (one DSRL "
        "step is a chunk of H). The run folder gets run.json, eval.csv, progress.csv, TensorBoard "
        "events, checkpoints/latest and policy/ (a steered policy: steergym eval --policy RUN/policy).",
    )
    p.add_argument("--env", metavar="ID", help="task id (default: the base policy's own task)")
    if method != "sac":
        p.add_argument("--policy", default="widowx-carrot-diffusion", metavar="NAME|DIR",
                       help="base policy: a shipped name (steergym policies) or a checkpoint folder "
                       "(default: widowx-carrot-diffusion)")
    else:
        p.add_argument("--normalize-like", metavar="NAME|DIR", default=None,
                       help="normalise observations with this base policy's statistics, as dsrl and residual "
                       "do with theirs (compare methods on equal inputs; default: raw observations)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder")
    p.add_argument("--env-steps", type=_positive_int, default=50_000, help="budget in env steps (default: 50000)")
    p.add_argument("--minutes", type=float, default=None, help="also stop after this many minutes")
    p.add_argument("--eval-every", type=_positive_int, default=5_000, metavar="N", help="env steps between evaluations")
    p.add_argument("--eval-episodes", type=_positive_int, default=20, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    if method == "dsrl":
        p.add_argument("--noise-bound", type=float, default=defaults.noise_bound, help="b: noise in [-b, b]")
    if method == "residual":
        p.add_argument("--scale", type=float, default=defaults.residual_scale, help="correction scale")
    p.add_argument("--gradient-steps", type=_positive_int, default=defaults.gradient_steps, help="updates per agent step (UTD)")
    p.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.learning_rate)
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=list(defaults.hidden), metavar="W",
                   help="hidden layer widths of actor and critics")
    p.add_argument("--num-envs", type=_positive_int, default=defaults.num_envs, help="parallel training envs")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    p.add_argument("--obs-mode", default=None, help="observation mode of the task (default: state)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from steergym.algorithms.bc import BCConfig, train_bc

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.trainer in ("calql", "cql"):
        return _train_calql(args)
    if args.trainer in ("ogpo", "dsrl-na"):
        return _train_chunk(args)
    if args.trainer in ("ptr", "vgps"):
        return _train_multitask(args)
    if args.trainer != "bc":
        return _train_steering(args)
    config = BCConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      eval_every=args.eval_every, eval_episodes=args.eval_episodes, save_every=args.save_every)
    policy_config = {"horizon": args.horizon, "hidden_dim": args.hidden_dim, "num_blocks": args.num_blocks,
                     "sample_steps": args.sample_steps, "train_steps": args.train_steps}
    trainer = train_bc(args.dataset, args.policy, args.out, policy_config=policy_config, config=config,
                       conditioned=args.conditioned, success_only=args.success_only,
                       max_episodes=args.max_episodes, root=args.root, resume=args.resume,
                       progress=not args.quiet)
    print(f"{args.out}: {trainer.step} steps, final loss {trainer.last_loss:.4f}, "
          f"{len(trainer.data)} samples over {len(trainer.data.task_ids)} task(s)")
    for row in trainer.evaluations[-1:]:
        print(f"last evaluation (step {row['step']}): mean success {row['mean_success']:.2f}")
    print(f"policy: {Path(args.out) / 'policy'}  (steergym eval --policy {Path(args.out) / 'policy'})")
    return 0


def _train_steering(args: argparse.Namespace) -> int:
    from steergym.algorithms.steering import SteeringConfig, observation_stats, train_steering
    from steergym.policies.zoo import resolve_policy

    overrides = {"gradient_steps": args.gradient_steps, "batch_size": args.batch_size,
                 "learning_rate": args.lr, "hidden": tuple(args.hidden), "num_envs": args.num_envs}
    if args.trainer == "dsrl":
        overrides["noise_bound"] = args.noise_bound
    if args.trainer == "residual":
        overrides["residual_scale"] = args.scale
    config = SteeringConfig(**overrides)
    policy, env_id = None, args.env
    if args.trainer != "sac":
        policy, env_id = resolve_policy(args.policy, args.env, seed=args.seed)
        policy.name = args.policy
    elif env_id is None:
        raise ValueError("--env is required for sac (there is no base policy to take the task from)")
    obs_stats = None
    if args.trainer == "sac" and args.normalize_like is not None:
        reference, _ = resolve_policy(args.normalize_like, env_id, seed=args.seed)
        obs_stats = observation_stats(reference)
        if obs_stats is None:
            raise ValueError(f"--normalize-like {args.normalize_like}: that policy has no observation "
                             "normaliser (an image-observation policy?)")
    env_kwargs = {"obs_mode": args.obs_mode} if args.obs_mode else {}
    result = train_steering(env_id, args.trainer, policy, config, env_steps=args.env_steps, obs_stats=obs_stats,
                            time_budget_s=None if args.minutes is None else 60.0 * args.minutes,
                            eval_every=args.eval_every, eval_episodes=args.eval_episodes, seed=args.seed,
                            out=args.out, progress=not args.quiet, env_kwargs=env_kwargs)
    first, last = result.curve[0], result.curve[-1]
    print(f"{args.out}: {args.trainer} on {env_id}, {result.env_steps:,d} env steps in {result.wall_s:.0f} s")
    print(f"eval success ({args.eval_episodes} episodes): {first['success_rate']:.2f} at start -> "
          f"{last['success_rate']:.2f} at the end")
    policy_dir = Path(args.out) / "policy"
    print(f"policy: {policy_dir}  (steergym eval --policy {policy_dir})")
    return 0


def _train_chunk(args: argparse.Namespace) -> int:
    """`steergym train ogpo|dsrl-na`: build or resume the agent, learn up to --env-steps, save agent/."""
    from steergym.algorithms.dsrl_na import DSRLNA, DSRLNAConfig
    from steergym.algorithms.ogpo import OGPO, OGPOConfig
    from steergym.algorithms.steering import SteeringConfig, make_task_env
    from steergym.policies.zoo import resolve_policy

    cls, config_cls = (OGPO, OGPOConfig) if args.trainer == "ogpo" else (DSRLNA, DSRLNAConfig)
    out, latest = Path(args.out), Path(args.out) / "checkpoints" / "latest"
    if args.resume and not latest.is_dir():
        raise ValueError(f"--resume: {latest} does not exist (no checkpoint to continue from)")
    if not args.resume and latest.exists():
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    try:
        overrides = json.loads(args.config)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config is not valid JSON ({exc}): {args.config!r}") from None
    if not isinstance(overrides, dict):
        raise ValueError(f"--config must be a JSON object, got {args.config!r}")
    named = {"learning_starts": args.learning_starts, "batch_size": args.batch_size}
    named["critic_hidden" if args.trainer == "ogpo" else "hidden"] = tuple(args.hidden) if args.hidden else None
    if args.trainer == "ogpo":
        named.update(group_size=args.group_size, chi2=args.chi2 or None, q_variance_reduction=args.q_vr or None)
        if args.no_success_bc:
            named["success_buffer_bc"] = False
        if args.no_conservative or args.chi2:
            named["conservative_advantages"] = False
    else:
        named["utd"] = args.utd
    overrides.update({k: v for k, v in named.items() if v is not None})
    policy, env_id = resolve_policy(args.policy, args.env, seed=args.seed)
    shaping = SteeringConfig()  # DSRL's reward shaping: reward - 1 per step
    env_kwargs = {"obs_mode": args.obs_mode} if args.obs_mode else {}
    train_env, eval_env = (make_task_env(env_id, shaping, **env_kwargs) for _ in range(2))
    try:
        if args.resume:
            agent = cls.load(latest, env=train_env, **({} if cls is OGPO else {"policy": policy}))
        else:
            agent = cls(train_env, policy, config_cls(**overrides), seed=args.seed)
        remaining = args.env_steps - agent.num_timesteps
        if remaining > 0:
            agent.learn(remaining, eval_env=eval_env, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
                        out=out, progress=not args.quiet, reset_num_timesteps=False)
        agent.save(out / "agent")
    finally:
        train_env.close()
        eval_env.close()
    curve = agent.eval_history
    print(f"{out}: {args.trainer} on {env_id}, {agent.num_timesteps:,d} env steps, {agent.updates:,d} updates")
    if curve:
        print(f"eval success ({args.eval_episodes} episodes): {curve[0]['success_rate']:.2f} at the first "
              f"evaluation -> {curve[-1]['success_rate']:.2f} at the last")
    if args.trainer == "ogpo":
        print(f"policy: {out / 'agent' / 'policy'}  (steergym eval --policy {out / 'agent' / 'policy'})")
    return 0


def _train_calql(args: argparse.Namespace) -> int:
    import time

    import gymnasium as gym

    from steergym.algorithms.calql import CalQL, CalQLConfig
    from steergym.algorithms.run_files import append_csv
    from steergym.bench.evaluate import make_env
    from steergym.data import load_transitions

    out = Path(args.out)
    data = load_transitions(args.dataset, root=args.root)
    env_id = args.env or data.metadata.get("env_id")
    if not env_id:
        raise ValueError(f"dataset {args.dataset!r} names no env: pass --env")
    latest, pretrained = out / "checkpoints" / "latest", out / "pretrained"
    if args.resume:
        source = latest if latest.is_dir() else pretrained if pretrained.is_dir() else None
        if source is None:
            raise ValueError(f"--resume: {out} holds no checkpoint (checkpoints/latest or pretrained/)")
        agent = CalQL.load(source)
        if agent.config.calibrated != (args.trainer == "calql"):
            raise ValueError(f"--resume: {source} is a {'calql' if agent.config.calibrated else 'cql'} run, "
                             f"not {args.trainer}")
    else:
        if latest.exists() or pretrained.exists():
            raise ValueError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
        hidden = tuple(args.hidden)
        config = CalQLConfig(calibrated=args.trainer == "calql", batch_size=args.batch_size, actor_hidden=hidden,
                             critic_hidden=hidden, cql_alpha=args.cql_alpha, discount=args.discount,
                             online_ratio=args.online_ratio, utd=args.utd, reward_scale=args.reward_scale,
                             reward_bias=args.reward_bias, failure_reward=args.failure_reward,
                             normalize_observations=not args.no_normalize_obs,
                             log_every=min(1000, max(1, args.pretrain_steps // 100 or 1)))
        probe = make_env(env_id)
        try:
            agent = CalQL(probe, config, seed=args.seed)
        finally:
            probe.close()
    start = time.perf_counter()
    remaining = max(0, args.pretrain_steps - agent.offline_steps) if agent.online.num_timesteps == 0 else 0
    if remaining:
        before = len(agent.history)
        agent.pretrain(data, remaining, progress=not args.quiet)
        out.mkdir(parents=True, exist_ok=True)
        for row in agent.history[before:]:
            append_csv(out / "offline.csv", row)
        agent.save(pretrained)
    else:
        agent.set_offline_data(data, f"steergym train {args.trainer}")
    if args.env_steps > agent.online.num_timesteps:
        if args.num_envs > 1:
            env = gym.make_vec(env_id, num_envs=args.num_envs)
        else:
            env = make_env(env_id)
        try:
            agent.learn(env, args.env_steps - agent.online.num_timesteps, eval_every=args.eval_every,
                        eval_episodes=args.eval_episodes, out=out, progress=not args.quiet,
                        reset_num_timesteps=False)  # a resumed run continues to --env-steps in all
        finally:
            env.close()
    else:
        agent.save(out / "agent", replay=False)
    wall = time.perf_counter() - start
    summary = (f"{out}: {args.trainer} on {env_id}, {agent.offline_steps:,d} offline steps + "
               f"{agent.online.num_timesteps:,d} env steps ({agent.step:,d} updates) in {wall:.0f} s")
    if agent.curve:
        first, last = agent.curve[0], agent.curve[-1]
        summary += (f"; eval success ({args.eval_episodes} episodes) {first['success_rate']:.2f} after "
                    f"pre-training -> {last['success_rate']:.2f}")
    print(summary)
    print(f"agent: {out / 'agent'}  (CalQL.load)")
    return 0


# ------------------------------------------------------------------------------ demo
def _add_demo(sub) -> None:
    from steergym.bench.demo import DEFAULTS

    p = sub.add_parser(
        "demo", help="steer a shipped diffusion policy with DSRL on the CPU (before/after, video, plot)",
        description="Evaluate a shipped base policy, train DSRL (SB3 SAC in its noise space) for a budget "
        "in env steps, evaluate the steered policy on the same reset seeds, and write results.json, "
        "learning_curve.png and side_by_side.mp4 to --out. About 6-8 minutes on 2 cores at the defaults; "
        "deterministic given --seed.",
    )
    p.add_argument("--policy", default=DEFAULTS.policy, metavar="NAME|DIR",
                   help=f"shipped diffusion/flow policy or checkpoint folder (default: {DEFAULTS.policy})")
    p.add_argument("--env-steps", type=_positive_int, default=None, metavar="N",
                   help=f"DSRL training budget in env steps (default: {DEFAULTS.env_steps:,d}, "
                   "or none when only --minutes is given)")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock training budget; alone it replaces the env-step budget, with --env-steps "
                   "training stops at whichever ends first (not reproducible: depends on the machine's load)")
    p.add_argument("--utd", type=_positive_int, default=DEFAULTS.gradient_steps,
                   help=f"SAC updates per agent step (default: {DEFAULTS.gradient_steps})")
    p.add_argument("--episodes", type=_positive_int, default=DEFAULTS.episodes,
                   help=f"evaluation episodes, reset seeds 0..N-1 (default: {DEFAULTS.episodes})")
    p.add_argument("--out", default="steergym-demo", metavar="DIR", help="output folder (default: steergym-demo)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    p.add_argument("--video-episodes", type=_positive_int, default=3, metavar="K")
    p.add_argument("--threads", type=_positive_int, default=DEFAULTS.threads,
                   help=f"torch CPU threads (default: {DEFAULTS.threads}, fixed so runs repeat exactly)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_demo(args: argparse.Namespace) -> int:
    from steergym.bench.demo import DEFAULTS, run_demo

    if args.minutes is not None and not args.minutes > 0:
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    env_steps = args.env_steps if args.env_steps is not None or args.minutes is not None else DEFAULTS.env_steps
    run_demo(args.policy, env_steps=env_steps, minutes=args.minutes, episodes=args.episodes, out=args.out,
             seed=args.seed, video_episodes=args.video_episodes, progress=not args.quiet, threads=args.threads,
             gradient_steps=args.utd)
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
    p.add_argument(
        "--size", type=_size, default=(240, 320), metavar="WxH", help="width x height (default: 320x240)"
    )
    p.add_argument("--env", action="append", metavar="ID", help="only this id (repeatable; default: all)")


def cmd_render_tasks(args: argparse.Namespace) -> int:
    import imageio.v3 as iio

    from steergym.bench.evaluate import make_env
    from steergym.registry import env_ids

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out!r} is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    for env_id in args.env or env_ids():
        env = make_env(env_id, render_mode="rgb_array", render_size=args.size)
        try:
            env.reset(seed=0)
            name = env_id.split("/")[-1]
            images = {f"{name}.png": env.render()}
            if hasattr(env.unwrapped, "render_camera_image"):
                third = env.unwrapped.render_camera_image("third_person", args.size)
                images[f"{name}_third_person.png"] = third
        finally:
            env.close()
        for filename, image in images.items():
            iio.imwrite(out / filename, image, optimize=True)
            print(out / filename)
    return 0


def _size(text: str) -> tuple[int, int]:
    """ "320x240" (width x height) -> (240, 320), the (height, width) the envs take."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 320x240, got {text!r}") from None
    if min(width, height) < 8:
        raise argparse.ArgumentTypeError(f"width and height must be >= 8 pixels, got {text!r}")
    return height, width


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
    p.add_argument("--episodes", type=_positive_int, required=True)
    p.add_argument("--quality", choices=QUALITIES, default="expert",
                   help="expert, noisy, failing, or mixed (40/30/30 of the three)")
    p.add_argument("--out", required=True, metavar="NAME", help="dataset id, e.g. steergym/lift/mixed-v0")
    p.add_argument("--seed", type=int, default=0, help="episode k resets with seed+k")
    p.add_argument("--obs-mode", choices=("state", "pixels", "pixels_state"), default=None)
    p.add_argument("--root", default=None, help="dataset folder (default: $MINARI_DATASETS_PATH)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that id")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_collect(args: argparse.Namespace) -> int:
    import numpy as np

    from steergym.data.collect import collect
    from steergym.registry import entry

    try:
        entry(args.env)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    env_kwargs = {"obs_mode": args.obs_mode} if args.obs_mode else {}
    folder, episodes = collect(
        args.env, args.episodes, args.quality, args.out, seed=args.seed, env_kwargs=env_kwargs,
        root=args.root, overwrite=args.overwrite, progress=not args.quiet,
    )
    steps = sum(len(e) for e in episodes)
    success = np.mean([bool(e.successes.any()) for e in episodes])
    print(f"{args.out}: {len(episodes)} episodes, {steps} steps, success {success:.2f} -> {folder}")
    return 0


# ------------------------------------------------------------------------------ dispatch
from steergym.robot import cli as robot_cli  # noqa: E402 - serve / robot live beside the robot link

SUBCOMMANDS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], int]]] = {
    "list": (_add_list, cmd_list),
    "eval": (_add_eval, cmd_eval),
    "render-tasks": (_add_render_tasks, cmd_render_tasks),
    "collect": (_add_collect, cmd_collect),
    "train": (_add_train, cmd_train),
    "policies": (_add_policies, cmd_policies),
    "demo": (_add_demo, cmd_demo),
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
