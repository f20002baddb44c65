"""Explorers and quizzes are tested through their callbacks: no widget frontend needed."""

import matplotlib
import pytest
import torch

from course_lib import counting, memory, models, nf4, quiz, widgets

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def static(monkeypatch):
    monkeypatch.setenv("COURSE_STATIC_WIDGETS", "1")


def test_lora_calculator_is_the_counting_function():
    got = widgets.lora_calculator_view("llama-3.2-1b", 8, "q_proj + v_proj")
    assert got["trainable"] == 851_968
    model = models.synthetic_model("llama-2-7b")
    assert widgets.lora_calculator_view("llama-2-7b", 16, "all-linear")["trainable"] == \
        counting.lora_param_count(model, "all-linear", 16)


def test_quantization_explorer_matches_nf4_module():
    W = torch.randn(128, 64, generator=torch.Generator().manual_seed(0))
    got = widgets.quantization_view(W, "nf4", 64, double_quant=True)
    assert got["relative rmse"] == pytest.approx(nf4.relative_rmse(W, "nf4", 64))
    assert got["bits per param"] == pytest.approx(nf4.bits_per_param(64, double_quant=True))


def test_memory_planner_matches_estimator_and_says_what_fits():
    got = widgets.memory_view("llama-2-7b", "qlora", 1, 512, "T4")
    est = memory.estimate_training_memory(models.synthetic_config("llama-2-7b"), "qlora", compute_dtype=torch.float16)
    assert got["total GB"] == pytest.approx(est.total_gb) and got["fits"] is True
    assert widgets.memory_view("llama-2-70b", "full", 1, 512, "T4")["fits"] is False


@pytest.mark.parametrize("view, kwargs, message", [
    (widgets.lora_calculator_view, {"shape": "gpt-5"}, "unknown model shape 'gpt-5'"),
    (widgets.lora_calculator_view, {"r": 0}, "r"),
    (widgets.memory_view, {"method": "fancy"}, "unknown method 'fancy'"),
    (widgets.memory_view, {"gpu": "TPU"}, "unknown GPU 'TPU'"),
    (widgets.rank_view, {"W": torch.ones(4, 3), "k": 5}, "1 <= k <= 3"),
])
def test_impossible_settings_show_a_message_instead_of_raising(view, kwargs, message, capsys):
    got = view(**kwargs)
    assert "error" in got and message in got["error"] and "✗" in capsys.readouterr().out


def test_quantization_explorer_bad_block_size_is_a_message(capsys):
    got = widgets.quantization_view(torch.randn(64, 64), "nf4", 100)
    assert "power of two" in got["error"]


def test_static_fallbacks_render_every_setting():
    assert len(widgets.lora_calculator()) == 2
    assert len(widgets.memory_planner()) == 2
    assert len(widgets.quantization_explorer(torch.randn(64, 64), static=({"kind": "nf4", "blocksize": 64},))) == 1


def test_quiz_grading_and_static_text(capsys):
    for notebook, qs in quiz.QUIZZES.items():
        for i, q in enumerate(qs):
            assert quiz.grade(notebook, i, q.answer)[0] is True
            wrong = (q.answer + 1) % len(q.options)
            ok, message = quiz.grade(notebook, i, wrong)
            assert ok is False and "Try again" in message
        assert quiz.grade(notebook, 0, None) == (False, "pick one of the options first")
    quiz.show("03")
    out = capsys.readouterr().out
    assert "Q1." in out and "(b) 65,536" in out and "quiz.answers('03')" in out
    with pytest.raises(KeyError, match="quizzes exist for"):
        quiz.show("99")


def test_live_explorers_and_quiz_print_no_return_value(monkeypatch, capsys):
    # with a widget frontend, interact prints what its function returns and a cell prints what it ends with:
    # both would put a text repr under the widgets (found by tests/test_live_notebooks.py)
    # ipywidgets 8 runs the first update when the explorer is built, 7.7 (Colab's) when a frontend displays it:
    # update() is what either runs, so the test calls it and holds on both (CI: 8.1 in .venv, 7.7 in .venv-colab)
    monkeypatch.setattr(widgets, "interactive_available", lambda: True)
    calculator = widgets.lora_calculator()
    calculator.widget.update()
    assert calculator.widget.result is None and "4,194,304 trainable" in capsys.readouterr().out
    explorer = widgets.rank_explorer(torch.randn(16, 12))
    explorer.widget.update()
    assert explorer.widget.result is None
    assert quiz.show("03") is None
