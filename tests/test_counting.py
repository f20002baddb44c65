"""course_lib.counting against PEFT: exact counts, summaries (4-bit included), sweeps, meta-device models."""

import copy

import pytest
import torch

from course_lib import counting, lora, models

CASES = [
    ("llama", ["q_proj", "v_proj"]),
    ("llama", "all-linear"),
    ("gpt2", ["c_attn"]),
    ("gpt2", "all-linear"),
    ("bert", ["query", "value"]),
    ("qwen2", r".*self_attn\.(q|k|v)_proj"),
]


@pytest.mark.parametrize("arch,targets", CASES)
@pytest.mark.parametrize("r", [1, 8])
def test_count_and_summary_match_peft(arch, targets, r):
    model = models.tiny_model(arch)
    before = copy.deepcopy(model.state_dict())
    predicted = counting.lora_param_count(model, targets, r)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "counting must not modify"
    assert not lora.lora_layers(model)
    peft_model, (trainable, total) = counting.peft_summary(model, targets, r)
    assert predicted == trainable
    assert counting.trainable_summary(peft_model) == (trainable, total, 100 * trainable / total)


def test_our_injection_summary_matches_peft():
    ours = models.tiny_model("qwen2")  # tied embeddings: counted once, as PEFT does
    theirs = copy.deepcopy(ours)
    lora.inject_lora(ours, "all-linear", r=4, alpha=8)
    _, (trainable, total) = counting.peft_summary(theirs, "all-linear", 4)
    assert counting.trainable_summary(ours)[:2] == (trainable, total)


def test_layer_formula_and_seed_examples():
    assert counting.layer_lora_params(4096, 4096, 8) == 65_536
    assert counting.layer_lora_params(5000, 4000, 8) == 72_000
    with pytest.raises(ValueError):
        counting.layer_lora_params(10, 10, 0)


@pytest.mark.parametrize("shape,expected", [("llama-2-7b", 4_194_304), ("llama-3.2-1b", 851_968)])
def test_meta_models_count_like_peft(shape, expected):
    model = models.synthetic_model(shape)  # meta device: shapes, no weights
    assert counting.lora_param_count(model, ["q_proj", "v_proj"], 8) == expected
    _, (trainable, total) = counting.peft_summary(model, ["q_proj", "v_proj"], 8)
    assert trainable == expected
    if shape == "llama-2-7b":
        assert total == 6_742_609_920  # what the seed's print_trainable_parameters shows


def test_rank_sweep_is_linear_in_r_and_leaves_model_alone():
    model = models.tiny_model("llama")
    rows = counting.rank_sweep(model, [1, 2, 8], ["q_proj", "v_proj"])
    assert [row["trainable"] for row in rows] == [counting.lora_param_count(model, ["q_proj", "v_proj"], r)
                                                  for r in (1, 2, 8)]
    _, base_total, _ = counting.trainable_summary(model)
    assert all(row["total"] == base_total + row["trainable"] for row in rows)
    assert "trainable%" in counting.format_table(rows)
    with pytest.raises(TypeError):
        counting.rank_sweep(model, [4.5], ["q_proj"])


def test_count_errors_name_existing_layers():
    with pytest.raises(ValueError, match="'c_attn'"):
        counting.lora_param_count(models.tiny_model("gpt2"), ["q_proj"], 8)


def test_four_bit_summary_matches_peft(tmp_path):
    from transformers import AutoModelForCausalLM

    models.tiny_model("llama").save_pretrained(tmp_path)
    bnb = models.nf4_config(torch.float32, double_quant=False)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=bnb)
    assert any(type(p).__name__ == "Params4bit" for p in model.parameters())
    fp32 = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert counting.stored_elements(model) == counting.stored_elements_if_4bit(fp32)
    assert counting.stored_elements(model) < counting.trainable_summary(model)[1]
    peft_model, (trainable, total) = counting.peft_summary(model, ["q_proj", "v_proj"], 8)
    assert counting.trainable_summary(peft_model)[:2] == (trainable, total)
    # today's PEFT counts a 4-bit weight as the values it holds: the same total as the fp32 load
    assert total == counting.trainable_summary(fp32)[1] + trainable


def test_check_claim_says_whether_a_printed_number_agrees():
    assert counting.check_claim("x", 4_194_304, 851_968) == "x: printed 4,194,304, computed 851,968 -> does NOT agree"
    assert counting.check_claim("x", 65_536, 65_536).endswith("-> agrees")
    assert counting.check_claim("x", 0.0622, 0.062205, digits=4).endswith("-> agrees")
    assert "seed" not in counting.check_claim("x", 1, 2)  # students have no seed notes


def test_the_mistral_7b_count_the_tutorials_print_for_a_4bit_model():
    """3,752,071,168: Mistral-7B's linear weights halved (two 4-bit values per stored byte) plus the rest, before
    adapters; its q+v at r=8 trains 3,407,872 because grouped-query attention narrows v_proj."""
    from transformers import MistralConfig

    mistral = counting.meta_model(MistralConfig())
    assert counting.stored_elements_if_4bit(mistral) == 6_979_321_856 // 2 + 262_410_240 == 3_752_071_168
    assert counting.lora_param_count(mistral, ["q_proj", "v_proj"], 8) == 3_407_872
    llama = models.synthetic_model("llama-3-8b")
    pairs = {(a, b): counting.lora_param_count(llama, [a, b], 8)
             for a, b in (("q_proj", "v_proj"), ("k_proj", "v_proj"), ("q_proj", "k_proj"), ("q_proj", "o_proj"))}
    assert min(pairs, key=pairs.get) == ("k_proj", "v_proj")  # with GQA, k+v is the cheapest pair
