"""Cal-QL / CQL on pixel observations (PTR's conv encoder): offline learning from a real collected
WidowX pixels_state dataset, separate actor / critic encoders, save/load and exact resume, online
fine-tuning with a task one-hot, vector envs of image observations, augmentation, and clear errors."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from steergym.algorithms.calql import Batch, CalQL, CalQLConfig
from steergym.algorithms.encoders import PixelEncoder, SpatialLearnedEmbeddings, observation_layout, random_shift
from steergym.data import collect, load_transitions
from steergym.data.multitask import mix_transitions, with_task
from steergym.wrappers import TaskConditionWrapper
from test_calql import agent_state

LIFT = "steergym/WidowXLiftCube-v0"
PIXELS = dict(obs_mode="pixels_state", image_size=(32, 32))
TASKS = (LIFT, "steergym/WidowXPutCarrotOnPlate-v0")
# tiny networks: two 8-channel convs, 4 spatial features, 16-d latent, 32-wide heads
TINY = dict(batch_size=32, actor_hidden=(32, 32), critic_hidden=(32, 32), log_every=1, cql_n_actions=4,
            encoder_channels=(8, 8), encoder_strides=(2, 2), encoder_groups=2, spatial_features=4, latent_dim=16)


def assert_same_state(a: CalQL, b: CalQL) -> None:
    state_b = agent_state(b)
    for key, value in agent_state(a).items():
        assert torch.equal(value, state_b[key]), key


@pytest.fixture(scope="module")
def pixel_data(tmp_path_factory):
    """Three collected WidowX lift episodes (expert, noisy, failing) with 32x32 images + state."""
    root = tmp_path_factory.mktemp("calql-pixels")
    collect(LIFT, 3, "mixed", "steergym/lift/pixels-v0", seed=0, env_kwargs=PIXELS, root=root, progress=False)
    return load_transitions("steergym/lift/pixels-v0", root=root)


@pytest.fixture(scope="module")
def pixel_spaces():
    env = gym.make(LIFT, **PIXELS)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def pretrained(spaces, data, steps, seed=0, **overrides):
    return CalQL(spaces, CalQLConfig(**{**TINY, **overrides}), seed=seed).pretrain(data, steps, progress=False)


# ------------------------------------------------------------------------------------ encoder
def test_encoder_shapes_and_spatial_embeddings():
    layout = observation_layout(gym.spaces.Dict({
        "pixels": gym.spaces.Box(0, 255, (32, 32, 3), np.uint8),
        "state": gym.spaces.Box(-1, 1, (5,), np.float32), "task": gym.spaces.Box(0, 1, (2,), np.float32)}))
    encoder = PixelEncoder(layout, channels=(8, 8), strides=(2, 2), groups=2, spatial_features=4, latent_dim=16)
    assert encoder.out_dim == 16 + 5 + 2
    assert any(isinstance(m, torch.nn.GroupNorm) for m in encoder.modules())
    spatial = encoder.trunks["pixels"].spatial
    assert spatial.kernel.shape == (8, 8, 8, 4)  # (H', W', C, F): 32 -> 16 -> 8
    obs = {"pixels": torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8),
           "state": torch.randn(3, 5), "task": torch.tensor([[1.0, 0.0]] * 3)}
    features = encoder(obs)
    assert features.shape == (3, 23)
    torch.testing.assert_close(features[:, 16:], torch.cat([obs["state"], obs["task"]], dim=1))  # vectors as given
    # the learned spatial embedding: sum over H', W' of feature map x kernel -> C * F features
    x, embed = torch.randn(2, 3, 4, 5), SpatialLearnedEmbeddings(4, 5, 3, 2)
    expected = (x.permute(0, 2, 3, 1).unsqueeze(-1) * embed.kernel).sum(dim=(1, 2)).reshape(2, 6)
    torch.testing.assert_close(embed(x), expected)
    assert observation_layout(gym.spaces.Box(-1, 1, (4,))) is None  # flat: the fused path
    assert list(observation_layout(gym.spaces.Box(0, 255, (8, 8, 3), np.uint8))) == ["pixels"]


def test_augmentation_is_a_seeded_random_shift():
    images = torch.randint(0, 256, (6, 16, 16, 3), dtype=torch.uint8)
    first = random_shift(images, 4, torch.Generator().manual_seed(0))
    assert first.dtype == torch.uint8 and first.shape == images.shape
    assert torch.equal(first, random_shift(images, 4, torch.Generator().manual_seed(0)))
    assert not torch.equal(first, random_shift(images, 4, torch.Generator().manual_seed(1)))
    # every output is the edge-padded image cropped at some offset in [-4, 4]^2
    padded = torch.nn.functional.pad(images.permute(0, 3, 1, 2).float(), (4, 4, 4, 4), mode="replicate")
    for b in range(6):
        crops = [padded[b, :, dy:dy + 16, dx:dx + 16] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(first[b].permute(2, 0, 1).float(), c) for c in crops), b
    assert not all(torch.equal(first[b], images[b]) for b in range(6))


def test_agents_with_the_same_seed_train_identically_and_augmentation_matters(pixel_data, pixel_spaces):
    a, b = (pretrained(pixel_spaces, pixel_data, 3, seed=4) for _ in range(2))
    assert_same_state(a, b)
    assert a.metrics == b.metrics
    plain = pretrained(pixel_spaces, pixel_data, 3, seed=4, image_augmentation=False)
    assert not torch.equal(plain.critic.encoder.trunks["pixels"].convs[0].weight,
                           a.critic.encoder.trunks["pixels"].convs[0].weight)


# ---------------------------------------------------------------------------------- offline
def test_offline_pixel_pretraining_reduces_the_td_loss_and_predicts(pixel_data, pixel_spaces, make_env):
    config = dict(discount=0.9, critic_lr=1e-3, actor_lr=1e-3, reward_scale=10.0, reward_bias=-5.0)
    agent = pretrained(pixel_spaces, pixel_data, 300, **config)
    td = [row["td_loss"] for row in agent.history]
    assert len(td) == 300 and all(np.isfinite(list(row.values())).all() for row in agent.history)
    assert np.mean(td[-20:]) < 0.25 * np.mean(td[:20])
    # the offline data stays uint8; the vector key is standardised with its statistics
    assert agent._offline["obs"]["pixels"].dtype == torch.uint8
    torch.testing.assert_close(agent.obs_mean["state"], torch.as_tensor(pixel_data.observations["state"].mean(0)))
    env = make_env(LIFT, **PIXELS)
    obs, _ = env.reset(seed=0)
    action, _ = agent.predict(obs)
    assert action.shape == (7,) and env.action_space.contains(action)
    obs2, *_ = env.step(action)
    batch = {k: np.stack([obs[k], obs2[k]]) for k in obs}
    actions, _ = agent.predict(batch)
    assert actions.shape == (2, 7) and all(env.action_space.contains(a) for a in actions)
    np.testing.assert_allclose(actions[0], action, rtol=1e-5, atol=1e-6)  # a batch acts row by row
    noisy, _ = agent.predict(batch, deterministic=False)
    assert noisy.shape == (2, 7) and np.all(np.abs(noisy) <= 1.0) and not np.allclose(noisy, actions)


def test_image_box_observations(pixel_data):
    images = dataclasses.replace(pixel_data, observations=pixel_data.observations["pixels"],
                                 next_observations=pixel_data.next_observations["pixels"])
    space = gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    agent = pretrained((space, gym.spaces.Box(-1, 1, (7,), np.float32)), images, 3)
    assert agent.obs_dim is None and agent.obs_mean is None  # no vector keys to standardise
    one, _ = agent.predict(images.observations[0])
    many, _ = agent.predict(images.observations[:5])
    assert one.shape == (7,) and many.shape == (5, 7)
    np.testing.assert_allclose(many[0], one, rtol=1e-5, atol=1e-6)


def test_actor_and_critic_losses_reach_only_their_own_encoder(pixel_data, pixel_spaces):
    agent = pretrained(pixel_spaces, pixel_data, 1)
    index = torch.arange(32)
    batch = Batch(**{k: ({j: v[j][index] for j in v} if isinstance(v, dict) else v[index])
                     for k, v in agent._offline.items()})
    losses = agent._losses(batch)
    actor_params, critic_params = list(agent.actor.parameters()), list(agent.critic.parameters())

    def grads(loss, params):
        return [g for g in torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)]

    def nonzero(gs):
        return [g is not None and bool(g.abs().sum() > 0) for g in gs]

    # the actor loss moves the actor (its encoder too) and nothing of the critics, the critic loss the reverse
    assert not any(nonzero(grads(losses["actor"], critic_params)))
    assert not any(nonzero(grads(losses["critic"], actor_params)))
    assert all(nonzero(grads(losses["actor"], list(agent.actor.encoder.parameters()))))
    assert all(nonzero(grads(losses["critic"], list(agent.critic.encoder.parameters()))))
    # and one real update: the critic encoder is not changed by a step whose critic learning rate is 0
    frozen = pretrained(pixel_spaces, pixel_data, 1, critic_lr=0.0)
    before = {k: v.clone() for k, v in frozen.critic.state_dict().items()}
    actor_before = {k: v.clone() for k, v in frozen.actor.state_dict().items()}
    frozen.pretrain(pixel_data, 2, progress=False)
    assert all(torch.equal(v, frozen.critic.state_dict()[k]) for k, v in before.items())
    assert not all(torch.equal(v, frozen.actor.state_dict()[k]) for k, v in actor_before.items())
    # the target critic encoder follows the critic's by Polyak averaging, separately stored
    assert frozen.critic_target.encoder is not frozen.critic.encoder


def test_save_load_round_trip_and_exact_resume(pixel_data, pixel_spaces, tmp_path, make_env):
    config = dict(cql_lagrange=True)
    straight = pretrained(pixel_spaces, pixel_data, 4, seed=1, **config)
    interrupted = pretrained(pixel_spaces, pixel_data, 3, seed=1, **config)
    interrupted.save(tmp_path / "agent")
    assert sorted(p.name for p in (tmp_path / "agent").iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((tmp_path / "agent" / "config.json").read_text())
    assert meta["observation_space"]["subspaces"]["pixels"] == {"type": "Box", "dtype": "uint8", "shape": [32, 32, 3],
                                                                "low": 0, "high": 255}  # one number per bound
    env = make_env(LIFT, **PIXELS)
    resumed = CalQL.load(tmp_path / "agent", env=env)
    assert resumed.observation_space == pixel_spaces[0]
    obs = {k: v[:5] for k, v in pixel_data.observations.items()}
    np.testing.assert_array_equal(resumed.predict(obs)[0], interrupted.predict(obs)[0])
    single = {k: v[0] for k, v in obs.items()}
    np.testing.assert_array_equal(resumed.predict(single)[0], interrupted.predict(single)[0])
    resumed.pretrain(pixel_data, 1, progress=False)  # the next update equals the uninterrupted run's
    assert resumed.step == 4 and resumed.metrics == straight.metrics
    assert_same_state(straight, resumed)
    for k in straight.obs_mean:
        assert torch.equal(straight.obs_mean[k], resumed.obs_mean[k])
    with pytest.raises(ValueError, match="not the data this agent was trained with"):
        changed = {**pixel_data.observations, "pixels": pixel_data.observations["pixels"].copy()}
        changed["pixels"][0, 0, 0, 0] ^= 1
        resumed.pretrain(dataclasses.replace(pixel_data, observations=changed), 1, progress=False)
    with pytest.raises(ValueError, match="differ from the env"):
        CalQL.load(tmp_path / "agent", env=make_env(LIFT, obs_mode="pixels_state", image_size=(24, 32)))


# ----------------------------------------------------------------------------------- online
def test_online_learning_on_a_task_conditioned_pixels_state_env(pixel_data, tmp_path, make_env):
    # PTR-shaped data: a task mixture with the task one-hot as the Dict key "task"
    data = mix_transitions([with_task(pixel_data, TASKS, LIFT), with_task(pixel_data, TASKS, TASKS[1])],
                           (0.75, 0.25))
    env = TaskConditionWrapper(make_env(LIFT, **PIXELS), TASKS, LIFT)
    agent = CalQL(env, CalQLConfig(**TINY), seed=0).pretrain(data, 2, progress=False)
    seen = []
    update = agent.update
    agent.update = lambda batch, **kw: (seen.append(batch.obs["task"][:, 1].sum().item()), update(batch, **kw))[1]
    agent.learn(env, 200, eval_env=None, progress=False, out=tmp_path / "run", checkpoint_every=80)
    assert agent.online.num_timesteps == 200 and agent.step == 2 + 200
    assert agent.replay.episodes == 5 and agent.replay.size == 200  # 40-step episodes
    assert agent.replay.obs["pixels"].dtype == np.uint8 and agent.replay.obs["pixels"].shape[1:] == (32, 32, 3)
    np.testing.assert_array_equal(agent.replay.obs["task"][:200], np.tile([1.0, 0.0], (200, 1)))
    assert seen[0] == 8  # offline: a quarter of 32 rows from the second task; online rows come from LIFT
    assert seen[-1] == 4  # half online after the first episode: 16 offline rows, a quarter of them task 2
    # the checkpoint holds the uint8 images; the resumed agent takes the same next update
    saved = CalQL.load(tmp_path / "run" / "checkpoints" / "latest")
    assert saved.replay.obs["pixels"].dtype == np.uint8
    np.testing.assert_array_equal(saved.replay.obs["pixels"][:200], agent.replay.obs["pixels"][:200])
    saved.set_offline_data(data)  # (the fingerprint of the mixture matches)
    agent.update = update
    ours, theirs = agent._mixed_batch(), saved._mixed_batch()
    assert torch.equal(ours.obs["pixels"], theirs.obs["pixels"]) and ours.obs["pixels"].dtype == torch.uint8
    assert saved.update(theirs) == agent.update(ours)
    assert_same_state(saved, agent)


class PixelChain(gym.Env):
    """A 3-step toy task with 16x16 uint8 image observations (brightness = 60 * step); reward = step."""

    observation_space = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros((16, 16, 3), np.uint8), {}

    def step(self, action):
        self.t += 1
        return np.full((16, 16, 3), 60 * self.t, np.uint8), float(self.t - 1), self.t == 3, False, {}


def test_learn_on_a_vector_env_of_image_observations():
    for mode in gym.vector.AutoresetMode:
        vec = gym.vector.SyncVectorEnv([PixelChain, PixelChain], autoreset_mode=mode)
        agent = CalQL(vec, CalQLConfig(online_ratio=1.0, **{**TINY, "batch_size": 8}), seed=0)
        agent.learn(vec, 12, eval_env=None, progress=False)
        assert agent.replay.episodes == 4 and agent.replay.size == 12, mode
        # each transition's next image is its own episode's (the final one at an episode end)
        brightness = agent.replay.next_obs["pixels"][:12, 0, 0, 0]
        np.testing.assert_array_equal(brightness, 60 * (agent.replay.rewards[:12] + 1))
        assert agent.replay.obs["pixels"].dtype == np.uint8 and agent.step > 0


# ----------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("change, message", [
    (lambda o: {**o, "pixels": o["pixels"][:, :16]},
     r"observations\['pixels'\] has shape \(\d+, 16, 32, 3\), expected \(\d+, 32, 32, 3\)"),
    (lambda o: {**o, "pixels": o["pixels"].astype(np.float32)},
     r"observations\['pixels'\] has dtype float32 .*expected uint8"),
    (lambda o: {"pixels": o["pixels"]}, r"observations misses the key\(s\) \['state'\]"),
    (lambda o: o["pixels"], "must be a dict with keys \\['pixels', 'state'\\]"),
    (lambda o: {**o, "state": np.where(np.arange(len(o["state"]))[:, None] == 3, np.nan, o["state"])},
     r"observations\['state'\] holds 17 non-finite values \(first at row 3\)"),
])
def test_bad_pixel_datasets_raise_clear_errors(pixel_data, pixel_spaces, change, message):
    data = dataclasses.replace(pixel_data, observations=change(pixel_data.observations))
    with pytest.raises(ValueError, match=message):
        pretrained(pixel_spaces, data, 1)


def test_bad_pixel_observations_and_spaces_raise_clear_errors(pixel_data, pixel_spaces):
    agent = pretrained(pixel_spaces, pixel_data, 1)
    obs = {k: v[0] for k, v in pixel_data.observations.items()}
    with pytest.raises(ValueError, match=r"the observation\['pixels'\] has shape \(16, 32, 3\), expected"):
        agent.predict({**obs, "pixels": obs["pixels"][:16]})
    with pytest.raises(ValueError, match=r"the observation\['pixels'\] has dtype float64 .*expected uint8"):
        agent.predict({**obs, "pixels": obs["pixels"] / 255.0})
    with pytest.raises(ValueError, match=r"misses the key\(s\) \['state'\]"):
        agent.predict({"pixels": obs["pixels"]})
    with pytest.raises(ValueError, match=r"has key\(s\) \['wrist'\] not in the observation space"):
        agent.predict({**obs, "wrist": obs["pixels"]})
    with pytest.raises(ValueError, match=r"the observation\['state'\] has shape \(3, 17\), expected \(2, 17\)"):
        agent.predict({"pixels": np.stack([obs["pixels"]] * 2), "state": np.stack([obs["state"]] * 3)})
    action_space = pixel_spaces[1]
    with pytest.raises(ValueError, match="key 'pixels' is an image Box of dtype float32"):
        CalQL((gym.spaces.Dict({"pixels": gym.spaces.Box(0, 1, (8, 8, 3), np.float32)}), action_space))
    with pytest.raises(ValueError, match="key 'depth' must be a uint8 .* or a 1-D Box"):
        CalQL((gym.spaces.Dict({"pixels": pixel_spaces[0]["pixels"],
                                "depth": gym.spaces.Box(0, 1, (8, 8), np.float32)}), action_space))
    with pytest.raises(ValueError, match="encoder_groups 3 must divide"):
        CalQLConfig(encoder_channels=(8, 8), encoder_strides=(2, 2), encoder_groups=3)
