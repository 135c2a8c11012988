"""Generative base policies (DiffusionPolicy, FlowPolicy): shapes, determinism, batching, training,
the act() chunk queue, task conditioning, pixel observations, input validation and PolicyConfig.

Every test runs for both kinds on tiny networks; the whole file takes a few seconds on 2 cores.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from steergym.policies import DiffusionPolicy, FlowPolicy, PolicyConfig

KINDS = ["diffusion", "flow"]
CLASSES = {"diffusion": DiffusionPolicy, "flow": FlowPolicy}
OBS = gym.spaces.Box(-1.0, 1.0, (5,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
H, D = 4, 3
IMAGE = gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
TINY = {"hidden_dim": 32, "time_dim": 8}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: the machine has 2 cores shared with pytest-xdist's other worker."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_policy(kind: str, obs_space=OBS, act_space=ACT, seed: int = 0, **config):
    cfg = PolicyConfig(kind=kind, **{"horizon": H, **TINY, **config})
    return CLASSES[kind](obs_space, act_space, cfg, seed=seed)


def obs_batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, *OBS.shape)).astype(np.float32)


def noise_batch(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, H, D)).astype(np.float32)


def train(policy, obs, actions, steps: int, lr: float = 1e-2, batch: int = 64, seed: int = 0) -> None:
    """Adam with a cosine-decayed learning rate on minibatches drawn with a seeded generator."""
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    policy.train()
    for _ in range(steps):
        idx = torch.randint(0, len(obs), (batch,), generator=gen).numpy()
        loss = policy.loss(obs[idx], actions[idx], generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    policy.eval()


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("kind", KINDS)
def test_output_shapes_single_and_batched(kind):
    policy = make_policy(kind)
    assert policy.noise_shape == (H, D)
    obs, noise = obs_batch(5), noise_batch(5)
    assert policy.sample(obs[0], noise[0]).shape == (H, D)
    assert policy.sample(obs, noise).shape == (5, H, D)
    assert policy.sample_n(obs[0], 7).shape == (7, H, D)
    assert policy.sample_n(obs, 7).shape == (5, 7, H, D)
    assert policy.act(obs[0]).shape == (D,)
    policy.reset()
    assert policy.act(obs).shape == (5, D)
    for out in (policy.sample(obs, noise), policy.sample_n(obs, 2), policy.act(obs)):
        assert out.dtype == np.float32


@pytest.mark.parametrize("kind", KINDS)
def test_flat_noise_equals_chunk_noise(kind):
    policy = make_policy(kind)
    obs, noise = obs_batch(3), noise_batch(3)
    np.testing.assert_array_equal(policy.sample(obs[0], noise[0].reshape(-1)),
                                  policy.sample(obs[0], noise[0]))
    np.testing.assert_array_equal(policy.sample(obs, noise.reshape(3, -1)), policy.sample(obs, noise))
    # Torch tensors are accepted too.
    np.testing.assert_array_equal(policy.sample(torch.as_tensor(obs), torch.as_tensor(noise)),
                                  policy.sample(obs, noise))


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("kind", KINDS)
def test_same_noise_same_chunk_different_noise_different_chunk(kind):
    policy = make_policy(kind)
    obs, noise = obs_batch(1)[0], noise_batch(2)
    first = policy.sample(obs, noise[0])
    np.testing.assert_array_equal(policy.sample(obs, noise[0].copy()), first)
    other = policy.sample(obs, noise[1])
    assert np.abs(other - first).max() > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_same_torch_seed_and_data_give_the_same_policy(kind):
    obs = obs_batch(64)
    actions = np.random.default_rng(3).uniform(-1, 1, (64, H, D)).astype(np.float32)

    def build(torch_seed: int) -> np.ndarray:
        torch.manual_seed(torch_seed)
        policy = make_policy(kind)
        policy.fit_normalization(obs, actions.reshape(-1, D))
        train(policy, obs, actions, steps=5, batch=16)
        return policy.sample(obs[:4], noise_batch(4))

    np.testing.assert_array_equal(build(0), build(0))
    assert np.abs(build(0) - build(1)).max() > 1e-3  # the seed does matter


@pytest.mark.parametrize("kind", KINDS)
def test_reset_with_seed_repeats_act_sequences(kind):
    policy = make_policy(kind, action_steps=2)  # untrained weights from the per-test torch seed (conftest)
    obs = obs_batch(1)[0]

    def episode(seed: int) -> np.ndarray:
        policy.reset(seed=seed)
        return np.stack([policy.act(obs) for _ in range(6)])  # 3 chunks

    first = episode(7)
    np.testing.assert_array_equal(episode(7), first)
    assert np.abs(episode(8) - first).max() > 1e-3
    # Without a seed, reset() keeps drawing fresh noise from the generator.
    policy.reset(seed=7)
    policy.act(obs)
    policy.reset()
    assert np.abs(policy.act(obs) - first[0]).max() > 1e-3
    # sample_n also draws from the reseeded generator.
    policy.reset(seed=11)
    a = policy.sample_n(obs, 3)
    policy.reset(seed=11)
    np.testing.assert_array_equal(policy.sample_n(obs, 3), a)


@pytest.mark.parametrize("kind", KINDS)
def test_batched_results_equal_per_item_results(kind):
    policy = make_policy(kind)
    obs, noise = obs_batch(6), noise_batch(6)
    batched = policy.sample(obs, noise)
    per_item = np.stack([policy.sample(o, w) for o, w in zip(obs, noise)])
    np.testing.assert_allclose(batched, per_item, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_denoiser_step_matches_forward(kind):
    """The sampler's fast path (first-layer terms precomputed) computes the same network."""
    policy = make_policy(kind, task_ids=("a", "b"), num_blocks=2)
    torch.manual_seed(0)
    batch, steps = 5, 6
    x = torch.randn(batch, H * D)
    cond = torch.randn(batch, policy.encoder.out_dim + 2)
    times = torch.linspace(0.0, 19.0 if kind == "diffusion" else 0.9, steps)
    context = policy.denoiser.context(times, cond)
    assert context.shape == (steps, batch, policy.config.hidden_dim)
    with torch.no_grad():
        for k in range(steps):
            slow = policy.denoiser(x, times[k].expand(batch), cond)
            torch.testing.assert_close(policy.denoiser.step(x, context[k]), slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_sampled_actions_stay_inside_the_action_space(kind):
    space = gym.spaces.Box(np.array([-0.2, -1.0, 0.0], np.float32), np.array([0.3, 1.0, 0.5], np.float32))
    policy = make_policy(kind, act_space=space)
    # Statistics from data far outside the bounds: unclipped chunks would leave the space.
    wide = np.random.default_rng(0).uniform(-5, 5, (100, D))
    policy.fit_normalization(obs_batch(100), wide)
    obs = obs_batch(8)
    chunks = [policy.sample_n(obs, 16), policy.sample(obs, 3 * noise_batch(8)), policy.act(obs)]
    for chunk in chunks:
        flat = chunk.reshape(-1, D)
        assert np.all(flat >= space.low) and np.all(flat <= space.high)
    flat = chunks[0].reshape(-1, D)
    assert np.any(flat == space.low) and np.any(flat == space.high)  # the clip was exercised


# --------------------------------------------------------------------------- training
BIMODAL_OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
BIMODAL_ACT = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


@pytest.fixture(scope="module", params=KINDS)
def bimodal(request):
    """A policy trained on actions +-0.5 with equal probability whatever the observation.

    Measured over torch seeds 0-11 (hidden 64, 800 Adam steps of batch 256, lr 1e-2 cosine, ~2.5 s
    a kind on one thread): every run had each mode's share at 3 test observations within
    [0.36, 0.645] and >= 93% of samples within 0.15 of a mode.
    """
    kind = request.param
    torch.manual_seed(0)
    policy = CLASSES[kind](BIMODAL_OBS, BIMODAL_ACT,
                           PolicyConfig(kind=kind, horizon=1, hidden_dim=64), seed=0)
    rng = np.random.default_rng(0)
    n = 4096
    obs = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    actions = rng.choice([-0.5, 0.5], size=(n, 1, 1)).astype(np.float32)
    policy.fit_normalization(obs, actions.reshape(n, 1))
    eval_idx = np.arange(512)

    def eval_loss() -> float:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(123)
            return float(np.mean([policy.loss(obs[eval_idx], actions[eval_idx], generator=gen).item()
                                  for _ in range(4)]))

    before = eval_loss()
    train(policy, obs, actions, steps=800, lr=1e-2, batch=256)
    return kind, policy, before, eval_loss()


def test_training_lowers_the_loss(bimodal):
    kind, _, before, after = bimodal
    assert after < 0.75 * before, f"{kind}: held-out loss {before:.3f} -> {after:.3f}"


def test_trained_policy_reproduces_a_bimodal_distribution(bimodal):
    kind, policy, _, _ = bimodal
    test_obs = np.array([[0.0, 0.0, 0.0], [0.8, -0.8, 0.5], [-0.7, 0.6, -0.9]], np.float32)
    samples = policy.sample_n(test_obs, 200)[:, :, 0, 0]  # (3 obs, 200)
    positive = (samples > 0).mean(axis=1)
    assert np.all((positive >= 0.25) & (positive <= 0.75)), f"{kind}: share of the +0.5 mode {positive}"
    near = (np.abs(np.abs(samples) - 0.5) <= 0.15).mean()
    assert near > 0.9, f"{kind}: only {near:.1%} of samples within 0.15 of a mode (mode averaging?)"


# --------------------------------------------------------------------------- act chunk queue
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("action_steps", [H, 2])
def test_act_returns_chunk_actions_in_order_then_replans(kind, action_steps):
    """act() executes the first `action_steps` actions of the chunk sample(obs, w), where w is the
    next N(0, I) draw of the policy's generator (seeded by reset(seed)), then samples again."""
    policy = make_policy(kind, action_steps=action_steps)
    obs = obs_batch(1)[0]
    gen = torch.Generator().manual_seed(5)
    chunks = [policy.sample(obs, torch.randn((1, H, D), generator=gen)[0]) for _ in range(4)]
    policy.reset(seed=5)
    got = np.stack([policy.act(obs) for _ in range(2 * action_steps)])
    np.testing.assert_array_equal(got[:action_steps], chunks[0][:action_steps])
    np.testing.assert_array_equal(got[action_steps:], chunks[1][:action_steps])  # replanned
    # reset() drops the rest of the chunk in progress: the next act starts the next chunk.
    np.testing.assert_array_equal(policy.act(obs), chunks[2][0])
    policy.reset()
    np.testing.assert_array_equal(policy.act(obs), chunks[3][0])


@pytest.mark.parametrize("kind", KINDS)
def test_batched_act_replans_all_items_together(kind):
    policy = make_policy(kind)
    obs = obs_batch(3)
    gen = torch.Generator().manual_seed(2)
    chunk = policy.sample(obs, torch.randn((3, H, D), generator=gen))
    policy.reset(seed=2)
    got = np.stack([policy.act(obs) for _ in range(H)], axis=1)  # (3, H, D)
    np.testing.assert_array_equal(got, chunk)
    # A single observation after a batch starts a fresh chunk (no mixing of queues).
    assert policy.act(obs[0]).shape == (D,)


# --------------------------------------------------------------------------- task conditioning
@pytest.mark.parametrize("kind", KINDS)
def test_task_conditioned_policy(kind):
    policy = make_policy(kind, task_ids=("pick", "push"))
    obs, noise = obs_batch(2), noise_batch(2)
    with pytest.raises(ValueError, match="for_task"):
        policy.sample(obs, noise)
    with pytest.raises(ValueError, match="for_task"):
        policy.act(obs[0])
    with pytest.raises(ValueError, match="'stack'"):
        policy.for_task("stack")
    pick, push = policy.for_task("pick"), policy.for_task("push")
    assert (pick.task, push.task, policy.task) == ("pick", "push", None)
    a, b = pick.sample(obs, noise), push.sample(obs, noise)
    assert a.shape == (2, H, D)
    assert np.abs(a - b).max() > 1e-4  # the one-hot reaches the network
    np.testing.assert_array_equal(policy.for_task("pick").sample(obs, noise), a)
    # Views share the weights: training the base policy changes what the view samples.
    with torch.no_grad():
        policy.denoiser.out[-1].bias.add_(0.5)
    assert np.abs(pick.sample(obs, noise) - a).max() > 1e-4
    # The training loss takes task indices or an id; an unknown id names itself.
    actions = np.zeros((2, H, D), np.float32)
    assert torch.isfinite(policy.loss(obs, actions, task=[0, 1]))
    assert torch.isfinite(policy.loss(obs, actions, task="push"))
    with pytest.raises(ValueError, match="'stack'"):
        policy.loss(obs, actions, task="stack")
    with pytest.raises(ValueError, match="task indices"):
        policy.loss(obs, actions, task=[0, 2])


# --------------------------------------------------------------------------- pixel observations
PIXEL_SPACES = {
    "image": IMAGE,
    "dict": gym.spaces.Dict({"image": IMAGE, "state": gym.spaces.Box(-1.0, 1.0, (4,), np.float32)}),
}


def pixel_obs(space, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (n, *IMAGE.shape), dtype=np.uint8)
    if isinstance(space, gym.spaces.Dict):
        return {"image": image, "state": rng.uniform(-1, 1, (n, 4)).astype(np.float32)}
    return image


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("space_name", sorted(PIXEL_SPACES))
def test_pixel_observations(kind, space_name):
    space = PIXEL_SPACES[space_name]
    policy = make_policy(kind, obs_space=space, conv_channels=(8, 8), image_features=16)
    obs = pixel_obs(space, 3)
    single = {k: v[0] for k, v in obs.items()} if isinstance(obs, dict) else obs[0]
    noise = noise_batch(3)
    assert policy.sample(single, noise[0]).shape == (H, D)
    assert policy.sample(obs, noise).shape == (3, H, D)
    assert policy.sample_n(single, 4).shape == (4, H, D)
    assert policy.act(obs).shape == (3, D)
    # One training step runs and reaches the conv encoder.
    actions = np.random.default_rng(0).uniform(-1, 1, (3, H, D)).astype(np.float32)
    policy.fit_normalization(obs, actions.reshape(-1, D))
    # The image is seen by the network (an untrained diffusion policy's chunks saturate at the
    # action bounds, so compare losses drawn with the same generator rather than chunks).
    other = pixel_obs(space, 3, seed=1)
    losses = [policy.loss(o, actions, generator=torch.Generator().manual_seed(0)).item()
              for o in (obs, other)]
    assert abs(losses[0] - losses[1]) > 1e-6
    policy.train()
    loss = policy.loss(obs, actions)
    loss.backward()
    grads = [p.grad for p in policy.encoder.parameters()]
    assert torch.isfinite(loss) and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs_raise_value_errors_naming_the_problem(kind):
    policy = make_policy(kind)
    obs, noise = obs_batch(2), noise_batch(2)
    cases = [
        (lambda: policy.sample(np.zeros(4, np.float32), noise[0]), "observation must have shape"),
        (lambda: policy.act(np.zeros((2, 3, 5), np.float32)), "observation must have shape"),
        (lambda: policy.sample(np.full(5, np.nan, np.float32), noise[0]), "NaN"),
        (lambda: policy.act(np.array([0, 0, np.inf, 0, 0], np.float32)), "NaN or inf"),
        (lambda: policy.sample(obs[0], np.zeros((H, D + 1))), "noise must have shape"),
        (lambda: policy.sample(obs, noise[:1]), "noise must have shape"),  # batch size mismatch
        (lambda: policy.sample(obs[0], np.full((H, D), np.nan)), "noise contains NaN"),
        (lambda: policy.sample_n(obs[0], 0), "n must be >= 1"),
        (lambda: policy.loss(obs, np.zeros((2, H + 1, D))), "actions must have shape"),
        (lambda: policy.loss(obs[0], np.zeros((1, H, D))), "batch"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (4, 4), np.float32),
                                   gym.spaces.Dict({"s": OBS, "mode": gym.spaces.Discrete(2)})],
                         ids=["discrete", "2d-float-box", "dict-with-discrete"])
def test_unsupported_observation_space(kind, space):
    with pytest.raises(ValueError, match="unsupported observation space"):
        make_policy(kind, obs_space=space)


@pytest.mark.parametrize("kind", KINDS)
def test_dict_observation_must_have_the_spaces_keys(kind):
    policy = make_policy(kind, obs_space=PIXEL_SPACES["dict"], conv_channels=(8,), image_features=8)
    with pytest.raises(ValueError, match="keys"):
        policy.sample({"image": np.zeros(IMAGE.shape, np.uint8)}, noise_batch(1)[0])


@pytest.mark.parametrize("kind", KINDS)
def test_constructor_refuses_wrong_kind_and_action_space(kind):
    other = "flow" if kind == "diffusion" else "diffusion"
    with pytest.raises(ValueError, match="config.kind"):
        CLASSES[kind](OBS, ACT, PolicyConfig(kind=other))
    with pytest.raises(ValueError, match="action space"):
        CLASSES[kind](OBS, gym.spaces.Discrete(3), PolicyConfig(kind=kind))


# --------------------------------------------------------------------------- PolicyConfig
@pytest.mark.parametrize("fields, message", [
    ({"kind": "gan"}, "kind must be one of"),
    ({"horizon": 4, "action_steps": 5}, "action_steps"),
    ({"action_steps": 0}, "action_steps"),
    ({"kind": "diffusion", "train_steps": 20, "sample_steps": 21}, "cannot exceed train_steps"),
    ({"schedule": "quadratic"}, "schedule"),
    ({"time_dim": 7}, "time_dim"),
    ({"task_ids": ("a", "a")}, "duplicates"),
])
def test_policy_config_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        PolicyConfig(**fields)


def test_policy_config_defaults_and_round_trip():
    assert PolicyConfig(horizon=6).action_steps == 6  # executes the whole chunk by default
    # Flow integrates an ODE: more Euler steps than diffusion training steps is fine.
    assert PolicyConfig(kind="flow", train_steps=20, sample_steps=32).sample_steps == 32
    config = PolicyConfig(kind="flow", horizon=3, task_ids=("a", "b"), conv_channels=(4, 8))
    assert PolicyConfig.from_dict(config.to_dict()) == config


def test_policy_config_from_dict_refuses_unknown_fields():
    data = {**PolicyConfig().to_dict(), "dropout": 0.1}
    with pytest.raises(ValueError, match=r"unknown fields \['dropout'\]"):
        PolicyConfig.from_dict(data)


def test_fork_shares_weights_but_not_the_chunk_queue():
    obs_space = gym.spaces.Box(-10, 10, (3,), np.float32)
    policy = FlowPolicy(obs_space, gym.spaces.Box(-1, 1, (2,), np.float32), PolicyConfig(kind="flow", hidden_dim=8))
    fork = policy.fork(seed=5)
    assert next(fork.parameters()) is next(policy.parameters())
    obs = np.zeros(3, np.float32)
    policy.reset(seed=5)
    first = policy.act(obs)
    # Consuming the fork's queue does not advance the original's, and the same seed gives the same chunk.
    fork.reset(seed=5)
    np.testing.assert_array_equal(fork.act(obs), first)
    second = policy.act(obs)
    np.testing.assert_array_equal(fork.act(obs), second)
