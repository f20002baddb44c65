"""Checkers for notebook 02 (LoRA from scratch)."""

from __future__ import annotations

import copy
import types

import torch
from torch import nn

from .core import _call, call_own, check_close, checker, fail, passed


def _course_lora():
    """LoRALinear's own forward, merge and update: what the two exercises ask the student to write."""
    from course_lib.lora import LoRALinear, merge_all

    return (LoRALinear.forward, LoRALinear.merge, LoRALinear.unmerge, LoRALinear.delta_weight, merge_all)


FROM_MATRICES = "the two matrices layer.lora_A.weight (r x d_in) and layer.lora_B.weight (d_out x r)"


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


@checker
def check_lora_forward(fn) -> None:
    """``fn(layer, x)`` must return ``layer.base_layer(x) + layer.scaling * B(A(dropout(x)))``; it is then
    plugged into every LoRA layer of a tiny Llama and compared with PEFT's output."""
    from course_lib import lora, models
    from course_lib.counting import peft_summary

    hints = ("a LoRA layer's output is the frozen layer's output plus a small correction: compute both parts.",
             "the correction goes down through A (d_in -> r), then up through B (r -> d_out); dropout acts on the "
             "input of A only, never on the frozen path.",
             "scale the correction by layer.scaling (alpha / r) before adding it to layer.base_layer(x).")
    x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(1))
    for what, layer in _layers().items():
        with torch.no_grad():
            expected = layer(x)  # the course's forward, run here, before the student's
            got = call_own(fn, layer, x, name="lora_forward", forbidden=_course_lora(), hints=hints,
                           write_from=FROM_MATRICES + " and layer.base_layer")
            if not isinstance(got, torch.Tensor):
                fail(f"lora_forward returned {type(got).__name__}, expected a tensor", *hints)
            if torch.allclose(got, layer.base_layer(x), atol=1e-6):
                fail(f"on {what}, the output equals the base layer's: the LoRA update is missing", *hints)
            check_close(got, expected, what=f"lora_forward on {what}", hints=hints)

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
        theirs = peft_model(input_ids=ids).logits
        ours = call_own(lambda: model(input_ids=ids).logits, name="lora_forward", forbidden=_course_lora(),
                        hints=hints, write_from=FROM_MATRICES + " and layer.base_layer")
        check_close(ours, theirs, atol=1e-5, what="logits of a tiny Llama using your forward vs PEFT", hints=hints)
    passed("lora_forward matches LoRALinear on nn.Linear and Conv1D, and a tiny Llama using it matches PEFT.")


@checker
def check_lora_merge(fn) -> None:
    """``fn(layer)`` must add ``scaling · B @ A`` to ``layer.base_layer.weight`` in place (transposed for a
    Conv1D, whose weight is stored as (in, out)) and set ``layer.merged = True``."""
    hints = ("merging adds the adapter's whole update, a matrix of W's shape, to W once, so the forward pass no "
             "longer needs A and B; the layer must also remember that it is merged.",
             "the update is the product of the two adapter weights, in the order that maps d_in to d_out, times "
             "layer.scaling; an nn.Linear stores W as (d_out, d_in).",
             "GPT-2's Conv1D stores W as (d_in, d_out): check layer.fan_in_fan_out; edit the weight in place "
             "under torch.no_grad(), then set layer.merged = True.")
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))
    for what, layer in _layers(seed=1).items():
        reference = copy.deepcopy(layer)
        reference.merge()
        with torch.no_grad():
            before = layer(x)
        try:
            call_own(fn, layer, name="lora_merge", forbidden=_course_lora(), hints=hints, write_from=FROM_MATRICES)
        except RuntimeError as exc:  # typically a shape mismatch: the Conv1D weight is (in, out)
            fail(f"lora_merge raised on {what}: {exc}", *hints)
        if not layer.merged:
            fail(f"after lora_merge on {what}, layer.merged is still False", *hints)
        check_close(layer.base_layer.weight.detach(), reference.base_layer.weight.detach(), atol=1e-6,
                    what=f"merged weight of {what}", hints=hints)
        with torch.no_grad():
            check_close(layer.base_layer(x), before, atol=1e-5, what=f"output of {what} after merging",
                        hints=("merging must not change what the layer computes: did the update go in "
                               "twice, or with the wrong scale?",) + hints[1:])
    passed("lora_merge folds scaling·BA into W for nn.Linear and Conv1D; outputs unchanged.")


@checker
def check_first_gradients(predict, lora_forward) -> None:
    """``predict()`` -> (A's gradient is zero, B's gradient is zero) on the first backward pass of a fresh LoRA
    layer (A random, B = 0), predicted before running; the checker runs it through ``lora_forward``."""
    from course_lib.lora import LoRALinear

    hints = ("write y = base(x) + scaling · B A x and ask, for each factor, what its gradient is multiplied by.",
             "the gradient of A goes through B (it is scaling · Bᵀ · (dL/dy) · xᵀ); the gradient of B goes through "
             "A x (scaling · (dL/dy) · (A x)ᵀ). Which of the two factors is zero at the start?")
    got = _call(predict, name="predict_zero_gradients")
    if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(v, bool) for v in got)):
        fail(f"predict_zero_gradients() returned {got!r}",
             "return two booleans: (A's gradient is exactly zero, B's gradient is exactly zero).")
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 12), r=4, alpha=8)
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(4))
    y = call_own(lora_forward, layer, x, name="lora_forward", forbidden=_course_lora(),
                 write_from=FROM_MATRICES + " and layer.base_layer")
    y.pow(2).sum().backward()
    grads = (layer.lora_A.weight.grad, layer.lora_B.weight.grad)
    if any(g is None for g in grads):
        fail("after a backward pass through your lora_forward, A or B has no gradient at all",
             "lora_forward must use layer.lora_A.weight and layer.lora_B.weight themselves (not detached copies), "
             "so that autograd reaches them.")
    measured = tuple(bool((g == 0).all()) for g in grads)
    if tuple(got) != measured:
        said = ", ".join(f"{n}'s gradient {'zero' if z else 'non-zero'}" for n, z in zip("AB", got, strict=True))
        fail(f"you predicted {said}; the backward pass through your forward gave "
             f"|grad A| = {grads[0].norm():.3g} and |grad B| = {grads[1].norm():.3g}", *hints)
    passed(f"right: on the first step A's gradient is 0 (it passes through B = 0) and B's is not "
           f"(|grad B| = {grads[1].norm():.3g}): B moves first, then A follows. That is why B, not A, starts at zero.")
