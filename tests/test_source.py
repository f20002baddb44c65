"""course_lib.source: the source shown once (no escaped second copy from the return value), the text on request."""

import pytest

from course_lib import lowrank
from course_lib.source import show_source, source_text


def test_show_source_prints_once_and_returns_nothing(capsys):
    assert show_source(lowrank.rank_k_approx) is None  # a cell ending in it echoes nothing more
    out = capsys.readouterr().out
    assert out.count("def rank_k_approx(") == 1 and out.startswith("# from course_lib.lowrank\n")


def test_show_source_displays_highlighted_code_once_in_ipython(monkeypatch):
    pytest.importorskip("IPython")
    import IPython
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    assert show_source(lowrank.rank_k_approx) is None
    assert len(shown) == 1 and isinstance(shown[0], IPython.display.Code)
    assert shown[0].data == source_text(lowrank.rank_k_approx)


def test_source_text_and_bad_input():
    assert "def rank_k_approx(" in source_text(lowrank.rank_k_approx)
    with pytest.raises(TypeError, match="Pass a function, class or module"):
        source_text(42)
