"""Fork safety for torch: a child forked from a steergym process runs torch single-threaded.

PyTorch's CPU builds run intra-op parallelism on GNU OpenMP (libgomp), which is not fork-safe: once
a parallel op has run in a process, a forked child's first parallel op waits forever for pool
threads that fork did not copy. gymnasium's `AsyncVectorEnv` builds one env in the parent (to read
its spaces) before it forks its workers, and building a steered env loads its policy with torch ops,
so every forked worker of a steered id hung. `install()` (run when steergym is imported) sets torch's
intra-op threads to 1 in every forked child where torch is imported, as torch's own DataLoader does
in its workers; spawn and forkserver children start fresh and keep torch's default.
"""

from __future__ import annotations

import os
import sys

_installed = False


def _single_threaded_torch() -> None:
    """After fork, in the child: one intra-op thread, so no OpenMP region ever runs."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):  # not a half-imported torch
        torch.set_num_threads(1)


def install() -> None:
    """Register the after-fork hook once (it does not import torch)."""
    global _installed
    if not _installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_single_threaded_torch)
        _installed = True
