"""course_lib.lora against PEFT on tiny random models of several architectures."""

import copy
import warnings

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from course_lib import counting, lora, models, train_loop

# (architecture, target_modules): suffix lists per convention, a regex, "all-linear"; qwen2 has q/k/v biases.
CASES = [
    ("llama", ["q_proj", "v_proj"]),
    ("gpt2", ["c_attn"]),
    ("bert", ["query", "value"]),
    ("qwen2", ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ("llama", r".*\.(gate|up|down)_proj"),
    ("gpt2", "all-linear"),
    ("qwen2", "all-linear"),
    ("bert", "all-linear"),
]


def _output(model, ids):
    out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _ours_and_peft(arch, targets, r=4, alpha=8):
    """The same tiny model twice: with our LoRA and with PEFT's, holding the same (non-zero) A and B."""
    ours = models.tiny_model(arch)
    peft_model, _ = counting.peft_summary(copy.deepcopy(ours), targets, r=r, alpha=alpha)
    names = lora.inject_lora(ours, targets, r=r, alpha=alpha)
    lora.randomize_lora_B(ours, std=0.1)
    lora.load_lora_weights(peft_model, lora.lora_weights(ours))
    return ours, peft_model, names


IDS = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch,targets", CASES)
def test_same_layers_and_outputs_as_peft(arch, targets):
    ours, peft_model, names = _ours_and_peft(arch, targets)
    assert sorted(names) == sorted(lora.lora_weights(peft_model))
    with torch.no_grad():
        torch.testing.assert_close(_output(ours, IDS), _output(peft_model, IDS), rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch,targets", CASES[:4])
def test_merge_matches_peft_merge_and_unmerge_restores(arch, targets):
    ours, peft_model, names = _ours_and_peft(arch, targets)
    original = {n: ours.get_submodule(n).base_layer.weight.clone() for n in names}
    with torch.no_grad():
        unmerged = _output(ours, IDS)
        lora.merge_all(ours)
        torch.testing.assert_close(_output(ours, IDS), unmerged, rtol=1e-4, atol=1e-5)
        merged_peft = peft_model.merge_and_unload()
        for n in names:
            torch.testing.assert_close(ours.get_submodule(n).base_layer.weight, merged_peft.get_submodule(n).weight)
        lora.unmerge_all(ours)
    for n in names:
        torch.testing.assert_close(ours.get_submodule(n).base_layer.weight, original[n], rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert", "qwen2"])
def test_starts_identical_to_base_model(arch):
    base = models.tiny_model(arch)
    wrapped = copy.deepcopy(base)
    lora.inject_lora(wrapped, "all-linear", r=8, alpha=16)
    with torch.no_grad():
        assert torch.equal(_output(wrapped, IDS), _output(base, IDS))


@pytest.mark.parametrize("arch,targets", [("llama", ["q_proj", "v_proj"]), ("gpt2", ["c_attn", "c_proj"])])
def test_gradients_only_on_A_and_B(arch, targets):
    ours, peft_model, _ = _ours_and_peft(arch, targets)
    ours(input_ids=IDS, labels=IDS).loss.backward()
    peft_model(input_ids=IDS, labels=IDS).loss.backward()
    with_grad = {n for n, p in ours.named_parameters() if p.grad is not None}
    assert with_grad and all(n.endswith(("lora_A.weight", "lora_B.weight")) for n in with_grad)
    assert with_grad == set(train_loop.trainable_names(ours))
    # the gradients themselves agree with PEFT's
    ours_grads = {n: (A.grad, B.grad) for n, (A, B) in lora.lora_weights(ours).items()}
    for n, (A, B) in lora.lora_weights(peft_model).items():
        torch.testing.assert_close(ours_grads[n][0], A.grad)
        torch.testing.assert_close(ours_grads[n][1], B.grad)


def test_training_changes_only_adapters():
    model = models.tiny_model("llama")
    lora.inject_lora(model, ["q_proj", "v_proj"], r=4, alpha=8)
    before = train_loop.snapshot(model)
    losses = train_loop.train_steps(model, IDS, steps=3, lr=1e-2)
    changed = train_loop.changed_parameters(before, model)
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert changed and set(changed) <= set(train_loop.trainable_names(model))


def test_init_scaling_and_shapes_like_peft():
    from peft import LoraConfig, get_peft_model

    base = nn.Sequential(nn.Linear(20, 30))
    for use_rslora, expected in ((False, 16 / 4), (True, 16 / 2)):
        ours = lora.LoRALinear(copy.deepcopy(base[0]), r=4, alpha=16, use_rslora=use_rslora)
        peft_layer = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=16, target_modules=["0"],
                                                                    use_rslora=use_rslora)).base_model.model[0]
        assert ours.scaling == peft_layer.scaling["default"] == expected
        assert ours.lora_A.weight.shape == peft_layer.lora_A["default"].weight.shape == (4, 20)
        assert ours.lora_B.weight.shape == peft_layer.lora_B["default"].weight.shape == (30, 4)
        assert torch.count_nonzero(ours.lora_B.weight) == 0
        # kaiming_uniform(a=sqrt(5)) on fan_in=20 draws from U(-1/sqrt(20), 1/sqrt(20))
        assert ours.lora_A.weight.abs().max() <= 20 ** -0.5


def test_conv1d_fan_in_fan_out():
    layer = lora.LoRALinear(Conv1D(12, 16), r=2, alpha=4)
    assert layer.fan_in_fan_out and layer.lora_A.in_features == 16 and layer.lora_B.out_features == 12
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(3, 16)
    with torch.no_grad():
        expected = layer(x)
        layer.merge()
        torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-5)


def test_dropout_only_in_training():
    layer = lora.LoRALinear(nn.Linear(8, 8), r=2, alpha=4, dropout=0.5)
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(4, 8)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    torch.manual_seed(0)
    assert not torch.equal(layer(x), layer.eval()(x))


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs,error,words", [
    (dict(r=0), ValueError, "at least 1"),
    (dict(r=-2), ValueError, "at least 1"),
    (dict(r=2.5), TypeError, "whole number"),
    (dict(r=True), TypeError, "whole number"),
    (dict(alpha=0), ValueError, "positive"),
    (dict(alpha=-16), ValueError, "positive"),
    (dict(dropout=1.0), ValueError, "[0, 1)"),
    (dict(dropout=-0.1), ValueError, "[0, 1)"),
])
def test_bad_hyperparameters(kwargs, error, words):
    args = dict(r=4, alpha=8) | kwargs
    with pytest.raises(error, match=words.replace("[", r"\[").replace(")", r"\)")):
        lora.LoRALinear(nn.Linear(4, 4), **args)
    model = models.tiny_model("llama")
    with pytest.raises(error):
        lora.inject_lora(model, ["q_proj"], **args)
    assert not lora.lora_layers(model), "a failed inject must leave the model untouched"


def test_wrapping_a_non_linear_module():
    with pytest.raises(TypeError, match="Embedding"):
        lora.LoRALinear(nn.Embedding(10, 4), r=2, alpha=4)
    with pytest.raises(ValueError, match="not linear layers"):
        lora.inject_lora(models.tiny_model("llama"), ["self_attn"], r=2, alpha=4)


def test_target_matching_nothing_lists_linear_layers_by_suffix():
    with pytest.raises(ValueError) as info:
        lora.inject_lora(models.tiny_model("gpt2"), ["q_proj", "v_proj"], r=8, alpha=16)
    message = str(info.value)
    assert "matches no layer" in message
    for suffix in ("'c_attn': 2 layer(s)", "'c_proj': 4 layer(s)", "'c_fc': 2 layer(s)", "'lm_head': 1 layer(s)"):
        assert suffix in message


@pytest.mark.parametrize("targets", [[], "q_proj[", 42, ["q_proj", 3]])
def test_malformed_target_modules(targets):
    with pytest.raises((TypeError, ValueError)):
        lora.inject_lora(models.tiny_model("llama"), targets, r=2, alpha=4)


def test_merge_twice_and_unmerge_unmerged():
    layer = lora.LoRALinear(nn.Linear(4, 4), r=2, alpha=4)
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
    layer.unmerge()
    assert not layer.merged


def test_inject_twice_and_wrap_twice():
    model = models.tiny_model("llama")
    lora.inject_lora(model, ["q_proj"], r=2, alpha=4)
    with pytest.raises(ValueError, match="already have LoRA"):
        lora.inject_lora(model, ["q_proj"], r=2, alpha=4)
    with pytest.raises(TypeError, match="already has LoRA"):
        lora.LoRALinear(model.get_submodule("model.layers.0.self_attn.q_proj"), r=2, alpha=4)
    # all-linear on an injected model must not reach the adapters inside LoRALinear
    assert not any(".lora_" in n for n in lora.linear_layer_names(model))


def test_all_linear_excludes_output_head_like_peft():
    from peft import LoraConfig
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

    for arch in ("llama", "gpt2", "bert", "qwen2"):
        model = models.tiny_model(arch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peft_targets = _maybe_include_all_linear_layers(LoraConfig(target_modules="all-linear"), model).target_modules
        assert set(lora.find_targets(model, "all-linear")) == set(peft_targets)
        assert "lm_head" not in lora.find_targets(model, "all-linear")


def test_update_size_by_rank_measures_what_alpha_and_r_do():
    base = models.tiny_model("llama")
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(3))
    fixed = train_loop.update_size_by_rank(base, ids, (2, 8, 32), lambda r: 16, steps=3, lr=1e-2)
    doubling = train_loop.update_size_by_rank(base, ids, (2, 8, 32), lambda r: 2 * r, steps=3, lr=1e-2)
    assert [row["scaling"] for row in fixed] == [8.0, 2.0, 0.5] and [row["alpha"] for row in doubling] == [4, 16, 64]
    assert fixed[1] == doubling[1]  # at r = 8 both rules give alpha = 16: the very same run
    # alpha = 2r keeps alpha/r and lets B·A's Adam steps grow with r; a fixed alpha takes that growth back
    growth = lambda rows: rows[-1]["update"] / rows[0]["update"]  # noqa: E731
    assert growth(doubling) > 4 * growth(fixed)
    assert not lora.lora_layers(base)  # each rank trained a copy: the base model is left as it was
