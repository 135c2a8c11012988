"""Property-based fuzzing of the files steergym reads: policy checkpoints and Minari datasets.

Checkpoints (a tiny saved policy and a shipped one, copied for each example): truncated or
bit-flipped weights, a tensor renamed through safetensors' own API, corrupted or restructured
config.json, pickle payloads under pickle suffixes and disguised as weights. `load_policy` either
succeeds or raises ValueError naming the file; without a matching hash in config.json, changed
weights never load; a pickle is never unpickled (its payload would create a marker file); and no
load, failed or not, changes a byte of the folder it read or of the original.

Datasets (one small collected dataset, copied for each example): truncated or bit-flipped HDF5,
corrupted JSON metadata, spaces that differ from the env's: a ValueError naming the dataset, or
(for changes the format cannot detect) a successful load.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import pickle
import shutil
import struct
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from steergym.data import collect, load_transitions
from steergym.policies import DiffusionPolicy, PolicyConfig, load_policy
from steergym.policies.checkpoint import CONFIG_FILE, PICKLE_SUFFIXES, WEIGHTS_FILE, sha256_file

ASSETS = Path(__file__).resolve().parents[1] / "steergym" / "assets" / "policies"
SHIPPED = ASSETS / "widowx-lift-flow"
LIFT = "steergym/WidowXLiftCube-v0"
DATASET = "steergym/fuzz/lift-v0"
OBS = gym.spaces.Box(-10.0, 10.0, (27,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
_counter = itertools.count()
# minari casts a JSON bound beyond float32 to inf with a RuntimeWarning; the loader then refuses it
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")


def fuzz(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` (relative name -> hex)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{"tiny": a small saved policy, "shipped": the shipped widowx-lift-flow} and a scratch folder;
    the shipped folder is checked to be byte-identical at the end."""
    root = tmp_path_factory.mktemp("fuzz_ckpt")
    torch.manual_seed(0)
    policy = DiffusionPolicy(OBS, ACT, PolicyConfig(hidden_dim=32, time_dim=8))
    policy.save(root / "tiny", metadata={"note": "fuzz source"})
    before = digest(SHIPPED)
    yield {"tiny": root / "tiny", "shipped": SHIPPED}, root
    assert digest(SHIPPED) == before, "a shipped checkpoint was modified"


def scratch_copy(sources, which: str) -> Path:
    folders, root = sources
    folder = root / f"case{next(_counter)}"
    shutil.copytree(folders[which], folder)
    return folder


def rehash(folder: Path) -> None:
    """Rewrite config.json's weights_sha256 for the current weights (a writer that hashed corrupt data)."""
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["weights_sha256"] = sha256_file(folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def load_outcome(folder: Path, *, target: Path | None = None, **kwargs):
    """Load `target` (default `folder`); the policy, or the ValueError. Asserts the error names a
    path inside `folder` (or `folder` itself), and that the load changed no byte under `folder`."""
    before = digest(folder)
    try:
        policy = load_policy(target or folder, **kwargs)
    except ValueError as exc:
        assert str(folder) in str(exc), f"the error does not name the checkpoint: {exc}"
        outcome = exc
    else:
        outcome = policy
    assert digest(folder) == before, "loading changed the files it read"
    return outcome


def assert_intact(policy) -> None:
    """A successful load gives a working policy with finite weights."""
    assert all(torch.isfinite(t).all() for t in policy.state_dict().values() if t.is_floating_point())
    obs = np.zeros(policy.observation_space.shape, np.float32)
    chunk = policy.sample(obs, np.zeros(policy.noise_shape, np.float32))
    assert chunk.shape == policy.noise_shape and np.all(np.isfinite(chunk))


@pytest.mark.parametrize("which", ["tiny", "shipped"])
@fuzz(30)
@given(data=st.data(), rehashed=st.booleans())
def test_truncated_weights_are_refused(sources, which, data, rehashed):
    folder = scratch_copy(sources, which)
    weights = folder / WEIGHTS_FILE
    raw = weights.read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    weights.write_bytes(raw[:cut])
    if rehashed:
        rehash(folder)
    outcome = load_outcome(folder)
    assert isinstance(outcome, ValueError), "a truncated weights file loaded"
    assert str(weights) in str(outcome)
    assert ("SHA-256" in str(outcome)) != rehashed, str(outcome)
    shutil.rmtree(folder)


@pytest.mark.parametrize("which", ["tiny", "shipped"])
@fuzz(30)
@given(data=st.data(), rehashed=st.booleans())
def test_bit_flipped_weights_are_refused_unless_rehashed_and_harmless(sources, which, data, rehashed):
    folder = scratch_copy(sources, which)
    weights = folder / WEIGHTS_FILE
    raw = bytearray(weights.read_bytes())
    header_end = 8 + struct.unpack("<Q", bytes(raw[:8]))[0]
    # half the flips in the header (sizes, names, offsets, dtypes), half in the tensor data
    where = data.draw(st.sampled_from(["header", "data"]), label="where")
    low, high = (0, header_end - 1) if where == "header" else (header_end, len(raw) - 1)
    for position in data.draw(st.lists(st.integers(low, high), min_size=1, max_size=4), label="positions"):
        raw[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    weights.write_bytes(bytes(raw))
    if rehashed:
        rehash(folder)
    outcome = load_outcome(folder)
    event(f"{where}, rehashed={rehashed}: {'loaded' if not isinstance(outcome, ValueError) else 'refused'}")
    if not rehashed:
        assert isinstance(outcome, ValueError) and "SHA-256" in str(outcome), "modified weights loaded"
    elif not isinstance(outcome, ValueError):  # a self-consistent file whose values changed a little
        assert_intact(outcome)
    shutil.rmtree(folder)


tensor_names = st.text(min_size=1, max_size=24).filter(lambda s: s != "__metadata__")


@pytest.mark.parametrize("which", ["tiny", "shipped"])
@fuzz(15)
@given(data=st.data(), new_name=tensor_names, rehashed=st.booleans())
def test_a_renamed_tensor_is_refused_by_name(sources, which, data, new_name, rehashed):
    folder = scratch_copy(sources, which)
    weights = folder / WEIGHTS_FILE
    tensors = load_file(str(weights))
    old_name = data.draw(st.sampled_from(sorted(tensors)), label="old_name")
    if new_name in tensors:
        new_name = new_name + "_renamed"
    tensors[new_name] = tensors.pop(old_name)
    save_file(tensors, str(weights), metadata={"format": "steergym.policy"})
    if rehashed:
        rehash(folder)
    outcome = load_outcome(folder)
    assert isinstance(outcome, ValueError), "a checkpoint with a renamed tensor loaded"
    if rehashed:
        message = str(outcome)
        assert "tensors do not match the architecture" in message and repr(old_name) in message, message
        assert repr(new_name) in message, message
    else:
        assert "SHA-256" in str(outcome)
    shutil.rmtree(folder)


@pytest.mark.parametrize("which", ["tiny", "shipped"])
@fuzz(30)
@given(data=st.data())
def test_corrupted_config_bytes_are_refused_or_harmless(sources, which, data):
    folder = scratch_copy(sources, which)
    config = folder / CONFIG_FILE
    raw = bytearray(config.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
    else:
        for position in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4), label="flips"):
            raw[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    config.write_bytes(bytes(raw))
    outcome = load_outcome(folder)
    event("refused" if isinstance(outcome, ValueError) else "loaded")
    if not isinstance(outcome, ValueError):  # the change hit free text (metadata) or a harmless value
        assert_intact(outcome)
    shutil.rmtree(folder)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
# Plausible numbers for the architecture fields, so that the fuzz reaches the shape checks
# (and asks for big networks: the loader must compare with the file before allocating them).
config_numbers = st.sampled_from([0, 1, 2, 3, 4, 7, 8, 16, 17, 64, 10**4, 10**6, 10**9, 10**12, -1, 2.5, "8"])


def config_paths(config: dict, prefix: tuple = ()) -> list[tuple]:
    """Every key path into the config (dicts and lists), for the fuzz to pick one to change."""
    paths = []
    items = config.items() if isinstance(config, dict) else enumerate(config)
    for key, value in items:
        paths.append((*prefix, key))
        if isinstance(value, (dict, list)) and value:
            paths.extend(config_paths(value, (*prefix, key)))
    return paths


@pytest.mark.parametrize("which", ["tiny", "shipped"])
@fuzz(60)
@given(data=st.data())
def test_restructured_config_is_refused_or_harmless(sources, which, data):
    folder = scratch_copy(sources, which)
    config = json.loads((folder / CONFIG_FILE).read_text())
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        paths = config_paths(config)
        if data.draw(st.booleans(), label="top"):  # the ~10 fields themselves as often as the ~100 nested ones
            paths = [p for p in paths if len(p) <= 2] or paths
        path = data.draw(st.sampled_from(paths), label="path")
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans(), label="delete") and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(json_values | config_numbers, label="value")
        if not isinstance(config, dict) or not config:
            break
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    outcome = load_outcome(folder)
    event("refused" if isinstance(outcome, ValueError) else "loaded")
    if not isinstance(outcome, ValueError):
        assert_intact(outcome)
    shutil.rmtree(folder)


class _Marker:
    """Unpickling this creates `marker` (what a malicious checkpoint could do with any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@fuzz(25)
@given(protocol=st.integers(0, pickle.HIGHEST_PROTOCOL),
       suffix=st.sampled_from(sorted(PICKLE_SUFFIXES) + [".PT", ".Pkl"]),
       disguise=st.sampled_from(["file", "renamed", "weights", "config"]))
def test_pickles_are_never_unpickled(sources, protocol, suffix, disguise):
    folders, root = sources
    marker = root / f"unpickled-{next(_counter)}.marker"
    payload = pickle.dumps({"state_dict": _Marker(marker)}, protocol=protocol)
    if disguise in ("file", "renamed"):  # policy.pt (or a pickle named policy.safetensors) handed to load_policy
        folder = root / f"case{next(_counter)}"
        folder.mkdir()
        target = folder / (f"policy{suffix}" if disguise == "file" else "policy.safetensors")
        target.write_bytes(payload)
        outcome = load_outcome(folder, target=target)
        assert isinstance(outcome, ValueError), outcome
        assert ("pickled" if disguise == "file" else "no such checkpoint folder") in str(outcome), outcome
    else:  # a checkpoint folder whose weights (hash updated) or config.json is a pickle
        folder = scratch_copy(sources, "tiny")
        (folder / (WEIGHTS_FILE if disguise == "weights" else CONFIG_FILE)).write_bytes(payload)
        if disguise == "weights":
            rehash(folder)
        outcome = load_outcome(folder)
        assert isinstance(outcome, ValueError), outcome
        assert ("unreadable safetensors" if disguise == "weights" else "not valid JSON") in str(outcome), outcome
    assert not marker.exists(), "the pickle was unpickled"
    shutil.rmtree(folder)


@pytest.mark.parametrize("change, needle", [
    (lambda c: c.update(kind=["diffusion"]), "unknown policy kind"),  # was TypeError: unhashable
    (lambda c: c.update(metadata=5), "metadata must be a JSON object"),  # was TypeError in dict()
    (lambda c: c.update(metadata=[1, 2]), "metadata must be a JSON object"),
    (lambda c: c.update(observation_space=[1]), "invalid spaces"),  # was minari's AssertionError
    (lambda c: c["observation_space"].update(low=0.0, high=1.0, shape=[10**6, 10**6]), "invalid spaces"),  # MemoryError
    (lambda c: c["policy_config"].update(hidden_dim=10**6), "expected (1000000,"),  # torch RuntimeError (4 TB)
    (lambda c: c["policy_config"].update(train_steps=10**10, sample_steps=8), "train_steps"),  # numpy MemoryError
    (lambda c: c.update(action_space={"type": "Discrete", "n": 3, "start": 0}), "expected a Box"),  # unnamed error
], ids=["kind-list", "metadata-int", "metadata-list", "space-list", "space-huge", "hidden-huge", "steps-huge",
        "action-discrete"])
def test_config_problems_found_by_the_fuzz_name_the_file(sources, change, needle):
    folder = scratch_copy(sources, "tiny")
    config = json.loads((folder / CONFIG_FILE).read_text())
    change(config)
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    outcome = load_outcome(folder)
    assert isinstance(outcome, ValueError) and needle in str(outcome), repr(outcome)
    shutil.rmtree(folder)


def test_deeply_nested_config_is_refused(sources):
    """json.loads raised RecursionError (not a ValueError) for a config nested 100,000 deep."""
    folder = scratch_copy(sources, "tiny")
    (folder / CONFIG_FILE).write_text("[" * 100_000 + "]" * 100_000)
    outcome = load_outcome(folder)
    assert isinstance(outcome, ValueError) and "not valid JSON" in str(outcome), repr(outcome)
    shutil.rmtree(folder)


# ----------------------------------------------------------------------------- datasets
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_data")
    source = root / "source"
    collect(LIFT, 2, "mixed", DATASET, seed=3, root=source, progress=False)
    before = digest(source)
    yield source, root
    assert digest(source) == before, "the source dataset was modified"


def dataset_copy(dataset) -> Path:
    source, root = dataset
    copy = root / f"case{next(_counter)}"
    shutil.copytree(source, copy)
    return copy


def load_dataset_outcome(root: Path, **spaces):
    before = digest(root)
    try:
        outcome = load_transitions(DATASET, root=root, **spaces)
    except ValueError as exc:
        assert DATASET in str(exc), f"the error does not name the dataset: {exc}"
        outcome = exc
    assert digest(root) == before, "loading changed the dataset"
    return outcome


@fuzz(40)
@given(data=st.data())
def test_truncated_or_flipped_hdf5_is_refused_or_loads(dataset, data):
    root = dataset_copy(dataset)
    hdf5 = root / DATASET / "data" / "main_data.hdf5"
    raw = bytearray(hdf5.read_bytes())
    truncate = data.draw(st.booleans(), label="truncate")
    if truncate:
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
    else:
        for position in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4), label="flips"):
            raw[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    hdf5.write_bytes(bytes(raw))
    outcome = load_dataset_outcome(root)
    event(f"{'truncated' if truncate else 'flipped'}: {type(outcome).__name__}")
    if truncate:
        assert isinstance(outcome, ValueError), "a truncated HDF5 file loaded"
    elif not isinstance(outcome, ValueError):  # no checksums in HDF5: a flipped value may load, but finite
        assert_finite_transitions(outcome)
    shutil.rmtree(root)


def float_datasets(hdf5: Path) -> list[tuple[str, int, int, np.dtype]]:
    """(name, byte offset, element count, dtype) of every float dataset in the file."""
    import h5py

    found = []
    with h5py.File(hdf5, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f":
                offset = obj.id.get_offset()
                if offset is None:  # chunked: Minari writes one chunk per dataset
                    offset = obj.id.get_chunk_info(0).byte_offset
                found.append((name, int(offset), int(obj.size), obj.dtype))
        f.visititems(visit)
    return found


@fuzz(30)
@given(data=st.data(), value=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_values_in_a_dataset_are_refused(dataset, data, value):
    """A value overwritten in place (the HDF5 structure intact): every field must be checked."""
    root = dataset_copy(dataset)
    hdf5 = root / DATASET / "data" / "main_data.hdf5"
    name, offset, count, dtype = data.draw(st.sampled_from(float_datasets(hdf5)), label="dataset")
    index = data.draw(st.integers(0, count - 1), label="index")
    raw = bytearray(hdf5.read_bytes())
    raw[offset + index * dtype.itemsize: offset + (index + 1) * dtype.itemsize] = np.array(value, dtype).tobytes()
    hdf5.write_bytes(bytes(raw))
    outcome = load_dataset_outcome(root)
    assert isinstance(outcome, ValueError), f"{value} in {name}[{index}] loaded"
    assert "non-finite" in str(outcome) and "episode" in str(outcome), str(outcome)
    shutil.rmtree(root)


def assert_finite_transitions(tr) -> None:
    for name in ("observations", "next_observations", "actions", "rewards", "mc_returns"):
        value = getattr(tr, name)
        for array in (value.values() if isinstance(value, dict) else [value]):
            assert np.all(np.isfinite(array)), f"{name} holds NaN or inf after loading"


@fuzz(25)
@given(data=st.data(), which=st.sampled_from(["data/metadata.json", "steergym.json"]))
def test_corrupted_dataset_metadata_is_refused_or_harmless(dataset, data, which):
    root = dataset_copy(dataset)
    path = root / DATASET / which
    how = data.draw(st.sampled_from(["bytes", "value", "field"]), label="how")
    if how == "bytes":
        raw = bytearray(path.read_bytes())
        for position in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4), label="flips"):
            raw[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        path.write_bytes(bytes(raw))
    elif how == "value":  # the whole file one random JSON value
        path.write_text(json.dumps(data.draw(json_values, label="json")))
    else:  # one field (at any depth) replaced by a random JSON value
        content = json.loads(path.read_text())
        field = data.draw(st.sampled_from(config_paths(content)), label="field")
        parent = content
        for key in field[:-1]:
            parent = parent[key]
        parent[field[-1]] = data.draw(json_values, label="value")
        path.write_text(json.dumps(content))
    outcome = load_dataset_outcome(root)
    event(f"{which}: {type(outcome).__name__}")
    shutil.rmtree(root)


@pytest.mark.parametrize("content, needle", [
    (b"\xfb{}", "is not valid JSON: UnicodeDecodeError"),  # was a bare UnicodeDecodeError
    (b"null", "must hold a JSON object"),  # was AttributeError: 'NoneType' object has no attribute 'get'
    (b"[1, 2]", "must hold a JSON object"),
    (b'{"episode_quality": {"a": 1}}', "episode_quality must be a list of labels"),  # was KeyError: 0
])
def test_dataset_metadata_problems_found_by_the_fuzz(dataset, content, needle):
    root = dataset_copy(dataset)
    (root / DATASET / "steergym.json").write_bytes(content)
    outcome = load_dataset_outcome(root)
    assert isinstance(outcome, ValueError) and needle in str(outcome) and "steergym.json" in str(outcome), outcome
    shutil.rmtree(root)


boxes = st.builds(
    lambda n, low, dtype: gym.spaces.Box(low, low + 20.0, (n,), dtype),
    st.sampled_from([7, 17, 27]), st.sampled_from([-10.0, -1.0, 0.0]), st.sampled_from([np.float32, np.float64]),
)


@fuzz(25)
@given(observation_space=boxes | st.just(None), action_space=boxes | st.just(None))
def test_spaces_that_differ_from_the_env_are_refused(dataset, observation_space, action_space):
    source, _ = dataset
    env = gym.make(LIFT)
    outcome = load_dataset_outcome(source, observation_space=observation_space, action_space=action_space)
    matches = ((observation_space is None or observation_space == env.observation_space)
               and (action_space is None or action_space == env.action_space))
    if matches:
        assert not isinstance(outcome, ValueError), outcome
    else:
        assert isinstance(outcome, ValueError) and "does not match the env's" in str(outcome), outcome
        assert "observation space" in str(outcome) or "action space" in str(outcome)
    env.close()
