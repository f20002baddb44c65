"""Show the real source of course_lib objects in a notebook, so the notebook never holds a second copy."""

from __future__ import annotations

import inspect


def source_text(obj) -> str:
    """``inspect.getsource(obj)`` headed by the module it comes from."""
    try:
        src = inspect.getsource(obj)
    except (TypeError, OSError) as exc:
        raise TypeError(f"cannot show the source of {obj!r}: {exc}. Pass a function, class or module.") from exc
    module = inspect.getmodule(obj)
    return f"# from {module.__name__}\n{src}" if module else src


def show_source(obj) -> None:
    """Display the source of ``obj`` once: highlighted in Jupyter, plain text elsewhere. Returns None, so a cell
    ending in ``show_source(...)`` shows no second, escaped copy; ``source_text(obj)`` gives the text."""
    text = source_text(obj)
    try:
        from IPython import get_ipython
        from IPython.display import Code, display

        if get_ipython() is not None:
            display(Code(text, language="python"))
            return None
    except ImportError:
        pass
    print(text)
    return None
