"""The committed, executed notebooks show what the code and the committed tables say now. nbval re-runs every
notebook but compares only cells marked NBVAL_CHECK_OUTPUT, and `nbtool check` compares code, not outputs: this
catches a committed notebook whose ``show_source`` output is older code, or whose numbers from a committed
measurement table (course_lib/resources/measurements) came from an older version of that table."""

import re
import sys
from importlib import import_module
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbtool  # noqa: E402

from course_lib import source  # noqa: E402

NOTEBOOKS = [py.with_suffix(".ipynb") for py in nbtool.sources(nbtool.NOTEBOOKS)]
SHOWN = re.compile(r"^\s*show_source\(([\w.]+)\)", flags=re.M)


def _resolve(expr: str):
    """``lora.LoRALinear.merge`` -> the object, its first name a course_lib module (as the notebooks import them)."""
    first, *rest = expr.split(".")
    obj = import_module(f"course_lib.{first}")
    for name in rest:
        obj = getattr(obj, name)
    return obj


def _text(output) -> str:
    text = output.get("text") if output.output_type == "stream" else output.get("data", {}).get("text/plain")
    return "".join(text) if isinstance(text, list) else text or ""


def stale_sources(nb) -> list[str]:
    """Cells whose show_source outputs differ from the source they show now."""
    problems = []
    for i, cell in enumerate(nb.cells):
        shown = SHOWN.findall(cell.source) if cell.cell_type == "code" else []
        if not shown:
            continue
        outputs = [_text(o) for o in cell.outputs if _text(o).startswith("# from course_lib")]
        for expr, out in zip(shown, outputs + [None] * len(shown)):
            now = source.source_text(_resolve(expr))
            if out is None or out.rstrip() != now.rstrip():
                problems.append(f"cell {i}: show_source({expr}) " + ("shows nothing" if out is None else
                                "shows older code than course_lib has now"))
    return problems


def stale_tables(nb) -> list[str]:
    """Tables whose numbers the notebook prints outside nbval's compared cells, read at another version than now
    (or at an unrecorded one)."""
    unchecked = [c for c in nb.cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" not in c.source]
    read = nbtool.tables_read(unchecked)  # cells nbval compares are compared with the current tables already
    recorded = nb.metadata.get("course", {}).get("tables", {})
    now = nbtool.table_digests(read)
    return [f"{table}: " + ("the run recorded no version of it" if table not in recorded else
                            "it changed since the notebook was executed") for table in sorted(read)
            if recorded.get(table) != now[table]]


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_show_source_outputs_are_the_current_source(ipynb):
    problems = stale_sources(nbformat.read(ipynb, as_version=4))
    assert not problems, f"{ipynb.name}: {problems}: re-execute it (make notebooks NB={ipynb.stem[:2]})"


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_printed_table_numbers_come_from_the_current_tables(ipynb):
    problems = stale_tables(nbformat.read(ipynb, as_version=4))
    assert not problems, f"{ipynb.name}: {problems}: re-execute it (make notebooks NB={ipynb.stem[:2]})"


def _notebook(code: str, output: str, **metadata):
    nb = nbformat.v4.new_notebook(metadata={"course": metadata})
    nb.cells = [nbformat.v4.new_code_cell(code, outputs=[nbformat.v4.new_output("stream", name="stdout", text=output)])]
    return nb


def test_the_checks_catch_old_code_and_an_old_table():
    from course_lib import counting

    now = source.source_text(counting.layer_lora_params)
    assert stale_sources(_notebook("show_source(counting.layer_lora_params)", now)) == []
    older = now.replace("return", "return  0 +", 1)
    assert stale_sources(_notebook("show_source(counting.layer_lora_params)", older)) == [
        "cell 0: show_source(counting.layer_lora_params) shows older code than course_lib has now"]
    reads = 'rows = resources.measurements("memory_accuracy.csv")'
    current = nbtool.table_digests({"memory_accuracy.csv"})
    assert stale_tables(_notebook(reads, "12.36G", tables=current)) == []
    assert stale_tables(_notebook(reads, "12.36G", tables={"memory_accuracy.csv": "0" * 16})) == [
        "memory_accuracy.csv: it changed since the notebook was executed"]
    assert stale_tables(_notebook(reads, "12.36G")) == ["memory_accuracy.csv: the run recorded no version of it"]
    assert stale_tables(_notebook("# NBVAL_CHECK_OUTPUT\n" + reads, "12.36G")) == []  # nbval compares that one
    assert nbtool.tables_read(_notebook("results = quality.read_csv()", "").cells) == {"quality.csv"}
