"""Checkers for notebook 05 (memory budgets)."""

from __future__ import annotations

from .core import _call, checker, fail, passed


@checker
def check_lora_memory(fn) -> None:
    """``fn(params, adapter_params)`` -> static bytes of LoRA in bf16 with fp32 adapters trained by AdamW."""
    cases = [(6_738_415_616, 4_194_304), (1_235_814_400, 851_968), (1000, 10)]
    for params, adapters in cases:
        got = _call(fn, params, adapters, name="lora_static_bytes")
        want = 2 * params + 16 * adapters
        if int(got) != want:
            fail(f"lora_static_bytes({params:,}, {adapters:,}) = {got!r}: off by {int(got) - want:+,} bytes"
                 + (f" (a factor {int(got) / want:.3g})" if int(got) else ""),
                 "two kinds of parameter: the frozen base weights (stored in bf16, nothing else) and the trainable "
                 "adapters (fp32, trained by AdamW).",
                 "a frozen weight needs only its value; a trainable one also needs its gradient and AdamW's state.",
                 "bf16 is 2 bytes, fp32 is 4; AdamW keeps two moments per trainable parameter, each in fp32.")
    passed("lora_static_bytes is right: 2 bytes per frozen weight + 16 per trainable adapter parameter.")


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
            got = _call(fn, batch, seq, config.vocab_size, name="logits_bytes")
            want = est.logits
            if abs(float(got) - want) > 1e-6 * want:
                per = float(got) / (batch * seq * config.vocab_size)
                fail(f"{shape} at batch {batch} x {seq} tokens (vocabulary {config.vocab_size:,}): you say "
                     f"{float(got) / 1e9:.3f} GB, {per:.3g} bytes per token per vocabulary entry",
                     "the logits are one number per token per vocabulary entry: count them first.",
                     "at the loss several tensors of that size are alive at once, all in fp32 (4 bytes): look at "
                     "how notebook 05 describes the logits.",
                     "three of them: the log-softmax output, the gradient the loss hands back, and the log-softmax "
                     "gradient.")
    passed("logits_bytes matches the estimator for SmolLM2, Llama-3.2-1B and Llama-2-7B at 512 to 8,192 tokens.")
