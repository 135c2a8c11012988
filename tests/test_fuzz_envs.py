"""Property-based fuzzing of what users hand the envs: actions to `step` and options to `gymnasium.make`.

Actions (NaN, inf, huge values, every dtype, wrong shapes, Python lists, nested lists, None,
strings, mappings) given to a registered WidowX task, its registered DSRL and residual ids and the
steering wrappers either work (exactly when the value is a finite real-numbered array of the
action's shape, and then a list gives the same step as the array) or raise a ValueError that names
the env or wrapper and says what is wrong with the value; a refused action does not advance the
simulation, and a valid step works right after it.

Options to `gymnasium.make` (unknown names, wrong types, negative or absurd numbers, bad render
modes) either build a working env or raise a ValueError/TypeError naming the option.
"""

from __future__ import annotations

import math
import re
import numbers
import warnings

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from steergym.envs.controller import ControlLimits
from steergym.policies.zoo import resolve_policy
from steergym.wrappers import ActionChunkWrapper, ProposalWrapper

LIFT = "steergym/WidowXLiftCube-v0"
DSRL = "steergym/WidowXLiftCube-DSRL-v0"
RESIDUAL = "steergym/WidowXLiftCube-Residual-v0"
POLICY = "widowx-lift-diffusion"


def fuzz(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ----------------------------------------------------------------------------- the envs under test
class Case:
    """One env under test: its owner name in error messages, the words naming its action, and the
    shapes of a valid action (an (H, d) chunk is accepted besides the flat (H*d,) one)."""

    def __init__(self, env: gym.Env, owner: str, what: str, shapes: tuple[tuple[int, ...], ...]) -> None:
        self.env, self.owner, self.what, self.shapes = env, owner, what, shapes
        self.zero = np.zeros(shapes[0], np.float32)

    def sim_time(self) -> float:
        return float(self.env.unwrapped.data.time)


@pytest.fixture(scope="module")
def cases():
    policy = resolve_policy(POLICY, LIFT)[0]
    made = {
        "task": Case(gym.make(LIFT), "LiftCube", "action", ((7,),)),
        "dsrl": Case(gym.make(DSRL), "NoiseActionWrapper", "noise action", ((28,), (4, 7))),
        "residual": Case(gym.make(RESIDUAL), "ResidualActionWrapper", "correction", ((7,),)),
        "chunk": Case(ActionChunkWrapper(gym.make(LIFT), 2), "ActionChunkWrapper", "action", ((14,), (2, 7))),
    }
    proposal = ProposalWrapper(gym.make(LIFT), policy, 3)
    for case in made.values():
        case.env.reset(seed=0)
    proposal.reset(seed=0)
    yield made, proposal
    for case in made.values():
        case.env.close()
    proposal.close()


BOX_CASES = ["task", "dsrl", "residual", "chunk"]


# ----------------------------------------------------------------------------- action strategies
ODD_DTYPES = ["complex128", "complex64", "U8", "S8", "datetime64[s]", "timedelta64[s]", "object", "V8"]
NUMERIC_DTYPES = ["float64", "float32", "float16", "int8", "int64", "uint8", "uint64", "bool"]
floats_any = st.floats(allow_nan=True, allow_infinity=True, width=64)
# element values for Python lists: numbers of any size, and things that are not numbers
list_items = (floats_any | st.integers() | st.booleans() | st.none() | st.text(max_size=4)
              | st.complex_numbers(max_magnitude=10) | st.binary(max_size=3))


def actions_for(shape: tuple[int, ...]):
    """Candidate actions for an action of `shape`: valid ones, near misses and junk."""
    n = int(np.prod(shape))
    shape_variants = st.sampled_from([shape, (n,), (n + 1,), (n - 1,), (1, n), (n, 1), (), (0,), (2, *shape)])
    return st.one_of(
        hnp.arrays(np.float64, st.just(shape), elements=floats_any),
        hnp.arrays(np.float32, st.just(shape), elements=st.floats(-4, 4, width=32)),
        hnp.arrays(st.sampled_from(NUMERIC_DTYPES), st.just(shape)),
        hnp.arrays(st.sampled_from(ODD_DTYPES[:6]), st.just(shape)),
        hnp.arrays(np.float64, shape_variants, elements=st.floats(-2, 2)),
        st.lists(floats_any, min_size=n, max_size=n),
        st.lists(st.floats(-3, 3) | st.integers(-5, 5), min_size=n, max_size=n),
        st.lists(list_items, min_size=n, max_size=n),
        st.lists(st.integers(), min_size=n, max_size=n),  # unbounded ints: some beyond float64
        st.lists(st.lists(st.floats(-1, 1), max_size=3), max_size=n + 1),  # nested, often ragged
        st.none() | st.text(max_size=8) | st.binary(max_size=8) | floats_any | st.integers()
        | st.dictionaries(st.text(max_size=3), st.floats(-1, 1), max_size=3),
    )


def _real(x) -> bool:
    return isinstance(x, (numbers.Real, np.bool_)) and not isinstance(x, (str, bytes))


def verdict(action, shapes) -> str:
    """What the env must do with `action`: "ok", or the reason it must refuse ("numeric", "shape",
    "finite") — the contract of `steergym.checks.finite_array` and the wrappers' checks."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = np.asarray(action)
    except (TypeError, ValueError, OverflowError):
        return "numeric"  # a ragged nested list
    if raw.dtype.kind == "O":
        if not all(_real(x) for x in raw.flat):
            return "numeric"
        try:
            arr = raw.astype(np.float64)
        except OverflowError:
            return "finite"  # a Python int beyond float64
    elif raw.dtype.kind in "biuf":
        arr = raw.astype(np.float64)
    else:
        return "numeric"
    if arr.shape not in shapes:
        return "shape"
    if not np.all(np.isfinite(arr)):
        return "finite"
    return "ok"


def check_refusal(exc: Exception, case: Case, reason: str, action) -> None:
    message = str(exc)
    assert isinstance(exc, ValueError), f"{type(exc).__name__}: {message}"
    assert message.startswith(f"{case.owner}:") and case.what in message, message
    needles = {"numeric": ["must be numeric"], "shape": ["must have shape"], "finite": ["finite", "NaN or inf"]}
    assert any(n in message for n in needles[reason]), (reason, message)
    if reason == "shape":
        assert str(np.asarray(action).shape) in message, message


def step_valid(env: gym.Env, action):
    obs, reward, terminated, truncated, info = env.step(action)
    assert env.observation_space.contains(obs), obs
    assert math.isfinite(reward) and isinstance(info, dict)
    if terminated or truncated:
        env.reset()
    return obs, reward


# ----------------------------------------------------------------------------- step()
@pytest.mark.parametrize("name", BOX_CASES)
@fuzz(50)
@given(data=st.data())
def test_step_takes_a_valid_action_or_refuses_it_clearly(cases, name, data):
    case = cases[0][name]
    action = data.draw(actions_for(case.shapes[0]), label="action")
    reason = verdict(action, case.shapes)
    event(reason)
    before = case.sim_time()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            step_valid(case.env, action)
    except Exception as exc:  # noqa: BLE001 - the assertions say which exceptions are right
        assert reason != "ok", f"a valid action {action!r} was refused: {type(exc).__name__}: {exc}"
        check_refusal(exc, case, reason, action)
        assert case.sim_time() == before, "a refused action advanced the simulation"
    else:
        assert reason == "ok", f"{action!r} should have been refused ({reason}) but was taken"
    step_valid(case.env, case.zero)  # still usable


@pytest.mark.parametrize("name", BOX_CASES)
@fuzz(15)
@given(values=st.lists(st.floats(-3, 3, width=32) | st.integers(-2, 2), min_size=28, max_size=28))
def test_a_list_steps_exactly_like_the_array(cases, name, values):
    case = cases[0][name]
    n = int(np.prod(case.shapes[0]))
    as_list = values[:n]
    results = []
    for action in (as_list, np.array(as_list, dtype=np.float64), np.array(as_list, dtype=np.float32)):
        case.env.reset(seed=3)
        results.append(case.env.step(action))
    for obs, reward, terminated, truncated, _ in results[1:]:
        np.testing.assert_array_equal(obs, results[0][0])
        assert (reward, terminated, truncated) == results[0][1:4]


def _valid_index(action, k: int) -> bool:
    if isinstance(action, (bool, np.bool_)):
        return False
    try:
        arr = np.asarray(action)
    except (TypeError, ValueError, OverflowError):
        return False
    if arr.size != 1:
        return False
    value = arr.reshape(()).item() if arr.dtype.kind in "iuf" else None
    if value is None or isinstance(value, bool) or not float(value).is_integer():
        return False
    return 0 <= value < k


@fuzz(60)
@given(action=st.integers() | floats_any | st.none() | st.booleans() | st.text(max_size=4)
       | st.lists(st.integers(-2, 4), max_size=3) | hnp.arrays(st.sampled_from(NUMERIC_DTYPES + ODD_DTYPES[:4]),
                                                                hnp.array_shapes(min_dims=0, max_dims=2, max_side=2)))
def test_proposal_index_is_taken_or_refused_clearly(cases, action):
    env = cases[1]
    before = env.unwrapped.data.time
    try:
        obs, reward, terminated, truncated, info = env.step(action)
    except Exception as exc:  # noqa: BLE001
        assert not _valid_index(action, 3), f"a valid index {action!r} was refused: {exc!r}"
        assert isinstance(exc, ValueError) and str(exc).startswith("ProposalWrapper:"), repr(exc)
        assert "index" in str(exc) and env.unwrapped.data.time == before
    else:
        assert _valid_index(action, 3), f"{action!r} should have been refused"
        assert info["proposal_index"] == int(np.asarray(action).item()) and env.observation_space.contains(obs)
        if terminated or truncated:
            env.reset()
    env.step(0)


# ----------------------------------------------------------------------------- gymnasium.make options
WIDOWX_OPTIONS = ["obs_mode", "reward_type", "render_mode", "image_size", "render_size", "camera", "render_camera",
                  "wrist_camera", "terminate_on_success", "control_limits"]
STEERED_OPTIONS = ["noise_bound", "scale", "policy", "policy_seed", "base_max_episode_steps"]
option_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.integers(), floats_any, st.text(max_size=12),
    st.sampled_from(["state", "pixels", "pixels_state", "sparse", "dense", "rgb_array", "front", "wrist",
                     "third_person", POLICY, "widowx-lift-flow", "nope"]),
    st.tuples(st.integers(-10, 700), st.integers(-10, 700)), st.tuples(floats_any, floats_any),
    st.lists(st.integers(0, 200), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


sizes = st.tuples(st.integers(8, 64), st.integers(8, 64)) | st.sampled_from([(480, 640), (481, 64), (64, 641)])
VALID = {  # values each option takes (or nearly: sizes at and just past MuJoCo's 480 x 640 framebuffer)
    "obs_mode": st.sampled_from(["state", "pixels", "pixels_state"]),
    "reward_type": st.sampled_from(["sparse", "dense"]),
    "render_mode": st.sampled_from([None, "rgb_array"]),
    "image_size": sizes, "render_size": sizes,
    "camera": st.sampled_from(["third_person", "front", "wrist"]),
    "render_camera": st.sampled_from(["third_person", "front", "wrist"]),
    "wrist_camera": st.booleans(), "terminate_on_success": st.booleans(),
    "control_limits": st.sampled_from([None, ControlLimits(), ControlLimits(max_delta_pos=0.02)]),
    "noise_bound": st.floats(0.01, 3), "scale": st.floats(0.01, 1),
    "policy": st.sampled_from([POLICY, "widowx-lift-flow"]), "policy_seed": st.integers(0, 2**64 - 1),
    "base_max_episode_steps": st.none() | st.integers(1, 100),
}


@st.composite
def make_kwargs(draw, names: list[str]) -> dict:
    chosen = draw(st.lists(st.sampled_from(names + ["unknown_option"]), unique=True, min_size=1, max_size=3))
    kwargs = {name: draw(option_values if name not in VALID or draw(st.integers(0, 2)) == 0 else VALID[name])
              for name in chosen}
    if isinstance(kwargs.get("render_mode"), (str, type(None))) is False:
        # gymnasium.make itself calls render_mode.endswith() before the env sees it (AttributeError
        # inside gymnasium, not steergym's to fix); render modes are fuzzed as strings and None
        kwargs["render_mode"] = draw(st.text(max_size=8) | st.none())
    if "image_size" in kwargs and draw(st.booleans()):
        kwargs["obs_mode"] = "pixels"  # so that the size is rendered, not only declared
    if "render_size" in kwargs and draw(st.booleans()):
        kwargs["render_mode"] = "rgb_array"
    if kwargs.get("render_mode") == "human":
        kwargs["render_mode"] = "rgb_array"  # would open a window (or refuse for lack of a display)
    return kwargs


# Words that name an option in an error message: the option itself, or what it decides.
ALSO_NAMED_BY = {"obs_mode": ("observation space",), "image_size": ("observation space",)}
GYMNASIUM_SUFFIX = " was raised from the environment creator"  # gymnasium re-raises TypeErrors with the kwargs


def _check_make(env_id: str, kwargs: dict) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gymnasium warns about render modes it does not know
            env = gym.make(env_id, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the assertions say which exceptions are right
        assert type(exc) in (ValueError, TypeError), f"{type(exc).__name__} for {kwargs}: {exc}"
        message = str(exc).split(GYMNASIUM_SUFFIX)[0]
        needles = [name for name in kwargs] + [w for name in kwargs for w in ALSO_NAMED_BY.get(name, ())]
        assert any(n in message for n in needles), f"the error does not name the option ({kwargs}): {message}"
        event(f"refused: {type(exc).__name__}")
        return
    event("accepted")
    try:  # accepted: the options are honoured as given, and the env works
        for name, value in kwargs.items():
            if name in WIDOWX_OPTIONS and name != "control_limits":
                have = getattr(env.unwrapped, name)
                assert have == (tuple(value) if name.endswith("_size") else value), (name, value, have)
                assert type(have) is type(value) or name.endswith("_size") or value is None, (name, value, have)
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        step_valid(env, np.zeros(env.action_space.shape, np.float32))
        if env.render_mode == "rgb_array":
            frame = env.render()
            assert frame.ndim == 3 and frame.dtype == np.uint8
    finally:
        env.close()


@fuzz(60)
@given(kwargs=make_kwargs(WIDOWX_OPTIONS))
def test_make_options_of_a_task_work_or_are_refused_clearly(kwargs):
    _check_make(LIFT, kwargs)


@fuzz(30)
@given(image_size=sizes | option_values, render_size=sizes | option_values)
def test_image_sizes_render_or_are_refused_at_make(image_size, render_size):
    """Sizes are rendered (a pixel observation and a frame), so one MuJoCo cannot draw fails at make."""
    _check_make(LIFT, dict(obs_mode="pixels", render_mode="rgb_array", image_size=image_size,
                           render_size=render_size))


@pytest.mark.parametrize("env_id", [DSRL, RESIDUAL])
@fuzz(30)
@given(kwargs=make_kwargs(STEERED_OPTIONS + ["obs_mode", "reward_type", "image_size"]))
def test_make_options_of_a_steered_id_work_or_are_refused_clearly(env_id, kwargs):
    if env_id == DSRL:
        kwargs.pop("scale", None)  # the other method's option: refused as unknown, tested once below
    else:
        kwargs.pop("noise_bound", None)
    _check_make(env_id, kwargs)


def test_the_other_methods_option_is_refused_by_name():
    with pytest.raises(TypeError, match="scale"):
        gym.make(DSRL, scale=0.1)
    with pytest.raises(TypeError, match="noise_bound"):
        gym.make(RESIDUAL, noise_bound=1.0)


# ----------------------------------------------------------------------------- what the fuzz found
@pytest.mark.parametrize("action, needle", [
    ([10**400] * 7, "must be finite"),  # was a bare OverflowError from numpy
    (np.full(7, 0.5 + 0.5j), "must be numeric"),  # was taken, the imaginary part silently dropped
    (np.zeros(7, "datetime64[s]"), "must be numeric"),  # was taken as zeros
    (["0.1"] * 7, "must be numeric"),  # was parsed as numbers
    ([None] * 7, "must be numeric"),  # was "must be finite, got [nan, ...]"
], ids=["int-beyond-float64", "complex", "datetime", "strings", "nones"])
def test_non_real_actions_are_refused_by_name(cases, action, needle):
    case = cases[0]["task"]
    with pytest.raises(ValueError, match=f"^LiftCube: action {needle}"):
        case.env.step(action)
    step_valid(case.env, case.zero)


@pytest.mark.parametrize("name", ["dsrl", "residual"])
def test_huge_finite_values_are_clipped_not_called_infinite(cases, name):
    """float32 wrappers converted 1e300 to inf and refused it as "NaN or inf"; the task clips it."""
    case = cases[0][name]
    huge = np.full(case.shapes[0], 1e300)
    case.env.reset(seed=1)
    _, _, _, _, info = case.env.step(huge)
    executed = info["noise"] if name == "dsrl" else info["executed_action"]
    assert np.all(np.isfinite(executed)) and executed.dtype == np.float32
    if name == "dsrl":
        np.testing.assert_array_equal(executed, np.full(28, 1.5, np.float32))


@pytest.mark.parametrize("kwargs, error, needle", [
    (dict(image_size=None), ValueError, "image_size must be (height, width)"),  # was TypeError: no len()
    (dict(image_size="ab"), ValueError, "image_size must be (height, width)"),  # was int('a')
    (dict(image_size=(math.inf, 8)), ValueError, "image_size must be (height, width)"),  # was OverflowError
    (dict(image_size=(10**6, 10**6)), ValueError, "image_size=(1000000, 1000000) exceeds"),  # was MemoryError
    (dict(image_size=(481, 64), obs_mode="pixels"), ValueError, "exceeds the offscreen framebuffer"),  # at reset
    (dict(render_size=(64, 641), render_mode="rgb_array"), ValueError, "render_size=(64, 641) exceeds"),  # render
    (dict(render_camera=None), ValueError, "render_camera=None"),  # was named "camera"
    (dict(wrist_camera="no"), TypeError, "wrist_camera must be True or False"),  # was truthy: a wrist camera
    (dict(terminate_on_success=None), TypeError, "terminate_on_success must be True or False"),
    (dict(control_limits={"max_delta_pos": 1}), TypeError, "control_limits must be"),  # was AttributeError
], ids=lambda v: str(v)[:40] if isinstance(v, dict) else None)
def test_bad_task_options_found_by_the_fuzz(kwargs, error, needle):
    with pytest.raises(error) as info:
        gym.make(LIFT, **kwargs)
    assert str(info.value).startswith("LiftCube: ") and needle in str(info.value), str(info.value)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(policy_seed="abc"), "policy_seed must be an integer"),  # was int('abc')
    (dict(policy_seed=None), "policy_seed must be an integer"),
    (dict(policy_seed=2**70), "policy_seed must be an integer"),  # was "Overflow when unpacking long long"
    (dict(base_max_episode_steps=-1), "base_max_episode_steps must be an integer >= 1"),  # was a TimeLimit of -1
    (dict(base_max_episode_steps="x"), "base_max_episode_steps must be an integer >= 1"),
])
def test_bad_steered_options_found_by_the_fuzz(kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        gym.make(DSRL, **kwargs)
