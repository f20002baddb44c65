"""Counting LoRA parameters: r·(d_in + d_out) per targeted layer, from shapes alone.

Everything here reads shapes, never weights, so it works on models built on the ``meta`` device from a config:
Llama-2-7B or 70B count in milliseconds without a byte of weights. ``trainable_summary`` reproduces PEFT's
``get_nb_trainable_parameters`` (what ``print_trainable_parameters`` prints), 4-bit weights included.
"""

from __future__ import annotations

import torch
from torch import nn

from course_lib import lora


def meta_model(config, auto_class=None) -> nn.Module:
    """A model built from ``config`` on the ``meta`` device: every shape, no weights, built in milliseconds.
    ``auto_class`` defaults to ``AutoModelForCausalLM`` (pass ``AutoModel`` for an encoder such as BERT)."""
    if auto_class is None:
        from transformers import AutoModelForCausalLM as auto_class
    with torch.device("meta"):
        return auto_class.from_config(config)


def layer_lora_params(d_in: int, d_out: int, r: int) -> int:
    """Trainable numbers LoRA adds to one ``d_in -> d_out`` layer: A is r x d_in, B is d_out x r."""
    lora.check_hyperparameters(r, 1.0, 0.0)
    return r * (d_in + d_out)


def _shape(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, lora.LoRALinear):
        module = module.base_layer
    d_in, d_out, _ = lora.linear_shape(module)
    return d_in, d_out


def lora_param_count(model: nn.Module, target_modules, r: int) -> int:
    """The exact number of trainable LoRA parameters ``target_modules`` at rank ``r`` would add to ``model``,
    without modifying it (same matching rules as ``inject_lora`` and PEFT)."""
    return sum(layer_lora_params(*_shape(model.get_submodule(name)), r) for name in lora.find_targets(model, target_modules))


def _numel(param) -> int:
    # bitsandbytes packs two 4-bit values per byte of a Params4bit tensor, so numel() is half the real count
    # (for uint8 storage). PEFT undoes that with numel * 2 * bytes-per-storage-element; so do we.
    n = param.numel()
    if type(param).__name__ == "Params4bit":
        n *= 2 * param.element_size()
    return n


def trainable_summary(model: nn.Module) -> tuple[int, int, float]:
    """``(trainable, total, percent)`` with PEFT's semantics (``get_nb_trainable_parameters``): every parameter
    once (tied weights are shared), 4-bit ``Params4bit`` weights counted as the values they hold."""
    trainable = total = 0
    for param in model.parameters():  # parameters() yields a tied weight only once, like PEFT's named_parameters()
        n = _numel(param)
        total += n
        trainable += n if param.requires_grad else 0
    return trainable, total, 100 * trainable / total if total else 0.0


def stored_elements(model: nn.Module) -> int:
    """Sum of ``numel()`` as stored, ignoring 4-bit packing: a 4-bit weight counts half its values."""
    return sum(p.numel() for p in model.parameters())


def stored_elements_if_4bit(model: nn.Module) -> int:
    """What ``stored_elements`` would say after loading ``model`` in 4-bit with bitsandbytes (transformers
    quantizes every linear weight but the output head; two 4-bit values share a byte). Shapes only: works on
    ``meta`` models, e.g. to check a 4-bit claim about Llama-2-7B without loading it."""
    head = lora.output_head_name(model)
    head_weight = model.get_submodule(head).weight if head else None
    halved = {id(m.weight) for m in model.modules() if lora.is_linear(m) and m.weight is not head_weight}
    return sum(p.numel() // 2 if id(p) in halved else p.numel() for p in model.parameters())


def format_summary(trainable: int, total: int, percent: float) -> str:
    """PEFT's ``print_trainable_parameters`` line, so ours and theirs can be compared as text."""
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {percent:.4f}"


def rank_sweep(model: nn.Module, ranks, target_modules) -> list[dict]:
    """One row per rank: ``{"r", "trainable", "total", "percent"}``, where ``total`` is the model plus the
    adapters and ``percent`` is what PEFT would print as trainable%. The model is not modified."""
    _, base_total, _ = trainable_summary(model)
    per_rank_one = lora_param_count(model, target_modules, 1)  # the count is linear in r
    rows = []
    for r in ranks:
        lora.check_hyperparameters(r, 1.0, 0.0)
        trainable = r * per_rank_one
        total = base_total + trainable
        rows.append({"r": r, "trainable": trainable, "total": total, "percent": 100 * trainable / total})
    return rows


def format_table(rows: list[dict], percent_digits: int = 4) -> str:
    """A fixed-width text table of ``rank_sweep`` rows (deterministic, for printing in notebooks)."""
    lines = [f"{'r':>5}  {'trainable':>14}  {'all params':>16}  {'trainable%':>10}"]
    for row in rows:
        lines.append(f"{row['r']:>5}  {row['trainable']:>14,d}  {row['total']:>16,d}  {row['percent']:>10.{percent_digits}f}")
    return "\n".join(lines)


def peft_summary(model: nn.Module, target_modules, r: int, alpha: float | None = None, **lora_kwargs):
    """Apply PEFT's LoRA to ``model`` (IN PLACE: pass a fresh model) and return the PEFT model with its
    ``(trainable, total)`` from ``get_nb_trainable_parameters`` — the reference our counts are checked against."""
    import warnings

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r,
                        target_modules=target_modules, **lora_kwargs)
    with warnings.catch_warnings():  # GPT-2's Conv1D: PEFT warns and sets fan_in_fan_out=True by itself
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        warnings.filterwarnings("ignore", category=FutureWarning)  # transformers deprecations inside PEFT
        # On a meta model, let PEFT create its adapters on meta too: no CPU memory, no init time (70B at r=256).
        on_meta = all(p.device.type == "meta" for p in model.parameters())
        peft_model = get_peft_model(model, config, low_cpu_mem_usage=on_meta)
    return peft_model, peft_model.get_nb_trainable_parameters()


def check_claim(what: str, claimed: int | float, computed: int | float, digits: int = 4) -> str:
    """One line putting a number printed in widely shared tutorials beside the one computed here, and saying
    whether they agree (integers exactly, other numbers at ``digits`` decimals)."""
    fmt = (lambda v: f"{v:,d}") if isinstance(claimed, int) and isinstance(computed, int) else (lambda v: f"{v:.{digits}f}")
    same = claimed == computed if isinstance(claimed, int) else round(claimed, digits) == round(computed, digits)
    return f"{what}: printed {fmt(claimed)}, computed {fmt(computed)} -> {'agrees' if same else 'does NOT agree'}"
