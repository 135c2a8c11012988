"""The files every trainer's run folder shares: run.json (written atomically) and CSV logs
(progress.csv, eval.csv: one row appended per log step, the header on the first; on resume,
`keep_csv_rows` drops the rows a killed run wrote after its checkpoint)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Callable


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


def keep_csv_rows(path: Path, keep: Callable[[dict[str, str]], bool]) -> None:
    """Keep only the rows of the CSV at `path` for which `keep(row)` holds (rewritten via a temporary
    sibling and a rename; the file is removed when every row is dropped; a missing file stays missing)."""
    if not path.exists():
        return
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [row for row in rows if keep(row)]
    if len(kept) == len(rows):  # nothing to drop
        return
    if not kept:
        path.unlink()
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(kept[0]))
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, path)
