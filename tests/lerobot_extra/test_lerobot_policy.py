"""LeRobot policies as steergym base policies (issue 21): small randomly initialised LeRobot diffusion
policies built from their config classes (no downloaded weights), saved the way lerobot-train saves
them, loaded through `LeRobotPolicy.load` and steered by DSRL, residual RL and V-GPS under stock SB3.

Runs only where the `lerobot` extra is installed (tests/conftest.py leaves this folder out otherwise;
.ci/run runs it in its own venv).
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy as LeRobotDiffusion
from lerobot.policies.factory import make_pre_post_processors
from stable_baselines3 import SAC
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from steergym.policies.lerobot import LeRobotPolicy, Source, default_obs_map
from steergym.policies.value_guided import ValueGuidedPolicy
from steergym.wrappers import NoiseActionWrapper, ProposalWrapper, ResidualActionWrapper

LIFT = "steergym/WidowXLiftCube-v0"
ACTION_LOW, ACTION_HIGH = -0.5, 0.5  # the fake dataset's action range: un-normalised chunks land in it
TINY = dict(down_dims=(16, 32), kernel_size=3, n_groups=4, diffusion_step_embed_dim=16,
            num_train_timesteps=20, num_inference_steps=5, device="cpu")


def _stats(n: int, low: float = -1.0, high: float = 1.0) -> dict[str, torch.Tensor]:
    return {"min": torch.full((n,), low), "max": torch.full((n,), high), "mean": torch.zeros(n), "std": torch.ones(n)}


def save_lerobot_policy(folder, inputs: dict[str, PolicyFeature], horizon=8, n_action_steps=4, n_obs_steps=2,
                        **overrides) -> LeRobotDiffusion:
    """A random diffusion policy and its processors saved as lerobot-train saves them."""
    torch.manual_seed(0)
    config = DiffusionConfig(input_features=inputs,
                             output_features={"action": PolicyFeature(FeatureType.ACTION, (7,))},
                             horizon=horizon, n_action_steps=n_action_steps, n_obs_steps=n_obs_steps,
                             **{**TINY, **overrides})
    policy = LeRobotDiffusion(config)
    stats = {key: _stats(int(np.prod(f.shape)) if f.type is not FeatureType.VISUAL else 3) for key, f in inputs.items()}
    for key, feature in inputs.items():
        if feature.type is FeatureType.VISUAL:  # per-channel mean/std, shaped (C, 1, 1) as LeRobot keeps them
            stats[key] = {"mean": torch.full((3, 1, 1), 0.5), "std": torch.full((3, 1, 1), 0.25),
                          "min": torch.zeros(3, 1, 1), "max": torch.ones(3, 1, 1)}
    stats["action"] = _stats(7, ACTION_LOW, ACTION_HIGH)
    pre, post = make_pre_post_processors(config, dataset_stats=stats)
    for part in (policy, pre, post):
        part.save_pretrained(folder)
    return policy


STATE_INPUTS = {"observation.state": PolicyFeature(FeatureType.STATE, (7,)),
                "observation.environment_state": PolicyFeature(FeatureType.ENV, (10,))}


@pytest.fixture(scope="module")
def state_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lerobot_state")
    save_lerobot_policy(folder, STATE_INPUTS)
    return folder


@pytest.fixture
def lift(make_env):
    return make_env(LIFT)


def load(folder, env, **kwargs) -> LeRobotPolicy:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the DDPM -> DDIM note; tested on its own below
        return LeRobotPolicy.load(folder, env, **kwargs)


def test_load_switches_ddpm_to_ddim_says_so_and_maps_the_widowx_state(state_folder, lift):
    with pytest.warns(UserWarning, match="switched to DDIM"):
        policy = LeRobotPolicy.load(state_folder, lift)
    assert policy.lerobot_policy.config.noise_scheduler_type == "DDIM"
    assert type(policy.lerobot_policy.diffusion.noise_scheduler).__name__ == "DDIMScheduler"
    # 17-D WidowX state: the 7-D Bridge proprio first, the object state after it
    assert policy.obs_map == {"observation.state": "obs[0:7]", "observation.environment_state": "obs[7:]"}
    assert policy.noise_shape == (8, 7) and policy.chunk_length == 4 and policy.n_obs_steps == 2
    assert policy.observation_space.shape == (2, 17)  # two stacked observations
    assert policy.wrap_env(lift).observation_space == policy.observation_space


def test_the_chunk_is_a_deterministic_function_of_the_noise(state_folder, lift):
    policy = load(state_folder, lift)
    env = policy.wrap_env(lift)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(policy.noise_shape).astype(np.float32)
    chunk = policy.sample(obs, noise)
    assert chunk.shape == (4, 7) and chunk.dtype == np.float32
    np.testing.assert_array_equal(chunk, policy.sample(obs, noise))
    np.testing.assert_array_equal(chunk, policy.sample(obs, noise.reshape(-1)))  # flat noise, as SAC emits it
    assert np.abs(chunk - policy.sample(obs, -noise)).max() > 1e-3  # the noise steers the chunk
    assert np.all(chunk >= ACTION_LOW - 1e-6) and np.all(chunk <= ACTION_HIGH + 1e-6)  # un-normalised
    other = rng.standard_normal(policy.noise_shape).astype(np.float32)
    batch = policy.sample(np.stack([obs, obs]), np.stack([noise, other]))
    np.testing.assert_allclose(batch[0], chunk, atol=1e-5)
    np.testing.assert_allclose(batch[1], policy.sample(obs, other), atol=1e-5)


def test_sample_matches_lerobots_own_select_action_for_the_same_noise(state_folder, lift):
    """Our pure sample() must give what LeRobot's own stateful inference gives at an episode start."""
    policy = load(state_folder, lift)
    raw, _ = lift.reset(seed=3)
    stacked, _ = policy.wrap_env(lift).reset(seed=3)
    noise = np.random.default_rng(1).standard_normal(policy.noise_shape).astype(np.float32)
    model = policy.lerobot_policy
    model.reset()
    batch = policy.preprocessor({"observation.state": torch.as_tensor(raw[:7])[None],
                                 "observation.environment_state": torch.as_tensor(raw[7:])[None]})
    first = [policy.postprocessor(model.select_action(batch, noise=torch.as_tensor(noise)[None])).numpy()[0]]
    first += [policy.postprocessor(model.select_action(batch)).numpy()[0] for _ in range(3)]  # the queued rest
    np.testing.assert_allclose(policy.sample(stacked, noise), np.clip(first, ACTION_LOW, ACTION_HIGH), atol=1e-5)


def test_sample_n_and_act_draw_from_the_seeded_generator(state_folder, lift):
    policy = load(state_folder, lift, seed=5)
    obs, _ = policy.wrap_env(lift).reset(seed=0)
    chunks = policy.sample_n(obs, 3)
    assert chunks.shape == (3, 4, 7)
    assert np.abs(chunks[0] - chunks[1]).max() > 1e-4
    assert policy.sample_n(np.stack([obs, obs]), 2).shape == (2, 2, 4, 7)
    policy.reset(seed=9)
    first = [policy.act(obs) for _ in range(5)]  # 4 from one chunk, then a new chunk
    policy.reset(seed=9)
    again = [policy.act(obs) for _ in range(5)]
    np.testing.assert_array_equal(np.array(first), np.array(again))
    assert first[0].shape == (7,)


def test_dsrl_steers_the_lerobot_policy_under_stock_sb3_sac(state_folder, lift):
    policy = load(state_folder, lift)
    env = NoiseActionWrapper(policy.wrap_env(lift), policy)
    assert env.action_space.shape == (8 * 7,)  # the whole (horizon, d) noise
    sb3_check_env(env)
    model = SAC("MlpPolicy", env, learning_starts=50, batch_size=32, policy_kwargs={"net_arch": [32, 32]},
                seed=0, device="cpu")
    model.learn(200)
    obs, _ = env.reset(seed=1)
    _, _, _, _, info = env.step(model.predict(obs, deterministic=True)[0])
    assert info["chunk"].shape == (4, 7)  # n_action_steps executed per noise, not the 8-step horizon
    executed = info["executed_actions"][~np.isnan(info["executed_actions"][:, 0])]
    np.testing.assert_allclose(executed, info["chunk"][: len(executed)], atol=1e-6)
    shared = NoiseActionWrapper(policy.wrap_env(lift), policy, shared_noise=True)
    assert shared.action_space.shape == (7,)  # dsrl_pi0's low-dimensional noise, repeated over the horizon


def test_residual_rl_and_vgps_use_the_lerobot_policy(state_folder, lift, make_env):
    policy = load(state_folder, lift)
    residual = ResidualActionWrapper(policy.wrap_env(lift), policy, scale=0.1)
    sb3_check_env(residual)
    model = SAC("MlpPolicy", residual, learning_starts=50, batch_size=32, policy_kwargs={"net_arch": [32, 32]},
                seed=0, device="cpu")
    model.learn(120)

    calls = []

    def critic(obs, chunks):  # prefers chunks whose first action moves +x
        calls.append(len(chunks))
        return chunks[:, 0, 0]

    vgps = ValueGuidedPolicy(policy, critic, num_samples=6)
    env = policy.wrap_env(make_env(LIFT))
    obs, _ = env.reset(seed=0)
    vgps.reset(seed=0)
    action = vgps.act(obs)
    assert action.shape == (7,) and calls == [6]
    policy.reset(seed=0)  # the same 6 candidates V-GPS drew: it executes the first action of the best one
    candidates = policy.sample_n(obs, 6)
    np.testing.assert_allclose(action, candidates[np.argmax(candidates[:, 0, 0]), 0], atol=1e-6)
    proposals = ProposalWrapper(env, policy, num_samples=3)
    obs, _ = proposals.reset(seed=0)
    assert obs["proposals"].shape == (3, 4 * 7)


def test_image_policy_with_a_random_backbone_drives_dsrl_on_pixels(tmp_path, make_env):
    env = make_env(LIFT, obs_mode="pixels_state", image_size=(48, 48))
    inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (7,)),
              "observation.images.top": PolicyFeature(FeatureType.VISUAL, (3, 48, 48))}
    save_lerobot_policy(tmp_path, inputs, n_obs_steps=1, horizon=8, n_action_steps=8,
                        pretrained_backbone_weights=None, crop_shape=None, use_group_norm=True,
                        spatial_softmax_num_keypoints=8)
    policy = load(tmp_path, env)
    assert policy.obs_map == {"observation.images.top": "pixels", "observation.state": "state[0:7]"}
    assert policy.wrap_env(env) is env  # one observation step: nothing to stack
    steered = NoiseActionWrapper(env, policy)
    obs, _ = steered.reset(seed=0)
    noise = np.zeros(steered.action_space.shape, np.float32)
    _, _, _, _, info = steered.step(noise)
    assert info["chunk"].shape == (8, 7)
    np.testing.assert_array_equal(info["chunk"], policy.sample(obs, noise))
    assert np.abs(policy.sample(obs, noise + 1.0) - info["chunk"]).max() > 1e-4


def test_mismatches_are_refused_with_both_sides_named(state_folder, lift, make_env, tmp_path):
    pixels_only = make_env(LIFT, obs_mode="pixels", image_size=(32, 32))
    with pytest.raises(ValueError, match=r"observation.state \(7,\).*the env gives obs \(32, 32, 3\)"):
        load(state_folder, pixels_only)
    with pytest.raises(ValueError, match=r"obs_map\['observation.state'\] = 'obs\[0:5\]' gives float32 \(5,\)"):
        load(state_folder, lift, obs_map={"observation.state": "obs[0:5]", "observation.environment_state": "obs[7:]"})
    with pytest.raises(ValueError, match="misses"):
        load(state_folder, lift, obs_map={"observation.state": "obs[0:7]"})
    wrong_actions = gym.spaces.Box(-1, 1, (4,), np.float32)
    with pytest.raises(ValueError, match=r"the policy's actions are \(7,\), the env's action space is \(4,\)"):
        load(state_folder, None, observation_space=lift.observation_space, action_space=wrong_actions)
    with pytest.raises(ValueError, match="has no config.json"):
        load(tmp_path, lift)
    policy = load(state_folder, lift)
    obs, _ = policy.wrap_env(lift).reset(seed=0)
    with pytest.raises(ValueError, match=r"noise must have shape \(8, 7\) or \(56,\), got \(7,\)"):
        policy.sample(obs, np.zeros(7, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        policy.sample(obs, np.full((8, 7), np.nan, np.float32))


def test_source_parsing_and_default_map_by_name():
    assert Source.parse("state[0:7]") == Source("state", 0, 7)
    assert Source.parse("obs[7:]") == Source("obs", 7, None)
    with pytest.raises(ValueError, match="is not a source"):
        Source.parse("state[0:7")
    space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (32, 32, 3), np.uint8),
                             "wrist_pixels": gym.spaces.Box(0, 255, (32, 32, 3), np.uint8),
                             "state": gym.spaces.Box(-1, 1, (7,), np.float32)})
    features = {"observation.images.top": PolicyFeature(FeatureType.VISUAL, (3, 32, 32)),
                "observation.images.wrist": PolicyFeature(FeatureType.VISUAL, (3, 32, 32)),
                "observation.state": PolicyFeature(FeatureType.STATE, (7,))}
    mapping = default_obs_map(features, space)
    assert mapping["observation.images.wrist"] == "wrist_pixels" and mapping["observation.state"] == "state"
    assert mapping["observation.images.top"] == "pixels"


def test_the_command_line_steers_a_lerobot_folder_and_evaluates_what_it_saved(state_folder, tmp_path):
    """`steergym train dsrl --policy <LeRobot folder> --env ID` stacks the policy's two observations, saves a
    steered policy whose base/ is LeRobot's own files (switched to DDIM), and `steergym eval --policy
    RUN/policy` reloads it: same episodes on every load."""
    import json

    from steergym.bench.evaluate import evaluate
    from steergym.cli import main
    from steergym.policies.steered import load_steered

    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the DDPM -> DDIM note when the folder is read
        code = main(["train", "dsrl", "--policy", str(state_folder), "--env", LIFT, "--out", str(out),
                     "--env-steps", "48", "--eval-every", "48", "--eval-episodes", "1", "--learning-starts", "4",
                     "--batch-size", "8", "--hidden", "16", "--quiet"])
    assert code == 0
    base = out / "policy" / "base"
    assert (base / "model.safetensors").stat().st_size == (state_folder / "model.safetensors").stat().st_size
    assert json.loads((base / "config.json").read_text())["noise_scheduler_type"] == "DDIM"
    assert json.loads((state_folder / "config.json").read_text())["noise_scheduler_type"] == "DDPM"  # untouched
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the saved copy already samples with DDIM: no note
        steered = load_steered(out / "policy")
    assert steered.base.obs_map == {"observation.state": "obs[0:7]", "observation.environment_state": "obs[7:]"}
    assert steered.observation_space.shape == (2, 17)  # what the SB3 actor read: two stacked observations
    assert main(["eval", "--policy", str(out / "policy"), "--episodes", "1"]) == 0
    returns = [evaluate(LIFT, policy=load_steered(out / "policy"), episodes=2, progress=False).returns
               for _ in range(2)]
    assert returns[0] == returns[1]
