"""Two LoRA initialisations that grow from earlier notebooks: PiSSA (notebook 01's SVD) and LoftQ (notebook 04's NF4).

Plain LoRA starts with B = 0, so the adapted model starts exactly at the base model and the update learns from
nothing. Both variants start the adapter somewhere useful instead:

* **PiSSA** puts the top-``r`` singular directions of W into the adapter, ``B A = U_r S_r V_rᵀ``, and freezes the
  residual ``W - B A``: the model is unchanged at step 0, but training moves W's principal part.
* **LoftQ** is for a quantized base: it chooses Q (a 4-bit weight) and B A together so that ``Q + B A ≈ W``,
  alternating "quantize what the adapter does not explain" and "fit the adapter to what quantization lost" (an SVD).
  Zero-init QLoRA starts at ``Q(W)``, with the whole quantization error; LoftQ starts closer to W.

The factor functions work on one weight matrix; ``apply`` writes them into a PEFT LoRA model in place, following
PEFT's conventions (``lora_A``: r x d_in, ``lora_B``: d_out x r, forward ``base(x) + scaling · B A x``). The tests
check them against PEFT's own ``init_lora_weights="pissa"`` and ``"loftq"``.
"""

from __future__ import annotations

import torch

from course_lib import nf4

METHODS = ("pissa", "loftq")


def _check(W: torch.Tensor, r: int) -> None:
    if W.dim() != 2:
        raise ValueError(f"expected a 2-D weight matrix (d_out x d_in), got shape {tuple(W.shape)}.")
    if not isinstance(r, int) or not 1 <= r <= min(W.shape):
        raise ValueError(f"rank r={r!r} must be an integer from 1 to min(d_out, d_in) = {min(W.shape)} for a weight "
                         f"of shape {tuple(W.shape)}: a rank-r factorisation has at most that many directions.")


def pissa_factors(W: torch.Tensor, r: int, scaling: float = 1.0):
    """(A, B, residual) with ``scaling · B @ A`` = the best rank-r part of W and ``residual + scaling · B A = W``."""
    _check(W, r)
    U, S, Vh = torch.linalg.svd(W.float(), full_matrices=False)
    root = (S[:r] / scaling).sqrt()  # split each singular value evenly between B and A
    A, B = root[:, None] * Vh[:r], U[:, :r] * root[None, :]
    return A, B, W.float() - scaling * B @ A


def loftq_factors(W: torch.Tensor, r: int, iters: int = 1, quantize=nf4.roundtrip):
    """(A, B, Q) with Q = ``quantize``d weights and ``Q + B @ A ≈ W`` (LoftQ, alternating ``iters`` times).

    ``quantize`` maps a weight to its quantize-dequantize round trip (default: NF4, blocksize 64, as QLoRA stores
    it). Note: like PEFT, the adapter is fitted without the LoRA scaling, so use ``lora_alpha = r`` (scaling 1)
    for ``Q + scaling · B A ≈ W`` to hold at step 0.
    """
    _check(W, r)
    if iters < 1:
        raise ValueError(f"iters={iters!r}: LoftQ needs at least one quantize-then-SVD round.")
    W = W.float()
    residual = W
    for _ in range(iters):
        Q = quantize(residual)  # quantize what the adapter does not explain yet
        U, S, Vh = torch.linalg.svd(W - Q, full_matrices=False)  # the best rank-r fit of what quantization lost
        root = S[:r].sqrt()
        B, A = U[:, :r] * root[None, :], root[:, None] * Vh[:r]
        residual = W - B @ A
    return A, B, Q


def lora_layers(model) -> dict:
    """``{name: module}`` of the PEFT LoRA layers of ``model`` (modules with ``lora_A``/``lora_B``)."""
    return {name: m for name, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")}


@torch.no_grad()
def apply(model, method: str, adapter: str = "default", *, iters: int = 1, quantize=nf4.roundtrip) -> dict:
    """Initialise every LoRA layer of a PEFT ``model`` with ``method`` ("pissa" or "loftq"), in place.

    The frozen base weight becomes PiSSA's residual, or LoftQ's quantized Q. Returns ``{layer name: (error of
    zero-init QLoRA, error of LoftQ)}``, the Frobenius norms ‖W − Q(W)‖ and ‖W − (Q + scaling·B A)‖ for LoftQ,
    and an empty dict for PiSSA.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}.")
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no PEFT LoRA layers: wrap it with training.add_lora(model, 'peft', ...) first.")
    errors = {}
    for name, layer in layers.items():
        base = layer.get_base_layer()
        if not isinstance(base, torch.nn.Linear) or getattr(layer, "fan_in_fan_out", False):
            raise TypeError(f"{name}: {method} is implemented for torch.nn.Linear layers (weight d_out x d_in); this "
                            f"one is a {type(base).__name__}. Leave it out of the LoRA targets.")
        W, r, scaling = base.weight, layer.r[adapter], layer.scaling[adapter]
        if method == "pissa":
            A, B, frozen = pissa_factors(W, r, scaling)
        else:
            A, B, frozen = loftq_factors(W, r, iters, quantize)
            B = B / scaling  # so that scaling · B A is the fitted correction whatever alpha is
            errors[name] = ((W - quantize(W)).norm().item(), (W - frozen - scaling * B @ A).norm().item())
        layer.lora_A[adapter].weight.copy_(A)
        layer.lora_B[adapter].weight.copy_(B)
        base.weight.copy_(frozen.to(W.dtype))
    return errors


@torch.no_grad()
def quantize_linears(model, quantize=nf4.roundtrip, skip=("lm_head", "lora_")) -> int:
    """Replace every ``nn.Linear`` weight (except ``skip``) by its quantized round trip, as a 4-bit QLoRA base would
    hold it (NF4 is bit-exact with bitsandbytes, notebook 04). Returns how many layers were replaced."""
    count = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(s in name for s in skip):
            module.weight.copy_(quantize(module.weight).to(module.weight.dtype))
            count += 1
    return count
