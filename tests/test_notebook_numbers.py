"""Every number the markdown of notebooks 01-04 states is one its executed cells print (or one of its code cells
writes down, or a given listed here with its reason): markdown cannot drift from the outputs it talks about. The
same mechanical check as the quizzes' (tests/test_quiz.py): comma-grouped figures, decimals and percentages."""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_low_rank_intuition", "02_lora_from_scratch", "03_counting_lora_parameters", "04_nf4_quantization"]
RESULT_LIKE = re.compile(r"(?<![\w.-])(?:\d+(?:\.\d+)?%|\d{1,3}(?:,\d{3})+|\d+\.\d+)(?![\w.]\d|\w)")
GIVEN = {  # numbers that are inputs (a published constant, a version, a definition), not results
    "03_counting_lora_parameters": {"0.50"},  # bitsandbytes' version
    "04_nf4_quantization": {"0.50", "0.50.2", "6.25%"},  # bitsandbytes' version; 6.25% = 1/16, an equal share
}


def _numbers_written(nb) -> set[str]:
    """What the code cells print, and what they write down (digit groups written 4_194_304 read as 4,194,304)."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts.append(re.sub(r"(?<=\d)_(?=\d{3})", ",", cell.source))
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    found = set(RESULT_LIKE.findall("\n".join(parts)))
    return found | {n.removesuffix("%") for n in found}  # a printed 0.1118% may be quoted as "trainable%: 0.1118"


def markdown_numbers_not_printed(nb, given=frozenset()) -> list[str]:
    written = _numbers_written(nb) | set(given)
    missing = []
    for cell in nb.cells[1:]:  # the title cell states run times, measured by `make course`, not by a cell
        if cell.cell_type == "markdown":
            missing += [n for n in RESULT_LIKE.findall(cell.source) if n not in written]
    return missing


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_number_in_the_markdown_is_printed_by_the_notebook(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name} is not executed"
    missing = markdown_numbers_not_printed(nb, GIVEN.get(name, set()))
    assert not missing, f"{name}: the markdown states {sorted(set(missing))}, which no cell prints"


def test_the_check_catches_a_number_no_cell_prints():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# title, 1.5 s"),
        nbformat.v4.new_code_cell("print(x)", outputs=[nbformat.v4.new_output("stream", text="loss 2.34, 851,968\n")]),
        nbformat.v4.new_markdown_cell("the loss falls to 2.34 and 851,968 are trained; 12.5% of it; 4,194,304")])
    assert markdown_numbers_not_printed(nb) == ["12.5%", "4,194,304"]


def _statements(nb):
    """Markdown sentences and printed lines: the units a reader compares must be one kind within each."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            yield from re.split(r"(?<=[.!?])\s+|\n\n", cell.source)
        else:
            for out in cell.get("outputs", []):
                yield from (out.get("text", "") or out.get("data", {}).get("text/plain", "")).splitlines()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_gb_and_gib_are_never_mixed_in_one_statement(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    mixed = [s for s in _statements(nb) if re.search(r"\bGB\b", s) and re.search(r"\bGiB\b", s)]
    assert not mixed, f"{name} mixes GB (1e9) and GiB (2^30) in: {mixed[:2]}"
    probe = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("The model needs 13.5 GB; a T4 has 15 GiB.")])
    assert [s for s in _statements(probe) if "GB" in s and "GiB" in s]  # the check sees a mixed sentence
