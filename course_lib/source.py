"""Show the real source of course_lib objects in a notebook, so the notebook never holds a second copy."""

from __future__ import annotations

import inspect


def show_source(obj) -> str:
    """Display ``inspect.getsource(obj)`` with syntax highlighting (plain text outside Jupyter); return the text."""
    try:
        src = inspect.getsource(obj)
    except (TypeError, OSError) as exc:
        raise TypeError(f"cannot show the source of {obj!r}: {exc}. Pass a function, class or module.") from exc
    module = inspect.getmodule(obj)
    header = f"# from {module.__name__}" if module else ""
    text = f"{header}\n{src}" if header else src
    try:
        from IPython import get_ipython
        from IPython.display import Code, display

        if get_ipython() is not None:
            display(Code(text, language="python"))
            return text
    except ImportError:
        pass
    print(text)
    return text
