"""Every exercise, left undone, must stop at its checker with a friendly ExerciseNotDone (not a raw traceback),
and every solution must pass its checker. Runs each exercise notebook in a real kernel, errors allowed."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbtool  # noqa: E402

SOLUTIONS = nbtool.sources(nbtool.SOLUTIONS)


@pytest.mark.slow
@pytest.mark.parametrize("solution", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_undone_exercises_fail_with_a_helpful_message(solution, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("COURSE_STATIC_WIDGETS", "1")
    nb = nbtool.make_exercise(solution)
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "exercises")}}).execute()
    exercise_cells = nbtool.exercise_cells(nbtool.read_source(solution))
    assert exercise_cells
    for i in exercise_cells:
        errors = [o for o in nb.cells[i].outputs if o.output_type == "error"]
        assert errors, f"exercise cell {i} of {solution.name} did not stop the student"
        assert errors[0].ename == "ExerciseNotDone", f"cell {i}: {errors[0].ename}: {errors[0].evalue}"
        assert "is not written yet" in errors[0].evalue and "NotImplementedError" in errors[0].evalue


def test_checkers_reject_wrong_answers_with_a_hint():
    import torch

    from course_lib import checks

    with pytest.raises(checks.ExerciseIncorrect, match="Hint:"):
        checks.check_storage_count(lambda m, n, r: (m * n, r * m * n))
    with pytest.raises(checks.ExerciseIncorrect, match="values differ"):
        checks.check_rank_k_approx(lambda W, k: torch.zeros_like(W))
    with pytest.raises(checks.ExerciseNotDone, match="not written yet"):
        checks.check_storage_count(lambda m, n, r: (_ for _ in ()).throw(NotImplementedError()))


def test_recipe_checker_enforces_its_parameter_budget_before_training():
    from course_lib import checks

    with pytest.raises(checks.ExerciseIncorrect, match="over the budget of 1,000,000"):
        checks.check_recipe(lambda: {"r": 8, "alpha": 16, "targets": "all-linear", "lr": 1e-2})
    with pytest.raises(checks.ExerciseIncorrect, match="return a dict"):
        checks.check_recipe(lambda: (8, 16))
