"""Ray, imported only when a command needs it: `require_ray()` returns the module or says how to install it.

    ray = require_ray("steergym run")      # ImportError: 'steergym run needs Ray: pip install -e ".[ray]"'

`import steergym` never imports Ray (a test checks it), so the base install stays light.
"""

from __future__ import annotations

from typing import Any

INSTALL_HINT = 'pip install -e ".[ray]"'


def require_ray(who: str) -> Any:
    """The `ray` module; ImportError naming `who` and the one-line install command without it."""
    try:
        import ray
    except ImportError:
        raise ImportError(f"{who} needs Ray (Core + Tune): {INSTALL_HINT}") from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """`ray.init` once per process: local Ray on this machine's cores (`num_cpus` to cap them), or
    the cluster at `address` ("auto" or "HOST:PORT"). Logs go to Ray's own files, not the terminal."""
    ray = require_ray("ray_support.init_ray")
    if not ray.is_initialized():
        # without an address: a new local Ray (ray.init(None) would join whatever RAY_ADDRESS names,
        # which an earlier Ray session in this process may have left set)
        kwargs: dict[str, Any] = {"address": address or "local", "log_to_driver": False, "include_dashboard": False,
                                  "configure_logging": False}
        if address is None and num_cpus is not None:
            kwargs["num_cpus"] = int(num_cpus)
        ray.init(**kwargs)
    return ray
