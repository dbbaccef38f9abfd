"""The documentation, checked like code: links that resolve, anchors that name headings, the served
palindrome ranges as the shipped checkpoints record them, and a README that stays a front page.

Pure: no server, no network; the checkpoints are read with the serving layer's own code.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest

from digitlab import catalog

# The repository root, wherever under tests/ this file lives.
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
README = ROOT / "README.md"
API = ROOT / "docs" / "API.md"
README_MAX_LINES = 200


def documents(root: Path = ROOT) -> list[Path]:
    """The Markdown this test keeps honest: README.md, SECURITY.md and every page under docs/, at any depth.

    The sections benchmarks write into docs/bench/ are pages like the others: their links are written for
    their own folder, and `make bench` rebases them when it includes them in docs/BENCHMARKS.md."""
    return [root / "README.md", root / "SECURITY.md", *sorted((root / "docs").rglob("*.md"))]


# -- Markdown, read just enough ------------------------------------------------------------------------

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HTML_TARGET = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)  # http:, https:, mailto:, ...


def prose_lines(text: str, code_spans: bool = False) -> list[str]:
    """The lines outside code blocks, fenced or indented (4+ spaces after a blank line or another such
    line), as blank lines; inline code spans blanked too unless `code_spans`."""
    lines, fence, previous_blank, in_indented = [], None, True, False
    for line in text.splitlines():
        opening = FENCE.match(line)
        if fence:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            lines.append("")
            continue
        if opening:
            fence = opening.group(1)
            lines.append("")
            continue
        indented = line.startswith(("    ", "\t")) and line.strip() != ""
        in_indented = indented and (previous_blank or in_indented)
        previous_blank = line.strip() == ""
        if in_indented:
            line = ""
        elif not code_spans:
            line = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)
        lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (links and images reduced to their text), lowercased,
    every character but letters, digits, spaces, - and _ dropped, spaces turned into -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor, numbered as GitHub numbers repeats (x, x-1, x-2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(text, code_spans=True):
        if match := HEADING.match(line):
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in the prose: inline, reference definitions, HTML."""
    found = []
    for number, line in enumerate(prose_lines(text), 1):
        targets = LINK.findall(line) + HTML_TARGET.findall(line)
        if match := REFERENCE.match(line):
            targets.append(match.group(1))
        found += [(number, target) for target in targets]
    return found


@cache
def anchors_of(path: Path) -> frozenset[str]:
    return frozenset(anchors(path.read_text(encoding="utf-8")))


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    """What in `doc` points nowhere: a missing file, or an #anchor that is no heading of its Markdown file."""
    broken = []
    for line, target in links(doc.read_text(encoding="utf-8")):
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / unquote(path_part)).resolve() if path_part else doc
        where = f"{doc.relative_to(root)}:{line}: {target}"
        if not path.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and path.suffix == ".md" and unquote(anchor).lower() not in anchors_of(path):
            broken.append(f"{where} (no heading #{anchor} in {path.relative_to(root)})")
    return broken


# -- 1. links and anchors ------------------------------------------------------------------------------


def test_the_link_checker_finds_missing_files_and_anchors(tmp_path):
    """The check below can fail: a missing file, a missing anchor, and neither in code or external links."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "B.md").write_text("# Keys and rotation\n\n## The door: keys\n\n## The door: keys\n")
    (tmp_path / "README.md").write_text(
        "See [b](docs/B.md#keys-and-rotation), [c](docs/B.md#the-door-keys-1), [top](#readme).\n"
        "Broken: [x](docs/C.md) and [y](docs/B.md#no-such-heading) and ![i](docs/missing.png).\n"
        "Ignored: [w](https://example.com/x.md), [m](mailto:a@b.c), `[z](nowhere.md)`.\n\n"
        "```\n[q](nowhere.md)\n```\n\n    [r](nowhere.md)\n\n# README\n"
    )
    broken = broken_links(tmp_path / "README.md", tmp_path)
    assert [b.split(": ", 1)[1] for b in broken] == [
        "docs/C.md (no such file)",
        "docs/B.md#no-such-heading (no heading #no-such-heading in docs/B.md)",
        "docs/missing.png (no such file)",
    ]


def test_a_link_resolves_from_its_own_pages_folder(tmp_path):
    """A page in docs/bench/ that names its picture as docs/ would (bench/p.png) points nowhere."""
    (tmp_path / "docs" / "bench").mkdir(parents=True)
    (tmp_path / "docs" / "bench" / "p.png").write_bytes(b"")
    (tmp_path / "docs" / "bench" / "P.md").write_text("![from docs/](bench/p.png) ![from here](p.png)\n")
    assert [b.split(": ", 1)[1] for b in broken_links(tmp_path / "docs" / "bench" / "P.md", tmp_path)] == [
        "bench/p.png (no such file)"
    ]


def test_every_page_under_docs_is_checked(tmp_path):
    """No folder of docs/ is left out, however deep: a new page is checked with the rest."""
    for page in ("README.md", "SECURITY.md", "docs/A.md", "docs/bench/B.md", "docs/x/y/C.md", "docs/x/D.txt"):
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text("# page\n")
    assert [p.relative_to(tmp_path).as_posix() for p in documents(tmp_path)] == [
        "README.md",
        "SECURITY.md",
        "docs/A.md",
        "docs/bench/B.md",
        "docs/x/y/C.md",
    ]
    assert set(documents()) == {README, ROOT / "SECURITY.md", *(ROOT / "docs").rglob("*.md")}


def test_github_slugs():
    assert slug("Part I: the report's grid") == "part-i-the-reports-grid"
    assert slug("T = 200") == "t--200"
    assert slug("`make serve` and its supervisor") == "make-serve-and-its-supervisor"
    assert slug("Readiness: `/ready`, `/live`, `/events`") == "readiness-ready-live-events"
    assert slug("Training speed: fused nn.LSTM vs the report's per-step loop") == (
        "training-speed-fused-nnlstm-vs-the-reports-per-step-loop"
    )


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(doc):
    assert broken_links(doc) == []


# -- 2. the served palindrome ranges -------------------------------------------------------------------

# The one phrasing the docs use for a served range, e.g. "`palindrome` (LSTM, T = 3 to 200)".
SERVED_RANGE = re.compile(r"\((LSTM|RNN), T = (\d+) to (\d+)\)")
# Any other way of stating a range of lengths T, or the error message that quotes one.
ANY_RANGE = re.compile(
    r"\bT\s*(?:=|from|in)\s*(\d+)\s*(?:to|–|-|\.\.|…)\s*(\d+)|\baccepts (\d+) to (\d+)|\bT (\d+)\s*(?:\.\.|…)\s*(\d+)"
)
CELLS = {"palindrome": "LSTM", "palindrome_rnn": "RNN"}  # served model -> the network the docs name


@cache
def served_ranges() -> dict[str, tuple[int, int]]:
    """{"LSTM": (min, max), "RNN": (min, max)}: the lengths the shipped checkpoints serve, derived as the
    serving layer derives them (`PalindromeService.limits`, from the checkpoint's meta)."""
    from digitlab.serving import PalindromeService

    ranges = {}
    for model, cell in CELLS.items():
        service = PalindromeService.load(ROOT / catalog.model(model).weights, {}, "cpu")
        assert service.model.config.cell.upper() == cell, f"{model} serves a {service.model.config.cell}"
        limits = service.limits()
        ranges[cell] = (limits["min_length"], limits["max_length"])
    return ranges


def range_errors(text: str, served: dict[str, tuple[int, int]], name: str) -> list[str]:
    """How `text` disagrees with the served ranges: a network whose range it never states in the one
    phrasing, states wrongly, or any other range of lengths that is neither network's."""
    errors = []
    stated = [(m.group(1), int(m.group(2)), int(m.group(3))) for m in SERVED_RANGE.finditer(text)]
    for cell, (low, high) in served.items():
        mine = [(a, b) for c, a, b in stated if c == cell]
        if not mine:
            errors.append(f"{name} never says ({cell}, T = {low} to {high})")
        wrong = [(a, b) for a, b in mine if (a, b) != (low, high)]
        errors += [f"{name} says ({cell}, T = {a} to {b}), served: {low} to {high}" for a, b in wrong]
    for match in ANY_RANGE.finditer(text):
        numbers = [int(n) for n in match.groups() if n is not None]
        if tuple(numbers) not in served.values():
            errors.append(f"{name} states the range {match.group(0)!r}, which no served model has")
    return errors


def test_the_range_check_fails_on_a_wrong_or_missing_range():
    served = {"LSTM": (3, 200), "RNN": (3, 15)}
    good = "`palindrome` (LSTM, T = 3 to 200) and `palindrome_rnn` (RNN, T = 3 to 15); T = 3 to 15 digits."
    assert range_errors(good, served, "doc") == []
    assert range_errors(good.replace("200", "100"), served, "doc") == [
        "doc says (LSTM, T = 3 to 100), served: 3 to 200",
        "doc states the range 'T = 3 to 100', which no served model has",
    ]
    assert range_errors("(RNN, T = 3 to 15)", served, "doc") == ["doc never says (LSTM, T = 3 to 200)"]
    assert range_errors(good + " Every T = 3 to 100 works; this model accepts 3 to 99.", served, "doc") == [
        "doc states the range 'T = 3 to 100', which no served model has",
        "doc states the range 'accepts 3 to 99', which no served model has",
    ]


def test_the_shipped_checkpoints_serve_what_their_meta_records():
    from digitlab.checkpoint import read_checkpoint

    for model, cell in CELLS.items():
        meta = read_checkpoint(ROOT / catalog.model(model).weights)["meta"]
        assert served_ranges()[cell] == (meta["min_length"], meta["max_length"])


@pytest.mark.parametrize("doc", [README, API], ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_state_the_served_palindrome_ranges(doc):
    assert range_errors(doc.read_text(encoding="utf-8"), served_ranges(), doc.name) == []


def test_no_doc_states_a_served_range_in_the_one_phrasing_wrongly():
    """Elsewhere (the studies also tell the history of older checkpoints) only the one phrasing is held
    to the served ranges."""
    served = served_ranges()
    wrong = [
        f"{doc.relative_to(ROOT)}: {m.group(0)}"
        for doc in documents()
        for m in SERVED_RANGE.finditer(doc.read_text(encoding="utf-8"))
        if (int(m.group(2)), int(m.group(3))) != served[m.group(1)]
    ]
    assert wrong == []


# -- 3. the front page ---------------------------------------------------------------------------------


def test_the_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move detail into docs/"
