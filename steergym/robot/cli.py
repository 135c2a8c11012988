"""`steergym serve` (the robot server) and `steergym robot ...` (operator commands), for `steergym.cli`.

    steergym serve [--backend sim|interbotix] [--task ID] [--host 127.0.0.1] [--port 5566]
                   [--token-file ~/.config/steergym/robot_token] [--log-dir DIR] [safety options]
    steergym robot status|estop|clear-estop [--host H] [--port P] [--token-file F]
    steergym robot export [LOG_DIR] --dataset-id NAME [--root DIR] [--overwrite]

The episode journals go to `steergym.paths.robot_log_dir()` unless --log-dir / LOG_DIR says otherwise:
$STEERGYM_DATA_DIR/robot_logs, else $XDG_DATA_HOME/steergym/robot_logs (~/.local/share/...).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
from pathlib import Path

from steergym.robot.protocol import DEFAULT_PORT

# Each command imports what it runs (the server, the backends, MuJoCo) when it runs: `steergym.cli`
# builds this parser on every start.

DEFAULT_TASK = "steergym/WidowXPutCarrotOnPlate-v0"


def ensure_token_file(path: str | os.PathLike) -> Path:
    """The token file at `path`; created (mode 0600, a fresh 256-bit token) if it does not exist."""
    path = Path(path).expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return path


def _link_options(p: argparse.ArgumentParser) -> None:
    from steergym.robot.client import DEFAULT_TOKEN_FILE

    p.add_argument("--host", default="127.0.0.1", help="address (serve: bind; default loopback only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--token-file", default=str(DEFAULT_TOKEN_FILE),
                   help="shared token (serve creates it, mode 0600, if missing); copy it to the client machine")


def add_serve(sub) -> None:
    from steergym.robot.safety import SafetyLimits

    d = SafetyLimits()
    p = sub.add_parser("serve", help="run the robot server (sim twin or real WidowX)",
                       description="Serve one WidowX (the simulated twin, or the real arm through Interbotix) to "
                       "one steergym client at a time, with server-side safety limits and an episode log.")
    p.add_argument("--backend", choices=("sim", "interbotix"), default="sim")
    p.add_argument("--task", default=DEFAULT_TASK, help=f"the served task (default {DEFAULT_TASK})")
    p.add_argument("--obs-mode", choices=("state", "pixels", "pixels_state"), default=None,
                   help="observation mode (default: state for sim, pixels for interbotix)")
    p.add_argument("--image-size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    p.add_argument("--wrist-camera", action="store_true", help="sim: add the wrist camera (pixels_state)")
    p.add_argument("--camera-index", type=int, default=0, help="interbotix: OpenCV camera index")
    _link_options(p)
    p.add_argument("--log-dir", default=None, help="episode journals go here (default: $STEERGYM_DATA_DIR/"
                   "robot_logs, else $XDG_DATA_HOME/steergym/robot_logs, XDG_DATA_HOME being ~/.local/share if unset)")
    p.add_argument("--fsync", action="store_true", help="force each log record to disk (survives power loss)")
    p.add_argument("--exclusive", action="store_true",
                   help="refuse a second client while one is connected (default: the newer client pre-empts)")
    g = p.add_argument_group("safety (enforced on every step, whatever the client sends)")
    g.add_argument("--workspace-low", type=float, nargs=3, default=d.workspace_low, metavar=("X", "Y", "Z"))
    g.add_argument("--workspace-high", type=float, nargs=3, default=d.workspace_high, metavar=("X", "Y", "Z"))
    g.add_argument("--max-delta-pos", type=float, default=d.max_delta_pos_m, help="metres per step")
    g.add_argument("--max-delta-rot", type=float, default=d.max_delta_rot_rad, help="rad per step")
    g.add_argument("--joint-margin", type=float, default=d.joint_margin_rad, help="rad from a joint limit = fault")
    g.add_argument("--max-rate-hz", type=float, default=d.max_rate_hz, help="step rate limit (0: none)")
    g.add_argument("--client-timeout", type=float, default=d.client_timeout_s,
                   help="seconds of client silence before the arm returns to its safe pose")


def cmd_serve(args: argparse.Namespace) -> int:
    from steergym.robot.backends import make_backend
    from steergym.robot.safety import SafetyLimits
    from steergym.robot.server import RobotServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    limits = SafetyLimits(
        max_delta_pos_m=args.max_delta_pos, max_delta_rot_rad=args.max_delta_rot,
        workspace_low=tuple(args.workspace_low), workspace_high=tuple(args.workspace_high),
        joint_margin_rad=args.joint_margin, max_rate_hz=args.max_rate_hz, client_timeout_s=args.client_timeout,
    )
    obs_mode = args.obs_mode or ("pixels" if args.backend == "interbotix" else "state")
    options = {"obs_mode": obs_mode, "image_size": tuple(args.image_size)}
    if args.backend == "sim":
        options["wrist_camera"] = args.wrist_camera
    else:
        options["camera_index"] = args.camera_index
    token_file = ensure_token_file(args.token_file)
    backend = make_backend(args.backend, args.task, **options)
    server = RobotServer(backend, token_file.read_text().strip(), host=args.host, port=args.port, limits=limits,
                         log_dir=args.log_dir, fsync=args.fsync, exclusive=args.exclusive)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.stop())
    print(f"steergym serve: ready on tcp://{args.host}:{server.port} ({args.task}, backend {args.backend}, "
          f"token {token_file}, logs {server.log_dir})", flush=True)
    server.serve_forever()
    print("steergym serve: stopped; the arm is at its safe pose" if server.at_safe_pose
          else "steergym serve: stopped", flush=True)
    return 0


def add_robot(sub) -> None:
    p = sub.add_parser("robot", help="operate a robot server (status, e-stop) or export its logs",
                       description="Operator commands for a running `steergym serve`, and log export.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for name, text in (("status", "print the server's state as JSON"), ("estop", "stop the arm now (latched)"),
                       ("clear-estop", "release a latched e-stop")):
        _link_options(actions.add_parser(name, help=text, description=text))
    e = actions.add_parser("export", help="write logged episodes as a Minari dataset",
                           description="Write every episode journal in LOG_DIR as one Minari dataset.")
    e.add_argument("log_dir", nargs="?", default=None, help="the journals' folder (default: serve's default)")
    e.add_argument("--dataset-id", required=True, help="e.g. steergym/real-carrot/robot-v0")
    e.add_argument("--root", default=None, help="dataset folder (default: $MINARI_DATASETS_PATH)")
    e.add_argument("--overwrite", action="store_true")


def cmd_robot(args: argparse.Namespace) -> int:
    if args.action == "export":
        from steergym.paths import robot_log_dir
        from steergym.robot.episode_log import export_logs, log_files

        log_dir = args.log_dir if args.log_dir is not None else robot_log_dir()
        folder = export_logs(log_dir, args.dataset_id, root=args.root, overwrite=args.overwrite)
        print(f"{args.dataset_id}: {len(log_files(log_dir))} logged episodes -> {folder}")
        return 0
    import sys

    from steergym.robot.client import RobotClient, RobotLinkError, resolve_token

    client = RobotClient(args.host, args.port, resolve_token(token_file=args.token_file))
    try:
        reply = {"status": client.status, "estop": client.estop, "clear-estop": client.clear_estop}[args.action]()
    except RobotLinkError as exc:
        print(f"steergym robot {args.action}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close(bye=False)
    reply = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in reply.items() if k not in ("v", "id", "ok")}
    print(json.dumps(reply, indent=2))
    return 0
