"""course_lib.longctx on CPU: every technique gives the plain path's loss and LoRA gradients on tiny models (fp32),
the prediction moves the way each technique says, the search finds the longest fit, and every bad input's error."""

import pytest
import torch
import torch.nn.functional as F

from course_lib import longctx, models, resources


def lora_model(arch="llama", seed=0, dropout=0.0, **overrides):
    from peft import LoraConfig, get_peft_model

    model = models.tiny_model(arch, seed=seed, **overrides)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=dropout, init_lora_weights=False)
    peft = get_peft_model(model, config)
    peft.train()
    return peft


def run(model, ids, **kwargs):
    longctx.zero_gradients(model)
    loss = longctx.forward_backward(model, ids, **kwargs)
    return loss, longctx.adapter_gradients(model)


def plain_hf(model, ids):
    """The reference: Hugging Face's own forward with labels, and backward."""
    longctx.zero_gradients(model)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return out.loss.item(), longctx.adapter_gradients(model)


def assert_same(a, b, rtol=1e-5, atol=1e-6):
    (la, ga), (lb, gb) = a, b
    assert la == pytest.approx(lb, rel=1e-6)
    assert ga.keys() == gb.keys() and len(ga) > 0
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=rtol, atol=atol, msg=name)


@pytest.fixture(scope="module")
def model():
    return lora_model()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (1, 50), generator=torch.Generator().manual_seed(1))


def test_plain_path_is_huggingface_loss(model, ids):
    assert_same(run(model, ids), plain_hf(model, ids))


@pytest.mark.parametrize("techniques, kwargs", [
    (("chunked_loss",), dict(loss_chunk=7)),  # 7 does not divide 50: the last chunk is shorter
    (("chunked_loss",), dict(loss_chunk=64)),  # one chunk longer than the sequence
    (("offload",), {}),
    (("no_lora_dropout",), {}),
    (("tiled_mlp",), dict(mlp_chunk=16)),
    (("repeat_kv",), {}),
    (("chunked_norm",), dict(norm_chunk=7)),  # 7 rows at a time: the last chunk is shorter
    (("chunked_norm",), dict(norm_chunk=4096)),  # one chunk
    (longctx.TECHNIQUES, dict(loss_chunk=9, mlp_chunk=13, norm_chunk=11)),
])
def test_each_technique_equals_the_plain_path(model, ids, techniques, kwargs):
    reference = run(model, ids)
    assert_same(run(model, ids, techniques=techniques, **kwargs), reference)


def test_repeat_kv_gives_sdpa_equal_head_counts_and_no_enable_gqa(model, ids):
    """What makes a T4's memory-efficient kernel accept the call: the tiny Llama has 4 query and 2 key/value heads."""
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.shape[1], k.shape[1], v.shape[1], kwargs.get("enable_gqa", False)))
        return real(q, k, v, *args, **kwargs)

    import unittest.mock

    with unittest.mock.patch.object(F, "scaled_dot_product_attention", spy):
        run(model, ids)  # transformers' sdpa: 2 key/value heads and enable_gqa=True
        plain = list(seen)
        seen.clear()
        run(model, ids, techniques=("repeat_kv",))
    assert plain and all(k == 2 and gqa for _, k, _, gqa in plain)
    assert seen and all((q, k, v, gqa) == (4, 4, 4, False) for q, k, v, gqa in seen)
    assert longctx.causal_lm_parts(model)[0].config._attn_implementation == "sdpa"  # restored afterwards


def test_repeat_kv_keeps_a_padding_mask(ids):
    """With a padded batch the mask must reach SDPA: repeat_kv gives the same loss as transformers' sdpa."""
    model = lora_model()
    decoder, lm_head = longctx.causal_lm_parts(model)
    batch = torch.cat([ids, ids.roll(7, dims=1)])
    mask = torch.ones_like(batch)
    mask[1, :20] = 0  # the second row is left-padded
    ref = longctx.head_loss(decoder(input_ids=batch, attention_mask=mask).last_hidden_state, lm_head, batch)
    with longctx.repeat_kv_attention(model):
        out = longctx.head_loss(decoder(input_ids=batch, attention_mask=mask).last_hidden_state, lm_head, batch)
    torch.testing.assert_close(out, ref)


def test_chunked_rmsnorm_matches_llama_rmsnorm_in_fp16_and_fp32():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float16):
        norm = LlamaRMSNorm(24, eps=1e-5)
        norm.weight.data = torch.randn(24, generator=g).to(dtype)
        norm.to(dtype)
        x = torch.randn(3, 17, 24, generator=g).to(dtype).requires_grad_()
        grad = torch.randn(3, 17, 24, generator=g).to(dtype)
        ref = norm(x)
        ref_gx, ref_gw = torch.autograd.grad(ref, (x, norm.weight), grad)
        out = longctx._ChunkedRMSNorm.apply(x, norm.weight, norm.variance_epsilon, 5)
        gx, gw = torch.autograd.grad(out, (x, norm.weight), grad)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(out, ref, **tol)
        torch.testing.assert_close(gx, ref_gx, **tol)
        torch.testing.assert_close(gw.float(), ref_gw.float(), rtol=1e-2, atol=1e-2)
    assert out.dtype == ref.dtype


def test_chunked_norm_saves_the_16_bit_input_not_an_fp32_copy():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(64).to(torch.float16)
    x = torch.randn(1, 256, 64, dtype=torch.float16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        norm(x)
    plain = sum(t.numel() * t.element_size() for t in saved)
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        longctx._ChunkedRMSNorm.apply(x, norm.weight, norm.variance_epsilon, 32)
    lean = sum(t.numel() * t.element_size() for t in saved)
    assert plain >= 256 * 64 * 4  # the fp32 copy of the input
    assert lean <= 256 * 64 * 2 + 256 * 4 + 64 * 2  # x itself, 1/rms per row, the weight


def test_offload_really_moves_the_layer_inputs(model, ids):
    """With a threshold of 0 bytes, every layer's checkpointed input goes through the hooks (and comes back)."""
    decoder, lm_head = longctx.causal_lm_parts(model)
    with longctx.offload_to_cpu(min_bytes=0) as hooks:
        hidden = decoder(input_ids=ids, use_cache=False).last_hidden_state
    n_layers = len(decoder.layers)
    inputs = [e for e in hooks.entries if tuple(e["cpu"].shape) == (1, ids.shape[1], decoder.config.hidden_size)]
    assert len(inputs) >= n_layers and all(e["cpu"].device.type == "cpu" for e in inputs)
    longctx.head_loss(hidden, lm_head, ids).backward()
    assert all(e["gpu"] is None for e in hooks.entries)  # nothing kept once backward used it
    longctx.zero_gradients(model)


def test_chunked_cross_entropy_matches_torch_including_head_gradient():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (37,), generator=g)
    targets[[3, 20, 36]] = longctx.IGNORE_INDEX
    ref = F.cross_entropy(hidden @ weight.t(), targets, ignore_index=longctx.IGNORE_INDEX)
    ref_grads = torch.autograd.grad(ref, (hidden, weight))
    out = longctx.chunked_cross_entropy(hidden, weight, targets, chunk_size=5)
    grads = torch.autograd.grad(out, (hidden, weight))
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_other_llama_family_models_work(ids):
    qwen = lora_model("qwen2")  # q/k/v biases and tied embeddings
    assert_same(run(qwen, ids, techniques=longctx.TECHNIQUES, loss_chunk=11, mlp_chunk=10), run(qwen, ids))


def test_lora_dropout_is_checked_not_assumed(ids):
    dropped = lora_model(dropout=0.1)
    assert longctx.lora_dropout(dropped) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="lora_dropout=0.0"):
        longctx.forward_backward(dropped, ids, techniques=("no_lora_dropout",))
    assert longctx.remove_lora_dropout(dropped) == 2 * 7  # 7 adapted linear layers in each of 2 layers
    assert longctx.lora_dropout(dropped) == 0.0
    assert_same(run(dropped, ids, techniques=("no_lora_dropout",)), run(lora_model(dropout=0.0), ids))


# --------------------------------------------------------------------------------------------- bad input
def test_bad_input_errors(model, ids):
    too_long = torch.zeros((1, 129), dtype=torch.long)
    with pytest.raises(longctx.SequenceTooLongError, match="129 tokens.*position limit of 128"):
        longctx.forward_backward(model, too_long)
    for bad in (0, -4, 2.5, None):
        with pytest.raises(ValueError, match="loss_chunk must be a positive integer"):
            longctx.forward_backward(model, ids, techniques=("chunked_loss",), loss_chunk=bad)
    with pytest.raises(ValueError, match="mlp_chunk must be a positive integer"):
        longctx.forward_backward(model, ids, techniques=("tiled_mlp",), mlp_chunk=0)
    with pytest.raises(ValueError, match="unknown technique.*flash"):
        longctx.forward_backward(model, ids, techniques=("flash",))
    with pytest.raises(ValueError, match="unknown loss implementation"):
        longctx.forward_backward(model, ids, loss="fast")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        longctx.forward_backward(model, ids, loss="liger")
    gpt2 = models.tiny_model("gpt2")
    with pytest.raises(ValueError, match="Llama family.*model_type='gpt2'"):
        longctx.forward_backward(gpt2, ids)
    with pytest.raises(ValueError, match="Llama family"):
        with longctx.tiled_mlp(gpt2):
            pass
    with pytest.raises(ValueError, match="norm_chunk must be a positive integer"):
        longctx.forward_backward(model, ids, techniques=("chunked_norm",), norm_chunk=0)
    eager = lora_model()
    longctx.causal_lm_parts(eager)[0].config._attn_implementation = "eager"
    with pytest.raises(ValueError, match="replaces sdpa attention.*'eager'.*attn_implementation='sdpa'"):
        longctx.forward_backward(eager, ids, techniques=("repeat_kv",))


def test_offload_refused_without_cpu_memory():
    config = models.synthetic_config("llama-3-8b")
    need = longctx.offload_bytes(config, 4096)
    assert need == 32 * 4096 * 4096 * 2 + 4096 * 4096 * 4
    with pytest.raises(longctx.OffloadMemoryError, match=r"needs 1\.1 GiB of CPU memory.*only 0\.5 GiB"):
        longctx.check_offload_ram(config, 4096, available=2**29)
    assert longctx.check_offload_ram(config, 4096, available=64 * 2**30) == need


# --------------------------------------------------------------------------------------------- prediction
def test_prediction_per_technique():
    config = models.synthetic_config("llama-3.1-8b")
    assert config.max_position_embeddings == 131072
    n = 16384
    steps, peaks = [], []
    for i in range(len(longctx.TECHNIQUES) + 1):
        est = longctx.predict_peak(config, longctx.TECHNIQUES[:i], n)
        steps.append(est)
        peaks.append(est.total_bytes)
    assert all(b < a for a, b in zip(peaks, peaks[1:], strict=False)), peaks  # each technique takes memory back
    # without repeat_kv a T4 runs this GQA model's attention on the math kernel: quadratic scores
    assert steps[0].details["attention"] == "math" and steps[1].details["attention"] == "efficient"
    assert steps[0].details["layer_moment"] == "attention backward (math kernel)"
    scores = 32 * n * n * 4  # one fp32 score matrix per head
    assert steps[0].total_bytes - steps[1].total_bytes >= (longctx.MATH_SCORE_COPIES - 1) * scores
    plain, chunked = steps[1], steps[2]
    flash = longctx.predict_peak(config, (), n, attention="flash")
    assert flash.logits >= 12 * n * config.vocab_size  # the full fp32 logits and their gradients
    assert chunked.details["loss_logits"] == 8 * longctx.DEFAULT_LOSS_CHUNK * config.vocab_size
    assert chunked.total_bytes == max(chunked.details["phases"].values())
    layer_input = n * config.hidden_size * 2
    assert steps[2].details["stored_activations"] - 32 * layer_input == steps[3].details["stored_activations"] - \
        longctx.OFFLOAD_GPU_COPIES * layer_input  # offloading leaves a few layer inputs on the GPU, not 32
    # which moment of the recomputed layer is the peak: what the allocator traces showed
    assert [s.details["layer_moment"] for s in steps[2:]] == ["recomputed", "recomputed", "MLP backward",
                                                               "norm backward", "MLP backward"]
    # with every technique, at the lengths they reach, attention's own tensors and gradients are what is left
    assert longctx.predict_peak(config, longctx.TECHNIQUES, 65536).details["layer_moment"] == "attention backward"
    assert steps[3].details["offloaded_cpu_bytes"] == longctx.offload_bytes(config, n)
    # repeat_kv stores K and V at the query's 32 heads instead of 8: 2 x 24 heads x 128 x 2 bytes per token more
    with_rk = longctx.predict_peak(config, ("repeat_kv", "chunked_loss"), n).details["layer_backward"]
    without = longctx.predict_peak(config, ("chunked_loss",), n, attention="flash").details["layer_backward"]
    assert abs((with_rk - without) - n * 2 * 24 * 128 * 2) <= 1024
    # the static part is the lean preparation's, without the optimizer state of a forward + backward
    assert plain.weights == chunked.weights and plain.optimizer_state == 0
    assert longctx.predict_peak(config, (), n, optimizer=True).optimizer_state == 2 * plain.adapters
    with pytest.raises(longctx.SequenceTooLongError):
        longctx.predict_peak(models.synthetic_config("llama-3-8b"), (), 8192)
    with pytest.raises(ValueError, match="prep='lean'"):
        longctx.predict_peak(config, ("offload",), n, prep="default")
    with pytest.raises(ValueError, match="unknown attention kernel 'xformers'"):
        longctx.predict_peak(config, (), n, attention="xformers")
    cap = 15 * 2**30
    longest = [longctx.predicted_longest(config, longctx.TECHNIQUES[:i], available=cap) for i in range(7)]
    assert longest == sorted(longest) and longest[0] % 256 == 0
    assert longctx.predict_peak(config, (), longest[0]).total_bytes <= cap
    assert longctx.predict_peak(config, (), longest[0] + 256).total_bytes > cap


def test_the_kernel_a_t4_takes():
    gqa, mha = models.synthetic_config("llama-3.1-8b"), models.synthetic_config("llama-2-7b")
    assert longctx.attention_kernel(gqa) == "math"  # enable_gqa: only flash accepts it, and a T4 has no flash
    assert longctx.attention_kernel(gqa, ("repeat_kv",)) == "efficient"
    assert longctx.attention_kernel(mha) == "efficient"  # equal head counts: no enable_gqa needed
    # on this CPU, PyTorch's own dispatcher: its flash kernel for CPU takes both
    assert longctx.attention_kernel(gqa, device=torch.device("cpu"), dtype=torch.float32) == "flash (CPU)"


def test_predictions_match_the_committed_gpu_measurements():
    """Every peak measured under the T4 emulation (benchmarks/long_context.py) is predicted within 10%, for every
    step and both attention kernels, with the kernel each row says ran."""
    preps = {step: (prep, techniques) for step, prep, techniques in longctx.STEPS}
    rows = [r for r in resources.measurements("long_context.csv") if r["measured_peak_gib"] and r["step"] in preps]
    assert {(r["shape"], r["step"]) for r in rows} >= {("llama-3.1-8b", p) for p in preps}
    assert {r["attention"] for r in rows} == {"math", "efficient"}
    assert all(r["kernels"].startswith("T4") for r in rows)
    for r in rows:
        config = models.synthetic_config(r["shape"])
        prep, techniques = preps[r["step"]]
        predicted = longctx.predict_peak(config, techniques, int(r["seq_len"]), prep=prep,
                                         attention=r["attention"]).total_bytes / 2**30
        measured = float(r["measured_peak_gib"])
        assert abs(predicted - measured) <= 0.10 * measured, (r["step"], r["seq_len"], predicted, measured)


def test_a_step_that_cannot_fit_is_refused_before_it_runs(model, ids, monkeypatch):
    """On a GPU, forward_backward predicts the step with the kernel that would run and refuses what cannot fit."""
    monkeypatch.setattr(longctx, "attention_kernel", lambda *a, **k: "math")
    est = longctx.check_step_fits(model, (), ids.shape[1], available=10**12)
    assert est.details["attention"] == "math"
    with pytest.raises(longctx.StepTooLargeError, match=r"math attention kernel.*add 'repeat_kv'"):
        longctx.check_step_fits(model, (), ids.shape[1], available=est.total_bytes // 2)
    monkeypatch.setattr(longctx, "attention_kernel", lambda *a, **k: "efficient")
    with pytest.raises(longctx.StepTooLargeError, match="efficient attention kernel") as err:
        longctx.check_step_fits(model, ("repeat_kv",), ids.shape[1], available=1000)
    assert "repeat_kv" not in str(err.value).split("kernel")[-1]
    assert longctx.check_step_fits(model, ("repeat_kv",), ids.shape[1], available=est.total_bytes * 2)


# --------------------------------------------------------------------------------------------- the search
@pytest.mark.parametrize("truth, guess", [(4608, 4608), (4608, 3000), (4608, 9000), (40960, 30000),
                                          (41000, 52000), (256, 8000), (700, 20000)])
def test_longest_fitting_finds_the_limit_to_one_step(truth, guess):
    calls = []

    def fits(n):
        calls.append(n)
        return n <= truth

    low, high, probes = longctx.longest_fitting(fits, guess, max_probes=12)
    assert low == truth // 256 * 256 and high == low + 256
    assert probes == [(n, n <= truth) for n in calls] and len(set(calls)) == len(calls)


def test_longest_fitting_nothing_fits_and_budget():
    low, high, probes = longctx.longest_fitting(lambda n: False, 1024, max_probes=10)
    assert (low, high) == (0, 256)
    low, high, probes = longctx.longest_fitting(lambda n: n <= 50000, 1024, max_probes=3)
    assert len(probes) == 3 and low < 50000 and high is None  # out of probes before bracketing: says so
    low, high, probes = longctx.longest_fitting(lambda n: n <= 50000, 30000, max_probes=10, limit=40000)
    assert (low, high) == (39936, None) and probes[-1] == (39936, True)  # fits at the limit: "at least"
    low, high, probes = longctx.longest_fitting(lambda n: n <= 35000, 60000, max_probes=10, limit=40000)
    assert (low, high) == (34816, 35072) and probes[0] == (39936, False)
    with pytest.raises(ValueError, match="step must be a positive integer"):
        longctx.longest_fitting(lambda n: True, 1024, step=0)
