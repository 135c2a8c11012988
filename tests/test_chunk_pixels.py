"""The chunk trainers (OGPO, DSRL-NA) on pixel observations, the critics' LayerNorm flag, and clear
errors for observation spaces they cannot take. Tiny networks: 32x32 images, two 8-channel convs."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from test_ogpo import Bandit, small_config, tiny_policy

from steergym.algorithms.chunk_rl import ChunkReplay
from steergym.algorithms.dsrl_na import DSRLNA, DSRLNAConfig
from steergym.algorithms.networks import FusedCritics
from steergym.algorithms.ogpo import OGPO, OGPOConfig
from steergym.policies.config import PolicyConfig
from steergym.policies.flow import FlowPolicy

IMAGE = gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
STATE = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
ACTIONS = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
ENCODER = dict(encoder_channels=(8, 8), encoder_strides=(2, 2), encoder_groups=2, spatial_features=4, latent_dim=16)


class PixelReach(gym.Env):
    """6-step toy task: a 32x32 image whose brightness is the step (plus the state's sign in the red
    channel), a 2-d state; reward -|a - 0.5|^2. Episodes reset with an even seed succeed."""

    action_space = ACTIONS

    def __init__(self, dict_obs: bool = True) -> None:
        self.dict_obs = dict_obs
        self.observation_space = gym.spaces.Dict({"pixels": IMAGE, "state": STATE}) if dict_obs else IMAGE

    def _obs(self):
        image = np.full((32, 32, 3), 40 * self.t, np.uint8)
        image[:, :16, 0] = 255 if self.state[0] > 0 else 0
        return {"pixels": image, "state": self.state.copy()} if self.dict_obs else image

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.success = 0, seed is not None and seed % 2 == 0
        self.state = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        reward = -float(np.square(np.asarray(action) - 0.5).sum())
        done = self.t >= 6
        return self._obs(), reward, done, False, {"is_success": done and self.success}


def pixel_policy(dict_obs: bool = True, seed: int = 0) -> FlowPolicy:
    """An untrained tiny flow policy (chunks of 2 actions) on PixelReach's observations."""
    torch.manual_seed(seed)
    env = PixelReach(dict_obs)
    config = PolicyConfig(kind="flow", horizon=2, hidden_dim=32, time_dim=8, sample_steps=2, conv_channels=(8,),
                          image_features=8)
    policy = FlowPolicy(env.observation_space, ACTIONS, config)
    rng = np.random.default_rng(0)
    obs = {"state": rng.normal(0.3, 0.5, (16, 2))} if dict_obs else None
    policy.fit_normalization(obs, np.stack([-np.ones(2), np.ones(2)]))
    return policy


def ogpo_config(**overrides) -> OGPOConfig:
    base = dict(n_critics=2, critic_hidden=(16, 16), batch_size=8, group_size=4, ppo_batch_size=4,
                learning_starts=3, success_batch_size=4, log_every=1, tau_critic=0.05, **ENCODER)
    return OGPOConfig(**{**base, **overrides})


def dsrl_config(**overrides) -> DSRLNAConfig:
    base = dict(hidden=(16, 16), batch_size=8, utd=2, distill_steps=1, learning_starts=3, log_every=1, train_freq=1,
                **ENCODER)
    return DSRLNAConfig(**{**base, **overrides})


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    """Whether every weight tensor (the GroupNorm affine parameters aside) of `module` moved."""
    now = module.state_dict()
    return all(not torch.equal(v, now[k]) for k, v in before.items() if "convs" not in k or k.endswith("weight"))


def assert_same(a: torch.nn.Module, b: torch.nn.Module, name: str) -> None:
    sb = b.state_dict()
    for k, v in a.state_dict().items():
        assert torch.equal(v, sb[k]), f"{name}.{k}"


# ------------------------------------------------------------------------------------ training
def test_ogpo_trains_on_pixels_state_observations():
    policy = pixel_policy()
    agent = OGPO(PixelReach(), policy, ogpo_config(), seed=0)
    encoder, target_encoder = params(agent.critic.encoder), params(agent.critic_target.encoder)
    conv = agent.policy.encoder.encoders["image_pixels"].convs[0].weight.detach().clone()
    # 12 chunks, 4 episodes of 6 steps: the replay holds whole episodes (6, 12, 18 rows), a round per env
    # step once it holds batch_size * utd * H = 16: env steps 18..24, 7 rounds
    agent.learn(24, progress=False)
    assert agent.updates == 7 and np.isfinite(agent.metrics["td_loss"]) and np.isfinite(agent.metrics["actor_loss"])
    assert changed(encoder, agent.critic.encoder)  # the TD loss trains the critic encoder
    assert changed(target_encoder, agent.critic_target.encoder)  # its own copy follows by Polyak averaging
    assert agent.critic_target.encoder is not agent.critic.encoder
    assert not torch.equal(agent.critic_target.encoder.trunks["pixels"].convs[0].weight,
                           agent.critic.encoder.trunks["pixels"].convs[0].weight)
    assert not torch.equal(conv, agent.policy.encoder.encoders["image_pixels"].convs[0].weight)  # PPO + BC
    # the replay keeps images uint8 and grows with the data (the 2M-row default is not allocated)
    obs = agent.replay.data["obs"]
    assert obs["pixels"].dtype == np.uint8 and obs["pixels"].shape[1:] == (32, 32, 3)
    assert obs["state"].dtype == np.float32 and agent.replay.rows == 256 < agent.replay.capacity == 2_000_000
    assert agent.success_obs["pixels"].dtype == np.uint8 and len(agent.success_actions) == 6  # 2 of 4 episodes
    # the state (not the image) is standardised with the policy's statistics
    normalizer = policy.obs_normalizers["obs_state"]
    torch.testing.assert_close(agent._obs_loc["state"], normalizer.loc)
    batch = agent.replay.sample(agent.rng, 5)
    x = agent.obs_tensor(batch["obs"])
    assert x["pixels"].dtype == torch.uint8 and torch.equal(x["pixels"], torch.as_tensor(batch["obs"]["pixels"]))
    state = torch.as_tensor(batch["obs"]["state"])
    torch.testing.assert_close(x["state"], (state - normalizer.loc) / normalizer.scale)
    # acting: one observation or a batch
    single = {k: v[0] for k, v in batch["obs"].items()}
    action, _ = agent.predict(single)
    actions, _ = agent.predict(batch["obs"])
    assert action.shape == (4,) and actions.shape == (5, 4) and np.all(np.abs(actions) <= 1.0)


def test_dsrl_na_trains_on_pixels_state_observations():
    agent = DSRLNA(PixelReach(), pixel_policy(), dsrl_config(), seed=0)
    before = {name: params(getattr(agent, name).encoder) for name in ("critic_a", "critic_w", "actor")}
    agent.learn(16, progress=False)  # 8 chunks, 5 x (2 SAC + 1 distillation) updates
    assert agent.updates == 5
    assert np.isfinite(agent.metrics["critic_a_loss"]) and np.isfinite(agent.metrics["distill_loss"])
    for name, weights in before.items():  # each network trains its own encoder
        assert changed(weights, getattr(agent, name).encoder), name
    encoders = {id(m.encoder) for m in (agent.actor, agent.critic_a, agent.critic_w, agent.critic_a_target)}
    assert len(encoders) == 4
    assert agent.replay.data["obs"]["pixels"].dtype == np.uint8
    noise, _ = agent.predict({k: v[0] for k, v in agent.replay.data["obs"].items()})
    assert noise.shape == (4,) and np.all(np.abs(noise) <= 1.0)
    # the random shifts of the training images matter (the same run without them ends elsewhere)
    plain = DSRLNA(PixelReach(), pixel_policy(), dsrl_config(image_augmentation=False), seed=0)
    plain.learn(16, progress=False)
    np.testing.assert_array_equal(plain.replay.data["actions"][:3], agent.replay.data["actions"][:3])  # warm-up
    assert not torch.equal(plain.critic_a.encoder.trunks["pixels"].convs[0].weight,
                           agent.critic_a.encoder.trunks["pixels"].convs[0].weight)


def test_actor_loss_reaches_only_the_actors_encoder():
    agent = DSRLNA(PixelReach(), pixel_policy(), dsrl_config(learning_starts=100, critic_layer_norm=True), seed=1)
    agent.learn(8, progress=False)  # collection only
    obs = agent.critic_input(agent.replay.sample(agent.rng, 8)["obs"])
    w, logp = agent.noise_sample(obs)
    actor_loss = (logp - agent.critic_w(obs, w, detach=True).min(0).values).mean()
    grads = torch.autograd.grad(actor_loss, [*agent.actor.encoder.parameters(), *agent.critic_w.parameters()],
                                allow_unused=True)
    n = len(list(agent.actor.encoder.parameters()))
    assert all(g is not None and g.abs().sum() > 0 for g in grads[:n])
    assert all(g is None or g.abs().sum() == 0 for g in grads[n:])


# ------------------------------------------------------------------------------------ resume
def test_ogpo_pixel_resume_makes_identical_next_updates(tmp_path):
    agent = OGPO(PixelReach(), pixel_policy(), ogpo_config(batch_size=4), seed=2)  # rounds from env step 12
    agent.learn(12, progress=False)  # two whole 6-step episodes: a checkpoint between episodes resumes exactly
    agent.save(tmp_path / "ckpt")
    saved = load_file(tmp_path / "ckpt" / "replay.safetensors")  # 12 primitive transitions
    assert saved["replay/obs/pixels"].dtype == np.uint8 and saved["replay/obs/pixels"].shape == (12, 32, 32, 3)
    assert saved["success/obs/pixels"].shape == (3, 32, 32, 3)
    resumed = OGPO.load(tmp_path / "ckpt", env=PixelReach())
    assert resumed.config.critic_layer_norm and resumed.replay.size == 12 and resumed.updates == agent.updates == 1
    np.testing.assert_array_equal(resumed.success_obs["pixels"], agent.success_obs["pixels"])
    agent.learn(6, progress=False, reset_num_timesteps=False)
    resumed.learn(6, progress=False, reset_num_timesteps=False)
    for name in ("critic", "critic_target", "actor_target", "policy"):
        assert_same(getattr(agent, name), getattr(resumed, name), name)
    assert agent.metrics == resumed.metrics
    for key in ("pixels", "state"):
        np.testing.assert_array_equal(agent.replay.data["next_obs"][key], resumed.replay.data["next_obs"][key])


def test_dsrl_na_image_box_resume_makes_identical_next_updates(tmp_path):
    agent = DSRLNA(PixelReach(dict_obs=False), pixel_policy(dict_obs=False), dsrl_config(), seed=3)
    agent.learn(12, progress=False)  # two whole episodes (a checkpoint mid-episode does not hold the env)
    agent.save(tmp_path / "ckpt")
    resumed = DSRLNA.load(tmp_path / "ckpt", env=PixelReach(dict_obs=False))
    agent.learn(6, progress=False, reset_num_timesteps=False)
    resumed.learn(6, progress=False, reset_num_timesteps=False)
    for name in ("actor", "critic_a", "critic_a_target", "critic_w"):
        assert_same(getattr(agent, name), getattr(resumed, name), name)
    assert torch.equal(agent.log_alpha, resumed.log_alpha) and agent.metrics == resumed.metrics
    assert list(agent.replay.data["obs"]) == ["pixels"] and agent.replay.data["obs"]["pixels"].dtype == np.uint8
    image = agent.replay.data["obs"]["pixels"][0]
    one, _ = resumed.predict(image)  # a bare image, or a batch of them
    many, _ = resumed.predict(agent.replay.data["obs"]["pixels"][:3])
    np.testing.assert_array_equal(one, agent.predict(image)[0])
    assert one.shape == (4,) and many.shape == (3, 4)


def test_chunk_replay_grows_and_wraps_with_dict_observations():
    spec = {"pixels": ((4, 4, 3), np.uint8), "state": ((2,), np.float32)}
    replay = ChunkReplay(300, spec, 3)
    assert replay.rows == 0
    for i in range(310):
        obs = {"pixels": np.full((4, 4, 3), i % 256, np.uint8), "state": np.full(2, i, np.float32)}
        replay.add(obs=obs, actions=np.zeros(3), rewards=float(i), next_obs=obs, terminals=0.0, steps=2)
        if i == 0:
            assert replay.rows == 256
    assert replay.rows == 300 and replay.size == 300 and replay.pos == 10
    assert replay.data["obs"]["pixels"].dtype == np.uint8
    np.testing.assert_array_equal(replay.data["rewards"][:10], np.arange(300, 310))  # the oldest overwritten
    np.testing.assert_array_equal(replay.data["obs"]["state"][:, 0], replay.data["rewards"])
    twin = ChunkReplay(300, spec, 3)
    twin.restore(replay.arrays("replay"), "replay", "here")
    for key in ("pixels", "state"):
        np.testing.assert_array_equal(twin.data["obs"][key], replay.data["obs"][key])
    assert (twin.size, twin.pos) == (300, 10)
    bad = {**replay.arrays("replay"), "replay/obs/pixels": replay.data["obs"]["pixels"].astype(np.float32)}
    with pytest.raises(ValueError, match="replay/obs/pixels has shape .* float32, expected .* uint8"):
        ChunkReplay(300, spec, 3).restore(bad, "replay", "here")


# --------------------------------------------------------------------------------- LayerNorm
def test_fused_critics_layer_norm_matches_per_critic_layer_norm():
    torch.manual_seed(0)
    critics = FusedCritics(3, 2, (8, 6), n=3, layer_norm=True)
    with torch.no_grad():  # random affine parameters and biases, so the reference has to use them
        for group in (critics.norm_weights, critics.norm_biases, critics.biases):
            for p in group:
                p.normal_()
    assert [tuple(p.shape) for p in critics.norm_weights] == [(3, 8), (3, 6)]
    critics.CHUNK_ROWS = 8  # several column chunks
    obs, actions = torch.randn(4, 3), torch.randn(4, 5, 2)
    q = critics.q_values(obs, actions)

    def reference(i: int) -> torch.Tensor:
        h = torch.cat([obs.unsqueeze(1).expand(-1, 5, -1), actions], dim=-1)
        for j in range(2):
            norm = torch.nn.LayerNorm(critics.weights[j].shape[2])
            norm.weight.data, norm.bias.data = critics.norm_weights[j][i], critics.norm_biases[j][i]
            h = torch.relu(norm(h @ critics.weights[j][i] + critics.biases[j][i]))
        return (h @ critics.weights[2][i] + critics.biases[2][i]).squeeze(-1)

    torch.testing.assert_close(q, torch.stack([reference(i) for i in range(3)]))
    # before the affine parameters, each critic's hidden activations have zero mean and unit variance
    with torch.no_grad():
        for group, value in ((critics.norm_weights, 1.0), (critics.norm_biases, 0.0)):
            for p in group:
                p.fill_(value)
    seen, original = [], critics._norm

    def record(h, gain, shift):
        out = original(h, gain, shift)
        seen.append(out.detach().clone())  # (the ReLU after it works in place)
        return out

    critics._norm = record
    critics.q_values(obs, actions)
    assert len(seen) == 3 * 2 * 3  # critics x hidden layers x column chunks
    for h in seen:
        torch.testing.assert_close(h.mean(-1), torch.zeros(h.shape[:-1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(h.var(-1, unbiased=False), torch.ones(h.shape[:-1]), atol=1e-3, rtol=0)
    # LayerNorm makes a critic invariant to the scale of a hidden layer's pre-activations
    del critics._norm
    scaled = FusedCritics(3, 2, (8, 6), n=3, layer_norm=True)
    scaled.load_state_dict(critics.state_dict())
    with torch.no_grad():
        scaled.weights[1].mul_(7.0)
        scaled.biases[1].mul_(7.0)
    torch.testing.assert_close(scaled.q_values(obs, actions), critics.q_values(obs, actions))
    # the gradient reaches the stacked affine parameters; detach=True reaches nothing
    critics.q_values(obs, actions).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critics.norm_weights)
    assert not critics.q_values(obs, actions, detach=True).requires_grad


def test_fused_critics_without_layer_norm_keep_their_parameters():
    plain = FusedCritics(3, 2, (8, 6), n=2)
    assert sorted(plain.state_dict()) == ["biases.0", "biases.1", "biases.2", "weights.0", "weights.1", "weights.2"]
    scaled = FusedCritics(3, 2, (8, 6), n=2)
    scaled.load_state_dict(plain.state_dict())
    with torch.no_grad():
        scaled.weights[1].mul_(7.0)
    obs, actions = torch.randn(4, 3), torch.randn(4, 2)
    assert not torch.allclose(scaled(obs, actions), plain(obs, actions))


def test_ogpo_layer_norm_flag_builds_and_restores_its_critics(tmp_path):
    policy = tiny_policy(FlowPolicy)
    normed = OGPO(Bandit(), policy, small_config(learning_starts=3, batch_size=4), seed=0)
    plain = OGPO(Bandit(), policy, small_config(learning_starts=3, batch_size=4, critic_layer_norm=False), seed=0)
    assert OGPOConfig().critic_layer_norm and not DSRLNAConfig().critic_layer_norm
    norm_keys = {k for k in normed.critic.state_dict() if k.startswith("norm_")}
    assert norm_keys == {"norm_weights.0", "norm_weights.1", "norm_biases.0", "norm_biases.1"}
    assert set(normed.critic.state_dict()) - norm_keys == set(plain.critic.state_dict())
    assert set(normed.critic_target.state_dict()) == set(normed.critic.state_dict())
    for agent, name in ((normed, "normed"), (plain, "plain")):
        agent.learn(8, progress=False)
        agent.save(tmp_path / name)
        saved = json.loads((tmp_path / name / "config.json").read_text())["config"]["critic_layer_norm"]
        loaded = OGPO.load(tmp_path / name, env=Bandit())
        assert saved == loaded.config.critic_layer_norm == (name == "normed")
        assert_same(agent.critic, loaded.critic, f"{name}.critic")
        assert_same(agent.critic_target, loaded.critic_target, f"{name}.critic_target")
    assert not torch.equal(normed.critic.norm_weights[0], torch.ones_like(normed.critic.norm_weights[0]))  # trained
    # a checkpoint written before the flag existed (no such key) holds critics without LayerNorm
    meta = json.loads((tmp_path / "plain" / "config.json").read_text())
    del meta["config"]["critic_layer_norm"]
    (tmp_path / "plain" / "config.json").write_text(json.dumps(meta))
    assert not OGPO.load(tmp_path / "plain").config.critic_layer_norm
    # DSRL-NA's flag puts LayerNorm in Q^A, its target and Q^W
    dsrl = DSRLNA(None, policy, DSRLNAConfig(hidden=(16,), critic_layer_norm=True))
    assert all(hasattr(m, "norm_weights") for m in (dsrl.critic_a, dsrl.critic_a_target, dsrl.critic_w))


# ------------------------------------------------------------------------------------ errors
class FakeGenerative:
    """Just enough of a generative policy for DSRL-NA's checks, on any observation space."""

    noise_shape = (2, 2)
    action_space = ACTIONS

    def __init__(self, observation_space: gym.Space) -> None:
        self.observation_space = observation_space

    def sample(self, obs, noise):
        return np.zeros((*np.shape(noise)[:-1], 2, 2), np.float32)


@pytest.mark.parametrize("space, message", [
    (gym.spaces.Discrete(3), r"DSRLNA: needs a flat \(1-D\) Box, .* got Discrete\(3\)"),
    (gym.spaces.Box(0.0, 1.0, (8, 8), np.float32),
     r"DSRLNA: needs a flat .* got Box\(0.0, 1.0, \(8, 8\), float32\)"),
    (gym.spaces.Box(0, 9, (3,), np.int64),
     r"DSRLNA: needs a flat \(1-D\) float Box.* got Box\(0, 9, \(3,\), int64\)"),
    (gym.spaces.Dict({"pixels": gym.spaces.Box(0.0, 1.0, (8, 8, 3), np.float32)}),
     "DSRLNA: Dict key 'pixels' is an image Box of dtype float32"),
    (gym.spaces.Dict({"state": STATE}), "DSRLNA: the Dict observation space has no image key"),
])
def test_unsupported_observation_spaces_raise_clear_errors(space, message):
    with pytest.raises(ValueError, match=message):
        DSRLNA(None, FakeGenerative(space), dsrl_config())


def test_ogpo_bad_pixel_inputs_raise_clear_errors():
    vectors = gym.spaces.Dict({"state": STATE})
    policy = FlowPolicy(vectors, ACTIONS, PolicyConfig(kind="flow", horizon=2, hidden_dim=16, time_dim=8))
    with pytest.raises(ValueError, match=r"OGPO: the Dict observation space has no image key \(Dict\('state'"):
        OGPO(None, policy, ogpo_config())
    agent = OGPO(None, pixel_policy(), ogpo_config())
    obs = {"pixels": np.zeros((32, 32, 3), np.uint8), "state": np.zeros(2, np.float32)}
    with pytest.raises(ValueError, match=r"OGPO.predict: the observation\['pixels'\] has dtype float32"):
        agent.predict({**obs, "pixels": obs["pixels"].astype(np.float32)})
    with pytest.raises(ValueError, match=r"OGPO.predict: the observation misses the key\(s\) \['state'\]"):
        agent.predict({"pixels": obs["pixels"]})
    with pytest.raises(ValueError, match="encoder_groups 3 must divide"):
        OGPOConfig(encoder_channels=(8, 8), encoder_strides=(2, 2), encoder_groups=3)


# ------------------------------------------------------------------------ the command line
def test_cli_trains_ogpo_on_a_pixels_state_widowx_task_and_the_policy_evaluates(tmp_path, capsys):
    from steergym.cli import main

    lift = "steergym/WidowXLiftCube-v0"
    env = gym.make(lift, obs_mode="pixels_state", image_size=(128, 128))
    obs, _ = env.reset(seed=0)
    torch.manual_seed(0)
    policy = FlowPolicy(env.observation_space, env.action_space,
                        PolicyConfig(kind="flow", horizon=4, hidden_dim=32, time_dim=8, sample_steps=2,
                                     conv_channels=(8,), image_features=8))
    policy.fit_normalization({"state": np.stack([obs["state"]] * 2)},
                             np.stack([env.action_space.low, env.action_space.high]))
    env.close()
    policy.save(tmp_path / "pixel-policy", {"env_id": lift})
    out = tmp_path / "run"
    # critic_windows off: 24 env steps end no WidowX episode, and windows only enter the replay with whole episodes
    config = json.dumps({"ppo_batch_size": 4, "success_batch_size": 4, "n_critics": 2, "group_size": 2,
                         "critic_windows": False, **ENCODER})
    argv = ["train", "ogpo", "--policy", str(tmp_path / "pixel-policy"), "--out", str(out), "--obs-mode",
            "pixels_state", "--env-steps", "24", "--eval-every", "24", "--eval-episodes", "1", "--learning-starts",
            "3", "--batch-size", "4", "--hidden", "16", "--config", config, "--quiet", "--threads", "1"]
    assert main(argv) == 0
    assert "steergym/WidowXLiftCube-v0" in capsys.readouterr().out
    run = json.loads((out / "checkpoints" / "latest" / "config.json").read_text())
    assert run["updates"] > 0 and run["num_timesteps"] == 24
    # the critics took the pixels: their conv encoder is in the saved model
    from safetensors.numpy import load_file

    tensors = load_file(out / "agent" / "model.safetensors")
    assert any(key.startswith("critic/encoder.") for key in tensors), sorted(tensors)[:8]
    # the fine-tuned pixel policy evaluates on the same observation mode
    assert main(["eval", "--policy", str(out / "agent" / "policy"), "--obs-mode", "pixels_state", "--episodes", "1",
                 "--quiet"]) == 0
    # without --obs-mode the task gives states, which the pixel policy cannot take: a clear error
    assert main([*argv[:5], str(tmp_path / "run2"), *argv[8:]]) == 2
    assert "observation" in capsys.readouterr().err
