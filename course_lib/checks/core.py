"""Exercise checkers, the shared part: each prints a clear pass line, or raises ``ExerciseNotDone`` / ``ExerciseIncorrect`` with a hint.

An exercise copy replaces the solution code with ``raise NotImplementedError``; the checker that follows turns that
into a friendly message instead of a bare traceback from deep inside the student's function.
"""

from __future__ import annotations

import torch


class ExerciseNotDone(Exception):
    """The exercise still holds its placeholder."""


class ExerciseIncorrect(AssertionError):
    """The exercise runs but gives a wrong answer."""


def _call(fn, *args, name: str | None = None, **kwargs):
    name = name or getattr(fn, "__name__", "your function")
    if not callable(fn):
        raise ExerciseIncorrect(f"expected a function for {name}, got {type(fn).__name__}.")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as exc:
        raise ExerciseNotDone(
            f"✗ {name} is not written yet: replace the `raise NotImplementedError` line with your code, "
            "run that cell, then run this check again."
        ) from exc


def passed(message: str) -> None:
    print(f"✓ {message}")


def fail(message: str, hint: str) -> None:
    raise ExerciseIncorrect(f"✗ {message}\nHint: {hint}")


def check_close(actual, expected, *, what: str, hint: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    actual_t, expected_t = torch.as_tensor(actual), torch.as_tensor(expected)
    if actual_t.shape != expected_t.shape:
        fail(f"{what}: shape {tuple(actual_t.shape)}, expected {tuple(expected_t.shape)}", hint)
    if not torch.allclose(actual_t.double(), expected_t.double(), atol=atol, rtol=rtol):
        err = (actual_t.double() - expected_t.double()).abs().max().item()
        fail(f"{what}: values differ from the reference (max abs difference {err:.3g})", hint)
