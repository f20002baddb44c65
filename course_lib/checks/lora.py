"""Checkers for notebooks 02 (LoRA from scratch) and 03 (counting LoRA parameters)."""

from __future__ import annotations

import copy
import types
import warnings

import torch
from torch import nn

from .core import _call, check_close, fail, passed


def _layers(seed: int = 0):
    """A LoRALinear around an nn.Linear and one around GPT-2's Conv1D, with a non-zero B (B=0 hides bugs)."""
    from transformers.pytorch_utils import Conv1D

    from course_lib.lora import LoRALinear

    torch.manual_seed(seed)
    layers = {"nn.Linear(16 -> 12)": LoRALinear(nn.Linear(16, 12), r=4, alpha=8),
              "Conv1D(16 -> 12) (GPT-2, weight stored transposed)": LoRALinear(Conv1D(12, 16), r=4, alpha=8)}
    for layer in layers.values():
        nn.init.normal_(layer.base_layer.weight, std=0.2)
        nn.init.normal_(layer.lora_B.weight, std=0.5)
    return layers


def check_lora_forward(fn) -> None:
    """``fn(layer, x)`` must return ``layer.base_layer(x) + layer.scaling * B(A(dropout(x)))``; it is then
    plugged into every LoRA layer of a tiny Llama and compared with PEFT's output."""
    from course_lib import lora, models
    from course_lib.counting import peft_summary

    hint = ("start from layer.base_layer(x), then add layer.lora_B(layer.lora_A(layer.dropout(x))) "
            "multiplied by layer.scaling (alpha / r).")
    x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(1))
    for what, layer in _layers().items():
        with torch.no_grad():
            got = _call(fn, layer, x, name="lora_forward")
            if not isinstance(got, torch.Tensor):
                fail(f"lora_forward returned {type(got).__name__}, expected a tensor", hint)
            if torch.allclose(got, layer.base_layer(x), atol=1e-6):
                fail(f"on {what}, the output equals the base layer's: the LoRA update is missing", hint)
            check_close(got, layer(x), what=f"lora_forward on {what}", hint=hint)

    # Plug the student's forward into a whole model and compare with PEFT holding the same A and B.
    model = models.tiny_model("llama")
    reference = copy.deepcopy(model)
    lora.inject_lora(model, ["q_proj", "v_proj"], r=4, alpha=8)
    lora.randomize_lora_B(model, std=0.1)
    peft_model, _ = peft_summary(reference, ["q_proj", "v_proj"], r=4, alpha=8)
    lora.load_lora_weights(peft_model, lora.lora_weights(model))
    for layer in lora.lora_layers(model).values():
        layer.forward = types.MethodType(fn, layer)
    ids = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        check_close(model(input_ids=ids).logits, peft_model(input_ids=ids).logits, atol=1e-5,
                    what="logits of a tiny Llama using your forward vs PEFT", hint=hint)
    passed("lora_forward matches LoRALinear on nn.Linear and Conv1D, and a tiny Llama using it matches PEFT.")


def check_lora_merge(fn) -> None:
    """``fn(layer)`` must add ``scaling · B @ A`` to ``layer.base_layer.weight`` in place (transposed for a
    Conv1D, whose weight is stored as (in, out)) and set ``layer.merged = True``."""
    hint = ("inside torch.no_grad(): delta = (layer.lora_B.weight @ layer.lora_A.weight) * layer.scaling; "
            "transpose it when layer.fan_in_fan_out is True (Conv1D); add it to layer.base_layer.weight in place; "
            "then set layer.merged = True.")
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))
    for what, layer in _layers(seed=1).items():
        reference = copy.deepcopy(layer)
        reference.merge()
        with torch.no_grad():
            before = layer(x)
        try:
            _call(fn, layer, name="lora_merge")
        except RuntimeError as exc:  # typically a shape mismatch: the Conv1D weight is (in, out)
            fail(f"lora_merge raised on {what}: {exc}", hint)
        if not layer.merged:
            fail(f"after lora_merge on {what}, layer.merged is still False", hint)
        check_close(layer.base_layer.weight.detach(), reference.base_layer.weight.detach(), atol=1e-6,
                    what=f"merged weight of {what}", hint=hint)
        with torch.no_grad():
            check_close(layer(x), before, atol=1e-5, what=f"output of {what} after merging",
                        hint="merging must not change what the layer computes.")
    passed("lora_merge folds scaling·BA into W for nn.Linear and Conv1D; outputs unchanged.")


def check_gpt2_counts(fn) -> None:
    """``fn(r)`` must return the trainable parameter count of GPT-2 (defaults, meta device) with LoRA of rank r
    on ``c_attn``."""
    from transformers import GPT2Config

    from course_lib import counting

    gpt2 = counting.meta_model(GPT2Config())
    for r in (4, 8, 16, 32):
        got = _call(fn, r, name="gpt2_lora_trainable")
        expected = counting.lora_param_count(gpt2, ["c_attn"], r)
        if got == counting.lora_param_count(gpt2, "all-linear", r):
            fail(f"r={r}: {got:,} is the count for all linear layers",
                 "this exercise targets c_attn only: target_modules=['c_attn'].")
        if got != expected:
            fail(f"r={r}: got {got!r}, expected {expected:,}",
                 "build a fresh meta GPT-2 for each r, inject LoRA on ['c_attn'] and count with "
                 "counting.trainable_summary(model)[0].")
    passed("GPT-2 c_attn counts are right for r = 4, 8, 16, 32 (r=8: "
           f"{counting.lora_param_count(gpt2, ['c_attn'], 8):,}).")


def check_predict_qv_count(fn) -> None:
    """``fn(config, r)`` must predict, from a ``LlamaConfig`` alone, the LoRA parameters of q_proj + v_proj."""
    from course_lib import counting, models

    hint = ("per layer q_proj is hidden -> num_attention_heads*head_dim and v_proj is hidden -> "
            "num_key_value_heads*head_dim (grouped-query attention makes v_proj narrower); each adds "
            "r*(d_in + d_out); multiply by num_hidden_layers.")
    shapes = ["smollm2-135m", "llama-3.2-1b", "llama-2-7b", "llama-3-8b", "llama-2-70b"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for shape in shapes:
            config = models.synthetic_config(shape)
            model = counting.meta_model(config)
            for r in (8, 16):
                got = _call(fn, config, r, name="predict_qv_count")
                expected = counting.lora_param_count(model, ["q_proj", "v_proj"], r)
                if got != expected:
                    fail(f"{shape} at r={r}: predicted {got!r}, lora_param_count says {expected:,}", hint)
    passed(f"your formula is exact on {len(shapes)} Llama shapes (135M to 70B) at r = 8 and 16.")
