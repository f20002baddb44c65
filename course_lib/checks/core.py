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


# ------------------------------------------------------------------------------------- answers that delegate
def _qualified(fn) -> str:
    fn = getattr(fn, "__func__", fn)
    return f"{fn.__module__}.{fn.__qualname__}"


class _Watch:
    """Records which of the watched functions ran while it was active (``sys.setprofile``: every Python call is
    seen, whichever name the student reached the function by: ``lowrank.rank_k_approx``, an alias imported
    earlier, ``layer.merge()`` or ``layer(x)``)."""

    def __init__(self, functions):
        import inspect

        # unwrap decorators (torch.no_grad() wraps a method in a shared wrapper: its code would match every
        # decorated function)
        plain = {f: inspect.unwrap(getattr(f, "__func__", f)) for f in functions}
        python = [f for f in functions if hasattr(plain[f], "__code__")]
        self.codes = {plain[f].__code__: _qualified(f) for f in python}
        # functions written in C (torch.linalg.svd): the profiler reports them as "c_call" with the function
        self.builtins = {id(f): f"{getattr(f, '__module__', None) or 'torch'}.{f.__name__}"
                         for f in functions if f not in python}
        self.seen: list[str] = []

    def __enter__(self):
        import sys

        self._previous = sys.getprofile()

        def profile(frame, event, arg):
            found = (self.codes.get(frame.f_code) if event == "call" else
                     self.builtins.get(id(arg)) if event == "c_call" else None)
            if found and found not in self.seen:
                self.seen.append(found)
            if self._previous is not None:
                self._previous(frame, event, arg)

        sys.setprofile(profile)
        return self

    def __exit__(self, *exc):
        import sys

        sys.setprofile(self._previous)
        return False


def call_own(fn, *args, forbidden=(), write_from: str, hints=(), name: str | None = None,
             why: str = "that is the course's own answer (or the library it is checked against), so this check "
                         "would only compare it with itself", **kwargs):
    """``_call(fn, *args)``, failing when ``fn`` got its answer from one of ``forbidden``: the course's own
    implementation of what the exercise asks the student to write (or the library it is checked against).
    ``write_from`` says what to build it from instead; ``hints`` are the exercise's usual hint steps."""
    name = name or getattr(fn, "__name__", "your function")
    with _Watch(forbidden) as watch:
        result = _call(fn, *args, name=name, **kwargs)
    if watch.seen:
        fail(f"{name} calls {', '.join(watch.seen)}: {why}. Write it from {write_from}.",
             *(hints or (f"build it from {write_from}; the course's version is what the checker compares with.",)))
    return result
