"""The README is a page and docs/ the rest: every link resolves, every page is reachable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONTENTS = DOCS / "README.md"
PAGES = sorted(DOCS.glob("*.md"))
MARKDOWN = [README, *PAGES]

_FENCE = re.compile(r"^(```|~~~)")
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks (links and headings there are not markdown)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text as rendered, lower-cased, punctuation but `-` and
    `_` dropped, spaces as `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = _CODE_SPAN.sub(lambda m: m.group(2), text)  # inline code: its text
    text = re.sub(r"<[^>]+>", "", text)  # html tags
    text = re.sub(r"(\*\*|__|\*|~~)", "", text)  # emphasis markers (`_` stays: words use it)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for line in _prose(path.read_text()):
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    out = []
    for line in _prose(path.read_text()):
        out += _LINK.findall(_CODE_SPAN.sub("", line))
    return out


def _local(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)  # http:, https:, mailto: …


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path):
    broken = []
    for target in filter(_local, links(path)):
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target}: no {resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_every_page_has_a_title_and_a_way_back_to_the_contents():
    for page in PAGES:
        lines = page.read_text().splitlines()
        assert lines and re.match(r"^# \S", lines[0]), f"{page.name}: the first line is no `# Title`"
        head = "\n".join(lines[1:6])
        back = "../README.md" if page == CONTENTS else "README.md"
        assert f"]({back})" in head, f"{page.name}: no link to {back} under its title"
    assert re.match(r"^# \S", README.read_text()), "README.md: the first line is no `# Title`"


def test_the_contents_and_the_readme_link_every_page():
    listed = {t.partition("#")[0] for t in links(CONTENTS) if _local(t)}
    from_readme = {t.partition("#")[0] for t in links(README) if _local(t)}
    for page in PAGES:
        if page != CONTENTS:
            assert page.name in listed, f"docs/README.md does not link {page.name}"
        assert f"docs/{page.name}" in from_readme, f"README.md does not link docs/{page.name}"


def test_the_readme_is_a_page():
    assert len(README.read_text().splitlines()) <= 200


def test_the_slugs_follow_githubs_rules():
    assert slug("The TLC's own Parquet files (`--source tlc`)") == "the-tlcs-own-parquet-files---source-tlc"
    assert slug("Kestra: `tlc_taxi` and `tlc_taxi_scheduled`") == "kestra-tlc_taxi-and-tlc_taxi_scheduled"
    assert slug("The chain: one month through the four commands, first run and re-run") == (
        "the-chain-one-month-through-the-four-commands-first-run-and-re-run"
    )
    assert slug("What **a** [load](x.md) guarantees") == "what-a-load-guarantees"


_REPO_PATH = re.compile(r"\b((?:taxi_assets|tests|benchmarks|kestra_flows|docker)/[\w./-]+\.(?:py|ya?ml|txt|sh|md))\b")


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.name)
def test_every_file_the_docs_name_exists(path):
    """A module or file named in prose or code (`taxi_assets/monthfile/csvgz.py`) is in the tree:
    code moves, and the pages must follow."""
    named = set(_REPO_PATH.findall(path.read_text()))
    assert sorted(n for n in named if not (ROOT / n).exists()) == []
