"""Checkers for notebook 03 (counting LoRA parameters)."""

from __future__ import annotations

import warnings

from .core import call_own, checker, fail, passed


def _course_counts():
    """The course's own counting from shapes: what the exercises ask the student to do with their hands."""
    from course_lib import counting, memory

    return (counting.lora_param_count, counting.rank_sweep, counting.peft_summary, counting.layer_lora_params,
            memory.estimate_training_memory)


@checker
def check_gpt2_counts(fn) -> None:
    """``fn(r)`` must return the trainable parameter count of GPT-2 (defaults, meta device) with LoRA of rank r
    on ``c_attn``."""
    from transformers import GPT2Config

    from course_lib import counting

    gpt2 = counting.meta_model(GPT2Config())
    for r in (4, 8, 16, 32):
        got = call_own(fn, r, name="gpt2_lora_trainable", forbidden=_course_counts(),
                       write_from="a meta GPT-2, lora.inject_lora and counting.trainable_summary (what the "
                                  "exercise says), not from the course's count of the same thing")
        expected = counting.lora_param_count(gpt2, ["c_attn"], r)
        if got == counting.lora_param_count(gpt2, "all-linear", r):
            fail(f"r={r}: {got:,} is the count for all linear layers of GPT-2",
                 "this exercise puts LoRA on the fused attention projection only: look at the module names.")
        if got != expected:
            d, blocks = gpt2.config.n_embd, gpt2.config.n_layer
            per_layer = counting.layer_lora_params(d, 3 * d, r)
            fail(f"r={r}: got {got!r}, which is not the count PEFT trains",
                 f"GPT-2's attention projection c_attn maps {d} numbers to {3 * d} (q, k and v at once), and GPT-2 "
                 f"has {blocks} blocks; the count must grow in proportion to r.",
                 f"at r={r}, one c_attn adapter holds r·(d_in + d_out) = {per_layer:,} numbers; build the model on the "
                 "meta device, add LoRA on c_attn and count what is trainable (counting.trainable_summary).")
    passed("GPT-2 c_attn counts are right for r = 4, 8, 16, 32 (r=8: "
           f"{counting.lora_param_count(gpt2, ['c_attn'], 8):,}).")


@checker
def check_predict_qv_count(fn) -> None:
    """``fn(config, r)`` must predict, from a ``LlamaConfig`` alone, the LoRA parameters of q_proj + v_proj."""
    from course_lib import counting, memory, models

    hints = ("each adapted layer adds r·(d_in + d_out); read d_in and d_out of q_proj and v_proj off the config, "
             "and count every decoder layer.",
             "v_proj is narrower than q_proj when the model uses grouped-query attention: its output has "
             "num_key_value_heads heads, not num_attention_heads.",
             "head_dim = hidden_size // num_attention_heads (or config.head_dim when set); q_proj outputs "
             "num_attention_heads·head_dim, v_proj num_key_value_heads·head_dim; multiply by num_hidden_layers.")
    shapes = ["smollm2-135m", "llama-3.2-1b", "llama-2-7b", "llama-3-8b", "llama-2-70b"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for shape in shapes:
            config = models.synthetic_config(shape)
            model = counting.meta_model(config)
            for r in (8, 16):
                got = call_own(fn, config, r, name="predict_qv_count", hints=hints,
                               forbidden=(*_course_counts(), counting.trainable_summary, counting.meta_model,
                                          models.synthetic_model, memory.linear_shapes),
                               write_from="the config's numbers alone (hidden_size, num_hidden_layers, the head "
                                          "counts): a prediction, not a measurement")
                expected = counting.lora_param_count(model, ["q_proj", "v_proj"], r)
                if got != expected:
                    fail(f"{shape} at r={r}: predicted {got!r}, PEFT trains {expected:,}"
                         + (f" (off by a factor {expected / got:.3g})" if isinstance(got, int) and got else ""),
                         *hints)
    passed(f"your formula is exact on {len(shapes)} Llama shapes (135M to 70B) at r = 8 and 16.")
