"""Evaluation and data collection sharded over Ray actors, with the single-process results.

    from steergym.distributed import evaluate_distributed, collect_distributed

    result = evaluate_distributed("steergym/WidowXLiftCube-v0", "widowx-lift-diffusion", episodes=200,
                                  seed=0, workers=4)               # == steergym.bench.evaluate(...)
    folder, episodes = collect_distributed("steergym/WidowXLiftCube-v0", 500, "mixed",
                                           "steergym/lift/mixed-v0", workers=4)  # == data.collect(...)

Every episode depends on its reset seed only (`steergym.rollout`: the policy is reseeded with the
episode's reset seed; `steergym.data.collect`: episode k's expert is seeded with seed + k), so the
episodes are split by reset seed into small chunks, handed to `workers` actors as they free up (an
actor holds one env and one policy, built from a picklable `PolicySpec`), run by the same code as
the single-process path (`rollout.EpisodeRunner`, `data.collect.record_seeds`) and merged in seed
order. The result is therefore the single-process one, whatever `workers` is: same success rate,
failed seeds, per-episode returns and lengths; the same dataset arrays and metadata.

Ray is optional (`pip install -e ".[ray]"`) and imported only when one of these functions runs.
`address=None` starts (or reuses) a local Ray on this machine's cores (`num_cpus` caps them);
"auto" or "HOST:PORT" joins a cluster, whose workers must have steergym installed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from steergym.ray_support import init_ray, require_ray
from steergym.rollout import EpisodeOutcome, EpisodeRunner, EvalResult, summarize

CHUNKS_PER_WORKER = 4  # chunks of episodes per actor: small enough to balance uneven episode lengths


@dataclass(frozen=True)
class PolicySpec:
    """A policy by name, picklable, built the same way by every worker (and by `steergym eval`).

    Attributes:
        name: "expert" (the task's scripted expert), "random", a shipped policy name (`steergym
            policies`) or a checkpoint folder (a path every worker can read).
        expert_kwargs: the scripted expert's sub-optimality knobs (`noise`, `random_action_prob`).
        steer, critic, num_samples, temperature, action_steps: `steer="vgps"` re-ranks the policy's
            samples with the V-GPS value function in the folder `critic` every `action_steps` control
            steps (None: once per chunk), as `steergym eval --steer vgps`.
    """

    name: str = "expert"
    expert_kwargs: dict[str, Any] = field(default_factory=dict)
    steer: str | None = None
    critic: str | None = None
    num_samples: int = 10
    temperature: float = 0.0
    action_steps: int | None = 1

    def build(self, env_id: str | None, seed: int = 0) -> tuple[Any, str, Callable[[Any, int], Any] | None]:
        """(policy for `rollout.evaluate`, env id, its `make_policy`): a shipped policy or checkpoint
        is loaded with `seed` (for its own task when `env_id` is None)."""
        from steergym.bench.catalog import eval_policy
        from steergym.bench.evaluate import policy_maker

        policy, env_id = eval_policy(self.name, env_id, seed)
        if self.steer == "vgps":
            from steergym.algorithms.vgps import ValueFunction

            if not self.critic:
                raise ValueError("--steer vgps needs --critic DIR (a value function: steergym train vgps ...)")
            policy = ValueFunction.load(self.critic).steer(policy, env_id, self.num_samples, self.temperature, seed,
                                                           self.action_steps)
        elif self.steer is not None:
            raise ValueError(f"steer={self.steer!r}: the only steering is 'vgps'")
        elif self.critic:
            raise ValueError("--critic needs --steer vgps")
        return policy, env_id, policy_maker(policy, self.expert_kwargs or None)


def evaluate_distributed(
    env_id: str | None,
    policy: str | PolicySpec = "expert",
    episodes: int = 20,
    seed: int = 0,
    workers: int = 2,
    address: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    expert_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    num_cpus: int | None = None,
) -> EvalResult:
    """`steergym.bench.evaluate.evaluate` with the episodes sharded by reset seed over `workers`
    Ray actors; returns the same EvalResult as the single-process run (no video).

    Args:
        env_id: registered id; None: the policy's own task (shipped policies and checkpoints).
        policy: a policy name (see `PolicySpec.name`) or a `PolicySpec`.
        episodes, seed: episode i is reset with seed + i.
        workers: number of actors (>= 1); each holds its own env and policy.
        address: None (local Ray on this machine), "auto" or "HOST:PORT" (a running cluster).
        env_kwargs: options for `gymnasium.make`.
        expert_kwargs: the expert's knobs (with policy="expert"; or put them in the PolicySpec).
        progress: a tqdm bar over finished episodes.
        num_cpus: CPUs of a local Ray started here (default: all of this machine's).

    Raises:
        ImportError: Ray is not installed (the message names the install command).
        ValueError: bad workers, episodes, policy, env id or env option.
    """
    workers, episodes = _positive("workers", workers), _positive("episodes", episodes)
    spec = policy if isinstance(policy, PolicySpec) else PolicySpec(str(policy), dict(expert_kwargs or {}))
    if expert_kwargs and isinstance(policy, PolicySpec):
        raise ValueError("pass expert_kwargs inside the PolicySpec")
    env_kwargs = dict(env_kwargs or {})
    if "render_mode" in env_kwargs:
        raise ValueError("evaluate_distributed records no video: leave render_mode out of env_kwargs")
    # Built once on the driver too: a bad name, folder or env id fails here, not in every actor.
    _, env_id, _ = spec.build(env_id, seed)
    ray = _ray(address, num_cpus)
    actor = ray.remote(_EvalWorker).options(num_cpus=_cpus_per_actor(ray, workers))
    actors = [actor.remote(env_id, spec, seed, env_kwargs) for _ in range(workers)]
    try:
        policy_name = _get(ray, actors[0].policy_name.remote())
        seeds = list(range(seed, seed + episodes))
        outcomes: list[EpisodeOutcome] = []
        for part in _run_chunks(ray, actors, "run", _chunks(seeds, workers), episodes,
                                f"{env_id} [{policy_name}] x{workers}", progress):
            outcomes.extend(part)
    finally:
        _kill(ray, actors)
    outcomes.sort(key=lambda o: o.seed)
    return summarize(env_id, policy_name, seed, outcomes, env_kwargs)


def collect_distributed(
    env_id: str,
    episodes: int,
    quality: str,
    dataset_id: str,
    seed: int = 0,
    workers: int = 2,
    address: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    root: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    num_cpus: int | None = None,
):
    """`steergym.data.collect.collect` with the episodes recorded by `workers` Ray actors; the driver
    writes one Minari dataset, the same as the single-process collection's. Returns (folder, episodes).

    Raises:
        ImportError: Ray is not installed. ValueError: bad workers, episodes, quality or env id.
        FileExistsError: the dataset exists and `overwrite` is False (checked before collecting).
    """
    import gymnasium as gym

    from steergym.data.collect import episode_qualities, write_collection
    from steergym.data.dataset import datasets_root

    workers, episodes = _positive("workers", workers), _positive("episodes", episodes)
    labels = episode_qualities(quality, episodes)
    final = datasets_root(root) / dataset_id
    if final.exists() and not overwrite:
        raise FileExistsError(f"dataset {dataset_id!r} already exists at {final}; pass overwrite=True")
    env = gym.make(env_id, **(env_kwargs or {}))  # checks the id and options here, and writes the dataset
    try:
        ray = _ray(address, num_cpus)
        actor = ray.remote(_CollectWorker).options(num_cpus=_cpus_per_actor(ray, workers))
        actors = [actor.remote(env_id, env_kwargs or {}, seed) for _ in range(workers)]
        recorded = []
        try:
            for part in _run_chunks(ray, actors, "record", _chunks(list(enumerate(labels)), workers), episodes,
                                    f"collect {env_id} ({quality}) x{workers}", progress):
                recorded.extend(part)
        finally:
            _kill(ray, actors)
        recorded.sort(key=lambda ep: ep.seed)
        folder = write_collection(dataset_id, recorded, env, quality, seed, env_kwargs, root, overwrite)
    finally:
        env.close()
    return folder, recorded


# ---------------------------------------------------------------------------------- actors
class _EvalWorker:
    """One env and one policy (built from the spec), running episodes by reset seed."""

    def __init__(self, env_id: str, spec: PolicySpec, seed: int, env_kwargs: dict[str, Any]) -> None:
        policy, _, make_policy = spec.build(env_id, seed)
        self.runner = EpisodeRunner(env_id, policy, seed, env_kwargs, make_policy)

    def policy_name(self) -> str:
        return self.runner.policy_name

    def run(self, seeds: list[int]) -> list[EpisodeOutcome]:
        return [self.runner.run(s) for s in seeds]


class _CollectWorker:
    """One env recording collection episodes (k, quality label) with the scripted expert."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], seed: int) -> None:
        import gymnasium as gym

        self.env, self.seed = gym.make(env_id, **env_kwargs), seed

    def record(self, tasks: list[tuple[int, str]]) -> list[Any]:
        from steergym.data.collect import record_seeds

        return record_seeds(self.env, tasks, self.seed)


# ---------------------------------------------------------------------------------- internals
def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _ray(address: str | None, num_cpus: int | None) -> Any:
    require_ray("distributed evaluation and collection (--workers)")
    return init_ray(address, num_cpus)


def _cpus_per_actor(ray: Any, workers: int) -> float:
    """One CPU per actor, or an equal share when there are more actors than CPUs (oversubscribed)."""
    total = float(ray.cluster_resources().get("CPU", 1.0))
    return min(1.0, total / workers)


def _chunks(items: list[Any], workers: int) -> list[list[Any]]:
    """`items` in order, cut into about CHUNKS_PER_WORKER chunks per worker."""
    size = max(1, math.ceil(len(items) / (workers * CHUNKS_PER_WORKER)))
    return [items[i:i + size] for i in range(0, len(items), size)]


def _run_chunks(ray: Any, actors: list[Any], method: str, chunks: list[list[Any]], total: int, desc: str,
                progress: bool) -> Iterator[list[Any]]:
    """Each chunk's results, in the order they finish; a free actor takes the next chunk."""
    from ray.util import ActorPool
    from tqdm.auto import tqdm

    pool = ActorPool(actors)
    with tqdm(total=total, desc=desc, unit="ep", disable=not progress, leave=False) as bar:
        try:
            for part in pool.map_unordered(lambda a, chunk: getattr(a, method).remote(chunk), chunks):
                bar.update(len(part))
                yield part
        except ray.exceptions.RayTaskError as exc:
            raise exc.as_instanceof_cause() from None


def _get(ray: Any, ref: Any) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        raise exc.as_instanceof_cause() from None


def _kill(ray: Any, actors: Iterable[Any]) -> None:
    for a in actors:
        ray.kill(a)
