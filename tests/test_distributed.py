"""course_lib.distributed: 2 processes (DDP over gloo, started by `accelerate launch`) train exactly like 1 process
on the same global batch; the global-batch split; memory.estimate_per_gpu_memory under DDP and FSDP."""

import pytest

from course_lib import distributed, memory, models


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    """A real run, no mocks: same seed, same global batch of 8, 1 process vs 2 (4 rows each)."""
    kw = dict(steps=5, global_batch=8, lr=1e-2, seed=0)
    one = distributed.launch(1, tmp_path / "one.json", **kw)
    two = distributed.launch(2, tmp_path / "two.json", **kw)
    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    assert two["backend"] == "gloo" and two["per_process_batch"] == 4
    assert len(one["losses"]) == len(two["losses"]) == 5
    assert one["losses"][-1] < one["losses"][0]  # it trains
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)


def test_global_batches_are_seeded_and_cover_the_data():
    a = distributed.global_batches(20, 8, 5, seed=1)
    assert a == distributed.global_batches(20, 8, 5, seed=1) != distributed.global_batches(20, 8, 5, seed=2)
    assert sorted(a[0] + a[1] + a[2][:4]) == list(range(20))  # one epoch before any row repeats
    batch = a[0]
    assert distributed.local_rows(batch, 0, 2) + distributed.local_rows(batch, 1, 2) == batch


def test_bad_split_and_bad_model_are_explained():
    with pytest.raises(ValueError, match="multiple of 3"):
        distributed.local_rows(list(range(8)), 0, 3)
    with pytest.raises(ValueError, match="larger than the dataset"):
        distributed.global_batches(4, 8, 1)
    args = distributed.parser().parse_args(["--model", "gpt-5"])
    with pytest.raises(ValueError, match="synthetic:<shape>"):
        distributed.build_model(args, __import__("torch").device("cpu"))


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_one_gpu_is_the_single_gpu_estimate(method):
    config = models.synthetic_config("llama-2-7b")
    for strategy in memory.STRATEGIES:
        est = memory.estimate_per_gpu_memory(config, method, 1, strategy, seq_len=256)
        upcast = not (method == "qlora" and strategy == "fsdp")
        single = memory.estimate_training_memory(config, method, seq_len=256, upcast_non_quantized=upcast)
        assert est.total_bytes == single.total_bytes and est.comm_buffers == 0


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_fsdp_shards_what_it_should(method):
    config = models.synthetic_config("llama-2-13b")
    one = memory.estimate_per_gpu_memory(config, method, 1, "fsdp")
    two = memory.estimate_per_gpu_memory(config, method, 2, "fsdp")
    for part in ("weights", "adapters", "gradients", "optimizer_state"):
        assert getattr(two, part) == pytest.approx(getattr(one, part) / 2, abs=1)
    for part in ("quant_state", "activations", "logits"):  # replicated on every GPU
        assert getattr(two, part) == getattr(one, part)
    layer, root = two.details["decoder_layer"], two.details["root_unit"]
    assert two.comm_buffers >= root + 2 * layer > 0
    assert two.total_bytes < one.total_bytes
    ddp = memory.estimate_per_gpu_memory(config, method, 2, "ddp")
    assert ddp.total_bytes > memory.estimate_per_gpu_memory(config, method, 1, "ddp").total_bytes  # + buckets
    assert memory.estimate_per_gpu_memory(config, method, 8, "fsdp").total_bytes < two.total_bytes


def test_per_gpu_bad_input():
    config = models.synthetic_config("llama-2-7b")
    with pytest.raises(ValueError, match="unknown strategy"):
        memory.estimate_per_gpu_memory(config, "lora", 2, "zero3")
    with pytest.raises(ValueError, match="positive integer"):
        memory.estimate_per_gpu_memory(config, "lora", 0)
