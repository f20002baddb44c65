"""The quizzes: enough questions, applied ones among them, a reason for every option, feedback that explains a
wrong pick without giving the answer away, and every number in their text recomputed here from course_lib."""

import math
import re
import warnings

import pytest
import torch
from transformers import GPT2Config

from course_lib import counting, data, longctx, lora, lowrank, memory, models, nf4, quality, quiz, resources

NOTEBOOKS = sorted(quiz.QUIZZES)  # every quiz


def test_every_notebook_has_five_questions_two_of_them_applied_with_a_reason_per_option():
    for nb in NOTEBOOKS:
        qs = quiz.questions(nb)
        assert len(qs) >= 5, f"quiz {nb} has {len(qs)} questions"
        assert sum(q.applied for q in qs) >= 2, f"quiz {nb} has fewer than two applied questions"
        for q in qs:
            assert len(q.reasons) == len(q.options) >= 3 and all(len(r) > 10 for r in q.reasons), q.prompt


def test_grading_explains_each_wrong_choice_without_the_answer(capsys):
    for nb, qs in quiz.QUIZZES.items():
        for i, q in enumerate(qs):
            ok, message = quiz.grade(nb, i, q.answer)
            assert ok is True and q.why in message
            for wrong in set(range(len(q.options))) - {q.answer}:
                ok, message = quiz.grade(nb, i, wrong)
                assert ok is False and q.reasons[wrong] in message and "Try again" in message
                assert q.why not in message
        assert quiz.grade(nb, 0, None) == (False, "pick one of the options first")
    with pytest.raises(KeyError, match="quizzes exist for"):
        quiz.questions("99")
    with pytest.raises(ValueError, match="one reason per option"):
        quiz.Question("p", ("a", "b"), 0, ("only one reason",))


def test_answer_key_prints_every_reason(capsys):
    quiz.answers("04")
    out = capsys.readouterr().out
    for q in quiz.questions("04"):
        assert all(reason in out for reason in q.reasons)


def test_nf4_optimality_is_qualified():
    """Quiz 04 says what NF4 is optimal for (equal-probability levels for one normal input) and what not (the
    absmax-scaled blocks it really gets, the squared error), and that each level is *not* used equally."""
    text = quiz.questions("04")[0].why
    assert "information-theoretically optimal" in text and "only" in text
    assert "absmax" in text and "equal-probability" in text and "squared error" in text
    assert "6.25%" not in quiz.questions("04")[0].options[quiz.questions("04")[0].answer]


# --------------------------------------------------------------------------------- every number, recomputed
def _gb(nbytes, digits=2):
    return f"{nbytes / 1e9:.{digits}f}"


def _facts():
    """(notebook, question index) -> {number as written in the quiz: the same number computed by course_lib}."""
    warnings.simplefilter("ignore")
    W = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0]))
    S = lowrank.singular_values(W)
    full, lora8 = lowrank.storage_count(4096, 4096, 8)
    gpt2 = counting.meta_model(GPT2Config())
    c_attn = dict(gpt2.named_modules())["transformer.h.0.attn.c_attn"].weight.shape
    llama1b, llama7b = models.synthetic_model("llama-3.2-1b"), models.synthetic_model("llama-2-7b")
    smol = models.synthetic_model("smollm2-135m")
    c1, c7, c70 = (models.synthetic_config(s) for s in ("llama-3.2-1b", "llama-2-7b", "llama-2-70b"))
    qv = ["q_proj", "v_proj"]
    n = 4096 * 4096
    lora7, qlora7 = memory.estimate_training_memory(c7, "lora"), memory.estimate_training_memory(c7, "qlora")
    lora1, qlora1 = memory.estimate_training_memory(c1, "lora"), memory.estimate_training_memory(c1, "qlora")
    rows = resources.measurements("memory_accuracy.csv")
    measured = {(r["shape"], r["method"], r["targets"], r["seq_len"]): r for r in rows}
    params7 = memory.parameter_count(c7)
    adapters7 = counting.lora_param_count(llama7b, qv, 8)
    per_gpu70 = {k: memory.estimate_per_gpu_memory(c70, "qlora", k, "fsdp").total_bytes for k in (1, 2, 4)}
    dq_saving = nf4.bits_per_param(64, False) - nf4.bits_per_param(64, True)
    gaussian = torch.randn(1536 * 576, generator=torch.Generator().manual_seed(0))  # notebook 04's Gaussian blocks
    usage64, absmax64 = nf4.level_usage(gaussian, 64), gaussian.reshape(-1, 64).abs().amax(dim=1)
    features = [{"input_ids": [1] * 5, "labels": [-100] * 3 + [7, 8]}, {"input_ids": [1] * 7, "labels": [1] * 7}]
    row_labels = data.collate(features, 0)["labels"][0]
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    c8 = models.synthetic_config("llama-3.1-8b")
    V8 = c8.vocab_size
    gib = lambda nbytes: f"{nbytes / 2**30:.2f} GiB"  # noqa: E731
    loss_logits = lambda n, techniques, **kw: longctx.predict_peak(c8, techniques, n, **kw).details["loss_logits"]  # noqa: E731
    stored = lambda techniques: longctx.predict_peak(c8, techniques, 32768).details["stored_activations"]  # noqa: E731
    layer_input = 32768 * c8.hidden_size * 2
    logit_grad = 1 / (4096 * V8)
    scores8k = c8.num_attention_heads * 8192**2 * 4  # one fp32 score matrix per head
    scale = 2.0 ** 16  # torch.amp.GradScaler's init_scale
    fp16 = torch.finfo(torch.float16)
    long_rows = resources.measurements("long_context.csv")
    longest_all = next(int(r["seq_len"]) for r in long_rows if r["step"] == longctx.STEPS[-1][0]
                       and r["kind"] == "longest" and r["shape"] == "llama-3.1-8b")
    setup_note = next(r["note"] for r in long_rows if r["kind"] == "setup")
    torch_on_gpu = ".".join(re.search(r"torch (\d+)\.(\d+)", setup_note).groups())
    grad_diff = {r["shape"]: float(re.search(r"differ by ([\d.e+-]+)", r["note"]).group(1))
                 for r in long_rows if r["step"] == "all techniques vs plain"}
    assert all("loss scale 65536" in r["note"] for r in long_rows if r["step"] == "all techniques vs plain")
    table = quality.read_csv()

    def seeds(name, task="orders_heldout"):  # the main run of an arm: its own lr, batch size 8, every seed
        return [r["score"] for r in table if r["task"] == task and r["name"] == name and r["batch_size"] == 8
                and math.isclose(r["lr"], quality.MAIN_LR.get(name, 1e-3))]

    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    lo8, full_ft = seeds("LoRA r=8"), seeds("full fine-tuning")
    rt, bnb = seeds("QLoRA r=8"), seeds("QLoRA r=8 bitsandbytes")
    within = "within 0.01" if max(abs(a - b) for a, b in zip(rt, bnb)) < 0.01 else "not within 0.01"
    same = lambda a, b: all(a[k] == b[k] for k in ("eval_loss", "score", "general_loss"))  # noqa: E731
    rs64 = next(r for r in table if r["name"] == "rsLoRA r=64")
    lora64 = next(r for r in table if r["name"] == "LoRA r=64" and r["seed"] == 0)
    lora_scale = lambda r, alpha, rs: lora.LoRALinear(torch.nn.Linear(4, 4), r=r, alpha=alpha, use_rslora=rs).scaling  # noqa: E731
    return {
        ("01", 2): {"2": f"{torch.linalg.matrix_norm(W - lowrank.rank_k_approx(W, 2), ord=2).item():.0f}",
                    "√5 ≈ 2.236": f"√5 ≈ {lowrank.approx_error(W, 2):.3f}",
                    "3": f"{(S[2] + S[3]).item():.0f}", "5": f"{lowrank.tail_norm(S, 2) ** 2:.0f}"},
        ("01", 3): {"70%": f"{(S[:2].sum() / S.sum()).item():.0%}", "50%": f"{2 / 4:.0%}",
                    "83.3%": pct(lowrank.energy_captured(S, 2)), "96.7%": pct(1 - S[3].item() ** 2 / (S ** 2).sum().item())},
        ("01", 4): {"65,536": f"{lora8:,}", "32,768": f"{lora8 // 2:,}", "16,777,216": f"{full:,}",
                    "131,072": f"{2 * lora8:,}", "0.39%": f"{lora8 / full:.2%}"},
        ("02", 2): {"0.5": f"{1 / lora.LoRALinear(torch.nn.Linear(4, 4), r=8, alpha=16).scaling}",
                    "2": f"{lora.LoRALinear(torch.nn.Linear(4, 4), r=8, alpha=16).scaling:.0f}",
                    "5.66": f"{lora.LoRALinear(torch.nn.Linear(4, 4), r=8, alpha=16, use_rslora=True).scaling:.2f}",
                    "128": f"{16 * 8}"},
        ("02", 3): {"32,768": f"{counting.layer_lora_params(2048, 2048, 8):,}",
                    "65,536": f"{counting.layer_lora_params(2048, 2048, 16):,}",
                    "131,072": f"{2 * counting.layer_lora_params(2048, 2048, 16):,}",
                    "from 2 to 1": f"from {lora.LoRALinear(torch.nn.Linear(4, 4), r=8, alpha=16).scaling:.0f} to "
                                   f"{lora.LoRALinear(torch.nn.Linear(4, 4), r=16, alpha=16).scaling:.0f}"},
        ("02", 4): {"2304 × 768": f"{c_attn[1]} × {c_attn[0]}", "768 × 2304": f"{c_attn[0]} × {c_attn[1]}"},
        ("03", 0): {"65,536": f"{counting.layer_lora_params(4096, 4096, 8):,}", "32,768": f"{8 * 4096:,}",
                    "16,777,216": f"{n:,}", "4,194,304": f"{adapters7:,}", "0.39%": f"{lora8 / full:.2%}"},
        ("03", 1): {"4,194,304": f"{adapters7:,}", "851,968": f"{counting.lora_param_count(llama1b, qv, 8):,}",
                    "1,048,576": f"{16 * 2 * counting.layer_lora_params(2048, 2048, 8):,}",
                    "65,536": f"{counting.layer_lora_params(4096, 4096, 8):,}",
                    "2048 → 512": f"{c1.hidden_size} → {memory.linear_shapes(c1)['v_proj'][1]}"},
        ("03", 4): {"294,912": f"{counting.lora_param_count(gpt2, ['c_attn'], 8):,}",
                    "24,576": f"{counting.layer_lora_params(c_attn[0], c_attn[1], 8):,}",
                    "147,456": f"{gpt2.config.n_layer * counting.layer_lora_params(768, 768, 8):,}",
                    "1,179,648": f"{counting.lora_param_count(gpt2, 'all-linear', 8):,}",
                    "768 → 2304": f"{c_attn[0]} → {c_attn[1]}", "12 blocks": f"{gpt2.config.n_layer} blocks"},
        ("04", 0): {"6.25%": f"{1 / 16:.2%}", "1.7%": f"{usage64.min():.1%}", "9.2%": f"{usage64.max():.1%}",
                    "1.85σ": f"{nf4.nf4_edge_sigma():.2f}σ", "2.6σ": f"{absmax64.mean():.1f}σ",
                    "3.88": f"{nf4.code_entropy(usage64):.2f}"},
        ("04", 1): {"4.127": f"{nf4.bits_per_param(64, True):.3f}", "4.5": f"{nf4.bits_per_param(64, False)}",
                    "4.0": f"{math.log2(nf4.NF4_CODE.numel()):.1f}"},
        ("04", 2): {"4.25": f"{nf4.bits_per_param(128, False)}", "4.063": f"{nf4.bits_per_param(128, True):.3f}",
                    "4.0": f"{math.log2(nf4.NF4_CODE.numel()):.1f}",
                    "4.5": f"{nf4.bits_per_param(64, False)}"},
        ("04", 3): {"33.55 MB": f"{2 * n / 1e6:.2f} MB", "8.39 MB": f"{n / 2 / 1e6:.2f} MB",
                    "8.65 MB": f"{nf4.stored_bytes(n, 64, True) / 1e6:.2f} MB",
                    "9.44 MB": f"{nf4.stored_bytes(n, 64, False) / 1e6:.2f} MB",
                    "16,777,216": f"{n:,}", "4.127": f"{nf4.bits_per_param(64, True):.3f}",
                    "4.5": f"{nf4.bits_per_param(64, False)}"},
        ("04", 4): {"0.37 bits": f"{dq_saving:.2f} bits"},
        ("05", 1): {"13.48 GB": f"{_gb(lora7.weights)} GB", "13.88 GB": f"{lora7.total_gb:.2f} GB"},
        ("05", 2): {"2": f"{memory.bytes_per_param('full', full_recipe='pure')['weights']}",
                    "8": f"{sum(memory.bytes_per_param('full', full_recipe='pure').values())}",
                    "16": f"{sum(memory.bytes_per_param('full', torch.float16).values())}",
                    "20": f"{memory.estimate_training_memory(c1, 'full', compute_dtype=torch.float16).total_bytes / memory.parameter_count(c1):.0f}"},
        ("05", 3): {"6,738,415,616": f"{params7:,}", "4,194,304": f"{adapters7:,}",
                    "13.54 GB": f"{_gb(2 * params7 + 16 * adapters7)} GB", "13.48 GB": f"{_gb(2 * params7)} GB",
                    "27.02 GB": f"{_gb(4 * params7 + 16 * adapters7)} GB", "107.81 GB": f"{_gb(16 * params7)} GB"},
        ("05", 4): {"3.31 GB": f"{lora1.total_gb:.2f} GB", "2.43 GB": f"{qlora1.total_gb:.2f} GB",
                    "851,968": f"{lora1.trainable_params:,}", "128,256": f"{c1.vocab_size:,}",
                    "0.79 GB": f"{_gb(qlora1.logits)} GB",
                    "within 3%": "within 3%" if max(abs(float(measured[("llama-3.2-1b", m, "q,v", "512")]["error_pct"]))
                                                     for m in ("lora", "qlora")) < 3 else "measurements disagree"},
        ("06", 2): {"2": f"{int((row_labels != -100).sum())}", "5": f"{len(features[0]['input_ids'])}",
                    "7": f"{row_labels.numel()}", "4": f"{int((row_labels != -100).sum()) + 2}"},
        ("06", 4): {"921,600": f"{counting.lora_param_count(smol, qv, 16):,}",
                    "460,800": f"{counting.lora_param_count(smol, qv, 8):,}",
                    "2,442,240": f"{counting.lora_param_count(smol, 'all-linear', 8):,}",
                    "15,360": f"{counting.lora_param_count(smol, qv, 8) // smol.config.num_hidden_layers:,}"},
        ("07", 3): {"5.02 GB": f"{qlora7.total_gb:.2f} GB", "4.29 GB": f"{_gb(qlora7.weights)} GB",
                    "0.56 GB": f"{_gb(qlora7.activations)} GB", "0.03 GB": f"{_gb(qlora7.optimizer_state)} GB",
                    "0.10 GB": f"{_gb(qlora7.quant_state)} GB",
                    "5.29 GB": f"{float(measured[('llama-2-7b', 'qlora', 'q,v', '512')]['measured_peak_gb']):.2f} GB"},
        ("07", 4): {"0.37 bits": f"{dq_saving:.2f} bits"},
        ("08", 3): {"38.05 GB": f"{_gb(per_gpu70[1])} GB", "9.51 GB": f"{_gb(per_gpu70[1] / 4)} GB",
                    "13.30 GB": f"{_gb(per_gpu70[4])} GB", "22.18 GB": f"{_gb(per_gpu70[2])} GB"},
        ("10", 0): {"128,256": f"{V8:,}"},
        ("10", 4): {"128,256": f"{V8:,}", "8,192": f"{8192:,}", "1,024": f"{longctx.DEFAULT_LOSS_CHUNK:,}",
                    "11.74 GiB": gib(loss_logits(8192, ("no_lora_dropout",))),
                    "0.98 GiB": gib(loss_logits(8192, ("chunked_loss",))),
                    "3.91 GiB": gib(4 * 8192 * V8), "0.49 GiB": gib(4 * 1024 * V8),
                    "7.83 GiB": gib(8 * 8192 * V8), "1.96 GiB": gib(2 * 8192 * V8)},
        ("10", 5): {"4,096": f"{4096:,}", "128,256": f"{V8:,}", "1.9e-9": f"{logit_grad:.1e}".replace("e-0", "e-"),
                    "6e-8": f"{fp16.smallest_normal * 2.0 ** -10:.0e}".replace("e-0", "e-"),
                    "65,536": f"{int(scale):,}", "1.2e-4": f"{logit_grad * scale:.1e}".replace("e-0", "e-"),
                    "0.98%": f"{grad_diff['llama-3.1-8b']:.2%}", "65,504": f"{int(fp16.max):,}",
                    "11.8": f"{math.log(V8):.1f}"},
        ("10", 6): {"4 layer inputs": f"{longctx.OFFLOAD_GPU_COPIES} layer inputs",
                    "all 32": f"all {c8.num_hidden_layers}", "4,096": f"{c8.hidden_size:,}",
                    "32,768": f"{32768:,}", "7.00 GiB": gib(stored(("chunked_loss",)) - stored(("chunked_loss", "offload"))),
                    "8.00 GiB": gib(c8.num_hidden_layers * layer_input), "0.25 GiB": gib(layer_input),
                    "7.75 GiB": gib((c8.num_hidden_layers - 1) * layer_input)},
        ("10", 7): {"70,000": f"{round(longest_all, -4):,}"},
        ("10", 9): {"2.11": torch_on_gpu},
        ("10", 10): {"4 fp32": f"{longctx.MATH_SCORE_COPIES} fp32", "32 heads": f"{c8.num_attention_heads} heads",
                     "8,192": f"{8192:,}", "32.00 GiB": gib(longctx.MATH_SCORE_COPIES * scores8k),
                     "8.00 GiB": gib(scores8k), "2.00 GiB": gib(scores8k / 4), "0.25 GiB": gib(8192**2 * 4),
                     "0.50 GiB": gib(2 * 8192**2 * 4)},
        ("10", 8): {"4,096": f"{models.synthetic_config('llama-2-7b').max_position_embeddings:,}",
                    "0.25%": f"{grad_diff['llama-2-7b']:.2%}", "131,072": f"{c8.max_position_embeddings:,}",
                    "32,000": f"{models.synthetic_config('llama-2-7b').vocab_size:,}"},
        ("08", 4): {"13.88 GB": f"{lora7.total_gb:.2f} GB", "3.47 GB": f"{lora7.total_gb / 4:.2f} GB",
                    "6.94 GB": f"{lora7.total_gb / 2:.2f} GB",
                    "13.90 GB": f"{memory.estimate_per_gpu_memory(c7, 'lora', 4, 'ddp').total_gb:.2f} GB"},
        ("09", 4): {"0.020": f"{mean(lo8) - mean(full_ft):.3f}", "0.911": f"{mean(lo8):.3f}",
                    "0.892": f"{mean(full_ft):.3f}", "0.027": f"{max(lo8) - min(lo8):.3f}",
                    "0.043": f"{max(full_ft) - min(full_ft):.3f}"},
        ("09", 5): {"within 0.01": within, "below 0.01": within.replace("within", "below")},
        ("09", 7): {"16/√64 = 2": f"{rs64['alpha']:.0f}/√{rs64['r']:.0f} = {lora_scale(64, rs64['alpha'], True):.0f}",
                    "2 = 128/64": f"{lora_scale(64, 2 * lora64['r'], False):.0f} = "
                                  f"{lora64['alpha'] or 2 * lora64['r']:.0f}/{lora64['r']:.0f}",
                    "16/√8 = 5.66": f"{rs64['alpha']:.0f}/√8 = {lora_scale(8, rs64['alpha'], True):.2f}",
                    "the same held-out loss, score and general loss":
                        "the same held-out loss, score and general loss" if same(rs64, lora64) else "different rows"},
    }


def _text(q) -> str:
    return " ".join((q.prompt, *q.options, *q.reasons))


# Hardware facts the quizzes quote as inputs (NVIDIA's compute capabilities: a T4 is 7.5, native bf16 needs 8.0):
# not results the course computes. The last test checks that course_lib states the same threshold.
GIVENS = {"7.5", "8.0"}
RESULT_LIKE = re.compile(r"(?<![\w.-])(?:\d{1,3}(?:,\d{3})+|\d+\.\d+|\d+(?:\.\d+)?%)(?![\w])")


def test_every_number_in_a_quiz_is_computed_by_course_lib():
    facts = _facts()
    for (nb, i), numbers in facts.items():
        text = _text(quiz.questions(nb)[i])
        for written, computed in numbers.items():
            assert written in text, f"quiz {nb} Q{i + 1}: {written!r} is not in the question"
            assert written == computed, f"quiz {nb} Q{i + 1} says {written!r}; course_lib computes {computed!r}"
    # ...and no number escapes the check: every option that is a number, and every comma-grouped, decimal or
    # percentage figure anywhere in a question, is one of the facts above.
    for nb in NOTEBOOKS:
        for i, q in enumerate(quiz.questions(nb)):
            known = " ".join(facts.get((nb, i), {})) + " " + " ".join(GIVENS)
            for option in q.options:
                lead = re.match(r"[\d.,]+", option)
                assert not lead or lead.group() in known or lead.group() in q.prompt, f"quiz {nb} Q{i + 1}: option {option!r} is not checked"
            for number in RESULT_LIKE.findall(_text(q)):
                assert number in known, f"quiz {nb} Q{i + 1}: {number} is not recomputed by this test"


def test_the_bf16_threshold_the_quiz_states_is_the_one_course_lib_enforces():
    import inspect

    from course_lib import hardware

    assert "capability >= 8.0" in quiz.questions("07")[1].reasons[0]
    assert "needs >= 8.0" in inspect.getsource(hardware.compute_dtype)


def test_what_quiz_10_says_about_the_peak_and_the_position_limit_is_what_course_lib_predicts():
    from course_lib import memory

    c8, c7 = models.synthetic_config("llama-3.1-8b"), models.synthetic_config("llama-2-7b")
    t4 = memory.usable_bytes("T4")
    q = quiz.questions("10")[7]
    assert "'attention backward'" in q.why and "six techniques" in q.prompt and len(longctx.TECHNIQUES) == 6
    longest = {name: longctx.predicted_longest(c8, t, prep=prep, available=t4) for name, prep, t in longctx.STEPS}
    final = longest[longctx.STEPS[-1][0]]
    measured = next(int(r["seq_len"]) for r in resources.measurements("long_context.csv")
                    if r["step"] == longctx.STEPS[-1][0] and r["kind"] == "longest" and r["shape"] == "llama-3.1-8b")
    assert 65_000 <= min(final, measured) and max(final, measured) < 80_000  # "the 70,000 tokens or so"
    for n in (final, measured):
        est = longctx.predict_peak(c8, longctx.TECHNIQUES, n)
        assert est.peak_phase == "backward of the last decoder layer" and est.details["layer_moment"] == \
            "attention backward"
    tiled = longctx.predict_peak(c8, longctx.TECHNIQUES[:5], longest["+ tiled mlp"])
    assert tiled.details["layer_moment"] == "norm backward"  # "That was the peak with the MLP tiled"
    without_tiles = longctx.predict_peak(c8, longctx.TECHNIQUES[:4], longest["+ no lora dropout"])
    assert without_tiles.details["layer_moment"] == "MLP backward"  # "the peak without the tiled MLP"
    # the kernel question: what t4_emulation.csv recorded under the emulation
    kernels = {r["what"]: r["attention"] for r in resources.measurements("t4_emulation.csv")
               if r["kind"] == "kernel" and r["note"] == "T4 emulation"}
    assert kernels == {"transformers' sdpa (enable_gqa)": "math", "repeat_kv": "efficient"}
    assert quiz.questions("10")[9].answer == 2 and "math kernel" in quiz.questions("10")[9].options[2]
    # Llama-2-7B: every step fits its whole position limit, so the search stops there
    assert all(longctx.predicted_longest(c7, t, prep=prep, available=t4) == c7.max_position_embeddings
               for _, prep, t in longctx.STEPS)
    rows = [r for r in resources.measurements("long_context.csv") if r["shape"] == "llama-2-7b" and r["kind"] == "longest"]
    assert {int(r["seq_len"]) for r in rows} == {c7.max_position_embeddings} and all(r["fits"] == "True" for r in rows)
    assert [r["step"] for r in rows] == [name for name, _, _ in longctx.STEPS[:len(rows)]]
    last = dict((name, t) for name, _, t in longctx.STEPS)[rows[-1]["step"]]
    assert len(last) == 5 and rows[-1]["kernels"].startswith("T4")  # 'five of the techniques', 'under the emulation'
    assert "all six" in quiz.questions("10")[8].reasons[0] and len(longctx.TECHNIQUES) == 6
