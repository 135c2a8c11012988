"""steergym's per-user data folder, where its default outputs go instead of the working directory.

    data_dir()       $STEERGYM_DATA_DIR, else $XDG_DATA_HOME/steergym (XDG_DATA_HOME: ~/.local/share
                     when unset, empty or relative, as the XDG base-directory spec says)
    robot_log_dir()  data_dir()/robot_logs: `steergym serve`'s episode journals

Both are read from the environment at each call, so a process that changes it sees the change.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "STEERGYM_DATA_DIR"


def data_dir() -> Path:
    """The per-user data folder (not created here)."""
    own = os.environ.get(DATA_DIR_ENV)
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "steergym"


def robot_log_dir() -> Path:
    """The default folder of the robot server's episode journals."""
    return data_dir() / "robot_logs"
