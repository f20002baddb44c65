import math

import pytest
import torch

from course_lib import data, lora, models, training

ROWS = [{"instruction": f"add {a} {b}", "response": str(a + b)} for a in range(4) for b in range(4)]


@pytest.fixture
def tiny_data(chat_tokenizer):
    from datasets import Dataset

    return data.tokenize_dataset(Dataset.from_list(ROWS), chat_tokenizer, max_length=96, system=None)


def _lora_model(impl="peft", seed=0, init=None, **overrides):
    model = models.tiny_model("llama", seed=seed, **overrides)
    return training.add_lora(model, impl, r=4, alpha=8, targets=["q_proj", "v_proj"], dropout=0.0, init=init)


def _weights(model):
    return {k: (A.detach().clone(), B.detach().clone()) for k, (A, B) in lora.lora_weights(model).items()}


def test_ours_and_peft_follow_the_same_loss_curve(tiny_data, chat_tokenizer):
    peft_model = _lora_model("peft")
    init = training.lora_init(peft_model)
    ours = _lora_model("ours", init=init)
    kw = dict(pad_token_id=chat_tokenizer.pad_token_id, steps=6, lr=5e-3, batch_size=4, seed=0)
    a = training.train(peft_model, tiny_data, **kw)
    b = training.train(ours, tiny_data, **kw)
    assert [s for s, _ in a.history] == list(range(1, 7))
    assert a.history[-1][1] < a.history[0][1]  # it learns
    assert [loss for _, loss in a.history] == pytest.approx([loss for _, loss in b.history], rel=1e-4)
    assert a.tokens == b.tokens > 0 and a.tokens_per_second > 0
    assert training.count_trainable(peft_model) == training.count_trainable(ours)


def test_interrupted_run_resumes_to_the_same_weights(tiny_data, chat_tokenizer, tmp_path):
    kw = dict(pad_token_id=chat_tokenizer.pad_token_id, steps=6, lr=5e-3, batch_size=4, seed=0)
    straight = _lora_model()
    training.train(straight, tiny_data, **kw)

    interrupted = _lora_model()
    with pytest.raises(KeyboardInterrupt):
        training.train(interrupted, tiny_data, output_dir=tmp_path, save_steps=2, callbacks=[training.StopAfter(3)], **kw)
    assert training.last_checkpoint(tmp_path).name == "checkpoint-2"
    (tmp_path / "checkpoint-4").mkdir()  # a save killed half-way: no COMPLETE marker, so it must be skipped
    assert training.last_checkpoint(tmp_path).name == "checkpoint-2"

    resumed = _lora_model()  # a fresh process would start from a fresh model
    result = training.train(resumed, tiny_data, output_dir=tmp_path, save_steps=2, resume=True, **kw)
    assert result.steps == 4 and result.history[0][0] == 3
    for name, (A, B) in _weights(straight).items():
        A2, B2 = _weights(resumed)[name]
        assert torch.allclose(A, A2, atol=1e-6) and torch.allclose(B, B2, atol=1e-6), name


def test_train_refuses_a_model_without_adapters(tiny_data):
    with pytest.raises(ValueError, match="no trainable parameters: add LoRA first"):
        training.train(models.tiny_model("llama").requires_grad_(False), tiny_data, pad_token_id=0, steps=1)
    with pytest.raises(ValueError, match="impl must be 'peft' or 'ours'"):
        training.add_lora(models.tiny_model("llama"), "loralib")


def test_evaluate_is_the_token_weighted_loss(tiny_data, chat_tokenizer):
    model = models.tiny_model("llama")
    result = training.evaluate(model, tiny_data, pad_token_id=chat_tokenizer.pad_token_id, batch_size=5)
    batch = data.collate([tiny_data[i] for i in range(len(tiny_data))], chat_tokenizer.pad_token_id)
    with torch.no_grad():
        expected = model(**batch).loss.item()  # one batch: the mean over every label token
    assert result["loss"] == pytest.approx(expected, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(expected), rel=1e-6)


def test_generate_and_score(chat_tokenizer):
    model = models.tiny_model("llama")
    seen = []

    def scorer(reply, reference):  # a scorer whose mean is known whatever the untrained model replies
        seen.append(reply)
        return float(reference == "0")

    score, replies = training.task_score(model, chat_tokenizer, ROWS[:3], scorer, max_new_tokens=4)
    assert [row["response"] for row in ROWS[:3]] == ["0", "1", "2"]
    assert score == pytest.approx(1 / 3) and seen == replies and len(replies) == 3
    # the replies only, not the prompt: at most 4 new tokens of a character-level tokenizer
    assert all(isinstance(r, str) and len(r) <= 4 for r in replies), replies
    assert chat_tokenizer.padding_side == "right"  # restored after left-padded generation


def test_an_fp16_overflow_in_scoring_is_an_error_not_a_zero(chat_tokenizer):
    """A tiny model whose output layer overflows fp16 (logits near 1e5 > 65,504): in fp16 scoring stops with
    the cause and the fix; the very same weights in fp32 score normally."""
    model = models.tiny_model("llama")
    with torch.no_grad():
        model.lm_head.weight.mul_(1e6)
    finite, _ = training.task_score(model, chat_tokenizer, ROWS[:2], lambda r, ref: 1.0, max_new_tokens=2)
    assert finite == 1.0
    with pytest.raises(training.NonFiniteLogitsError, match=r"infinite logits during generation \(computing in "
                       r"float16 on cpu\).*score 0.*In fp16 this is usually an overflow.*model.float\(\)"):
        training.task_score(model.half(), chat_tokenizer, ROWS[:2], lambda r, ref: 1.0, max_new_tokens=2)
    with torch.no_grad():
        model.float().lm_head.weight[0, 0] = float("nan")
    with pytest.raises(training.NonFiniteLogitsError, match="NaN logits"):
        training.generate(model, chat_tokenizer, ROWS[:1], max_new_tokens=2)
    assert not model.lm_head._forward_hooks  # the check is removed after each call


def test_adapter_save_load_merge_and_wrong_base(tmp_path):
    model = _lora_model()
    lora.randomize_lora_B(model, std=0.1)
    x = torch.randint(0, 90, (2, 7))
    with torch.no_grad():
        expected = model(x).logits
    folder = training.save_adapter(model, tmp_path / "adapter")
    assert (folder / "adapter_model.safetensors").is_file() and (folder / training.FINGERPRINT).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no temporary folder left behind
    assert training.folder_size(folder) < sum(p.numel() * 4 for p in models.tiny_model("llama").parameters())

    reloaded = training.load_adapter(models.tiny_model("llama"), folder)
    with torch.no_grad():
        assert torch.allclose(reloaded(x).logits, expected, atol=1e-5)
        merged = reloaded.merge_and_unload()
        assert not any("lora" in n for n, _ in merged.named_modules())
        assert torch.allclose(merged(x).logits, expected, atol=1e-4)

    with pytest.raises(training.WrongBaseModelError, match="embedding_hash"):
        training.load_adapter(models.tiny_model("llama", seed=1), folder)  # same shapes, other weights
    with pytest.raises(training.WrongBaseModelError, match="hidden_size: adapter 64 vs model 32"):
        training.load_adapter(models.tiny_model("llama", hidden_size=32, intermediate_size=64), folder)
    with pytest.raises(TypeError, match="expects a PEFT model"):
        training.save_adapter(models.tiny_model("llama"), tmp_path / "x")


def test_two_adapters_switch_per_request(tmp_path):
    first, second = _lora_model(), _lora_model()
    lora.randomize_lora_B(first, seed=1)
    lora.randomize_lora_B(second, seed=2)
    training.save_adapter(first, tmp_path / "a")
    training.save_adapter(second, tmp_path / "b")
    served = training.load_adapter(models.tiny_model("llama"), tmp_path / "a", adapter_name="a")
    training.load_adapter(served, tmp_path / "b", adapter_name="b")
    x = torch.randint(0, 90, (1, 5))
    with torch.no_grad():
        for name, own in (("a", first), ("b", second)):
            served.set_adapter(name)
            assert torch.allclose(served(x).logits, own(x).logits, atol=1e-5)
