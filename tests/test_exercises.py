"""Exercises: every undone exercise stops at its checker with a friendly ExerciseNotDone; the student copies reveal
nothing (no solution line, no quiz answer or reason, no outputs); checkers give hints in steps and never the
solution; every notebook has exercises."""

import re
import sys
from pathlib import Path

import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbtool  # noqa: E402

SOLUTIONS = nbtool.sources(nbtool.SOLUTIONS)


def _lines(text: str) -> list[str]:
    # a .py copy comments its markdown out with "# ": compare the text, not the comment marker
    return [line.strip().removeprefix("# ").strip() for line in text.splitlines() if line.strip()]


def secret_lines(solution: Path) -> set[str]:
    """Lines only a solution holds: those between BEGIN/END SOLUTION markers and those of `solution-only` cells,
    less any line the shared part of the notebook also has (an ``import torch`` is no secret)."""
    shared, secret = set(), set()
    for cell in nbtool.read_source(solution).cells:
        only, inside = nbtool.SOLUTION_ONLY in cell.metadata.get("tags", []), False
        for line in _lines(cell.source):
            if line in (nbtool.BEGIN, nbtool.END):
                inside = line == nbtool.BEGIN
                continue
            (secret if only or inside else shared).add(line)
    return {line for line in secret - shared if len(line) > 3}


def student_copies(solution: Path) -> dict[str, str]:
    """Every form a student receives: the committed exercises/NN.py and .ipynb, and a fresh generation."""
    ipynb = nbformat.read(nbtool.EXERCISES / f"{solution.stem}.ipynb", as_version=4)
    fresh = nbtool.make_exercise(solution)
    return {f"exercises/{solution.name}": (nbtool.EXERCISES / solution.name).read_text(encoding="utf-8"),
            f"exercises/{solution.stem}.ipynb": "\n".join(c.source for c in ipynb.cells),
            "make_exercise()": "\n".join(c.source for c in fresh.cells)}


def quiz_secrets() -> list[str]:
    from course_lib import quiz

    return [reason for qs in quiz.QUIZZES.values() for q in qs for reason in q.reasons]


@pytest.mark.parametrize("solution", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_student_copies_reveal_no_solution_and_no_quiz_answer(solution):
    secrets, reasons = secret_lines(solution), quiz_secrets()
    assert secrets, f"{solution.name} has no solution lines: the leak check would check nothing"
    for where, text in student_copies(solution).items():
        lines = set(_lines(text))
        leaked = sorted(secrets & lines)
        assert not leaked, f"{where} shows solution lines: {leaked[:3]}"
        assert "quiz.answers" not in text, f"{where} prints the quiz answers"
        leaked = [r for r in reasons if r in text]
        assert not leaked, f"{where} holds quiz answer text: {leaked[0][:60]!r}"
    ipynb = nbformat.read(nbtool.EXERCISES / f"{solution.stem}.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in ipynb.cells if c.cell_type == "code"), "an exercise copy has outputs"
    links = re.findall(r"colab\.research\.google\.com/github/\S+?/blob/[^/]+/(\w+)/", ipynb.cells[0].source)
    if nbtool.course_settings()["repository"].startswith(nbtool.PLACEHOLDER_OWNER):
        assert links == [] and nbtool.UNPUBLISHED_BADGE in ipynb.cells[0].source  # no link to a missing repository
    else:
        assert links == ["exercises"], f"the exercise copy's Colab badge must open the exercise copy, not {links}"


def test_the_leak_check_catches_a_leak(tmp_path):
    solution = SOLUTIONS[1]  # 02: a solution-only cell (the course's merge) and solution blocks
    secrets = secret_lines(solution)
    assert "show_source(lora.LoRALinear.merge)" in secrets and "quiz.answers(\"02\")" in secrets
    assert any("layer.lora_B" in line for line in secrets)
    leaky = nbtool.read_source(solution)  # the solution itself, handed out as if it were the exercise
    assert secrets & set(_lines("\n".join(c.source for c in leaky.cells)))


def test_every_notebook_has_exercises_and_its_checkers_module():
    from course_lib import checks

    numbers = sorted(p.stem[:2] for p in nbtool.sources(nbtool.NOTEBOOKS))
    have = {p.stem[:2] for p in SOLUTIONS}
    for nb in numbers:
        assert nb in have, f"notebook {nb} has no solutions/{nb}_*.py"
        assert list((ROOT / "course_lib" / "checks").glob(f"nb{nb}_*.py")), f"no checks/nb{nb}_*.py"
    for solution in SOLUTIONS:
        source = solution.read_text()
        called = {name for name in dir(checks) if name.startswith("check_") and f"checks.{name}(" in source}
        assert called, f"{solution.name} calls no checker"
        for name in called:  # a checker lives in the module named after the notebook that uses it
            assert getattr(checks, name).__module__.split(".")[-1].startswith(f"nb{solution.stem[:2]}_"), name


@pytest.mark.slow
@pytest.mark.parametrize("solution", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_undone_exercises_fail_with_a_helpful_message(solution, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("COURSE_STATIC_WIDGETS", "1")
    nb = nbtool.make_exercise(solution)
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "exercises")}}).execute()
    exercise_cells = [i for i, c in enumerate(nb.cells) if nbtool.PLACEHOLDER in c.source]
    assert exercise_cells
    for i in exercise_cells:
        errors = [o for o in nb.cells[i].outputs if o.output_type == "error"]
        assert errors, f"exercise cell {i} of {solution.name} did not stop the student"
        assert errors[0].ename == "ExerciseNotDone", f"cell {i}: {errors[0].ename}: {errors[0].evalue}"
        assert "is not written yet" in errors[0].evalue and "NotImplementedError" in errors[0].evalue


# ------------------------------------------------------------------------------------------- stepped hints
@pytest.fixture(autouse=True)
def _fresh_hints():
    from course_lib.checks import core

    core.reset_hints()
    yield
    core.reset_hints()


def _failures(check, wrong, times: int = 4) -> list[str]:
    from course_lib import checks

    messages = []
    for _ in range(times):
        with pytest.raises(checks.ExerciseIncorrect) as info:
            check(wrong)
        messages.append(str(info.value))
    return messages


def test_hints_come_in_steps_first_failure_a_nudge_with_the_numbers_seen():
    from course_lib import checks

    first, second, third, fourth = _failures(checks.check_storage_count, lambda m, n, r: (m * n, r * m * n))
    assert "storage_count(4096, 4096, 8) returned (16,777,216, 134,217,728)" in first  # the numbers it saw
    assert "Hint 1 of 2" in first and "checks.hint('check_storage_count')" in first
    assert "Hint 2 of 2" in second and second.split("Hint")[1] != first.split("Hint")[1]
    assert "last hint" in second and "solutions/" in second and third == second == fourth


def test_hint_asks_for_more_and_a_pass_starts_over(capsys):
    from course_lib import checks

    assert "has not failed yet" in checks.hint("check_break_even_rank")
    first = _failures(checks.check_break_even_rank, lambda m, n: 1, times=1)[0]
    assert "Hint 1 of 2" in first and "break_even_rank(576, 576) returned 1" in first
    assert "Hint 2 of 2" in checks.hint(checks.check_break_even_rank)
    assert "Hint 2 of 2" in checks.hint("check_break_even_rank")  # the last step stays the last
    import math

    checks.check_break_even_rank(lambda m, n: math.ceil(m * n / (m + n)))
    assert "Hint 1 of 2" in _failures(checks.check_break_even_rank, lambda m, n: 1, times=1)[0]
    with pytest.raises(TypeError, match="at least one hint"):
        checks.fail("no hint given")


# cheap wrong answers that reach each checker's main failure; their hints, all steps, must not hold the solution
WRONG = {
    "check_rank_k_approx": lambda W, k: torch.zeros_like(W),
    "check_storage_count": lambda m, n, r: (m * n, r * m * n),
    "check_break_even_rank": lambda m, n: m,
    "check_lora_forward": lambda layer, x: layer.base_layer(x) + layer.lora_B(layer.lora_A(x)),
    "check_lora_merge": lambda layer: setattr(layer, "merged", True),
    "check_gpt2_counts": lambda r: 12 * r * 1536,
    "check_predict_qv_count": lambda config, r: config.num_hidden_layers * r * 4 * config.hidden_size,
    "check_nearest_nf4": lambda x: 0,
    "check_quantize_block": lambda block: (torch.zeros(64, dtype=torch.long), float(block.abs().max())),
    "check_bits_per_param": lambda bs, dq: 4.0,
    "check_training_state_bytes": lambda n, method, adapters=0, recipe="mixed": 2 * n,
    "check_fit_prediction": lambda: "maybe",
    "check_logits_bytes": lambda batch, seq, vocab: 4 * batch * seq * vocab,
    "check_collate": lambda features, pad: {k: torch.zeros(2, 4, dtype=torch.long)
                                            for k in ("input_ids", "attention_mask", "labels")},
    "check_after_load_memory": lambda config, targets: 1e9,
    "check_batch_seq": lambda config, gpu_bytes: (1, 256),
    "check_fsdp_shard": lambda parts, n: {k: v / n for k, v in parts.items()},
    "check_fewest_gpus": lambda config, gpu_bytes, seq_len: 8,
    "check_logit_bytes": lambda seq_len, vocab, chunk=None: 12 * seq_len * vocab,  # chunking forgotten
    "check_longest_fitting_length": lambda predict, available, step=256, limit=131072: limit,
    "check_chunked_loss": lambda hidden, weight, targets, chunk: torch.nn.functional.cross_entropy(
        hidden @ weight.t(), targets),  # right value, but every token's logits at once
    "check_trainable_lora_params": lambda config, r, placement: config.num_hidden_layers * r * 2 * config.hidden_size,
    "check_best_arm_within_budget": lambda rows, task, budget: "LoRA r=8",
    "check_qlora_ratio": lambda rows, task: 1.0,
    "check_prediction": lambda: "maybe",
    "check_error_prediction": (lambda: (3.0, 3.0), lambda W, k: torch.linalg.svd(W)[0][:, :k] @ torch.diag(
        torch.linalg.svd(W)[1][:k]) @ torch.linalg.svd(W)[2][:k]),  # the Frobenius error taken for the spectral
    "check_first_gradients": (lambda: (False, True), lambda layer, x: layer.base_layer(x) + layer.scaling * (
        x @ layer.lora_A.weight.T @ layer.lora_B.weight.T)),  # the prediction upside down
    "check_nf4_table": lambda offset: torch.linspace(-1, 1, 16),  # evenly spaced: INT4's idea, not NF4's
    "check_level_usage": lambda blocks: torch.full((16,), 1 / 16),  # the equal share NF4 does not get
    "check_stored_bytes_prediction": lambda numel, dq: numel / 2,  # the codes alone
}


def _run(check, answer):
    return check(*answer) if isinstance(answer, tuple) else check(answer)


def test_no_hint_step_gives_the_solution_away():
    from course_lib import checks

    secrets = set().union(*(secret_lines(s) for s in SOLUTIONS))
    code = {line for line in secrets if len(line) > 20 and not line.startswith("#")}
    for name, wrong in WRONG.items():
        check = getattr(checks, name)
        messages = _failures((lambda w, c=check: _run(c, w)) if isinstance(wrong, tuple) else check, wrong)
        assert "Hint 1 of" in messages[0], name
        steps = {m.split("\n", 1)[1] for m in messages}
        assert len(steps) >= 2, f"{name} has a single hint: a second failure must give more"
        leaked = [line for line in code for m in messages if line in m]
        assert not leaked, f"{name}'s hints give the solution away: {leaked[0]!r}"


def test_checkers_reject_an_answer_that_calls_the_course_implementation():
    from course_lib import checks, data, memory, models, qlora
    from course_lib.checks import core

    def ledger(n, method, adapters=0, recipe="mixed"):  # right numbers, by calling the course's answer
        return sum(memory.bytes_per_param(method, full_recipe=recipe).values()) * n + 16 * adapters * (method != "full")

    def logits(batch, seq, vocab):
        from course_lib import models

        config = models.synthetic_config("llama-2-7b")
        config.vocab_size = vocab
        return memory.estimate_training_memory(config, "lora", batch_size=batch, seq_len=seq).logits

    def after_load(config, targets, r=8):
        est = qlora.predict_peak(config, "default", targets=targets, r=r)
        return est.weights + est.quant_state + est.adapters

    def swallowing(n, method, adapters=0, recipe="mixed"):  # a broad except must not hide the call
        try:
            return ledger(n, method, adapters, recipe)
        except Exception:
            return 0

    for check, fn, called in ((checks.check_training_state_bytes, ledger, "memory.bytes_per_param"),
                              (checks.check_training_state_bytes, swallowing, "memory.bytes_per_param"),
                              (checks.check_logits_bytes, logits, "memory.estimate_training_memory"),
                              (checks.check_after_load_memory, after_load, "qlora.predict_peak"),
                              (checks.check_collate, lambda features, pad: data.collate(features, pad), "data.collate")):
        for attempt in (1, 2):  # both hint steps say why the call is refused or what to write instead
            with pytest.raises(checks.ExerciseIncorrect) as info:
                check(fn)
            assert f"calls course_lib.{called}" in str(info.value) and "Write it from" in str(info.value)
            assert f"Hint {attempt} of 2:" in str(info.value)
            assert ("refuses" if attempt == 1 else "write") in str(info.value).split("Hint")[1].lower()
        core.reset_hints()
    assert sum(memory.bytes_per_param("full").values()) == 16  # switched back on after the check
    assert qlora.predict_peak(models.synthetic_config("llama-2-7b")).total_bytes > 0
    # hand-written answers pass with the course's code off
    from course_lib import nf4

    checks.check_training_state_bytes(lambda n, method, adapters=0, recipe="mixed":
                                      (16 if recipe == "mixed" else 8) * n if method == "full"
                                      else (2 if method == "lora" else nf4.bits_per_param(64, True) / 8) * n
                                      + 16 * adapters)
    checks.check_logits_bytes(lambda batch, seq, vocab: 12 * batch * seq * vocab)


def test_recipe_checker_enforces_its_parameter_budget_before_training():
    from course_lib import checks

    with pytest.raises(checks.ExerciseIncorrect, match="over the budget of 50,000"):
        checks.check_recipe(lambda: {"r": 8, "alpha": 16, "targets": ["q_proj", "v_proj"], "lr": 1e-2})
    with pytest.raises(checks.ExerciseIncorrect, match="return a dict"):
        checks.check_recipe(lambda: (8, 16))


# ------------------------------------------------------------------------------------ notebook 10's checkers
def _reference_longest(predict, available, step=256, limit=131072):
    fits = [n for n in range(step, limit + 1, step) if predict(n) <= available]  # a walk: slow but plainly right
    return max(fits, default=0)


def _chunk_means(hidden, weight, targets, chunk):  # the usual mistake: a mean of the chunks' means
    F = torch.nn.functional
    parts = [F.cross_entropy(hidden[s:s + chunk] @ weight.t(), targets[s:s + chunk], ignore_index=-100)
             for s in range(0, hidden.shape[0], chunk)]
    return torch.stack([p for p in parts if not p.isnan()]).mean()


def test_notebook_10_checkers_pass_right_answers_and_catch_wrong_ones(capsys):
    from course_lib import checks

    F = torch.nn.functional
    checks.check_logit_bytes(lambda n, vocab, chunk=None: (12 * n if chunk is None else 8 * min(chunk, n)) * vocab)
    checks.check_longest_fitting_length(_reference_longest)

    def chunked(hidden, weight, targets, chunk):
        losses = [F.cross_entropy(hidden[s:s + chunk] @ weight.t(), targets[s:s + chunk], reduction="sum")
                  for s in range(0, hidden.shape[0], chunk)]
        return sum(losses) / (targets != -100).sum()

    checks.check_chunked_loss(chunked)
    out = capsys.readouterr().out
    assert out.count("✓") == 3 and "10)" in out  # a bisection over 131,072 positions in steps of 256: 10 probes
    wrong = {
        "check_logit_bytes": [(lambda n, vocab, chunk=None: (12 * n if chunk is None else 8 * chunk) * vocab,
                               "logit_bytes(1,000, 128,256, 1024)"),  # a chunk longer than the sequence
                              (lambda n, vocab, chunk=None: (12 * n if chunk is None else 8 * min(chunk, n)) * 128256,
                               "(2,048, 32,000, None)")],  # the 8B vocabulary hard-coded
        "check_longest_fitting_length": [(lambda p, a, step=256, limit=131072: _reference_longest(p, a, step) - step,
                                          "you say"),
                                         (lambda p, a, step=256, limit=131072: (p(limit + step), 0)[1],
                                          "between 256 and limit")],
        "check_chunked_loss": [(_chunk_means, "the plain loss on the full logits"),
                               (lambda h, w, t, c: F.cross_entropy(h[:c] @ w.t(), t[:c], reduction="sum").detach()
                                / (t != -100).sum(), "without a gradient"),
                               (lambda h, w, t, c: sum(F.cross_entropy(h[s:s + c] @ w.t(), t[s:s + c], reduction="sum")
                                                       for s in range(0, h.shape[0], c)).item(), "returned float")],
    }
    for name, cases in wrong.items():
        for fn, expected in cases:
            with pytest.raises(checks.ExerciseIncorrect) as info:
                getattr(checks, name)(fn)
            assert expected in str(info.value), (name, str(info.value))
    with pytest.raises(checks.ExerciseNotDone):
        checks.check_chunked_loss(lambda *a: (_ for _ in ()).throw(NotImplementedError()))


def test_notebook_09_checkers_pass_the_reference_and_catch_the_table_traps():
    """Each checker of notebook 09 passes the course's own answer and fails the mistakes its hints are about:
    averaging the sweep rows into an arm, counting the base model as an arm, k/v as large as q."""
    from course_lib import checks, memory, quality
    from course_lib.checks import nb09_lora_quality as nb09

    def count(config, r, placement):
        shapes = memory.linear_shapes(config)
        names = list(shapes) if placement == "all-linear" else quality.PLACEMENTS[placement]
        return config.num_hidden_layers * sum(r * sum(shapes[n]) for n in names)

    def count_without_gqa(config, r, placement):  # every attention projection hidden x hidden
        h, inter = config.hidden_size, config.intermediate_size
        sizes = {"q_proj": 2 * h, "k_proj": 2 * h, "v_proj": 2 * h, "o_proj": 2 * h, "gate_proj": h + inter,
                 "up_proj": h + inter, "down_proj": h + inter}
        names = list(sizes) if placement == "all-linear" else quality.PLACEMENTS[placement]
        return config.num_hidden_layers * r * sum(sizes[n] for n in names)

    def best(rows, task, budget):
        found = nb09.best_within(rows, task, budget)
        return found and found[0]

    def best_counting_the_base(rows, task, budget):  # the base row trains 0 parameters: it always "fits"
        fits = [r for r in rows if r["task"] == task and r["trainable"] <= budget]
        return max(fits, key=lambda r: r["score"])["name"] if fits else None

    def mean_of_all_rows(rows, task, name):
        s = [r["score"] for r in rows if r["task"] == task and r["name"] == name]
        return sum(s) / len(s)

    checks.check_trainable_lora_params(count)
    checks.check_best_arm_within_budget(best)
    checks.check_qlora_ratio(lambda rows, task: nb09.ratio(rows, task))
    checks.check_prediction(lambda: False)
    for check, wrong, seen in [
            (checks.check_trainable_lora_params, count_without_gqa, "PEFT would train"),
            (checks.check_best_arm_within_budget, best_counting_the_base, "'base (no training)'"),
            (checks.check_qlora_ratio, lambda rows, task: mean_of_all_rows(rows, task, "QLoRA r=8")
             / mean_of_all_rows(rows, task, "LoRA r=8"), "orders_heldout, the whole table"),
            (checks.check_prediction, lambda: 1, "not True or False")]:
        with pytest.raises(checks.ExerciseIncorrect, match=re.escape(seen)):
            check(wrong)
    with pytest.raises(checks.ExerciseNotDone):
        checks.check_qlora_ratio(lambda rows, task: (_ for _ in ()).throw(NotImplementedError()))


# ------------------------------------------------------------------- answers that hand back the course's own
def _honest_rank_k(W, k):
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return (U[:, :k] * S[:k]) @ Vh[:k]


def _honest_forward(layer, x):
    return layer.base_layer(x) + layer.scaling * (layer.dropout(x) @ layer.lora_A.weight.T @ layer.lora_B.weight.T)


def _delegating():
    """For every checker of notebooks 01-04 with a course implementation behind it: answers that call it (or the
    library it is checked against) instead of doing the work, in the ways a student would."""
    import bitsandbytes.functional as bnbF
    from transformers import GPT2Config

    from course_lib import counting, lora, lowrank, memory, nf4
    from course_lib.lowrank import rank_k_approx as imported_earlier  # an alias: still the course's function

    def course_block(block):
        packed, absmax = nf4.quantize_nf4(block, 64)
        return nf4.unpack_nibbles(packed, block.numel()), absmax.item()

    def merge_by_hand_with_the_course_delta(layer):
        with torch.no_grad():
            layer.base_layer.weight += layer.delta_weight()
        layer.merged = True

    return {
        "check_rank_k_approx": [lambda W, k: lowrank.rank_k_approx(W, k), imported_earlier,
                                lambda W, k: lowrank.low_rank_weights({"w": W}, k)["w"]],
        "check_error_prediction": [
            (lambda: (lowrank.tail_norm(torch.tensor([5.0, 4, 3, 2, 1]), 2), 3.0), _honest_rank_k),  # measured
            (lambda: ((3**2 + 2**2 + 1) ** 0.5, 3.0), lowrank.rank_k_approx)],  # the course's rank_k_approx
        "check_storage_count": [lowrank.storage_count,
                                lambda m, n, r: (m * n, counting.layer_lora_params(n, m, r))],
        "check_lora_forward": [lambda layer, x: layer(x), lambda layer, x: lora.LoRALinear.forward(layer, x),
                               lambda layer, x: layer.base_layer(x) + (x @ layer.delta_weight().T
                                                                       if not layer.fan_in_fan_out
                                                                       else x @ layer.delta_weight())],
        "check_lora_merge": [lambda layer: layer.merge(), merge_by_hand_with_the_course_delta,
                             lambda layer: lora.merge_all(layer)],
        "check_first_gradients": [(lambda: (True, False), lambda layer, x: layer(x))],
        "check_gpt2_counts": [lambda r: counting.lora_param_count(counting.meta_model(GPT2Config()), ["c_attn"], r)],
        "check_predict_qv_count": [
            lambda config, r: counting.lora_param_count(counting.meta_model(config), ["q_proj", "v_proj"], r),
            lambda config, r: config.num_hidden_layers * sum(
                r * sum(memory.linear_shapes(config)[n]) for n in ("q_proj", "v_proj"))],
        "check_nf4_table": [lambda offset: nf4.nf4_code_from_normal(offset),
                            lambda offset: bnbF.get_4bit_type("nf4", device="cpu"),
                            lambda offset: nf4.NF4_CODE.clone()],  # a copied table: the same at every offset
        "check_nearest_nf4": [lambda x: int(nf4.nearest_code(torch.tensor([x]), nf4.NF4_CODE)[0])],
        "check_quantize_block": [course_block],
        "check_level_usage": [lambda blocks: nf4.level_usage(blocks.reshape(-1), 64)],
        "check_bits_per_param": [nf4.bits_per_param, lambda bs, dq: nf4.stored_bytes(8 * bs, bs, dq) / bs],
        "check_stored_bytes_prediction": [lambda numel, dq: nf4.stored_bytes(numel, 64, dq),
                                          lambda numel, dq: nf4.bits_per_param(64, dq) * numel / 8],
    }


def test_every_checker_of_notebooks_01_to_04_refuses_the_course_own_answer():
    from course_lib import checks

    delegating = _delegating()
    for module in ("nb01_low_rank", "nb02_lora", "nb03_counting", "nb04_nf4"):
        names = [n for n in dir(checks) if n.startswith("check_") and getattr(checks, n).__module__.endswith(module)]
        missing = set(names) - set(delegating) - {"check_break_even_rank"}  # no course implementation to call
        assert not missing, f"no delegation case for {sorted(missing)}"
    for name, answers in delegating.items():
        for answer in answers:
            with pytest.raises(checks.ExerciseIncorrect) as info:
                _run(getattr(checks, name), answer)
            message = str(info.value)
            assert ("calls course_lib." in message or "calls bitsandbytes." in message
                    or "does not depend on the offset" in message), (name, message)
            assert re.search(r"Hint \d of \d", message), (name, message)  # and a hint, as every failure


def test_honest_answers_to_the_new_exercises_pass(capsys):
    import math

    from course_lib import checks

    checks.check_rank_k_approx(_honest_rank_k)
    checks.check_error_prediction(lambda: (math.sqrt(9 + 4 + 1), 3.0), _honest_rank_k)
    checks.check_lora_forward(_honest_forward)
    checks.check_first_gradients(lambda: (True, False), _honest_forward)

    def table(offset):
        half = lambda n: torch.special.ndtri(torch.linspace(offset, 0.5, n)[:-1].double())  # noqa: E731
        values = torch.cat([half(9), torch.zeros(1, dtype=torch.float64), -half(8)]).float().sort().values
        return values / values.max()

    checks.check_nf4_table(table)
    mids = None

    def block(b):
        nonlocal mids
        from course_lib import nf4

        mids = (nf4.NF4_CODE[:-1] + nf4.NF4_CODE[1:]) / 2
        absmax = b.abs().max()
        return torch.bucketize(b * (1.0 / absmax.clamp(min=1e-38)), mids), absmax.item()

    checks.check_quantize_block(block)
    checks.check_level_usage(lambda blocks: sum(torch.bincount(block(b)[0], minlength=16) for b in blocks)
                             / blocks.numel())
    checks.check_stored_bytes_prediction(lambda n, dq: (4 + 8 / 64 + 32 / (64 * 256) if dq else 4.5) * n / 8)
    out = capsys.readouterr().out
    assert out.count("✓") == 8 and "bit for bit" in out
