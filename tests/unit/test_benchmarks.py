"""benchmarks/ without running a benchmark: its one percentile, its one table writer, the links it carries
from page to page, and its layout (studies that import only shared/, entry points that exist where named).

Pure: no server, no load; benchmarks modules are read as text, the shared ones imported (no torch needed).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from benchmarks.shared.pages import markdown_table, rebase_links
from benchmarks.shared.stats import percentile, percentiles

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
BENCHMARKS = ROOT / "benchmarks"

# -- the one percentile: nearest rank ------------------------------------------------------------------


def test_percentile_is_the_nearest_rank():
    """The textbook example (Wikipedia, "Percentile", nearest-rank method), unsorted."""
    values = [35, 20, 50, 40, 15]
    assert [percentile(values, p) for p in (0, 5, 30, 40, 50, 100)] == [15, 15, 20, 20, 35, 50]


def test_percentile_of_one_to_a_hundred_is_the_rank_itself():
    values = list(range(100, 0, -1))
    assert percentiles(values, [1, 50, 95, 99, 100]) == [1, 50, 95, 99, 100]
    assert percentiles(values, [0.5, 99.5]) == [1, 100]  # past a rank: the next one up


def test_percentile_is_a_value_that_was_measured_not_an_interpolation():
    """Where numpy's default interpolates (2.5, 3.97), nearest rank answers an observed value."""
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([1, 2, 3, 4], 99) == 4
    assert percentile([7.5], 99) == 7.5


def test_percentile_counts_ranks_exactly_not_in_floats():
    """0.7 % of 1,000 is rank 7: in floats 0.7 / 100 * 1000 is 7.000000000000001, whose ceiling is 8."""
    values = list(range(1, 1001))
    assert percentile(values, 0.7) == 7
    assert percentile(values, 99.9) == 999


@pytest.mark.parametrize("p", [-1, 100.5])
def test_percentile_outside_0_to_100_is_an_error(p):
    with pytest.raises(ValueError, match="outside"):
        percentile([1, 2, 3], p)


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def lines_matching(pattern: re.Pattern, but: str) -> list[str]:
    """ "path:line: text" of every line of benchmarks/ that `pattern` finds, in every file but the one named `but`."""
    return [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(BENCHMARKS.rglob("*.py"))
        if path.name != but
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]


def test_no_benchmark_computes_a_percentile_of_its_own():
    """Only benchmarks/shared/stats.py ranks values: no numpy percentile or quantile, no statistics.quantiles,
    no index into a sorted list elsewhere in benchmarks/ (medians of repeated runs stay statistics.median)."""
    own = re.compile(
        r"np\.(?:percentile|quantile|median)|statistics\.quantiles|\.quantile\(|\[int\(len\(|\[min\(len\(|//\s*2\]"
    )
    assert lines_matching(own, but="stats.py") == []


# -- the one table writer ------------------------------------------------------------------------------


def test_markdown_table_writes_header_alignment_and_rows():
    table = markdown_table(["target", "req/s", "note"], [["torchserve", "2,100", "ok"], ["door", 1900, ""]], "lrc")
    assert table == ("| target | req/s | note |\n|---|---:|:---:|\n| torchserve | 2,100 | ok |\n| door | 1900 |  |")


def test_markdown_table_columns_past_the_alignment_are_left_aligned_and_no_rows_is_a_header():
    assert markdown_table(["a", "b", "c"], [], "r") == "| a | b | c |\n|---:|---|---|"


def test_markdown_table_escapes_what_would_break_a_cell():
    assert markdown_table(["x"], [["a | b"], ["one\ntwo"], [[1, 2]]]).splitlines()[2:] == [
        "| a \\| b |",
        "| one two |",
        "| [1, 2] |",
    ]


def test_markdown_table_refuses_a_row_of_the_wrong_width():
    with pytest.raises(ValueError, match="row 2 has 1 cells, the header 2"):
        markdown_table(["a", "b"], [[1, 2], [3]])


@pytest.mark.parametrize("align", ["lrx", "lrrr"])
def test_markdown_table_refuses_an_alignment_it_cannot_write(align):
    with pytest.raises(ValueError, match="alignment"):
        markdown_table(["a", "b", "c"], [], align)


def test_only_the_table_writer_writes_a_table_rule():
    """Every Markdown table in benchmarks/ comes from `markdown_table`: no hand-written |---| rule elsewhere."""
    rule = re.compile(r"\|:?-{3,}:?\|")
    assert lines_matching(rule, but="pages.py") == []


# -- links carried from one page's folder to another's -------------------------------------------------


def test_rebase_links_keeps_a_sections_picture_when_another_page_includes_it():
    """docs/bench/peers.md names peers.png beside it; included in docs/BENCHMARKS.md that is bench/peers.png."""
    text = "![chart](peers.png)\n[API](../API.md#errors) [next](tuning.md)\n[r]: ../GAN.md\n"
    assert rebase_links(text, ROOT / "docs" / "bench", ROOT / "docs") == (
        "![chart](bench/peers.png)\n[API](API.md#errors) [next](bench/tuning.md)\n[r]: GAN.md\n"
    )


def test_rebase_links_leaves_external_absolute_same_page_and_code_alone():
    text = (
        "[w](https://example.com/a.png) [m](mailto:a@b.c) [top](#peers) [abs](/docs/A.md)\n"
        "```\n![code](peers.png)\n```\n"
        '![titled](peers.png "a title")'
    )
    assert rebase_links(text, Path("docs/bench"), Path("docs")) == text.replace(
        '![titled](peers.png "a', '![titled](bench/peers.png "a'
    )


# -- the layout: studies, shared/, entry points --------------------------------------------------------

STUDIES = sorted(p.name for p in BENCHMARKS.iterdir() if (p / "__init__.py").is_file())


def benchmarks_imports(path: Path) -> set[str]:
    """The benchmarks modules (or packages) `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "benchmarks"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "benchmarks":
            found |= {node.module} if node.module != "benchmarks" else {f"benchmarks.{a.name}" for a in node.names}
    return found


def test_benchmarks_is_grouped_by_study_with_nothing_left_at_the_top():
    assert "shared" in STUDIES and len(STUDIES) > 2
    assert sorted(p.name for p in BENCHMARKS.glob("*.py")) == ["__init__.py"]


@pytest.mark.parametrize("study", STUDIES)
def test_a_study_imports_only_itself_and_shared(study):
    allowed = {study, "shared"}
    wrong = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in (BENCHMARKS / study).rglob("*.py")
        for module in benchmarks_imports(path)
        if len(module.split(".")) < 2 or module.split(".")[1] not in allowed
    }
    assert wrong == set()


def runnable(dotted: str) -> bool:
    """Whether `python -m dotted` finds something to run: a module, or a package with a __main__."""
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


# `python -m benchmarks.x.y` in prose and make, `"-m", "benchmarks.x.y"` or a module string in code,
# `benchmarks/x/y.py` as a path.
RUN_AS = re.compile(r"-m\s+(benchmarks(?:\.\w+)+)|\"-m\",\s*\"(benchmarks(?:\.\w+)+)\"|\"(benchmarks\.\w+\.\w+)\"")
FILE = re.compile(r"\bbenchmarks/[\w/]+\.py\b")


def named_modules() -> dict[str, set[str]]:
    """{where: the benchmarks modules and files it names} over the docs, make, CI and the code that starts them."""
    places = [
        ROOT / "README.md",
        ROOT / "SECURITY.md",
        ROOT / "Makefile",
        *sorted((ROOT / "docs").rglob("*.md")),
        *sorted(BENCHMARKS.rglob("*.py")),
        *sorted((ROOT / "tests").rglob("*.py")),
    ]
    if (ROOT / ".ci" / "run").is_file():
        places.append(ROOT / ".ci" / "run")
    named = {}
    for place in places:
        if place == Path(__file__).resolve():  # this file names wrong modules on purpose
            continue
        text = place.read_text(encoding="utf-8")
        modules = {m for match in RUN_AS.finditer(text) for m in match.groups() if m}
        files = set(FILE.findall(text))
        if modules or files:
            named[str(place.relative_to(ROOT))] = modules | files
    return named


def test_the_entry_point_check_finds_an_old_name(tmp_path):
    assert runnable("benchmarks.serving.run") and runnable("benchmarks.peers.litserve_server")
    assert not runnable("benchmarks.run") and not runnable("benchmarks.peers") and not runnable("benchmarks.x.y")
    text = 'python -m benchmarks.peers.run, "-m", "benchmarks.soak" and "benchmarks.x.y" in benchmarks/a/b.py'
    assert {m for match in RUN_AS.finditer(text) for m in match.groups() if m} == {
        "benchmarks.peers.run",
        "benchmarks.soak",
        "benchmarks.x.y",
    }
    assert FILE.findall(text) == ["benchmarks/a/b.py"]


def test_every_benchmarks_module_named_anywhere_exists():
    """Every `python -m benchmarks...`, subprocess module and benchmarks/...py path in the docs, the Makefile,
    .ci/run, benchmarks/ and tests/ names a module of this checkout (a study's package is not one)."""
    named = named_modules()
    assert "Makefile" in named and "docs/BENCHMARKS.md" in named
    missing = {
        f"{where}: {name}"
        for where, names in named.items()
        for name in names
        if not (runnable(name) if "/" not in name else (ROOT / name).is_file())
    }
    assert missing == set()
