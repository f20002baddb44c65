"""PiSSA and LoftQ initialisations (course_lib.variants) against PEFT's own, and their bad input."""

import inspect

import pytest
import torch
from peft import LoraConfig, get_peft_model

from course_lib import models, nf4, variants


def _peft(init, r=4, alpha=8, targets=("q_proj", "v_proj")):
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=init)
    return get_peft_model(models.tiny_model("llama"), config)


def _state(model):
    return {n: layer for n, layer in variants.lora_layers(model).items()}


def test_pissa_equals_peft_and_leaves_the_model_unchanged():
    theirs, ours = _peft("pissa"), _peft(True)
    W = {n: layer.get_base_layer().weight.clone() for n, layer in _state(ours).items()}
    variants.apply(ours, "pissa")
    for (name, a), b in zip(_state(theirs).items(), _state(ours).values()):
        for attr in ("lora_A", "lora_B"):
            torch.testing.assert_close(getattr(b, attr)["default"].weight, getattr(a, attr)["default"].weight,
                                       atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b.get_base_layer().weight, a.get_base_layer().weight, atol=1e-5, rtol=1e-4)
        s = b.scaling["default"]
        rebuilt = b.get_base_layer().weight + s * b.lora_B["default"].weight @ b.lora_A["default"].weight
        torch.testing.assert_close(rebuilt, W[name], atol=1e-5, rtol=1e-4)


def _peft_loftq_on_cpu():
    """PEFT's own ``loftq_init`` with only its compute device changed from "cuda" to "cpu" (PEFT 0.21 hard-codes a
    GPU; the algorithm and bitsandbytes' NF4 quantization are unchanged)."""
    from peft.utils import loftq_utils

    source = inspect.getsource(loftq_utils.loftq_init).replace('"cuda"', '"cpu"')
    namespace = dict(vars(loftq_utils))
    exec(compile(source.split("\n", 1)[1], loftq_utils.__file__, "exec"), namespace)  # drop the decorator line
    return namespace["loftq_init"]


@pytest.mark.parametrize("iters", [1, 3])
def test_loftq_equals_peft_and_beats_plain_nf4(iters):
    peft_loftq = _peft_loftq_on_cpu()
    W = torch.randn(48, 64)
    Q_ref, A_ref, B_ref = peft_loftq(W, num_bits=4, reduced_rank=4, num_iter=iters)
    A, B, Q = variants.loftq_factors(W, 4, iters)
    torch.testing.assert_close(Q, Q_ref)
    torch.testing.assert_close(B @ A, B_ref @ A_ref, atol=1e-4, rtol=1e-4)
    assert (W - Q - B @ A).norm() < (W - nf4.roundtrip(W)).norm()


def test_apply_loftq_reports_smaller_error_per_layer_and_respects_scaling():
    model = _peft(True, r=4, alpha=16)  # scaling 4: apply divides B so that Q + scaling·BA is the fit
    errors = variants.apply(model, "loftq")
    assert set(errors) == set(variants.lora_layers(model)) and len(errors) == 4
    assert all(after < before for before, after in errors.values())


def test_quantize_linears_skips_lm_head_and_adapters():
    model = _peft(True)
    head = model.get_base_model().lm_head.weight.clone()
    n = variants.quantize_linears(model)
    assert n == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down); lora_A/B and lm_head untouched
    assert torch.equal(model.get_base_model().lm_head.weight, head)
    w = model.get_base_model().model.layers[0].mlp.up_proj.weight
    assert torch.equal(w, nf4.roundtrip(w))


def test_bad_input_is_refused_clearly():
    W = torch.randn(8, 6)
    with pytest.raises(ValueError, match=r"rank r=7 must be an integer from 1 to min\(d_out, d_in\) = 6"):
        variants.pissa_factors(W, 7)
    with pytest.raises(ValueError, match="rank r=0"):
        variants.loftq_factors(W, 0)
    with pytest.raises(ValueError, match="2-D weight"):
        variants.pissa_factors(torch.randn(2, 3, 4), 1)
    with pytest.raises(ValueError, match="at least one"):
        variants.loftq_factors(W, 2, iters=0)
    with pytest.raises(ValueError, match=r"unknown method 'dora'; choose one of \('pissa', 'loftq'\)"):
        variants.apply(_peft(True), "dora")
    with pytest.raises(ValueError, match="no PEFT LoRA layers"):
        variants.apply(models.tiny_model("llama"), "pissa")
    emb = get_peft_model(models.tiny_model("llama"), LoraConfig(r=2, target_modules=["embed_tokens"]))
    with pytest.raises(TypeError, match="implemented for torch.nn.Linear layers.*Embedding"):
        variants.apply(emb, "pissa")
