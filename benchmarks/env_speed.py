"""Control-step throughput of every steergym env, against raw MuJoCo and two reference suites.

For every registered id this measures, on one thread:

* state-mode control steps/s (random actions, resetting on episode end, resets included),
* pixels-mode (128x128 by default) control steps/s, likewise,
* raw `mujoco.mj_step` on the SAME model, `int(round(0.2 / model.opt.timestep))` substeps per
  control step, replaying the state-mode rollout (its start and reset states, and the controls the
  env set each step) so contacts and motion match -> physics_ms_per_step,
* the env's own `step()` time (resets excluded) -> env_ms_per_step, and
  python_overhead_fraction = (env_ms_per_step - physics_ms_per_step) / physics_ms_per_step,

each the median of `--repeats` runs of `--steps` steps; beside gymnasium `Pusher-v5` and robosuite
`Lift` (Panda, state only) steps/s measured in the same run. `--expert-episodes N` adds each task's
scripted-expert success rate over seeds 0..N-1.

Usage (from the repository root):

    MUJOCO_GL=egl python benchmarks/env_speed.py                       # ~2 min
    MUJOCO_GL=egl python benchmarks/env_speed.py --expert-episodes 100 --out benchmarks/results/env_speed.json

`--section adapters` measures the robosuite and dm_control adapters instead (the "robosuite" and
"dmc" registry families): for each adapter id, the step time of the env `gymnasium.make` returns
(its wrappers included) and, in the same rollout, the time spent inside the underlying robosuite /
dm_control env's own `step` (the adapter's overhead is the difference, as a fraction of the latter);
beside them, robosuite's own env (`robosuite.make` with the adapter's arguments), dm_control's own
env (`suite.load`) and Shimmy's `DmControlCompatibilityV0` replaying the same actions, repeats
interleaved:

    MUJOCO_GL=egl python benchmarks/env_speed.py --section adapters     # -> results/env_speed_adapters.json

The table is printed and everything is written as JSON (default benchmarks/results/env_speed.json).
Numbers depend on the machine and its load: the JSON records the CPU, the GL renderer (pixels run
on the GPU with an EGL driver, or on the CPU with Mesa llvmpipe) and the load average.
"""

from __future__ import annotations

import os
import sys

# One thread everywhere: MuJoCo is single-threaded already; keep BLAS and Mesa's llvmpipe software
# renderer (used when EGL has no GPU) from spreading over several cores. A user's own setting wins.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import steergym  # noqa: E402
from steergym.registry import env_ids  # noqa: E402
from run_context import cpu_name, git_state, load_average  # noqa: E402  (benchmarks/ is on sys.path)

GOAL_STATE_SPS = 400.0
GOAL_OVERHEAD = 0.15
GOAL_PIXELS_SPS = 250.0
GOAL_ADAPTER_OVERHEAD = 0.05
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "env_speed.json"
DEFAULT_ADAPTERS_OUT = Path(__file__).resolve().parent / "results" / "env_speed_adapters.json"


# --------------------------------------------------------------------------- measurements
def _median_of(repeats: int, run: Callable[[], dict[str, float]]) -> dict[str, Any]:
    """Median of every field over `repeats` runs (plus the raw per-run values)."""
    runs = [run() for _ in range(repeats)]
    out: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["runs"] = runs
    return out


WARMUP_STEPS = 5  # untimed steps first: first-call costs (renderer creation, env checker, JIT)


def gym_rollout(env: gym.Env, steps: int, seed: int, record: bool = False) -> dict[str, Any]:
    """`steps` random-action steps, resetting on episode end.

    Returns steps_per_s over the whole loop (resets included) and ms_per_step of `env.step` alone.
    With `record`, also the control inputs and the reset states (key "_replay", for `raw_physics`).
    """
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    actions = rng.uniform(low, high, size=(steps, *env.action_space.shape)).astype(env.action_space.dtype)
    env.reset(seed=seed + 10_000)
    for a in actions[:WARMUP_STEPS]:
        env.step(a)
    env.reset(seed=seed)
    replay: dict[str, Any] = {"start": _physics_state(env) if record else None, "ctrl": [], "resets": {}}
    step_time = 0.0
    episodes = 0
    clock = time.perf_counter
    start = clock()
    for i, a in enumerate(actions):
        t0 = clock()
        _, _, terminated, truncated, _ = env.step(a)
        step_time += clock() - t0
        if record:
            replay["ctrl"].append(env.unwrapped.data.ctrl.copy())
        if terminated or truncated:
            env.reset()
            episodes += 1
            if record:
                replay["resets"][i + 1] = _physics_state(env)
    total = clock() - start
    out: dict[str, Any] = {
        "steps_per_s": steps / total,
        "ms_per_step": 1e3 * step_time / steps,
        "episodes_ended": episodes,
    }
    if record:
        out["_replay"] = replay
    return out


def _physics_state(env: gym.Env) -> np.ndarray:
    u = env.unwrapped
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(u.model, spec))
    mujoco.mj_getState(u.model, u.data, state, spec)
    return state


def raw_physics(model: mujoco.MjModel, replay: dict[str, Any]) -> dict[str, float]:
    """Raw `mujoco.mj_step` replaying an env rollout on the env's own model.

    Starts from the rollout's first state on a separate MjData, restores the reset states where the
    rollout reset (untimed), and per control step sets the controls the env ended that step with and
    runs `int(round(0.2 / timestep))` substeps: the same model, contacts and motion as the env, minus
    everything the env does in Python (action checks, IK, servo ramp, task evaluation, observation).
    """
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    data = mujoco.MjData(model)
    mujoco.mj_setState(model, data, replay["start"], spec)
    mujoco.mj_forward(model, data)
    substeps = int(round(0.2 / model.opt.timestep))
    clock = time.perf_counter
    total = 0.0
    for i, ctrl in enumerate(replay["ctrl"]):
        if i in replay["resets"]:
            mujoco.mj_setState(model, data, replay["resets"][i], spec)
            mujoco.mj_forward(model, data)
        data.ctrl[:] = ctrl
        t0 = clock()
        mujoco.mj_step(model, data, nstep=substeps)
        total += clock() - t0
    return {"ms_per_step": 1e3 * total / len(replay["ctrl"]), "substeps": substeps}


def state_and_physics(env: gym.Env, steps: int, seed: int) -> dict[str, float]:
    """One repeat: a state-mode rollout, then raw physics replaying it (back to back, same load)."""
    rollout = gym_rollout(env, steps, seed, record=True)
    physics = raw_physics(env.unwrapped.model, rollout.pop("_replay"))
    return {
        "steps_per_s": rollout["steps_per_s"],
        "env_ms_per_step": rollout["ms_per_step"],
        "physics_ms_per_step": physics["ms_per_step"],
        "overhead": (rollout["ms_per_step"] - physics["ms_per_step"]) / physics["ms_per_step"],
        "substeps": physics["substeps"],
    }


def robosuite_lift(steps: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    """robosuite Lift (Panda, default controller, 20 Hz control), state only; median of `repeats`."""
    try:
        import logging

        import robosuite

        logging.getLogger("robosuite_logs").setLevel(logging.WARNING)
    except Exception as exc:  # noqa: BLE001 - record whatever broke the import
        return {"error": f"{type(exc).__name__}: {exc}"}
    try:
        env = robosuite.make(
            "Lift",
            robots="Panda",
            has_renderer=False,
            has_offscreen_renderer=False,
            use_camera_obs=False,
        )
        low, high = env.action_spec
        rng = np.random.default_rng(seed)
        env.reset()
        for _ in range(20):  # untimed: robosuite JIT-compiles (numba) its transforms on first use
            env.step(rng.uniform(low, high))
        runs = []
        clock = time.perf_counter
        for _ in range(repeats):
            actions = rng.uniform(low, high, size=(steps, len(low)))
            env.reset()
            step_time, episodes = 0.0, 0
            start = clock()
            for a in actions:
                t0 = clock()
                _, _, done, _ = env.step(a)
                step_time += clock() - t0
                if done:
                    env.reset()
                    episodes += 1
            total = clock() - start
            ms = 1e3 * step_time / steps
            runs.append({"steps_per_s": steps / total, "ms_per_step": ms, "episodes_ended": episodes})
        result = {k: statistics.median(r[k] for r in runs) for k in ("steps_per_s", "ms_per_step")}
        result.update(
            control_freq_hz=float(env.control_freq),
            robosuite_version=robosuite.__version__,
            runs=runs,
        )
        env.close()
        return result
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}


def expert_success(env_id: str, episodes: int) -> dict[str, Any]:
    """Scripted-expert success rate over seeds 0..episodes-1 (noise 0), via steergym.bench.evaluate."""
    try:
        from steergym.bench.evaluate import evaluate
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}
    start = time.perf_counter()
    result = evaluate(env_id, "expert", episodes=episodes, seed=0, progress=False)
    return {
        "episodes": episodes,
        "success_rate": result.success_rate,
        "mean_length": result.mean_length,
        "failed_seeds": result.failed_seeds,
        "seconds": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------- adapters
def _actions(space: gym.spaces.Box, steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(space.low, space.high, size=(steps, *space.shape)).astype(np.float32)


def adapter_rollout(env: gym.Env, actions: np.ndarray, seed: int) -> dict[str, float]:
    """The adapter's `step` (as `gymnasium.make` wraps it) and, inside it, the underlying env's own
    `step`, timed over the same steps (resets excluded); overhead = outer / inner - 1."""
    inner_env = env.unwrapped._env
    inner_step = inner_env.step
    clock = time.perf_counter
    inner = [0.0]

    def timed_step(action):
        t0 = clock()
        out = inner_step(action)
        inner[0] += clock() - t0
        return out

    inner_env.step = timed_step  # instance attribute: shadows the method for this env only
    try:
        env.reset(seed=seed + 10_000)
        for a in actions[:WARMUP_STEPS]:
            env.step(a)
        env.reset(seed=seed)
        inner[0], outer = 0.0, 0.0
        for a in actions:
            t0 = clock()
            _, _, terminated, truncated, _ = env.step(a)
            outer += clock() - t0
            if terminated or truncated:
                env.reset()
    finally:
        del inner_env.step
    n = len(actions)
    return {"ms_per_step": 1e3 * outer / n, "inner_ms_per_step": 1e3 * inner[0] / n,
            "overhead": outer / inner[0] - 1.0}


def robosuite_own_rollout(env: Any, actions: np.ndarray, horizon: int) -> dict[str, float]:
    """robosuite's own env stepping the same actions (reset every `horizon` steps, untimed)."""
    clock = time.perf_counter
    env.reset()
    for a in actions[:WARMUP_STEPS]:
        env.step(a)
    env.reset()
    total = 0.0
    for i, a in enumerate(actions):
        t0 = clock()
        env.step(a)
        total += clock() - t0
        if (i + 1) % horizon == 0:
            env.reset()
    return {"ms_per_step": 1e3 * total / len(actions)}


def dm_env_rollout(env: Any, actions: np.ndarray, gymnasium_api: bool) -> dict[str, float]:
    """dm_control's own env (`gymnasium_api=False`) or Shimmy's wrapper of one, same actions."""
    clock = time.perf_counter
    reset = (lambda: env.reset(seed=0)) if gymnasium_api else env.reset
    reset()
    for a in actions[:WARMUP_STEPS]:
        env.step(a)
    reset()
    total = 0.0
    for a in actions:
        t0 = clock()
        out = env.step(a)
        total += clock() - t0
        if (out[2] or out[3]) if gymnasium_api else out.last():
            reset()
    return {"ms_per_step": 1e3 * total / len(actions)}


def adapter_section(args: argparse.Namespace) -> dict[str, Any]:
    """Every robosuite / dm_control adapter id beside the env it adapts (see the module docstring)."""
    from steergym.registry import entry

    ids = args.ids or env_ids("robosuite") + env_ids("dmc")
    known = env_ids("robosuite") + env_ids("dmc")
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise SystemExit(f"unknown adapter id(s) {unknown}; adapter ids: {known}")
    rows: dict[str, Any] = {}
    for k, env_id in enumerate(tqdm(ids, desc="adapters", unit="env")):
        row = entry(env_id)
        env = gym.make(env_id)
        actions = _actions(env.action_space, args.steps, seed=k)
        if row.family == "robosuite":
            import robosuite

            from steergym.envs.robosuite_tasks import import_robosuite, make_kwargs

            import_robosuite("env_speed")
            own = robosuite.make(**make_kwargs(robosuite, row.kwargs["task"]))
            others = {"robosuite_own": lambda: robosuite_own_rollout(own, actions, row.max_episode_steps)}
            versions = {"robosuite": robosuite.__version__}
        else:
            import dm_control
            import shimmy
            from dm_control import suite
            from shimmy.dm_control_compatibility import DmControlCompatibilityV0

            domain, task = row.kwargs["domain"], row.kwargs["task"]
            own = suite.load(domain, task, task_kwargs={"random": 0})
            wrapped = DmControlCompatibilityV0(suite.load(domain, task, task_kwargs={"random": 0}))
            others = {"dm_control_own": lambda: dm_env_rollout(own, actions, gymnasium_api=False),
                      "shimmy": lambda: dm_env_rollout(wrapped, actions, gymnasium_api=True)}
            versions = {"dm_control": getattr(dm_control, "__version__", "?"), "shimmy": shimmy.__version__}
        runs: list[dict[str, float]] = []
        for r in range(args.repeats):  # interleaved, so load changes hit all of them alike
            run = {f"adapter_{key}": v for key, v in adapter_rollout(env, actions, seed=100 * k + r).items()}
            for name, fn in others.items():
                run[f"{name}_ms_per_step"] = fn()["ms_per_step"]
            runs.append(run)
        result = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        own_key = "robosuite_own_ms_per_step" if row.family == "robosuite" else "dm_control_own_ms_per_step"
        result.update(
            family=row.family,
            # the adapter's time outside the underlying env's step, as a fraction of that step
            # (median of per-repeat fractions, each from one rollout)
            overhead_fraction=result.pop("adapter_overhead"),
            # the adapter's step vs the underlying env measured on its own (separate rollouts)
            vs_own_env_fraction=result["adapter_ms_per_step"] / result[own_key] - 1.0,
            versions=versions,
            runs=runs,
        )
        if row.family == "dmc":
            result["shimmy_vs_own_env_fraction"] = result["shimmy_ms_per_step"] / result[own_key] - 1.0
        rows[env_id] = result
        env.close()
        if hasattr(own, "close"):
            own.close()
    return rows


def print_adapter_report(result: dict[str, Any]) -> None:
    m = result["meta"]
    print(f"\nCPU: {m['cpu']} | load avg at start {m['load_average_start']}, end {m['load_average_end']}")
    print(f"{m['steps']} steps x {m['repeats']} repeats (median); ms per step, resets excluded\n")
    header = (f"{'adapter id':42s} {'adapter':>8s} {'inside':>8s} {'overhead':>9s} {'own env':>8s} "
              f"{'vs own':>7s} {'shimmy':>8s}")
    print(header)
    print("-" * len(header))
    for env_id, r in result["adapters"].items():
        own = r.get("robosuite_own_ms_per_step", r.get("dm_control_own_ms_per_step"))
        shimmy = f"{r['shimmy_ms_per_step']:8.4f}" if "shimmy_ms_per_step" in r else f"{'':8s}"
        print(f"{env_id:42s} {r['adapter_ms_per_step']:8.4f} {r['adapter_inner_ms_per_step']:8.4f} "
              f"{r['overhead_fraction']:8.1%} {own:8.4f} {r['vs_own_env_fraction']:6.1%} {shimmy}")
    goal = result["goals"][f"adapter overhead <= {GOAL_ADAPTER_OVERHEAD:.0%}"]
    status = "PASS" if goal["pass"] else f"FAIL ({', '.join(goal['failing'])})"
    print(f"\ngoal adapter overhead <= {GOAL_ADAPTER_OVERHEAD:.0%}: {status}")


# --------------------------------------------------------------------------- context
def gl_renderer() -> str:
    """The OpenGL renderer MuJoCo's offscreen context uses (GPU driver or llvmpipe)."""
    try:
        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='.1'/></worldbody></mujoco>")
        renderer = mujoco.Renderer(model, 8, 8)
        try:
            from OpenGL import GL

            names = (GL.GL_VENDOR, GL.GL_RENDERER, GL.GL_VERSION)
            return " / ".join(GL.glGetString(x).decode() for x in names)
        finally:
            renderer.close()
    except Exception as exc:  # noqa: BLE001
        return f"unknown ({type(exc).__name__}: {exc})"


def meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        **git_state(),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "steps": args.steps,
        "repeats": args.repeats,
        "image_size": args.image_size,
        "python": platform.python_version(),
        "steergym": steergym.__version__,
        "mujoco": mujoco.__version__,
        "gymnasium": gym.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average_start": load_average(),
        "MUJOCO_GL": os.environ.get("MUJOCO_GL"),
        "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS"),
        "gl_renderer": gl_renderer(),
    }


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help=f"JSON file to write (default: {DEFAULT_OUT} or, for --section adapters, "
                   f"{DEFAULT_ADAPTERS_OUT.name} beside it)")
    p.add_argument("--steps", type=int, default=500, help="control steps per repeat (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="repeats, median reported (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=128, help="pixels-mode image side (default %(default)s)")
    p.add_argument("--ids", nargs="+", default=None, help="env ids to measure (default: all registered)")
    p.add_argument("--expert-episodes", type=int, default=0,
                   help="scripted-expert episodes per task for the success rate; 0 skips "
                   "(default: 0, full figure: 100)")
    p.add_argument("--skip-baselines", action="store_true", help="skip Pusher-v5 and robosuite Lift")
    p.add_argument("--section", choices=("tasks", "adapters"), default="tasks",
                   help="tasks: the WidowX tasks (default); adapters: the robosuite / dm_control adapter "
                   "ids beside the envs they adapt (default --out: %s)" % DEFAULT_ADAPTERS_OUT.name)
    args = p.parse_args(argv)
    if args.out is None:
        args.out = DEFAULT_ADAPTERS_OUT if args.section == "adapters" else DEFAULT_OUT
    if args.steps < 1 or args.repeats < 1 or args.expert_episodes < 0:
        p.error("--steps and --repeats must be >= 1 and --expert-episodes >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.section == "adapters":
        return main_adapters(args)
    ids = args.ids or env_ids()
    unknown = [i for i in ids if i not in env_ids()]
    if unknown:
        raise SystemExit(f"unknown env id(s) {unknown}; registered: {env_ids()}")
    size = (args.image_size, args.image_size)
    result: dict[str, Any] = {"meta": meta(args), "envs": {}, "baselines": {}}

    jobs = len(ids) * (2 + (1 if args.expert_episodes else 0)) + (0 if args.skip_baselines else 2)
    bar = tqdm(total=jobs, desc="env_speed", unit="job")
    for k, env_id in enumerate(ids):
        row: dict[str, Any] = {}
        env = gym.make(env_id)
        bar.set_postfix_str(f"{env_id} state + physics")
        state = _median_of(args.repeats, lambda: state_and_physics(env, args.steps, seed=k))
        bar.update()
        row["physics_dt_s"] = float(env.unwrapped.model.opt.timestep)
        row["substeps_per_step"] = int(state["substeps"])
        env.close()

        env = gym.make(env_id, obs_mode="pixels", image_size=size)
        bar.set_postfix_str(f"{env_id} pixels")
        pixels = _median_of(args.repeats, lambda: gym_rollout(env, args.steps, seed=k))
        bar.update()
        env.close()

        row.update(
            state_steps_per_s=state["steps_per_s"],
            pixels_steps_per_s=pixels["steps_per_s"],
            physics_ms_per_step=state["physics_ms_per_step"],
            env_ms_per_step=state["env_ms_per_step"],
            pixels_env_ms_per_step=pixels["ms_per_step"],
            # Median of the per-repeat fractions (each from a rollout and its replay, back to back).
            python_overhead_fraction=state["overhead"],
            raw={"state": state["runs"], "pixels": pixels["runs"]},
        )
        if args.expert_episodes:
            bar.set_postfix_str(f"{env_id} expert")
            row["expert"] = expert_success(env_id, args.expert_episodes)
            bar.update()
        result["envs"][env_id] = row

    if not args.skip_baselines:
        bar.set_postfix_str("Pusher-v5")
        try:
            pusher = gym.make("Pusher-v5")
            pusher_runs = _median_of(args.repeats, lambda: gym_rollout(pusher, args.steps, 0))
            result["baselines"]["Pusher-v5"] = pusher_runs
            pusher.close()
        except Exception as exc:  # noqa: BLE001
            result["baselines"]["Pusher-v5"] = {"error": f"{type(exc).__name__}: {exc}"}
        bar.update()
        bar.set_postfix_str("robosuite Lift")
        result["baselines"]["robosuite_Lift_Panda"] = robosuite_lift(args.steps, args.repeats)
        bar.update()
    bar.close()

    result["meta"]["load_average_end"] = load_average()
    result["goals"] = goals(result["envs"])
    print_report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def main_adapters(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {"meta": meta(args), "adapters": adapter_section(args)}
    result["meta"]["load_average_end"] = load_average()
    failing = [i for i, r in result["adapters"].items() if r["overhead_fraction"] > GOAL_ADAPTER_OVERHEAD]
    goal = f"adapter overhead <= {GOAL_ADAPTER_OVERHEAD:.0%}"
    result["goals"] = {goal: {"pass": not failing, "failing": failing}}
    print_adapter_report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def goals(envs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    checks = {
        f"state >= {GOAL_STATE_SPS:.0f} steps/s": lambda r: r["state_steps_per_s"] >= GOAL_STATE_SPS,
        f"python overhead <= {GOAL_OVERHEAD:.0%}": lambda r: r["python_overhead_fraction"] <= GOAL_OVERHEAD,
        f"pixels >= {GOAL_PIXELS_SPS:.0f} steps/s": lambda r: r["pixels_steps_per_s"] >= GOAL_PIXELS_SPS,
    }
    out = {}
    for name, check in checks.items():
        failing = [i for i, r in envs.items() if not check(r)]
        out[name] = {"pass": not failing, "failing": failing}
    return out


def print_report(result: dict[str, Any]) -> None:
    m = result["meta"]
    print(f"\nCPU: {m['cpu']} | GL: {m['gl_renderer']} | load avg at start {m['load_average_start']}")
    side = m["image_size"]
    print(f"{m['steps']} steps x {m['repeats']} repeats (median), pixels {side}x{side}\n")
    has_expert = any("expert" in r for r in result["envs"].values())
    header = f"{'env':42s} {'state/s':>8s} {'pixels/s':>9s} {'phys ms':>8s} {'env ms':>7s} {'overhead':>9s}"
    if has_expert:
        header += f" {'expert':>8s}"
    print(header)
    print("-" * len(header))
    for env_id, r in result["envs"].items():
        line = (
            f"{env_id:42s} {r['state_steps_per_s']:8.0f} {r['pixels_steps_per_s']:9.0f} "
            f"{r['physics_ms_per_step']:8.3f} {r['env_ms_per_step']:7.3f} "
            f"{r['python_overhead_fraction']:8.1%}"
        )
        if has_expert:
            e = r.get("expert", {})
            line += f" {e['success_rate']:8.0%}" if "success_rate" in e else f" {'error':>8s}"
        print(line)
    for name, b in result["baselines"].items():
        if "error" in b:
            print(f"{name:42s} error: {b['error']}")
        else:
            print(f"{name:42s} {b['steps_per_s']:8.0f} {'':9s} {'':8s} {b['ms_per_step']:7.3f}")
    print()
    for name, g in result["goals"].items():
        status = "PASS" if g["pass"] else f"FAIL ({', '.join(x.split('/')[-1] for x in g['failing'])})"
        print(f"goal {name:30s} {status}")


if __name__ == "__main__":
    sys.exit(main())
