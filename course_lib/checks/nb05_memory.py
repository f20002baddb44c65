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
