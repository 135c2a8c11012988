"""The networks of the off-policy trainers (Cal-QL/CQL, PTR, OGPO's critics, DSRL-NA's noise actor).

- `TanhGaussianActor`: obs (B, o) -> (mean, log_std), each (B, d); actions tanh(N(mean, std)) in [-1, 1]^d.
- `FusedCritics`: an ensemble of n Q(s, a) MLPs as stacked weights; `q_values(obs (B, o), actions
  (B, K, d)) -> (n, B, K)`, `forward(obs, act (B, d)) -> (n, B)`.
- `PixelActor` / `PixelCritics`: the same behind a `PixelEncoder` (PTR's separate encoders).
- `tanh_gaussian_sample`: the reparameterised tanh-Gaussian sample and its log-density.

Initialisation and the log-std parameterisation follow young-geng/JaxCQL `model.py` (the code Cal-QL
was built on); see steergym/algorithms/calql.py's docstring for how they are trained.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from steergym.algorithms.encoders import PixelEncoder

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # JaxCQL model.py


def tanh_gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor, n: int | None,
                         generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised a = tanh(mean + std * eps) and log pi(a) with the tanh change of variables.

    `mean`, `log_std`: (B, d). n=None: one sample, shapes (B, d) and (B,); else (B, n, d) and (B, n).
    """
    if n is not None:
        mean, log_std = mean.unsqueeze(1).expand(-1, n, -1), log_std.unsqueeze(1).expand(-1, n, -1)
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    u = mean + log_std.exp() * eps
    gaussian = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)), the numerically stable form
    squash = (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), gaussian - squash


def _orthogonal_(weight: torch.Tensor, gain: float) -> None:
    """Orthogonal init of an (in, out) matrix (stored transposed w.r.t. nn.Linear's (out, in))."""
    q = torch.empty(weight.shape[1], weight.shape[0])
    nn.init.orthogonal_(q, gain=gain)
    weight.copy_(q.T)


class TanhGaussianActor(nn.Module):
    """MLP -> (mean, log_std); log_std = multiplier * raw + offset (learnable scalars, init 1 and
    `log_std_init`, -1 as JaxCQL), clipped to [-20, 2]; actions tanh(N(mean, std)) in [-1, 1]^d. The
    output layer starts near 0, so the initial std is about exp(log_std_init)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...], orthogonal: bool = True,
                 log_std_init: float = -1.0) -> None:
        super().__init__()
        sizes = (obs_dim, *hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], 2 * action_dim)
        self.log_std_multiplier = nn.Parameter(torch.tensor(1.0))
        self.log_std_offset = nn.Parameter(torch.tensor(float(log_std_init)))
        if orthogonal:
            for layer in self.hidden:
                nn.init.orthogonal_(layer.weight, gain=math.sqrt(2.0))
                nn.init.zeros_(layer.bias)
            nn.init.orthogonal_(self.out.weight, gain=1e-2)
            nn.init.zeros_(self.out.bias)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs
        for layer in self.hidden:
            x = F.relu(layer(x))
        mean, raw = self.out(x).chunk(2, dim=-1)
        log_std = (self.log_std_multiplier * raw + self.log_std_offset).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std


class FusedCritics(nn.Module):
    """`n` independent Q(s, a) MLPs kept as stacked (n, in, out) weights, evaluated on many actions
    per state at once.

    `q_values(obs (B, o), actions (B, K, d)) -> (n, B, K)`: the first layer is split into its
    observation and action parts, so the observation part is computed once per state (not K
    times) and no repeated copy of the observations is built; each later layer is one `addmm`
    per critic followed by an in-place ReLU, over chunks of ~CHUNK_ROWS state-action rows so the
    activations stay in cache. Measured on one CPU thread (batch 256, 31 actions per state, 2 x 256):
    one batched `baddbmm` over all rows was slower than per-critic `addmm`s, and chunking cut the
    critic pass with its backward from ~149 to ~109 ms (the ReLU backward ran ~4x faster).
    `forward(obs, act)` is the K = 1 case, (n, B). With `detach=True` the weights are used detached
    (the actor's loss must not train the critics).

    `layer_norm=True` puts a per-critic LayerNorm after each hidden linear layer, before its ReLU
    (OGPO's public critics); its affine parameters are stacked too, `norm_weights[j]` and
    `norm_biases[j]` of shape (n, hidden[j]) (init 1 and 0). Off (the default), the module has
    exactly the parameters it had before the flag existed.
    """

    CHUNK_ROWS = 1024
    LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...], n: int = 2,
                 orthogonal: bool = True, layer_norm: bool = False) -> None:
        super().__init__()
        sizes = (obs_dim + action_dim, *hidden, 1)
        self.n, self.obs_dim, self.layer_norm = n, obs_dim, bool(layer_norm)
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(n, a, b)) for a, b in zip(sizes[:-1], sizes[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(n, 1, b)) for b in sizes[1:])
        if self.layer_norm:  # (registered after the layers: without it the parameter order is unchanged)
            self.norm_weights = nn.ParameterList(nn.Parameter(torch.ones(n, h)) for h in hidden)
            self.norm_biases = nn.ParameterList(nn.Parameter(torch.zeros(n, h)) for h in hidden)
        for k, weight in enumerate(self.weights):
            last = k == len(self.weights) - 1
            for i in range(n):  # init only
                if orthogonal:
                    _orthogonal_(weight.data[i], 1e-2 if last else math.sqrt(2.0))
                else:  # nn.Linear's default
                    bound = 1.0 / math.sqrt(weight.shape[1])
                    nn.init.uniform_(weight.data[i], -bound, bound)
                    nn.init.uniform_(self.biases[k].data[i], -bound, bound)

    def q_values(self, obs: torch.Tensor, actions: torch.Tensor, detach: bool = False) -> torch.Tensor:
        weights = [w.detach() if detach else w for w in self.weights]
        biases = [b.detach() if detach else b for b in self.biases]
        if self.layer_norm:
            norms = [(g.detach(), b.detach()) if detach else (g, b)
                     for g, b in zip(self.norm_weights, self.norm_biases)]
        B, K, _ = actions.shape
        w0_obs, w0_act = weights[0][:, :self.obs_dim], weights[0][:, self.obs_dim:]
        # action columns in chunks of ~CHUNK_ROWS rows: activations that stay in cache make the
        # ReLU and its backward ~4x faster than one pass over all B * K rows (measured on a CPU)
        step = max(1, self.CHUNK_ROWS // max(B, 1))
        out = []
        for i in range(self.n):
            # critic i's layers, selected once (a selection per chunk would cost a gradient copy each)
            w_act, layers = w0_act[i], [(weights[j][i], biases[j][i]) for j in range(1, len(weights))]
            # one (gain, shift) per hidden layer, or None: no LayerNorm
            layer_norms = [(g[i], b[i]) for g, b in norms] if self.layer_norm else [None] * len(layers)
            h_obs = torch.addmm(biases[0][i], obs, w0_obs[i]).unsqueeze(1)  # (B, 1, H), once per state
            columns = []
            for start in range(0, K, step):
                chunk = actions[:, start:start + step]
                k = chunk.shape[1]
                h = self._activate(torch.mm(chunk.reshape(B * k, -1), w_act).view(B, k, -1) + h_obs,
                                   layer_norms[0]).view(B * k, -1)
                for (w, b), norm in zip(layers[:-1], layer_norms[1:]):
                    h = self._activate(torch.addmm(b, h, w), norm)
                columns.append(torch.addmm(layers[-1][1], h, layers[-1][0]).view(B, k))
            out.append(columns[0] if len(columns) == 1 else torch.cat(columns, dim=1))
        return torch.stack(out)

    def _activate(self, h: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """ReLU (in place) of a hidden layer's pre-activation, after its LayerNorm when `norm` is given."""
        return (h if norm is None else self._norm(h, *norm)).relu_()

    def _norm(self, h: torch.Tensor, gain: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """LayerNorm over the last axis of `h` with one critic's (hidden,) gain and shift."""
        return F.layer_norm(h, (h.shape[-1],), gain, shift, self.LAYER_NORM_EPS)

    def forward(self, obs: torch.Tensor, act: torch.Tensor, detach: bool = False) -> torch.Tensor:
        return self.q_values(obs, act.unsqueeze(1), detach).squeeze(-1)


class PixelActor(nn.Module):
    """The actor of pixel observations: its own `PixelEncoder`, then a `TanhGaussianActor`.
    `forward(obs dict, normalised) -> (mean, log_std)`, each (B, action_dim)."""

    def __init__(self, encoder: PixelEncoder, head: TanhGaussianActor) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.encoder(obs))


class PixelCritics(nn.Module):
    """The critics of pixel observations: one `PixelEncoder` shared by the `FusedCritics` ensemble.

    `encode(obs) -> (B, F)` features; `q_values(obs, actions (B, K, d), detach) -> (n, B, K)` and
    `forward(obs, act (B, d), detach) -> (n, B)` as `FusedCritics` (detach: no gradient reaches
    the encoder or the heads).
    """

    def __init__(self, encoder: PixelEncoder, head: FusedCritics) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def encode(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(obs)

    def q_values(self, obs: dict[str, torch.Tensor], actions: torch.Tensor, detach: bool = False) -> torch.Tensor:
        features = self.encoder(obs)
        return self.head.q_values(features.detach() if detach else features, actions, detach)

    def forward(self, obs: dict[str, torch.Tensor], act: torch.Tensor, detach: bool = False) -> torch.Tensor:
        return self.q_values(obs, act.unsqueeze(1), detach).squeeze(-1)
