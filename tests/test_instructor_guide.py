"""docs/instructor.md: its tables are well formed (one row per notebook, learning goals that are goals, not run
times) and current (the committed copies' run times, notebook 07's T4 estimate as its committed output prints it)."""

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbtool  # noqa: E402

GUIDE = (ROOT / "docs" / "instructor.md").read_text(encoding="utf-8")
NUMBERS = [p.stem[:2] for p in nbtool.sources(nbtool.NOTEBOOKS)]


def _table(header: str) -> list[list[str]]:
    """The rows of the markdown table whose header line starts with ``header``, split into cells."""
    lines = GUIDE[GUIDE.index(header):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_the_lesson_plan_has_one_row_per_notebook_with_goals_not_times():
    rows = _table("| notebook | learning goals |")
    assert [r[0][:2] for r in rows] == NUMBERS  # each notebook once, in order
    for row in rows:
        assert len(row) == 4, row
        goals = row[1]
        assert not re.fullmatch(r"[\d.]+ (s|min)", goals) and len(goals) > 40, f"{row[0]}: goals column {goals!r}"


def test_run_times_are_the_committed_copies():
    rows = _table("| notebook | `make course` (2-core CPU) | committed copy")
    assert [r[0][:2] for r in rows if r[0][:1].isdigit()] == NUMBERS
    for row in rows:
        if not row[0][:1].isdigit():
            continue
        ipynb = next(nbtool.NOTEBOOKS.glob(f"{row[0][:2]}_*.ipynb"))
        recorded = nbformat.read(ipynb, as_version=4).metadata["course"]["run_seconds"]
        assert row[2].startswith(f"{recorded:.0f} s"), f"{row[0]}: the guide says {row[2]!r}, the copy {recorded:.0f} s"


def test_the_t4_estimate_is_what_notebook_07s_gpu_record_printed():
    record = ROOT / "docs" / "runs" / "07_qlora_on_a_gpu_t4_emulation_2026-12-04.ipynb"
    assert f"`docs/runs/{record.name}`" in GUIDE
    nb = nbformat.read(record, as_version=4)
    text = "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "under the T4 emulation" in text
    here, kernels, low, high = re.search(r"60 training steps\s+1\s+([\d.]+)\s+([\d.]+)\s+[\d.]+\s+(\d+)-(\d+)",
                                         text).groups()
    total_low, total_high = re.search(r"ESTIMATE of the t4 preset on a Colab T4\s+(\d+)-(\d+) s", text).groups()
    download = re.search(r"SmolLM2-1.7B: ([\d.]+ GB) of bf16 weights to download", text).group(1)
    prose = " ".join(GUIDE.split())  # line breaks do not matter
    for figure in (f"took {here} s there, {kernels} s of it GPU kernels", f"**{low}–{high} s of training on a T4**",
                   f"**{total_low}–{total_high} s, plus the download** of {download}"):
        assert figure in prose, f"docs/instructor.md does not say {figure!r}, as notebook 07's GPU record does"
