"""Policy checkpoints: a folder with config.json + model.safetensors.

Round trips, atomic writes, and every refusal a user can hit (tampered or foreign weights, another
format or version, unknown kinds, pickles, missing folders, spaces that do not match the env),
each a ValueError that says what is wrong.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from steergym.policies import DiffusionPolicy, FlowPolicy, PolicyConfig, load_policy, save_policy
from steergym.policies.checkpoint import sha256_file

KINDS = ["diffusion", "flow"]
CLASSES = {"diffusion": DiffusionPolicy, "flow": FlowPolicy}
# The WidowX state space shared by PutCarrotOnPlate, PushCube, ... (LiftCube's is 17-d).
WIDOWX_OBS = gym.spaces.Box(-10.0, 10.0, (27,), np.float32)
WIDOWX_ACT = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
LIFT = "steergym/WidowXLiftCube-v0"
PUSH = "steergym/WidowXPushCube-v0"
TINY = {"hidden_dim": 32, "time_dim": 8}


def make_policy(kind: str, obs_space=WIDOWX_OBS, act_space=WIDOWX_ACT, **config):
    torch.manual_seed(0)
    policy = CLASSES[kind](obs_space, act_space, PolicyConfig(kind=kind, **{**TINY, **config}))
    rng = np.random.default_rng(0)
    obs = rng.uniform(-2, 2, (50, *obs_space.shape)).astype(np.float32) if not isinstance(
        obs_space, gym.spaces.Dict) else {"state": rng.uniform(-2, 2, (50, 4)).astype(np.float32)}
    policy.fit_normalization(obs, rng.uniform(-0.5, 0.8, (50, act_space.shape[0])))
    return policy


def probe(policy, obs_space=WIDOWX_OBS):
    """Chunks for fixed observations and noise (identical iff the policies compute the same map)."""
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((3, *policy.noise_shape)).astype(np.float32)
    if isinstance(obs_space, gym.spaces.Dict):
        obs = {k: np.stack([s.sample() for _ in range(3)]) for k, s in obs_space.spaces.items()}
    else:
        obs = rng.uniform(-2, 2, (3, *obs_space.shape)).astype(np.float32)
    return policy.sample(obs, noise)


@pytest.fixture
def saved(tmp_path):
    """A saved diffusion checkpoint folder."""
    path = tmp_path / "ckpt"
    make_policy("diffusion").save(path, metadata={"success_rate": 0.5})
    return path


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def _write_config(path: Path, config: dict) -> None:
    (path / "config.json").write_text(json.dumps(config))


# --------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_gives_identical_samples_and_keeps_metadata(tmp_path, kind):
    policy = make_policy(kind, horizon=3, action_steps=2, sample_steps=6)
    with torch.no_grad():  # move the weights away from their initialisation
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    metadata = {"recipe": {"steps": 1000, "lr": 3e-4}, "success_rate": 0.82, "tasks": ["a", "b"]}
    returned = policy.save(tmp_path / "ckpt", metadata=metadata)
    assert returned == tmp_path / "ckpt"
    loaded = load_policy(tmp_path / "ckpt")
    assert type(loaded) is type(policy)
    assert loaded.config == policy.config
    assert loaded.metadata == metadata
    assert loaded.observation_space == policy.observation_space
    assert loaded.action_space == policy.action_space
    np.testing.assert_array_equal(probe(loaded), probe(policy))
    # The normalisers' statistics travel with the weights.
    torch.testing.assert_close(loaded.action_normalizer.scale, policy.action_normalizer.scale)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_pixel_dict_task_conditioned_policy(tmp_path, kind):
    space = gym.spaces.Dict({
        "image": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8),
        "state": gym.spaces.Box(-1.0, 1.0, (4,), np.float32),
    })
    space.seed(0)
    policy = make_policy(kind, obs_space=space, conv_channels=(4,), image_features=8, task_ids=("a", "b"))
    save_policy(policy, tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt", observation_space=space, action_space=WIDOWX_ACT)
    assert loaded.task_ids == ("a", "b")
    space.seed(0)
    expected = probe(policy.for_task("b"), space)
    space.seed(0)
    np.testing.assert_array_equal(probe(loaded.for_task("b"), space), expected)


def test_load_against_a_matching_env(tmp_path, make_env):
    env = make_env(PUSH)
    policy = make_policy("flow", env.observation_space, env.action_space)
    policy.save(tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt", env=env)
    obs, _ = env.reset(seed=0)
    action = loaded.act(obs)
    assert action.shape == env.action_space.shape and env.action_space.contains(action)


def test_saving_over_a_checkpoint_replaces_it(tmp_path, saved):
    flow = make_policy("flow")
    flow.save(saved, metadata={"v": 2})
    loaded = load_policy(saved)
    assert loaded.kind == "flow" and loaded.metadata == {"v": 2}
    np.testing.assert_array_equal(probe(loaded), probe(flow))


# --------------------------------------------------------------------------- atomic writes
def test_save_leaves_no_temporary_folders(tmp_path):
    policy = make_policy("diffusion")
    policy.save(tmp_path / "ckpt")
    policy.save(tmp_path / "ckpt")  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]


def test_failed_save_leaves_no_temporary_folder_and_keeps_the_old_checkpoint(tmp_path, saved):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    with pytest.raises(TypeError):  # metadata that JSON cannot encode fails mid-save
        make_policy("flow").save(saved, metadata={"bad": object()})
    with pytest.raises(TypeError):
        make_policy("flow").save(tmp_path / "new", metadata={"bad": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    assert load_policy(saved).kind == "diffusion"


def test_overwriting_a_folder_that_is_not_a_checkpoint_is_refused(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        make_policy("diffusion").save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


# --------------------------------------------------------------------------- refusals
def test_tampered_weights_are_refused(saved):
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # one bit of one float in the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_policy(saved)


def test_foreign_safetensors_file_is_refused(saved):
    weights = saved / "model.safetensors"
    save_file({"encoder.weight": torch.zeros(4, 4), "head.bias": torch.zeros(4)}, str(weights))
    config = _config(saved)
    config["weights_sha256"] = sha256_file(weights)  # a consistent, hand-made config
    _write_config(saved, config)
    with pytest.raises(ValueError, match="tensors do not match"):
        load_policy(saved)


def test_tensor_of_the_wrong_shape_is_refused(saved):
    from safetensors.torch import load_file

    weights = saved / "model.safetensors"
    tensors = load_file(str(weights))
    name = "denoiser.inp.weight"
    tensors[name] = torch.zeros(tensors[name].shape[0], tensors[name].shape[1] + 1)
    save_file(tensors, str(weights))
    config = _config(saved)
    config["weights_sha256"] = sha256_file(weights)
    _write_config(saved, config)
    with pytest.raises(ValueError, match=name):
        load_policy(saved)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(format="lerobot.policy"), "not a steergym policy checkpoint"),
    (lambda c: c.update(format_version=2), "format_version 2 is not supported"),
    (lambda c: c.update(kind="gan"), "unknown policy kind 'gan'"),
    (lambda c: c.pop("weights_sha256"), "missing fields"),
    (lambda c: c["policy_config"].update(dropout=0.1), "unknown fields"),
], ids=["format", "format_version", "kind", "missing-sha", "config-field"])
def test_config_json_problems_are_refused(saved, change, message):
    config = _config(saved)
    change(config)
    _write_config(saved, config)
    with pytest.raises(ValueError, match=message):
        load_policy(saved)


def test_config_json_that_is_not_json_is_refused(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_policy(saved)


def test_config_json_of_another_library_is_refused(tmp_path):
    folder = tmp_path / "hf_model"
    folder.mkdir()
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 8}))
    with pytest.raises(ValueError, match="not a steergym policy checkpoint"):
        load_policy(folder)


class _TouchOnUnpickle:
    """Unpickling this creates `marker` (what a malicious checkpoint could do with any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("suffix", [".pt", ".pkl", ".pth", ".ckpt"])
def test_pickle_files_are_refused_without_being_unpickled(tmp_path, suffix):
    marker = tmp_path / "unpickled.marker"
    payload = pickle.dumps(_TouchOnUnpickle(marker))
    # The payload really has a side effect when unpickled...
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
    # ...and loading it as a checkpoint refuses without unpickling it.
    path = tmp_path / f"policy{suffix}"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match="pickled"):
        load_policy(path)
    assert not marker.exists()


def test_pickle_disguised_as_weights_is_not_unpickled(saved, tmp_path):
    marker = tmp_path / "unpickled.marker"
    weights = saved / "model.safetensors"
    weights.write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))
    config = _config(saved)
    config["weights_sha256"] = sha256_file(weights)
    _write_config(saved, config)
    with pytest.raises(ValueError, match="safetensors"):
        load_policy(saved)
    assert not marker.exists()


def test_missing_folder_or_files_are_refused(tmp_path, saved):
    with pytest.raises(ValueError, match="no such checkpoint folder"):
        load_policy(tmp_path / "nowhere")
    (saved / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="model.safetensors"):
        load_policy(saved)


def test_observation_space_mismatch_with_the_env_is_refused(saved, make_env):
    env = make_env(LIFT)  # 17-d observations; the policy was saved for the 27-d WidowX state space
    with pytest.raises(ValueError, match="observation space"):
        load_policy(saved, env=env)


def test_action_space_mismatch_is_refused(saved):
    with pytest.raises(ValueError, match="action space"):
        load_policy(saved, observation_space=WIDOWX_OBS,
                    action_space=gym.spaces.Box(-1.0, 1.0, (6,), np.float32))
    with pytest.raises(ValueError, match="observation space"):  # same shape, other bounds
        load_policy(saved, observation_space=gym.spaces.Box(-1.0, 1.0, (27,), np.float32))


def test_non_finite_weights_are_refused(tmp_path):
    policy = make_policy("flow")
    with torch.no_grad():
        policy.denoiser.out[-1].bias[0] = float("nan")
    policy.save(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="NaN or inf"):
        load_policy(tmp_path / "ckpt")
