"""Every guarantee the docs make is backed by a test that exists.

The docs (README.md and every other tracked Markdown file) are scanned for guarantee words: "(tested)",
"bit for bit", "deterministic", "step for step", ... `tests/readme_claims.json` maps each claim, by a
phrase of its sentence, to the tests that hold it. This fails when

* a guarantee word occurs outside every phrase of the table (a new claim nobody backed: add an entry
  naming its tests, or reword the docs),
* a phrase is no longer in its document exactly once (the claim was reworded or copied: update it),
* a listed test does not exist (renamed or deleted: the claim lost its backing).

Tests are found by parsing the test files (ast), which is fast and needs no pytest subprocess.
"""

from __future__ import annotations

import ast
import json
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TABLE = Path(__file__).with_name("readme_claims.json")

# The wording the docs use for guarantees (case-insensitive).
GUARANTEE_WORDS = re.compile(
    r"\(tested\)|bit[ -]for[ -]bit|bit[ -]exact|identical|deterministic|step for step|"
    r"\bexactly\b|reproducible|equals the figure|100/100|expert success \(100 seeds\)",
    re.IGNORECASE,
)
# Markdown files that are not user documentation.
SKIP_DOCS: set[str] = set()


def _docs() -> list[str]:
    docs = ["README.md"]
    docs += [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "docs").rglob("*.md"))]
    docs += [p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "steergym").rglob("*.md"))]
    return [d for d in dict.fromkeys(docs) if d not in SKIP_DOCS]


@cache
def _text(doc: str) -> str:
    return " ".join((ROOT / doc).read_text(encoding="utf-8").split())


def _claims() -> list[dict]:
    return json.loads(TABLE.read_text(encoding="utf-8"))["claims"]


@cache
def _tests_in(path: str) -> frozenset[str]:
    """Test ids (`name`, `Class::name`) defined in one test file."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{n.name}" for n in node.body
                         if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return frozenset(names)


def test_the_table_is_well_formed():
    docs = set(_docs())
    for claim in _claims():
        assert set(claim) <= {"doc", "phrase", "tests", "gap", "not_a_claim"}, claim
        assert claim["doc"] in docs, f"{claim['doc']} is not a scanned document: {claim}"
        assert GUARANTEE_WORDS.search(claim["phrase"]), f"phrase holds no guarantee word: {claim['phrase']!r}"
        assert claim["tests"] or claim.get("not_a_claim"), f"a claim without tests: {claim['phrase']!r}"


@pytest.mark.parametrize("doc", _docs())
def test_every_guarantee_in_the_docs_is_in_the_table(doc):
    text = _text(doc)
    spans = []
    for claim in (c for c in _claims() if c["doc"] == doc):
        start = text.find(claim["phrase"])
        if start >= 0:
            spans.append((start, start + len(claim["phrase"])))
    unbacked = []
    for match in GUARANTEE_WORDS.finditer(text):
        if not any(a <= match.start() and match.end() <= b for a, b in spans):
            unbacked.append(f"{match.group(0)!r} in ...{text[max(0, match.start() - 120):match.end() + 80]}...")
    assert not unbacked, (
        f"{doc} makes claims that tests/readme_claims.json does not map to tests:\n  " + "\n  ".join(unbacked)
    )


@pytest.mark.parametrize("claim", _claims(), ids=lambda c: c["phrase"][:40])
def test_each_claim_is_in_its_doc_once_and_its_tests_exist(claim):
    count = _text(claim["doc"]).count(claim["phrase"])
    assert count == 1, (
        f"{claim['phrase']!r} occurs {count} times in {claim['doc']} (reworded? update tests/readme_claims.json)"
    )
    for ref in claim["tests"]:
        path, _, name = ref.partition("::")
        name = name.split("[", 1)[0]  # a parametrised id names the function
        assert (ROOT / path).is_file(), f"{ref}: no file {path} (claim {claim['phrase']!r})"
        assert name in _tests_in(path), f"{ref}: no test {name} in {path} (claim {claim['phrase']!r})"
