"""LoRA from scratch: a frozen linear layer plus a trainable low-rank update, W' = W + (alpha/r)·B·A.

``LoRALinear`` wraps one ``nn.Linear`` (or GPT-2's ``Conv1D``, or a bitsandbytes ``Linear4bit``, which is an
``nn.Linear``) and ``inject_lora`` swaps it into a model by name, the way PEFT does. The parameter names, the
initialisation and the scaling follow PEFT's ``lora.Linear``, so the two can be compared weight for weight
(``lora_weights`` / ``load_lora_weights``).
"""

from __future__ import annotations

import math
import numbers
import re
from collections import defaultdict

import torch
from torch import nn


def _conv1d_class():
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # transformers is a dependency, but keep the module importable without it
        return None
    return Conv1D


def is_linear(module: nn.Module) -> bool:
    """True for the layers LoRA can wrap: ``nn.Linear`` (bitsandbytes' 4-bit layers included) and GPT-2's ``Conv1D``."""
    conv1d = _conv1d_class()
    return isinstance(module, nn.Linear) or (conv1d is not None and isinstance(module, conv1d))


def linear_shape(module: nn.Module) -> tuple[int, int, bool]:
    """``(in_features, out_features, fan_in_fan_out)`` of a linear layer.

    GPT-2's ``Conv1D`` stores its weight as (in, out), the transpose of ``nn.Linear``'s (out, in): PEFT calls
    that layout ``fan_in_fan_out`` and so do we.
    """
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, False
    if is_linear(module):  # Conv1D
        d_in, d_out = module.weight.shape
        return d_in, d_out, True
    raise TypeError(
        f"LoRA here wraps linear layers only (nn.Linear, transformers' Conv1D, bitsandbytes Linear4bit), "
        f"got {type(module).__name__}. Target the projections inside it instead (see model.named_modules())."
    )


def check_hyperparameters(r, alpha, dropout) -> None:
    if isinstance(r, bool) or not isinstance(r, numbers.Integral):
        raise TypeError(f"r (the rank) must be a whole number such as 8, got {r!r} ({type(r).__name__}).")
    if r < 1:
        raise ValueError(f"r (the rank) must be at least 1, got {r}. Typical values: 4, 8, 16, 64.")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number (the update is scaled by alpha/r), got {alpha!r}. "
                         "A common choice is alpha = 2*r, e.g. alpha=16 for r=8.")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}. Use 0.0 for none, 0.05 or 0.1 typically.")


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable rank-``r`` update: ``y = base(x) + scaling · B(A(dropout(x)))``.

    ``lora_A`` maps ``in_features -> r`` and ``lora_B`` maps ``r -> out_features``. As in PEFT, A starts
    Kaiming-uniform and B starts at zero, so B·A = 0 and the wrapped layer starts out identical to the base.
    ``scaling`` is ``alpha / r`` (or ``alpha / sqrt(r)`` with ``use_rslora``).
    """

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False):
        super().__init__()
        if isinstance(base, LoRALinear):
            raise TypeError("this layer already has LoRA; wrap its .base_layer, or unwrap it first.")
        in_features, out_features, self.fan_in_fan_out = linear_shape(base)
        check_hyperparameters(r, alpha, dropout)
        self.base_layer = base.requires_grad_(False)  # frozen: W never changes during training
        self.r, self.alpha, self.use_rslora = int(r), alpha, use_rslora
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Adapters live where the base weight lives; a 4-bit base (uint8 storage) gets fp32 adapters.
        weight = base.weight
        dtype = weight.dtype if weight.dtype.is_floating_point else torch.float32
        self.lora_A = nn.Linear(in_features, r, bias=False, device=weight.device, dtype=dtype)
        self.lora_B = nn.Linear(r, out_features, bias=False, device=weight.device, dtype=dtype)
        self.merged = False
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """PEFT's default init: A like a fresh ``nn.Linear`` (Kaiming-uniform, a=sqrt(5)), B zeros."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.merged:  # the update is already inside W
            return result
        update = self.lora_B(self.lora_A(self.dropout(x.to(self.lora_A.weight.dtype))))
        return result + (update * self.scaling).to(result.dtype)

    def delta_weight(self) -> torch.Tensor:
        """``scaling · B @ A``, laid out like the base weight (transposed for Conv1D)."""
        delta = (self.lora_B.weight @ self.lora_A.weight) * self.scaling
        return delta.T if self.fan_in_fan_out else delta

    def _check_mergeable(self) -> None:
        if not self.base_layer.weight.dtype.is_floating_point:
            raise TypeError(
                f"cannot merge into a {self.base_layer.weight.dtype} (quantized) base weight: the sum would have "
                "to be re-quantized, losing the update. Keep the adapter separate, or dequantize the model first."
            )

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight, W <- W + scaling·BA, so inference is one matmul again."""
        if self.merged:
            raise RuntimeError("this LoRA layer is already merged; merging twice would add B·A twice. "
                               "Call unmerge() first, or check .merged.")
        self._check_mergeable()
        weight = self.base_layer.weight
        weight += self.delta_weight().to(weight.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update back out of the base weight (exact up to float rounding)."""
        if not self.merged:
            raise RuntimeError("this LoRA layer is not merged, so there is nothing to unmerge; call merge() first.")
        weight = self.base_layer.weight
        weight -= self.delta_weight().to(weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:.4g}, merged={self.merged}"


# ----------------------------------------------------------------------------------------- finding target layers
ALL_LINEAR = "all-linear"


def linear_layer_names(model: nn.Module) -> list[str]:
    """Names of the layers LoRA could wrap (layers already inside a ``LoRALinear`` are not listed again)."""
    inside_lora = {f"{name}.{sub}" for name, m in model.named_modules() if isinstance(m, LoRALinear)
                   for sub, _ in m.named_modules() if sub}
    return [name for name, m in model.named_modules()
            if (is_linear(m) or isinstance(m, LoRALinear)) and name not in inside_lora]


def output_head_name(model: nn.Module) -> str | None:
    """The output head PEFT leaves out of "all-linear" (the lm_head of a causal LM); None when there is none."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return next((name for name, m in model.named_modules() if m is head), None) if head is not None else None


def group_by_suffix(names: list[str]) -> dict[str, list[str]]:
    """``{"q_proj": ["model.layers.0.self_attn.q_proj", ...], ...}``: the last name part is what configs target."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in names:
        groups[name.rsplit(".", 1)[-1]].append(name)
    return dict(groups)


def describe_linear_layers(model: nn.Module) -> str:
    """One line per suffix: how many linear layers carry it and one full name, e.g. for error messages."""
    lines = [f"  {suffix!r}: {len(full)} layer(s), e.g. {full[0]}"
             for suffix, full in group_by_suffix(linear_layer_names(model)).items()]
    return "\n".join(lines) or "  (none: this model has no nn.Linear or Conv1D layers)"


def _matches(name: str, target_modules) -> bool:
    if isinstance(target_modules, str):  # a regular expression over the full name, as in PEFT
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)  # name suffixes


def find_targets(model: nn.Module, target_modules) -> list[str]:
    """The names of the linear layers that ``target_modules`` selects, with PEFT's matching rules.

    ``target_modules`` is a list of name suffixes (``["q_proj", "v_proj"]``), a regular expression matched
    against the full name (``r".*\\.(q|v)_proj"``) or ``"all-linear"`` (every linear layer but the output head).
    """
    if isinstance(target_modules, str) and target_modules.lower() == ALL_LINEAR:
        head = output_head_name(model)
        names = [n for n in linear_layer_names(model) if n != head]
    else:
        if isinstance(target_modules, str):
            try:
                re.compile(target_modules)
            except re.error as exc:
                raise ValueError(f"target_modules {target_modules!r} is not a valid regular expression ({exc}). "
                                 "Pass a list of names such as ['q_proj', 'v_proj'] instead.") from exc
        elif (not isinstance(target_modules, (list, tuple, set, frozenset)) or not target_modules
              or not all(isinstance(t, str) for t in target_modules)):
            raise TypeError(f"target_modules must be a non-empty list of module names, a regex string or "
                            f"'all-linear', got {target_modules!r}.")
        names = [n for n, _ in model.named_modules() if n and _matches(n, target_modules)]
        candidates = set(linear_layer_names(model))
        not_linear = [n for n in names if n not in candidates]
        if not_linear:
            raise ValueError(
                f"target_modules {target_modules!r} selects modules that are not linear layers, e.g. "
                f"{not_linear[:3]}. LoRA wraps linear layers; the ones in this model are:\n"
                + describe_linear_layers(model))
    if not names:
        raise ValueError(f"target_modules {target_modules!r} matches no layer of this "
                         f"{type(model).__name__}. Its linear layers, by name suffix:\n" + describe_linear_layers(model))
    return names


def inject_lora(model: nn.Module, target_modules, r: int, alpha: float, dropout: float = 0.0,
                use_rslora: bool = False) -> list[str]:
    """Replace the selected linear layers of ``model`` by ``LoRALinear`` in place and freeze everything else.

    Returns the names of the replaced layers. Only the new ``lora_A`` / ``lora_B`` weights stay trainable.
    """
    check_hyperparameters(r, alpha, dropout)  # fail before touching the model
    names = find_targets(model, target_modules)
    already = [n for n in names if isinstance(model.get_submodule(n), LoRALinear)]
    if already:
        raise ValueError(f"{len(already)} selected layer(s) already have LoRA, e.g. {already[0]}; "
                         "inject into a fresh model.")
    model.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout, use_rslora))
    return names


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_all(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_all(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.unmerge()


# ------------------------------------------------------------------------------ moving weights to and from PEFT
def _peft_key(name: str) -> str:
    return name.removeprefix("base_model.model.")


def lora_weights(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer name: (A, B)}`` from a model with our ``LoRALinear`` layers or from a PEFT model (adapter
    "default"), with the same names for both, so adapters can be compared or copied between them."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear):
            out[name] = (m.lora_A.weight, m.lora_B.weight)
        elif isinstance(getattr(m, "lora_A", None), nn.ModuleDict) and "default" in m.lora_A:
            out[_peft_key(name)] = (m.lora_A["default"].weight, m.lora_B["default"].weight)
    return out


@torch.no_grad()
def load_lora_weights(model: nn.Module, weights: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Copy ``(A, B)`` pairs (from ``lora_weights`` of another model) into ``model``'s LoRA layers."""
    own = lora_weights(model)
    if set(own) != set(weights):
        missing, extra = sorted(set(weights) - set(own)), sorted(set(own) - set(weights))
        raise KeyError(f"LoRA layers differ: only in the source {missing[:3]}, only in the target {extra[:3]}.")
    for name, (A, B) in weights.items():
        own[name][0].copy_(A)
        own[name][1].copy_(B)


@torch.no_grad()
def randomize_lora_B(model: nn.Module, std: float = 0.02, seed: int = 0) -> None:
    """Give every B a random value (it starts at zero, which would make any comparison trivially pass)."""
    g = torch.Generator().manual_seed(seed)
    for _, B in lora_weights(model).values():
        B.copy_(torch.randn(B.shape, generator=g) * std)
