"""Checkers for notebook 05 (memory budgets). An answer that calls the course's memory model (``core.call_own``
watches for it) is refused: the exercise is to write the arithmetic, not to call ``course_lib.memory``."""

from __future__ import annotations

from .core import _call, call_own, checker, fail, passed

LEDGER_CASES = [  # (parameters, method, trainable adapter parameters, full fine-tuning recipe)
    (1_235_814_400, "full", 0, "mixed"), (1_235_814_400, "full", 0, "pure"), (1_235_814_400, "lora", 851_968, "mixed"),
    (1_235_814_400, "qlora", 851_968, "mixed"), (6_738_415_616, "lora", 4_194_304, "mixed"),
    (6_738_415_616, "qlora", 4_194_304, "mixed"), (1000, "lora", 10, "mixed"),
]


def _course_memory_model():
    from course_lib import memory

    return (memory.bytes_per_param, memory.estimate_training_memory, memory.estimate_per_gpu_memory)


_OWN_HINTS = ("this exercise is the arithmetic itself: the checker refuses an answer that asks course_lib.memory "
              "for it, since it would only compare the course's model with itself.",
              "write the arithmetic with numbers and the arguments only; compare your result with "
              "course_lib.memory in the cell after the check, as the notebook does.")


def expected_state_bytes(n_params: int, method: str, n_adapter: int = 0, full_recipe: str = "mixed") -> float:
    """The ledger the checker expects: ``memory.bytes_per_param`` per base parameter, 16 bytes per fp32 adapter
    parameter trained by AdamW."""
    from course_lib import memory

    per_param = sum(memory.bytes_per_param(method, full_recipe=full_recipe).values())
    return per_param * n_params + (16 * n_adapter if method != "full" else 0)


@checker
def check_training_state_bytes(fn) -> None:
    """``fn(n_params, method, n_adapter, full_recipe)`` -> bytes of weights, gradients and AdamW state (no
    activations): "full" (``full_recipe`` "mixed" or "pure"), "lora", "qlora". Run with course_lib.memory off."""
    for n_params, method, n_adapter, recipe in LEDGER_CASES:
        want = expected_state_bytes(n_params, method, n_adapter, recipe)
        got = call_own(fn, n_params, method, n_adapter, recipe, forbidden=_course_memory_model(),
                       name="training_state_bytes",
                       write_from="the bytes per parameter of each part (weight, gradient, AdamW's two moments) "
                                  "times the number of parameters that have that part",
                       hints=_OWN_HINTS)
        try:
            got = float(got)
        except (TypeError, ValueError):
            fail(f"training_state_bytes returned {got!r}", "return a number of bytes (an int or a float).")
        if abs(got - want) > 1e-3 * want:
            what = f"{method}" + (f" ({recipe})" if method == "full" else f" with {n_adapter:,} adapter parameters")
            fail(f"{what} on {n_params:,} parameters: you say {got / 1e9:.3f} GB, {got / n_params:.3f} bytes per "
                 f"base parameter",
                 {"full": "full fine-tuning stores, for every parameter, the weight, its gradient and AdamW's two "
                          "moments: four numbers. Which dtype is each in?",
                  "lora": "two kinds of parameter: the frozen base weights (16-bit, nothing else) and the trainable "
                          "adapters (fp32, trained by AdamW).",
                  "qlora": "as LoRA, but the frozen base weights are stored in 4-bit NF4: how many bits per weight, "
                           "block scales included (notebook 04)?"}[method],
                 "mixed precision keeps the parameters (the master weights), gradients and moments in fp32: "
                 "4 bytes each. Pure bf16 keeps all of them in bf16: 2 bytes each. A frozen weight has no gradient "
                 "and no moments.",
                 "NF4 with double quantization costs nf4.bits_per_param(64, True) bits (4.127) per weight; an fp32 "
                 "adapter parameter trained by AdamW costs 4 + 4 + 8 bytes.")
    passed("training_state_bytes is right for full fine-tuning (both recipes), LoRA and QLoRA, without calling "
           "course_lib.memory.")


@checker
def check_fit_prediction(fn) -> None:
    """``fn()`` -> {(method, tokens): bool}: the student's prediction, made from their ledger before the estimator
    is run, of whether each method fits a T4. Any well-formed prediction passes; the cell after it grades it."""
    got = _call(fn, name="predict_t4_fits")
    keys = {(m, t) for m in ("full", "lora", "qlora") for t in (512, 8192)}
    if not isinstance(got, dict) or set(got) != keys or not all(isinstance(v, bool) for v in got.values()):
        fail(f"predict_t4_fits returned {got!r}",
             "return a dict with one True/False per (method, tokens) pair: "
             + ", ".join(f"({m!r}, {t})" for m, t in sorted(keys)) + ".",
             "decide each pair from your ledger: its bytes against what a T4 gives a run "
             "(memory.usable_bytes('T4')); the next cell tells you which predictions held.")
    passed("prediction recorded: " + ", ".join(f"{m} at {t:,} tokens {'fits' if got[(m, t)] else 'does not fit'}"
                                               for m, t in sorted(keys)) + ". The next cell checks it.")


@checker
def check_logits_bytes(fn) -> None:
    """``fn(batch_size, seq_len, vocab_size)`` -> bytes alive for the logits at the loss of a LoRA training step, as
    ``memory.estimate_training_memory`` counts them (its ``logits`` part when the peak is the loss)."""
    from course_lib import memory, models

    for shape in ("smollm2-135m", "llama-3.2-1b", "llama-2-7b"):
        config = models.synthetic_config(shape)
        for batch, seq in ((1, 512), (4, 512), (8, 1024)):
            est = memory.estimate_training_memory(config, "lora", batch_size=batch, seq_len=seq)
            if not est.peak_phase.startswith("loss"):
                continue  # the logits part is only reported when the loss is the peak
            got = call_own(fn, batch, seq, config.vocab_size, forbidden=_course_memory_model(), name="logits_bytes",
                           write_from="the number of logits (one per token per vocabulary entry) times the bytes "
                                      "alive for each at the loss", hints=_OWN_HINTS)
            want = est.logits
            if abs(float(got) - want) > 1e-6 * want:
                per = float(got) / (batch * seq * config.vocab_size)
                fail(f"{shape} at batch {batch} x {seq} tokens (vocabulary {config.vocab_size:,}): you say "
                     f"{float(got) / 1e9:.3f} GB, {per:.3g} bytes per token per vocabulary entry",
                     "the logits are one number per token per vocabulary entry: count them first.",
                     "at the loss several tensors of that size are alive at once, all in fp32 (4 bytes): look at "
                     "how notebook 05 describes the loss, and at what it measured on the CPU.",
                     "three of them: the log-softmax output, the gradient the loss hands back, and the log-softmax "
                     "gradient.")
    passed("logits_bytes matches the estimator for SmolLM2, Llama-3.2-1B and Llama-2-7B at 512 to 8,192 tokens.")
