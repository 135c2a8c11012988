"""The robot link: a WidowX (real or simulated) served over the network to steergym envs.

    protocol     the wire format (msgpack, versioned, schema-checked; never pickle)
    safety       limits the server enforces on every step
    backends     what the server drives: the simulated twin or the Interbotix arm
    episode_log  the server's crash-safe per-episode journal, exported as a Minari dataset
    server       `RobotServer` (ZeroMQ ROUTER): sessions, heartbeats, safety, logging
    client       `RobotClient` (ZeroMQ DEALER): requests with timeouts, heartbeat thread
    cli          `steergym serve` and `steergym robot ...`
    launch       `ServerProcess`: `steergym serve` as a child process (rehearsals, benchmarks, tests)
The Gymnasium env on the client side is `steergym.envs.real.RealWidowXEnv`.
"""
