"""The docs stay true to the repository: generated figures are current and links lead somewhere.

* `docs/benchmarks.md` is what `benchmarks/report.py` writes from `benchmarks/results/*.json` now, so
  a new or changed result without a regenerate fails here (run `python benchmarks/report.py`).
* Every relative link and image in README.md and docs/*.md points at an existing file, and an
  `#anchor` at a heading of that file (GitHub's slugs).
* Every plot in benchmarks/results and docs/images is shown by some page.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md"] + sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def _report():
    spec = importlib.util.spec_from_file_location("benchmarks_report", ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


@cache
def _anchors(path: Path) -> frozenset[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    anchors = set()
    for heading in HEADING.findall(text):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return frozenset(anchors)


def _links(doc: str) -> list[str]:
    return LINK.findall(_prose((ROOT / doc).read_text(encoding="utf-8")))


def test_benchmarks_page_is_generated_from_the_current_results():
    report = _report()
    page = ROOT / "docs" / "benchmarks.md"
    assert page.is_file(), "docs/benchmarks.md is missing: run python benchmarks/report.py"
    assert page.read_text(encoding="utf-8") == report.render(), (
        "docs/benchmarks.md differs from what benchmarks/report.py writes from benchmarks/results/*.json: "
        "run python benchmarks/report.py and commit the page"
    )


def test_report_check_mode_agrees(tmp_path):
    report = _report()
    out = tmp_path / "benchmarks.md"
    assert report.main(["--check", "--out", str(out)]) == 1  # missing page: out of date
    assert report.main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == report.render()
    assert report.main(["--check", "--out", str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["benchmarks.md"]  # no temp file left behind


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_point_at_existing_files(doc):
    base = (ROOT / doc).parent
    broken = []
    for target in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:, ...
            continue
        path_part, _, anchor = target.partition("#")
        path = (base / unquote(path_part)).resolve() if path_part else (ROOT / doc).resolve()
        if not path.exists():
            broken.append(f"{target}: no file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, f"{doc} has broken links:\n  " + "\n  ".join(broken)


def test_every_plot_is_shown_somewhere():
    shown = set()
    for doc in DOCS:
        base = (ROOT / doc).parent
        shown.update((base / unquote(t.partition("#")[0])).resolve() for t in _links(doc) if "://" not in t)
    plots = sorted((ROOT / "benchmarks" / "results").glob("*.png")) + sorted((ROOT / "docs" / "images").glob("*.png"))
    missing = [p.relative_to(ROOT).as_posix() for p in plots if p.resolve() not in shown]
    assert not missing, f"plots no page shows (link them from README.md or docs/*.md): {missing}"


def test_readme_stays_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 300, f"README.md has {lines} lines: move detail into docs/ (the README is a tour)"
