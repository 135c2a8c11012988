"""steergym: Gymnasium tasks and wrappers for steering and fine-tuning pretrained robot policies.

Importing the package registers every environment id (see `steergym.registry`).
"""

import os
import sys

# Headless rendering: use EGL on Linux without a display unless the user chose a backend.
# (Must happen before mujoco is first imported.)
if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

from steergym import forking  # noqa: E402
from steergym.registry import ENVS, env_ids, register_all  # noqa: E402

# Forked workers (gymnasium's AsyncVectorEnv default) would hang in torch's OpenMP pool otherwise.
forking.install()

__version__ = "0.1.0"
__all__ = ["ENVS", "__version__", "env_ids", "register_all"]
