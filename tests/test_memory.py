"""course_lib.memory: the estimator's parts against counted parameters and a real 4-bit load; bad input."""

import pytest
import torch

from course_lib import measurement, memory, models, resources


def test_parameter_count_matches_the_model():
    for shape in ("llama-3.2-1b", "smollm2-135m"):
        model = models.synthetic_model(shape)  # meta device: no memory
        assert memory.parameter_count(model.config) == sum(p.numel() for p in model.parameters())


def test_parts_add_up_and_methods_order():
    config = models.synthetic_config("llama-2-7b")
    est = {m: memory.estimate_training_memory(config, m) for m in memory.METHODS}
    for e in est.values():
        assert e.total_bytes == sum(e.breakdown().values())
    assert est["qlora"].total_bytes < est["lora"].total_bytes < est["full"].total_bytes
    assert est["lora"].trainable_params == 32 * 8 * (4096 * 2 + 4096 * 2)  # r(d_in+d_out) on q and v
    assert est["qlora"].quant_state > 0 and est["lora"].quant_state == 0


def test_weights_in_4bit_match_a_real_load_on_cpu():
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    config = models.tiny_config("llama", hidden_size=128, intermediate_size=256, vocab_size=512)
    model = AutoModelForCausalLM.from_config(config)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        bnb = models.nf4_config(torch.float32)
        q = AutoModelForCausalLM.from_pretrained(folder, quantization_config=bnb, dtype=torch.float32)
    packed = sum(p.numel() for p in q.parameters() if p.dtype == torch.uint8)
    expected = sum(memory.nf4_bytes(i * o)[0] for i, o in memory.linear_shapes(config).values()) * config.num_hidden_layers
    assert packed == pytest.approx(expected, rel=0.01)  # allocation rounding aside


def test_committed_gpu_measurements_are_within_10_percent():
    rows = resources.measurements("memory_accuracy.csv")
    assert len(rows) >= 16
    for row in rows:
        config = models.synthetic_config(row["shape"])
        targets = {"q,v": ("q_proj", "v_proj"), "all-linear": "all-linear", "-": ()}[row["targets"]]
        est = memory.estimate_training_memory(config, row["method"], target_modules=targets, seq_len=int(row["seq_len"]))
        measured = float(row["measured_peak_gb"]) * 1e9
        assert abs(est.total_bytes - measured) / measured < 0.10, row


def test_bad_input():
    config = models.synthetic_config("llama-2-7b")
    with pytest.raises(ValueError, match="unknown method"):
        memory.estimate_training_memory(config, "prefix-tuning")
    with pytest.raises(ValueError, match="unknown target"):
        memory.estimate_training_memory(config, "lora", target_modules=("c_attn",))
    with pytest.raises(ValueError, match="Llama-family"):
        memory.estimate_training_memory(models.tiny_config("gpt2"), "lora")
    with pytest.raises(ValueError, match="positive"):
        memory.estimate_training_memory(config, "lora", seq_len=0)


def test_measure_sees_a_tensor_come_and_go():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = 200_000_000  # 200 MB, touched (torch.ones writes every byte, so the pages are resident)
    with measurement.measure(device) as m:
        x = torch.ones(size, dtype=torch.uint8, device=device)
        del x
    assert m.device == device
    assert 0.95 * size <= m.peak_increase_bytes < 1.5 * size, m  # the tensor (RSS counts pages, give or take)
    assert m.end_bytes < m.start_bytes + 0.5 * size, m  # and it was freed again
