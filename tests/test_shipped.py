"""The base policies shipped in steergym/assets/policies: complete, small, loadable, and as good as stated."""

from __future__ import annotations

import gymnasium as gym
import pytest

from steergym.bench.evaluate import evaluate
from steergym.policies import DiffusionPolicy, FlowPolicy, load_policy
from steergym.policies.zoo import (
    load_shipped,
    measurement_environment,
    recorded_environment,
    resolve_policy,
    shipped_policies,
)
from steergym.registry import env_ids

SHIPPED = shipped_policies()
CHECK_EPISODES = 20  # seeds 0..19, a prefix of the 100 seeds each policy was measured on
MAX_BYTES = 5 * 2**20


def test_every_widowx_task_and_robosuite_lift_has_a_diffusion_policy_plus_a_flow_policy_and_a_generalist():
    single_task = {e.env_ids[0] for e in SHIPPED.values() if e.kind == "diffusion" and len(e.env_ids) == 1}
    assert single_task == set(env_ids()) | {"steergym/Robosuite-Lift-v0"}
    assert any(e.kind == "flow" for e in SHIPPED.values())
    assert any(len(e.env_ids) >= 4 for e in SHIPPED.values()), "no task-conditioned generalist"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_policy_is_small_and_loads_against_its_envs(name):
    entry = SHIPPED[name]
    size = sum(f.stat().st_size for f in entry.path.iterdir())
    assert size < MAX_BYTES, f"{name} is {size / 2**20:.1f} MiB"
    for env_id in entry.env_ids:
        env = gym.make(env_id)
        policy = load_policy(entry.path, env)  # validates both spaces against the env
        env.close()
        assert isinstance(policy, DiffusionPolicy if entry.kind == "diffusion" else FlowPolicy)
        assert policy.task_ids == (entry.env_ids if len(entry.env_ids) > 1 else ())
    low, high = entry.success_band
    for env_id, rate in entry.success_rate.items():
        assert low <= rate <= high, f"{name} on {env_id}: recorded {rate} outside its band {entry.success_band}"


def test_each_recorded_rate_is_its_recorded_failed_seeds():
    """index.json's success rate and failed seeds are one measurement: the rate is 1 - failures / episodes."""
    for name, entry in SHIPPED.items():
        assert set(entry.failed_seeds) == set(entry.success_rate) == set(entry.env_ids), name
        for env_id, rate in entry.success_rate.items():
            failed = entry.failed_seeds[env_id]
            assert len(set(failed)) == len(failed) and all(0 <= s < entry.episodes for s in failed), (name, env_id)
            assert rate == pytest.approx(1 - len(failed) / entry.episodes, abs=1e-9), (name, env_id, rate, len(failed))


# On the machine and libraries the index was measured with, the re-run must repeat the record exactly.
# Elsewhere one flipped episode per policy and task is allowed among the 20: another CPU or BLAS build
# changes the last float bits, which decide only episodes ending at a success boundary. Measured: the
# IK change (NumPy/OpenBLAS -> MuJoCo's C routines, the same kind of last-bit change) flipped 1 of the
# 1,200 recorded episodes (generalist on PutCarrotOnPlate, seed 85), so one flip in 20 is already 60x
# that rate; more than one means the policy or the task changed, not the machine.
SAME_MACHINE = recorded_environment() == measurement_environment()
FLIPS_ALLOWED = 0 if SAME_MACHINE else 1


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_policy_repeats_its_recorded_episodes(name):
    """Re-run the first 20 of the 100 recorded evaluation seeds: the same episodes fail.

    Evaluation is deterministic (the env and the policy's noise are seeded by the episode seed), and
    docs/benchmarks.md says the re-measure equals the record. The records were re-measured on all 100
    seeds with `recipes/shipped_policies.py --measure` after the IK change and the PushCube rule change
    (the cube must touch the table): two episodes had flipped (generalist on carrot, seed 85, now
    succeeds; push, seed 76, now fails). index.json's "measured_on" names the CPU and libraries; see
    FLIPS_ALLOWED for elsewhere. If a flip shows, the message names the seeds; re-record with
    `--measure` rather than loosen this.
    """
    entry = SHIPPED[name]
    for env_id in entry.env_ids:
        policy, bound_env = resolve_policy(name, env_id)
        result = evaluate(bound_env, policy, episodes=CHECK_EPISODES, seed=0, progress=False)
        recorded = {s for s in entry.failed_seeds[env_id] if s < CHECK_EPISODES}
        flipped = sorted(set(result.failed_seeds) ^ recorded)
        assert len(flipped) <= FLIPS_ALLOWED, (
            f"{name} on {env_id}, seeds 0..{CHECK_EPISODES - 1}: failed {sorted(result.failed_seeds)}, recorded "
            f"{sorted(recorded)} (flipped {flipped}; {FLIPS_ALLOWED} allowed, "
            f"{'same' if SAME_MACHINE else 'another'} machine than the record's: {measurement_environment()})"
        )


def test_the_index_names_where_it_was_measured():
    recorded = recorded_environment()
    assert recorded is not None and set(recorded) == set(measurement_environment()), recorded


def test_unknown_shipped_name_lists_the_real_ones():
    with pytest.raises(ValueError, match="widowx-carrot-diffusion"):
        load_shipped("widowx-carrot-transformer")


def test_generalist_needs_a_task():
    name = next(n for n, e in SHIPPED.items() if len(e.env_ids) > 1)
    with pytest.raises(ValueError, match="--env"):
        resolve_policy(name)
    with pytest.raises(ValueError, match="for_task"):
        load_shipped(name).act(gym.make(SHIPPED[name].env_ids[0]).reset(seed=0)[0])
