"""Ray stays optional: `import steergym` (and its CLI) never imports it, and a command that needs it
says how to install it in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from steergym.ray_support import INSTALL_HINT, require_ray


def test_importing_steergym_and_its_cli_does_not_import_ray():
    code = ("import sys, steergym, steergym.cli, steergym.algorithms, steergym.bench; "
            "sys.exit(1 if 'ray' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_a_missing_ray_is_named_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without the extra
    with pytest.raises(ImportError, match=r'steergym run needs Ray .*pip install -e "\.\[ray\]"'):
        require_ray("steergym run")
    assert INSTALL_HINT == 'pip install -e ".[ray]"'
