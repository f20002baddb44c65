"""The notebooks' text against their outputs, where a machine can check it: every memory figure or percentage the
markdown states is one a code cell of the same notebook printed, GB (10⁹ bytes) and GiB (2³⁰) never share a
statement, and no notebook points students to documents they do not have."""

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbtool  # noqa: E402

CHECKED = ("05", "06", "07", "08", "09")  # the notebooks whose text these tests hold to their outputs
NOTEBOOKS = [p for p in nbtool.sources(nbtool.NOTEBOOKS) if p.stem[:2] in CHECKED]
FIGURE = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)\s?(GB|GiB|MB|MiB|%)(?!\w)")
# Figures the markdown may state without a cell printing them: inputs and published facts, each with its reason.
GIVEN = {
    "07": {("16", "GB"): "a free Colab T4 is sold as a 16 GB card (its nvidia-smi total is printed in GiB)",
           ("12.7", "GB"): "a free Colab VM's RAM and disk, as Colab reports them"},
    "08": {("24", "GiB"): "the per-GPU cap the planned 2-GPU benchmark sets (section 5: not measured yet)"},
}


def _executed(py: Path):
    """The executed notebook, or None while it is out of sync with its source (`nbtool check` reports that)."""
    ipynb = py.with_suffix(".ipynb")
    return nbformat.read(ipynb, as_version=4) if not nbtool.check_pair(py, executed=True) else None


def _outputs(nb) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(text)


def _statements(text: str) -> list[str]:
    """Sentences of markdown (a table row is one statement too) or lines of output."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks are commands, not statements
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z*(\"])|\n\s*\n|\n(?=\s*[*|>-])", text)
    return [p.strip() for p in parts if p.strip()]


def _mixes_units(statement: str) -> bool:
    return bool(re.search(r"\bGB\b", statement)) and bool(re.search(r"\bGiB\b", statement))


@pytest.mark.parametrize("py", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_markdown_states_only_figures_its_cells_printed(py):
    nb = _executed(py)
    if nb is None:
        pytest.skip(f"{py.with_suffix('.ipynb').name} is not executed from its current source yet")
    printed = {(n.replace(",", ""), u) for n, u in FIGURE.findall(_outputs(nb))}
    given = GIVEN.get(py.stem[:2], {})
    missing = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        # a claim quoted as found ("~16 GB") is the tutorial's figure, printed by the box beside its computed value
        for number, unit in FIGURE.findall(re.sub(r'"[^"\n]*"|“[^”]*”', "", cell.source)):
            if (number.replace(",", ""), unit) not in printed and (number, unit) not in given:
                missing.append(f"{number} {unit}")
    assert not missing, f"{py.stem}: the markdown states {missing}, which no cell of the notebook prints"


@pytest.mark.parametrize("py", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_gb_and_gib_never_share_a_statement(py):
    mixed = [s for cell in nbtool.read_source(py).cells if cell.cell_type == "markdown"
             for s in _statements(cell.source) if _mixes_units(s)]
    nb = _executed(py)
    if nb is not None:
        mixed += [line for line in _outputs(nb).splitlines() if _mixes_units(line)]
    assert not mixed, f"{py.stem} mixes GB and GiB in: {mixed[0]!r}"


@pytest.mark.parametrize("py", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_reference_to_documents_students_do_not_have(py):
    solution = nbtool.SOLUTIONS / py.name
    for path in (py, solution):
        text = path.read_text(encoding="utf-8")
        found = re.findall(r"seed notes?|lesson notes?|9\.3 table|the seeds? (?:says?|disagree)|the seed(?:'s|s') ['\"]|seed is (?:wrong|right)", text, re.I)
        assert not found, f"{path.relative_to(ROOT)} refers to the course's source notes: {found[:3]}"


def test_the_checks_can_fail():
    assert _mixes_units("predicted 19.9 GB on a card with 23.5 GiB usable")
    assert not _mixes_units("predicted 18.5 GiB; a card gives a run 23.5 GiB")
    assert FIGURE.findall("two cards of 24 GB, 12.5% and 1,379.5 GB") == [("24", "GB"), ("12.5", "%"), ("1,379.5", "GB")]
    assert _statements("One 2 GB. Two 3 GiB.\n\n* three") == ["One 2 GB.", "Two 3 GiB.", "* three"]


@pytest.mark.parametrize("py", [p for p in NOTEBOOKS if p.stem[:2] != "07"], ids=lambda p: p.stem)
def test_the_header_states_the_run_time_of_this_copy(py):
    # notebook 07's header points to the instructor guide instead: its committed copy ran on a GPU
    nb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
    seconds = nb.metadata["course"]["run_seconds"]
    header = next(c for c in nb.cells if c.cell_type == "markdown").source
    assert f"this copy took {seconds:.0f} s" in header, f"{py.stem}: the header does not say this copy took {seconds:.0f} s"
