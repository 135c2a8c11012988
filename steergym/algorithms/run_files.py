"""The files every trainer's run folder shares: run.json (written atomically) and CSV logs
(progress.csv, eval.csv: one row appended per log step, the header on the first; a row with a new
metric widens the header, so every value stays under its own column; on resume, `keep_csv_rows`
drops the rows a killed run wrote after its checkpoint)."""

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


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of the CSV at `path`. Values past the header's end (rows that files written
    before the header widened carry: a metric that appeared after the first row) are kept under
    `unnamed_<column>` columns (1-based) instead of being lost or breaking a rewrite."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        lines = list(reader)
    width = max([len(header), *(len(line) for line in lines)])
    header = header + [f"unnamed_{k + 1}" for k in range(len(header), width)]
    return header, [dict(zip(header, line)) for line in lines]


def _write_csv(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    """Rewrite the CSV at `path` (header, rows; missing values empty) via a temporary sibling and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def append_csv(path: Path, row: dict[str, Any]) -> None:
    """Append `row` to the CSV at `path`: the header (the row's keys) first if the file is new; values
    under the existing header's columns (a key the row lacks stays empty); a key the header lacks
    widens the header (the file rewritten once, earlier rows empty there)."""
    if not path.exists():
        _write_csv(path, list(row), [row])
        return
    with open(path, newline="") as handle:
        header = next(csv.reader(handle), [])
    new_keys = [key for key in row if key not in header]
    if new_keys:
        header, rows = _read_csv(path)
        _write_csv(path, header + [key for key in new_keys if key not in header], [*rows, row])
        return
    with open(path, "a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=header, restval="").writerow(row)


def keep_csv_rows(path: Path, keep: Callable[[dict[str, str]], bool]) -> None:
    """Keep only the rows of the CSV at `path` for which `keep(row)` holds (rewritten via a temporary
    sibling and a rename; the file is removed when every row is dropped; a missing file stays missing)."""
    if not path.exists():
        return
    header, rows = _read_csv(path)
    kept = [row for row in rows if keep(row)]
    if len(kept) == len(rows):  # nothing to drop
        return
    if not kept:
        path.unlink()
        return
    _write_csv(path, header, kept)
