"""The files every trainer's run folder shares: run.json (written atomically) and CSV logs
(progress.csv, eval.csv: one row appended per log step, the header on the first)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any


def write_json(path: Path, data: dict[str, Any]) -> None:
    """`data` as indented JSON at `path` (non-JSON values as str), via a temporary sibling and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def append_csv(path: Path, row: dict[str, Any]) -> None:
    """Append `row` to the CSV at `path`, writing the header (the row's keys) if the file is new."""
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
