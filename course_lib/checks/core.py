"""Exercise checkers, the shared part: each prints a clear pass line, or raises ``ExerciseNotDone`` /
``ExerciseIncorrect`` with a hint.

Hints come in steps, so a checker helps without handing over the answer: the first failure of an exercise says
what is wrong, with the numbers the checker saw, and gives the first (smallest) hint; each further failing run of
the same checker, or ``checks.hint("check_x")``, gives the next, larger one. The last step is still a hint, not
code: the full solution lives only in ``solutions/``.

An exercise copy replaces the solution code with ``raise NotImplementedError``; the checker that follows turns that
into a friendly message instead of a bare traceback from deep inside the student's function.
"""

from __future__ import annotations

import functools

import torch


class ExerciseNotDone(Exception):
    """The exercise still holds its placeholder."""


class ExerciseIncorrect(AssertionError):
    """The exercise runs but gives a wrong answer."""


_current: list[str] = []  # the checker running now (a stack: a checker may call a helper that fails)
_failures: dict[str, int] = {}  # checker name -> how many of its runs failed since it last passed
_last_hints: dict[str, tuple[str, ...]] = {}  # checker name -> the hint steps of its latest failure
_shown: dict[str, int] = {}  # checker name -> how many of those steps the student has seen


def checker(fn):
    """Mark ``fn`` as an exercise checker: its failures count, so each failing run gives the next hint step."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        _current.append(fn.__name__)
        try:
            result = fn(*args, **kwargs)
        finally:
            _current.pop()
        _failures.pop(fn.__name__, None)  # passed: the next mistake starts again from the first hint
        _last_hints.pop(fn.__name__, None)
        _shown.pop(fn.__name__, None)
        return result

    return run


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


def _hint_text(name: str, hints: tuple[str, ...], step: int) -> str:
    more = (f"\n(Run the check again after a change for the next hint, or call checks.hint({name!r}).)"
            if step < len(hints) else "\n(That was the last hint: the full solution is in solutions/.)")
    return f"Hint {step} of {len(hints)}: {hints[step - 1]}{more}"


def fail(message: str, *hints: str) -> None:
    """Raise ``ExerciseIncorrect`` with ``message`` (what is wrong, with the numbers seen) and one hint step:
    the first on the first failure of this exercise, then one more each time it fails again."""
    if not hints:
        raise TypeError("fail() needs at least one hint: a student must learn what to try next")
    name = _current[-1] if _current else "this check"
    count = _failures[name] = _failures.get(name, 0) + 1
    step = min(count, len(hints))
    _last_hints[name], _shown[name] = tuple(hints), step
    raise ExerciseIncorrect(f"✗ {message}\n{_hint_text(name, hints, step)}")


def hint(check) -> str:
    """The next hint step for the exercise whose checker ``check`` (a ``check_*`` function or its name) failed
    last; printed and returned. Asking again gives more, up to the last step."""
    name = check if isinstance(check, str) else getattr(check, "__name__", str(check))
    if name not in _last_hints:
        message = (f"{name} has not failed yet in this session: run the check first; its message says what is "
                   "wrong and gives the first hint.")
    else:
        hints = _last_hints[name]
        step = _shown[name] = min(_shown[name] + 1, len(hints))
        _failures[name] = max(_failures.get(name, 0), step)
        message = _hint_text(name, hints, step)
    print(message)
    return message


def reset_hints() -> None:
    """Forget every failure, so each exercise starts again from its first hint (what a fresh kernel does)."""
    _failures.clear()
    _last_hints.clear()
    _shown.clear()


def check_close(actual, expected, *, what: str, hints, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Fail (with ``hints``, a tuple of steps) unless ``actual`` matches ``expected`` in shape and values."""
    hints = (hints,) if isinstance(hints, str) else tuple(hints)
    actual_t, expected_t = torch.as_tensor(actual), torch.as_tensor(expected)
    if actual_t.shape != expected_t.shape:
        fail(f"{what}: shape {tuple(actual_t.shape)}, expected {tuple(expected_t.shape)}", *hints)
    if not torch.allclose(actual_t.double(), expected_t.double(), atol=atol, rtol=rtol):
        err = (actual_t.double() - expected_t.double()).abs().max().item()
        fail(f"{what}: values differ from the reference (max abs difference {err:.3g})", *hints)
