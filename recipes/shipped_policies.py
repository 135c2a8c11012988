"""Recipe of the base policies shipped in steergym/assets/policies (run it to reproduce them).

Each policy is behaviour-cloned by steergym's own code from scripted-expert demonstrations that
this script collects (reset seeds from 1,000,000 up, disjoint from the evaluation seeds 0-99), then
evaluated on reset seeds 0-99. The recipes are deliberately *short* (few demonstrations, a few
thousand CPU steps, chunks executed open loop), so the policies land in a middling success band
(20-60%): base policies worth steering. A policy whose measured success falls outside its band is
not written (pass --force to write it anyway).

    python recipes/shipped_policies.py                     # all of them (about 25 min on 2 cores)
    python recipes/shipped_policies.py --only widowx-carrot-diffusion --jobs 1
    python recipes/shipped_policies.py --out /tmp/policies # elsewhere (default: the package assets)
    python recipes/shipped_policies.py --measure           # re-evaluate the shipped weights, no training

--measure re-records success and failed seeds (seeds 0-99) of the existing checkpoints in index.json
and their config.json metadata: for when the simulation changed in the last bits (an episode near
its success boundary may flip) and the weights did not.

Everything runs with torch on 1 thread per job for bit-for-bit repeatability on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "steergym" / "assets" / "policies"
EVAL_EPISODES = 100
EVAL_SEED = 0
DATA_SEED = 1_000_000

SIMPLER_TASKS = (
    "steergym/WidowXPutSpoonOnTowel-v0",
    "steergym/WidowXPutCarrotOnPlate-v0",
    "steergym/WidowXStackGreenOnYellowBlock-v0",
    "steergym/WidowXPutEggplantInBasket-v0",
)


@dataclass(frozen=True)
class Recipe:
    """How one shipped policy is made.

    Attributes:
        env_ids: task(s); several -> a task-conditioned generalist.
        kind: "diffusion" or "flow".
        episodes: expert demonstrations per task (quality "expert", reset seeds DATA_SEED + i).
        steps: BC gradient steps (BCConfig defaults otherwise, seed `seed`).
        policy: PolicyConfig overrides.
        band: target success band over EVAL_EPISODES seeds (every task of a generalist).
    """

    env_ids: tuple[str, ...]
    kind: str
    episodes: int
    steps: int
    description: str
    policy: dict = field(default_factory=dict)
    band: tuple[float, float] = (0.2, 0.6)
    seed: int = 0


RECIPES: dict[str, Recipe] = {
    "widowx-spoon-diffusion": Recipe(("steergym/WidowXPutSpoonOnTowel-v0",), "diffusion", 50, 10_000,
                                     "put the spoon on the towel"),
    "widowx-carrot-diffusion": Recipe(("steergym/WidowXPutCarrotOnPlate-v0",), "diffusion", 50, 10_000,
                                      "put the carrot on the plate"),
    "widowx-stack-diffusion": Recipe(("steergym/WidowXStackGreenOnYellowBlock-v0",), "diffusion", 50, 20_000,
                                     "stack the green block on the yellow block", policy={"num_blocks": 2}),
    "widowx-eggplant-diffusion": Recipe(("steergym/WidowXPutEggplantInBasket-v0",), "diffusion", 50, 3_000,
                                        "put the eggplant in the basket"),
    "widowx-lift-diffusion": Recipe(("steergym/WidowXLiftCube-v0",), "diffusion", 50, 2_000, "lift the red cube"),
    "widowx-push-diffusion": Recipe(("steergym/WidowXPushCube-v0",), "diffusion", 50, 10_000,
                                    "push the blue cube to the goal"),
    "widowx-lift-flow": Recipe(("steergym/WidowXLiftCube-v0",), "flow", 50, 1_000, "lift the red cube (flow)"),
    # robosuite Lift is easy for BC (1,500 steps already give 100%): an under-trained policy is the
    # middling one (500 steps: 13%, 700: 30%, 1,000: 67% over 30 seeds).
    "robosuite-lift-diffusion": Recipe(("steergym/Robosuite-Lift-v0",), "diffusion", 50, 800,
                                       "lift the cube (robosuite Panda)"),
    "widowx-generalist-diffusion": Recipe(SIMPLER_TASKS, "diffusion", 50, 20_000,
                                          "task-conditioned generalist over the four SIMPLER-style tasks",
                                          policy={"num_blocks": 2}),
}


# Poorly initialised policies for the fine-tuning benchmark (issue 6: "<= 20% success, trained on
# few or noisy demos"). They are not shipped in the package (no steered ids, no CI evaluation):
# `benchmarks/finetune_generative.py --policies weak:NAME` makes them with `make_weak` into its work
# folder. Flow policies, as OGPO's public code uses. Measured on seeds 0-99 when chosen: lift 3 demos /
# 300 steps 0.10 (10 / 150: 0.04, 10 / 300: 0.27), push 10 demos / 1,000 steps 0.18 (50 / 2,000: 0.24).
WEAK_RECIPES: dict[str, Recipe] = {
    "widowx-lift-flow-weak": Recipe(("steergym/WidowXLiftCube-v0",), "flow", 3, 300,
                                    "lift the red cube (flow, 3 demos: a poor initialisation)", band=(0.05, 0.2)),
    "widowx-push-flow-weak": Recipe(("steergym/WidowXPushCube-v0",), "flow", 10, 1_000,
                                    "push the blue cube to the goal (flow, 10 demos: a poor initialisation)",
                                    band=(0.05, 0.2)),
}


def dataset_id(env_id: str, episodes: int) -> str:
    """The demonstrations of `env_id`: `episodes` expert episodes, reset seeds DATA_SEED + i."""
    return f"recipes/{env_id.split('/')[-1].removesuffix('-v0')}/expert{episodes}-v0"


def make(name: str, recipe: Recipe, work: Path, out: Path, force: bool, threads: int) -> dict:
    """Collect, train, evaluate and (if in band) write one policy; returns its index entry."""
    import torch

    torch.set_num_threads(threads)
    from steergym.algorithms.bc import BCConfig, train_bc
    root = work / "datasets"
    started = time.time()
    datasets = [dataset_id(env_id, recipe.episodes) for env_id in recipe.env_ids]
    run_dir = work / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    trainer = train_bc(datasets, recipe.kind, run_dir, policy_config=recipe.policy,
                       config=BCConfig(steps=recipe.steps, seed=recipe.seed), root=root, progress=False)
    policy = trainer.ema
    rates, failed = measure_success(policy, recipe.env_ids)
    low, high = recipe.band
    in_band = all(low <= r <= high for r in rates.values())
    entry = {
        "folder": name,
        "kind": recipe.kind,
        "env_ids": list(recipe.env_ids),
        "success_rate": rates,
        "success_band": [low, high],
        "episodes": EVAL_EPISODES,
        "failed_seeds": failed,
        "description": recipe.description,
        "in_band": in_band,
        "minutes": round((time.time() - started) / 60, 1),
    }
    entry["written"] = in_band or force
    if entry["written"]:
        metadata = {
            "name": name,
            "recipe": {"script": "recipes/shipped_policies.py", "episodes_per_task": recipe.episodes,
                       "quality": "expert", "data_seed": DATA_SEED, "steps": recipe.steps, "seed": recipe.seed,
                       "policy": recipe.policy},
            "env_id": recipe.env_ids[0] if len(recipe.env_ids) == 1 else None,
            "task_ids": list(recipe.env_ids),
            "success_rate": rates,
            "eval": {"episodes": EVAL_EPISODES, "seed": EVAL_SEED},
            "final_loss": trainer.last_loss,
        }
        policy.save(out / name, metadata)
    return entry


def make_weak(name: str, work: Path, threads: int = 1) -> tuple[Path, dict]:
    """Make (or reuse) the weak policy `name` of WEAK_RECIPES under `work`; returns its checkpoint
    folder and index entry. Raises if its success falls outside the recipe's band."""
    from steergym.data.collect import collect
    from steergym.data.dataset import datasets_root

    if name not in WEAK_RECIPES:
        raise ValueError(f"no weak recipe {name!r}; weak recipes: {', '.join(WEAK_RECIPES)}")
    recipe, out = WEAK_RECIPES[name], work / "policies"
    entry_file = out / f"{name}.json"
    if (out / name).is_dir() and entry_file.exists():
        return out / name, json.loads(entry_file.read_text())
    for env_id in recipe.env_ids:
        ds = dataset_id(env_id, recipe.episodes)
        if not (datasets_root(work / "datasets") / ds).exists():
            collect(env_id, recipe.episodes, "expert", ds, seed=DATA_SEED, root=work / "datasets", progress=False)
    out.mkdir(parents=True, exist_ok=True)
    entry = make(name, recipe, work, out, force=False, threads=threads)
    if not entry.pop("written"):
        raise RuntimeError(f"{name}: success {entry['success_rate']} is outside its band {recipe.band}")
    entry_file.write_text(json.dumps(entry, indent=1) + "\n")
    return out / name, entry


def measure_success(policy, env_ids) -> tuple[dict[str, float], dict[str, list[int]]]:
    """({env_id: success}, {env_id: failed seeds}) of `policy` on reset seeds EVAL_SEED.. (EVAL_EPISODES)."""
    from steergym.bench.evaluate import evaluate

    rates, failed = {}, {}
    for env_id in env_ids:
        bound = policy.for_task(env_id) if policy.task_ids else policy
        result = evaluate(env_id, bound, episodes=EVAL_EPISODES, seed=EVAL_SEED, progress=False)
        rates[env_id], failed[env_id] = result.success_rate, result.failed_seeds
    return rates, failed


def measure(name: str, out: Path, threads: int) -> dict:
    """Re-evaluate the written checkpoint `name` on seeds 0-99; returns its updated index entry
    (with "written" True and the previous rates under "previous")."""
    import torch

    torch.set_num_threads(threads)
    from steergym.policies import load_policy

    started = time.time()
    entry = json.loads((out / "index.json").read_text())["policies"][name]
    rates, failed = measure_success(load_policy(out / entry["folder"]), entry["env_ids"])
    config_path = out / entry["folder"] / "config.json"
    config = json.loads(config_path.read_text())
    config["metadata"]["success_rate"] = rates
    tmp = config_path.with_name(".config.json.partial")
    tmp.write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, config_path)
    previous = entry["success_rate"]
    entry.update(success_rate=rates, failed_seeds=failed, episodes=EVAL_EPISODES, written=True,
                 minutes=round((time.time() - started) / 60, 1))
    entry["previous"] = previous
    return entry


def update_index(out: Path, entries: dict[str, dict]) -> None:
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"policies": {}}
    for name, entry in entries.items():
        if entry.pop("written"):
            entry.pop("minutes", None)
            entry.pop("in_band", None)
            entry.pop("previous", None)
            index["policies"][name] = entry
    from steergym.policies.zoo import measurement_environment

    index["measured_on"] = measurement_environment()  # where the recorded seeds repeat exactly
    tmp = index_path.with_name(".index.json.partial")
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, index_path)


def write_readme(out: Path) -> None:
    """assets/policies/README.md: the table of index.json and the commands that made it."""
    index = json.loads((out / "index.json").read_text())["policies"]
    lines = [
        "# Shipped base policies",
        "",
        "Made by `recipes/shipped_policies.py` (this file is written by it). Each is behaviour-cloned by",
        "steergym's BC trainer from scripted-expert demonstrations (quality `expert`, reset seeds",
        f"{DATA_SEED:,} + i), then evaluated on reset seeds {EVAL_SEED}-{EVAL_SEED + EVAL_EPISODES - 1}."
        " The recipes are short on purpose,",
        "so the policies land in a middling band: base policies worth steering. Reproduce with",
        "",
        "```bash",
        "MUJOCO_GL=egl python recipes/shipped_policies.py            # all, --jobs 2, 1 torch thread each",
        "MUJOCO_GL=egl python recipes/shipped_policies.py --only widowx-carrot-diffusion",
        "```",
        "",
        "Training is deterministic on one machine (same seeds, one thread); another CPU can differ in the",
        "last float bits and so in a few close episodes.",
        "",
        "| name | kind | task(s) | residual blocks | demos/task | BC steps | success (100 seeds) | band |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in sorted(index.items()):
        recipe = RECIPES.get(name)
        tasks = ", ".join(t.split("/")[-1].removeprefix("WidowX").removesuffix("-v0") for t in e["env_ids"])
        rates = ", ".join(f"{e['success_rate'][t]:.2f}" for t in e["env_ids"])
        demos = recipe.episodes if recipe else "?"
        steps = f"{recipe.steps:,}" if recipe else "?"
        blocks = recipe.policy.get("num_blocks", 1) if recipe else "?"
        lines.append(f"| `{name}` | {e['kind']} | {tasks} | {blocks} | {demos} | {steps} | {rates} | "
                     f"{e['success_band'][0]:.1f}-{e['success_band'][1]:.1f} |")
    lines += ["", "Use: `steergym eval --policy NAME` (add `--env ID` for the generalist), or",
              "`steergym.policies.zoo.load_shipped(NAME)` in Python. Each folder is a checkpoint:",
              "`config.json` + `model.safetensors`.", ""]
    tmp = out / ".README.md.partial"
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out / "README.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(RECIPES), help="make only this policy")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder of the checkpoints and index.json")
    parser.add_argument("--work", default=None, help="scratch folder for datasets and runs (default: temp)")
    parser.add_argument("--jobs", type=int, default=2, help="policies made in parallel (default: 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job (default: 1)")
    parser.add_argument("--force", action="store_true", help="write policies outside their band too")
    parser.add_argument("--measure", action="store_true",
                        help="re-evaluate the checkpoints already in --out (no training) and re-record them")
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    names = args.only or sorted(RECIPES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.measure:
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {name: pool.submit(measure, name, out, args.threads) for name in names}
            entries = {name: future.result() for name, future in futures.items()}
        for name, e in entries.items():
            for env_id, rate in e["success_rate"].items():
                before = e["previous"][env_id]
                change = "" if rate == before else f" (recorded {before:.2f})"
                print(f"{name} on {env_id.split('/')[-1]}: {rate:.2f}{change} [{e['minutes']} min]", flush=True)
        update_index(out, entries)
        write_readme(out)
        return 0
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="steergym-recipes-"))
    # Collect datasets up front in this process, so parallel jobs never write the same dataset.
    from steergym.data.collect import collect
    from steergym.data.dataset import datasets_root

    for name in names:
        for env_id in RECIPES[name].env_ids:
            ds = dataset_id(env_id, RECIPES[name].episodes)
            if not (datasets_root(work / "datasets") / ds).exists():
                collect(env_id, RECIPES[name].episodes, "expert", ds, seed=DATA_SEED,
                        root=work / "datasets", progress=False)
    entries = {}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {name: pool.submit(make, name, RECIPES[name], work, out, args.force, args.threads) for name in names}
        for name, future in futures.items():
            entries[name] = future.result()
            e = entries[name]
            rates = ", ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in e["success_rate"].items())
            status = "written" if e["written"] else "OUT OF BAND, not written"
            print(f"{name}: {rates} [{e['minutes']} min] {status}", flush=True)
    failed = [n for n, e in entries.items() if not e["written"]]
    update_index(out, entries)
    write_readme(out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
