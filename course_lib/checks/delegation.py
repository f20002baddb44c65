"""An exercise is passed by the student's own code, not by calling the course's implementation of the same idea.

``course_code_disabled(*functions)`` swaps the code of each course function for code that raises
``CourseCodeCalled`` while the block runs, so every way of reaching it raises: ``memory.bytes_per_param(...)``, a name
imported with ``from course_lib.memory import bytes_per_param`` before the check, or a call from inside another
course function. ``call_without(fn, args, functions, ...)`` runs a student's function so, and turns a call into the
course's code into a failed check whose message names the function and whose hint says what to write instead.
"""

from __future__ import annotations

import contextlib

from .core import _call, fail


class CourseCodeCalled(BaseException):  # not an Exception: a student's `except Exception` must not swallow it
    """A function the exercise asks the student to write called the course's own implementation."""


def _blocked(*args, **kwargs):  # its code replaces a disabled function's; it may use builtins only
    import sys

    raise __import__("course_lib.checks.delegation", fromlist=["CourseCodeCalled"]).CourseCodeCalled(
        sys._getframe().f_code.co_qualname)


@contextlib.contextmanager
def course_code_disabled(*functions):
    """While the block runs, calling any of ``functions`` raises ``CourseCodeCalled`` naming it."""
    saved = []
    try:
        for f in functions:
            if f.__closure__:
                raise TypeError(f"cannot disable {f.__qualname__}: it is a closure")
            saved.append((f, f.__code__))
            f.__code__ = _blocked.__code__.replace(co_name=f.__name__, co_qualname=f"{f.__module__}.{f.__qualname__}")
        yield
    finally:
        for f, code in saved:
            f.__code__ = code


def call_without(fn, args: tuple, functions, *, name: str, instead: str):
    """``fn(*args)`` with the course's ``functions`` disabled. If ``fn`` reaches one of them, the check fails: the
    message names the course function called and the hints say that the exercise is to write ``instead``."""
    try:
        with course_code_disabled(*functions):
            return _call(fn, *args, name=name)
    except CourseCodeCalled as called:
        fail(f"{name} calls {called.args[0]}: that is the course's own answer to this exercise, so the check ran "
             "your function with it switched off",
             f"write the computation yourself instead of calling {called.args[0]}: {instead}",
             f"write the computation yourself: {instead} The course's functions stay useful afterwards: compare "
             "your result with them in the cell after the check, as the notebook does.")
