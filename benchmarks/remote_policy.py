"""Round trip of `RemotePolicy` (steergym.policies.remote) on loopback, beside the same policy called
in-process: what steering a policy served elsewhere costs per chunk before any network distance.

The shipped `widowx-lift-diffusion` policy is served by `serve_policy` on 127.0.0.1 (a thread of
this process, torch on one thread) and queried by a `RemotePolicy`: batch-1 `sample(obs, noise)`
latency, median / p10 / p90 over `--calls` calls after a warm-up, for the local call and the remote
one; the difference is the protocol's cost (msgpack encode/decode both ways, one websocket frame
each way, the server's event loop and worker thread). A real deployment adds the network's round
trip and the served model's own latency (pi0 on a GPU: tens of ms).

    MUJOCO_GL=egl python benchmarks/remote_policy.py            # ~10 s

Writes benchmarks/results/remote_policy.json (atomically). Needs the `remote` extra.
"""

from __future__ import annotations

import argparse
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from run_context import cpu_name, git_state, load_average, timings_ms, write_results  # benchmarks/ is on sys.path

RESULTS = Path(__file__).parent / "results"
POLICY = "widowx-lift-diffusion"




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--out", default=str(RESULTS / "remote_policy.json"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    import gymnasium as gym

    from steergym.policies.remote import RemotePolicy
    from steergym.policies.remote_server import serve_policy
    from steergym.policies.zoo import load_shipped, shipped_policies

    env_id = shipped_policies()[POLICY].env_ids[0]
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    policy = load_shipped(POLICY)
    noise = np.random.default_rng(0).standard_normal(policy.noise_shape).astype(np.float32)
    load_start = load_average()
    with serve_policy(policy, "127.0.0.1", 0) as server:
        remote = RemotePolicy("127.0.0.1", server.port, env.observation_space, env.action_space,
                              noise_shape=policy.noise_shape)
        try:
            same = bool(np.array_equal(remote.sample(obs, noise), policy.sample(obs, noise)))
            local = timings_ms(lambda: policy.sample(obs, noise), args.calls)
            over_wire = timings_ms(lambda: remote.sample(obs, noise), args.calls)
        finally:
            remote.close()
    env.close()
    result = {
        "what": "batch-1 sample(obs, noise) latency in ms: the policy in-process vs the same policy through "
                "RemotePolicy -> serve_policy on loopback (one process, torch 1 thread)",
        "policy": POLICY, "env_id": env_id, "noise_shape": list(policy.noise_shape),
        "local_ms": local, "remote_ms": over_wire,
        "protocol_overhead_ms_median": over_wire["median"] - local["median"],
        "remote_equals_local": same,
        "command": "MUJOCO_GL=egl python benchmarks/remote_policy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
        "python": platform.python_version(), "load_average": [load_start, load_average()], **git_state(),
    }
    out = write_results(args.out, result)
    print(f"local {local['median']:.2f} ms, remote {over_wire['median']:.2f} ms (median of {args.calls}); "
          f"same chunk: {same} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
