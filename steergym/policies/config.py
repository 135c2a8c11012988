"""Hyper-parameters of the generative (diffusion / flow) base policies, in one place.

Defaults follow DSRL's public Robomimic base policies (DPPO `DiffusionMLP`, ../shared/REFERENCE.md
section 5 and reference/algorithms.md section 4.5), scaled down where a 2-core CPU demands it; each
field says where its value comes from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

POLICY_KINDS = ("diffusion", "flow")
SCHEDULES = ("cosine", "linear")
# Upper bound of train_steps and sample_steps: DDPM's 1000 is the most in common use. The noise
# schedule holds train_steps floats and sampling makes sample_steps network calls, so a larger
# number (a typo, a corrupt checkpoint config) would allocate gigabytes or make sampling take hours.
MAX_STEPS = 10_000


@dataclass
class PolicyConfig:
    """Architecture and sampler of a `DiffusionPolicy` or `FlowPolicy`.

    The network maps (noisy action chunk, time, observation features[, task one-hot]) to an
    epsilon (diffusion) or a velocity (flow) of shape (horizon, action_dim).
    """

    kind: str = "diffusion"
    # Action chunk length H: DSRL/DPPO robomimic lift/can/square use act_steps = 4.
    horizon: int = 4
    # Actions executed open loop from each chunk by `act` (DSRL executes the whole chunk: = horizon).
    action_steps: int | None = None
    # Residual MLP: DPPO's lift/can "512 x 3" is an input layer, one residual block of two layers and
    # an output layer (`ResidualMLP`, blocks = (layers - 1) // 2); we keep that depth at half the
    # width so a batch-1 chunk of 8 sampler steps stays under 3 ms on a 2-core CPU
    # (benchmarks/policy_speed.py). Generalists use more blocks.
    hidden_dim: int = 256
    num_blocks: int = 1
    # Sinusoidal time-embedding size: DPPO `time_dim` 16 for lift/can.
    time_dim: int = 16
    # Diffusion: K training steps (DPPO lift/can: 20), cosine beta schedule (DPPO), DDIM steps at
    # sampling time (DSRL: 8, eta = 0), x0 clipped to +-1 every step (DPPO `denoised_clip_value`).
    train_steps: int = 20
    schedule: str = "cosine"
    sample_steps: int = 8
    denoised_clip: float = 1.0
    # Pixel observations: channels of the small conv encoder and the feature size it produces.
    conv_channels: tuple[int, ...] = (16, 32, 32)
    image_features: int = 64
    # Task conditioning (generalist policies): ordered task ids, one-hot appended to the features.
    task_ids: tuple[str, ...] = ()
    # Minimum per-dimension std / half-range used by the normalisers (constant dims stay finite).
    min_scale: float = 1e-2
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.conv_channels = tuple(int(c) for c in self.conv_channels)
        self.task_ids = tuple(str(t) for t in self.task_ids)
        if self.action_steps is None:
            self.action_steps = self.horizon
        checks = [
            (self.kind in POLICY_KINDS, f"kind must be one of {POLICY_KINDS}, got {self.kind!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}"),
            (1 <= self.action_steps <= self.horizon,
             f"action_steps must be in [1, horizon={self.horizon}], got {self.action_steps}"),
            (self.hidden_dim >= 1 and self.num_blocks >= 1,
             f"hidden_dim and num_blocks must be >= 1, got {self.hidden_dim}, {self.num_blocks}"),
            (self.time_dim >= 2 and self.time_dim % 2 == 0, f"time_dim must be even and >= 2, got {self.time_dim}"),
            (1 <= self.train_steps <= MAX_STEPS, f"train_steps must be in [1, {MAX_STEPS}], got {self.train_steps}"),
            (1 <= self.sample_steps <= MAX_STEPS, f"sample_steps must be in [1, {MAX_STEPS}], got {self.sample_steps}"),
            (self.kind == "flow" or self.sample_steps <= self.train_steps,
             f"sample_steps ({self.sample_steps}) cannot exceed train_steps ({self.train_steps}) for diffusion"),
            (self.denoised_clip > 0, f"denoised_clip must be > 0, got {self.denoised_clip}"),
            (len(set(self.task_ids)) == len(self.task_ids), f"task_ids has duplicates: {self.task_ids}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"PolicyConfig: {message}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conv_channels"] = list(self.conv_channels)
        d["task_ids"] = list(self.task_ids)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PolicyConfig":
        return config_from_dict(cls, data)


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """`cls(**data)` for a config dataclass; ValueError naming the unknown and the known fields."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {unknown}; known: {sorted(known)}")
    return cls(**data)
