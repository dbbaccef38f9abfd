"""The Markdown benchmarks write: the one table writer, and links carried from one page's folder to another's."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

ALIGNMENTS = {"l": "---", "r": "---:", "c": ":---:"}
# An inline link or image's target: `](target)` or `](<target> "title")`.
LINK_TARGET = re.compile(r"(\]\(\s*<?)([^)\s>]+)")
# A reference definition's target: `[name]: target`.
REFERENCE_TARGET = re.compile(r"^( {0,3}\[[^\]]+\]:\s*<?)(\S+?)(?=>?(?:\s|$))")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|/|#)", re.IGNORECASE)  # a scheme, absolute, or this page
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def cell(value: object) -> str:
    """A value as one cell: its text, a `|` escaped (it would end the cell), a line break made a space."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A Markdown table: the `header` row, the alignment row, then one line per row (no final newline).

    `align` has one letter per column, l (left: `---`), r (right: `---:`) or c (centre: `:---:`); columns
    past its end are l. Cells are written with `str` (format numbers before); every row has one cell per
    column, or ValueError.
    """
    if len(align) > len(header) or set(align) - set(ALIGNMENTS):
        raise ValueError(f"alignment {align!r}: at most one of l, r, c per column ({len(header)} columns)")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + "|".join(ALIGNMENTS[a] for a in align.ljust(len(header), "l")) + "|")
    for number, row in enumerate(rows, 1):
        if len(row) != len(header):
            raise ValueError(f"row {number} has {len(row)} cells, the header {len(header)}: {row!r}")
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    return "\n".join(lines)


def rebase_links(text: str, source: Path, target: Path) -> str:
    """`text`, written as a page in folder `source`, with its relative links and images rewritten to resolve
    from folder `target`: a section that one page includes from another keeps its pictures. Links outside
    fenced code, inline and reference definitions; external, absolute and same-page (#) links stay as they are."""

    def moved(match: re.Match) -> str:
        link = match.group(2)
        if EXTERNAL.match(link):
            return match.group(0)
        path, hash_, anchor = link.partition("#")
        rebased = Path(os.path.relpath(Path(source, path), target)).as_posix()
        return match.group(1) + rebased + hash_ + anchor

    lines, fence = [], None
    for line in text.split("\n"):
        opening = FENCE.match(line)
        if fence:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
        elif opening:
            fence = opening.group(1)
        else:
            line = REFERENCE_TARGET.sub(moved, LINK_TARGET.sub(moved, line))
        lines.append(line)
    return "\n".join(lines)
