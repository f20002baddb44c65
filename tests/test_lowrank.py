import pytest
import torch

from course_lib import lowrank, widgets


def _matrix(m=30, n=20, seed=0):
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_rank_k_approx_matches_eckart_young():
    W = _matrix()
    S = lowrank.singular_values(W)
    for k in (1, 5, 19, 20):
        Wk = lowrank.rank_k_approx(W, k)
        assert torch.linalg.matrix_rank(Wk).item() == k
        assert lowrank.approx_error(W, k) == pytest.approx(lowrank.tail_norm(S, k), abs=1e-9)
        if k < 20:
            assert torch.linalg.matrix_norm(W - Wk, ord=2).item() == pytest.approx(S[k].item(), rel=1e-9)
    assert torch.allclose(lowrank.rank_k_approx(W, 20), W, atol=1e-10)


def test_no_other_rank_k_matrix_is_closer():
    W = _matrix()
    best = lowrank.approx_error(W, 3)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        B, A = torch.randn(30, 3, generator=g, dtype=torch.float64), torch.randn(3, 20, generator=g, dtype=torch.float64)
        # the best fit of W inside span(B) is still worse than the truncated SVD
        Q, _ = torch.linalg.qr(B)
        assert torch.linalg.matrix_norm(W - Q @ Q.T @ W).item() >= best - 1e-9
        assert torch.linalg.matrix_norm(W - B @ A).item() > best


def test_spectrum_measures():
    S = torch.tensor([3.0, 1.0, 1.0, 1.0])
    assert lowrank.energy_captured(S, 1) == pytest.approx(9 / 12)
    assert lowrank.rank_for_energy(S, 0.75) == 1
    assert lowrank.rank_for_energy(S, 0.76) == 2
    assert lowrank.effective_rank(torch.ones(7)) == pytest.approx(7)
    assert lowrank.effective_rank(torch.tensor([5.0, 0.0, 0.0])) == pytest.approx(1)
    assert lowrank.storage_count(4096, 4096, 8) == (16_777_216, 65_536)
    assert lowrank.storage_count(5000, 4000, 8) == (20_000_000, 72_000)


def test_real_structure_vs_random_baseline():
    low_rank_plus_noise = _matrix(40, 8) @ _matrix(8, 40, seed=1) + 0.01 * _matrix(40, 40, seed=2)
    structured = lowrank.spectrum_summary(low_rank_plus_noise)
    random = lowrank.spectrum_summary(lowrank.random_like(low_rank_plus_noise))
    assert structured["rank for 90% energy"] <= 8 < random["rank for 90% energy"]
    assert lowrank.random_like(low_rank_plus_noise).std().item() == pytest.approx(low_rank_plus_noise.std().item(), rel=0.1)


@pytest.mark.parametrize(
    "W, k, error, match",
    [
        (torch.zeros(3, 4), 0, ValueError, r"1 <= k <= 3"),
        (torch.zeros(3, 4), 4, ValueError, r"out of range for a 3x4 matrix"),
        (torch.zeros(3, 4), 2.0, TypeError, r"must be an int"),
        (torch.zeros(2, 3, 4), 1, ValueError, r"2-D matrix.*\(2, 3, 4\)"),
        (torch.zeros(3, 4, dtype=torch.int64), 1, TypeError, r"floating-point.*W.float\(\)"),
        (torch.tensor([[1.0, float("nan")]]), 1, ValueError, r"NaN or Inf"),
        ([[1.0, 2.0]], 1, TypeError, r"torch.as_tensor"),
    ],
)
def test_bad_input_is_explained(W, k, error, match):
    with pytest.raises(error, match=match):
        lowrank.rank_k_approx(W, k)


def test_storage_count_rejects_nonsense():
    with pytest.raises(ValueError, match="r must be a positive int"):
        lowrank.storage_count(10, 10, 0)


def test_finetune_one_layer_changes_only_that_layer():
    from course_lib import models

    model = models.tiny_model("llama")
    tokenizer = models.tiny_chat_tokenizer()
    before_all = {n: p.detach().clone() for n, p in model.named_parameters()}
    name = "model.layers.1.self_attn.q_proj"
    W0, W1, losses = lowrank.finetune_one_layer(model, tokenizer, name, ["1+1=2", "2+2=4"], steps=5, lr=1e-2, progress=False)
    assert len(losses) == 5 and not torch.equal(W0, W1)
    for n, p in model.named_parameters():
        if n == name + ".weight":
            assert torch.equal(p, W1)
        else:
            assert torch.equal(p, before_all[n]), n
    with pytest.raises(KeyError, match="no linear layer named 'nope'"):
        lowrank.finetune_one_layer(model, tokenizer, "nope", ["x"], steps=1)


def test_rank_explorer_static_fallback_and_bad_rank(monkeypatch, capsys):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("COURSE_STATIC_WIDGETS", "1")
    W = _matrix(12, 10).float()
    views = widgets.rank_explorer(W, ks=(2, 10))
    assert [v["k"] for v in views] == [2, 10]
    assert views[1]["relative error"] == pytest.approx(0, abs=1e-5)
    assert views[0]["stored"] == 2 * 22
    bad = widgets.rank_view(W, 11)  # above min(m, n): a message, not an exception
    assert "error" in bad and "1 <= k <= 10" in capsys.readouterr().out


def test_answer_labels_count_only_what_follows_the_marker():
    from course_lib import models

    tokenizer = models.tiny_chat_tokenizer()  # one token per character
    texts = ["Q: 1+1? A: 2.", "Q: 10+10? A: 20."]
    batch, labels = lowrank.answer_labels(tokenizer, texts)
    for i, text in enumerate(texts):
        answer = text[text.index("A:") + 2:]
        kept = labels[i][labels[i] != -100]
        assert tokenizer.decode(kept) == answer  # the answer, and nothing of the prompt or the padding
    with pytest.raises(ValueError, match="has no 'A:'"):
        lowrank.answer_labels(tokenizer, ["no marker here"])
    model = models.tiny_model("llama")
    loss = lowrank.answer_loss(model, tokenizer, texts)
    with torch.no_grad():
        everything = model(**batch, labels=batch["input_ids"]).loss.item()
    assert loss != pytest.approx(everything) and loss > 0  # a loss over fewer tokens, not the whole sentence


def test_weights_replaced_puts_the_originals_back_even_after_an_error():
    from course_lib import models

    model = models.tiny_model("llama")
    name = "model.layers.0.self_attn.q_proj"
    original = dict(model.named_modules())[name].weight.detach().clone()
    with pytest.raises(RuntimeError, match="inside"):
        with lowrank.weights_replaced(model, {name: torch.zeros_like(original)}):
            assert (dict(model.named_modules())[name].weight == 0).all()
            raise RuntimeError("inside")
    assert torch.equal(dict(model.named_modules())[name].weight, original)
    with pytest.raises(KeyError, match="no module named 'nope'"):
        lowrank.weights_replaced(model, {"nope": original})


def test_low_rank_weights_is_the_truncated_svd():
    weights = {"wide": _matrix(12, 30).float(), "tall": _matrix(30, 12, seed=3).float(), "thin": _matrix(3, 9).float()}
    fast = lowrank.low_rank_weights(weights, 5)
    for name, W in weights.items():
        best = lowrank.rank_k_approx(W.double(), min(5, min(W.shape))).float()
        assert fast[name].shape == W.shape and torch.allclose(fast[name], best, atol=1e-5), name
    from course_lib import models

    linear = lowrank.linear_weights(models.tiny_model("llama"))
    assert linear and not any("lm_head" in name for name in linear)
