"""Checkers for notebook 07 (QLoRA on a GPU): memory predictions, checked against the course's estimator and the
committed GPU measurements, so they run on any CPU in well under a second."""

from __future__ import annotations

from .core import _call, call_own, checker, fail, passed

GB = 1e9
AFTER_LOAD_TOLERANCE = 0.01  # vs the estimator, which allocates in 512-byte blocks: a bits-per-weight ledger is this close
BATCHES, SEQ_LENS = (1, 2, 4, 8, 16), (256, 512, 1024, 2048, 4096)


def _targets(row_targets: str):
    return "all-linear" if row_targets == "all-linear" else [f"{t}_proj" for t in row_targets.split(",")]


@checker
def check_after_load_memory(fn) -> None:
    """``fn(config, targets)`` -> bytes on the GPU once a QLoRA model (PEFT's default preparation) and its r=8 adapters
    are loaded: 4-bit linear weights with their quantization state, the other weights in fp32, fp32 adapters.
    Checked against ``memory.estimate_training_memory`` for each shape and target set of the committed GPU
    measurements, and compared with what the GPU measured."""
    from course_lib import memory, models, qlora, resources

    course_model = (memory.estimate_training_memory, memory.estimate_per_gpu_memory, qlora.predict_peak)
    rows = [r for r in resources.measurements("memory_accuracy.csv") if r["method"] == "qlora"]
    seen, report = set(), []
    for row in rows:
        key = (row["shape"], row["targets"])
        if key in seen:
            continue
        seen.add(key)
        config, targets = models.synthetic_config(row["shape"]), _targets(row["targets"])
        est = memory.estimate_training_memory(config, "qlora", target_modules=targets)
        got = call_own(fn, config, targets, forbidden=course_model, name="qlora_after_load_bytes",
                       write_from="the bits (or bytes) per weight of each kind of tensor, times how many weights "
                                  "have that kind (memory.parameter_count and memory.linear_shapes count them)",
                       hints=("the checker refuses an answer that asks the course's estimator for the figure: it "
                              "would only compare the estimator with itself.",
                              "write a bits-per-weight ledger: 4-bit linear layers with their block scales, fp32 for "
                              "everything else, fp32 adapters; nf4.bits_per_param gives the 4-bit part."))
        want = est.weights + est.quant_state + est.adapters
        try:
            got = float(got)
        except (TypeError, ValueError):
            fail(f"qlora_after_load_bytes returned {got!r}", "return a number of bytes (an int or a float).")
        if abs(got - want) > AFTER_LOAD_TOLERANCE * want:
            fail(f"{row['shape']} with LoRA on {row['targets']}: you predict {got / GB:.3f} GB; that is "
                 f"{(got - want) / want:+.1%} from the course's estimate",
                 "three things are on the GPU after loading: the linear layers in 4-bit (with their block scales), "
                 "every other weight (embeddings, output head, norms), and the adapters.",
                 "4-bit storage with double quantization costs nf4.bits_per_param(64, double_quant=True) bits per "
                 "weight; PEFT's default preparation (prepare_model_for_kbit_training) keeps the non-4-bit weights in "
                 "fp32, 4 bytes each; the adapters are fp32 too.",
                 "memory.parameter_count(config) counts every weight once (tied embeddings once); the linear layers "
                 "hold num_hidden_layers x the sum of in x out over memory.linear_shapes(config); the adapters hold "
                 "r·(in + out) per targeted layer.")
        measured = float(row["measured_after_load_gb"]) * GB
        report.append(f"{row['shape']} {row['targets']}: you {got / GB:.3f} GB, GPU {measured / GB:.3f} GB "
                      f"({(got - measured) / measured:+.1%})")
    passed("your after-load prediction is within 1% of the estimator on every measured QLoRA setting; against the "
           "GPU (which also holds CUDA's own workspace):\n  " + "\n  ".join(report))


def best_fit(config, gpu_bytes: float):
    """(tokens, fitting (batch, seq_len) pairs) for QLoRA r=8 q/v, PEFT's default preparation, fp16 on a T4."""
    from course_lib import qlora

    fitting = {(b, s): qlora.predict_peak(config, "default", batch_size=b, seq_len=s).total_bytes
               for b in BATCHES for s in SEQ_LENS}
    fitting = {k: v for k, v in fitting.items() if v <= gpu_bytes}
    return max((b * s for b, s in fitting), default=0), fitting


@checker
def check_batch_seq(fn) -> None:
    """``fn(config, gpu_bytes)`` -> ``(batch_size, seq_len)`` from ``BATCHES`` x ``SEQ_LENS`` that fits
    ``gpu_bytes`` by ``qlora.predict_peak`` (default preparation, fp16, r=8 on q/v) with the most tokens per step."""
    from course_lib import memory, models, qlora

    t4 = memory.usable_bytes("T4")
    on_t4 = f"a T4 ({t4 / qlora.GiB:.1f} GiB)"
    for shape, gpu_bytes, what in (("llama-2-7b", t4, on_t4), ("llama-3.2-1b", t4, on_t4),
                                   ("llama-2-7b", 8 * qlora.GiB, "an 8 GiB GPU")):
        config = models.synthetic_config(shape)
        got = _call(fn, config, gpu_bytes, name="choose_batch_seq")
        best, fitting = best_fit(config, gpu_bytes)
        try:
            b, s = (int(v) for v in got)
        except (TypeError, ValueError):
            fail(f"choose_batch_seq returned {got!r}", "return a pair (batch_size, seq_len).")
        if b not in BATCHES or s not in SEQ_LENS:
            fail(f"({b}, {s}) is not on the grid", f"pick batch_size from {BATCHES} and seq_len from {SEQ_LENS}.")
        peak = qlora.predict_peak(config, "default", batch_size=b, seq_len=s)
        if (b, s) not in fitting:
            fail(f"{shape} on {what}: batch {b} x {s} tokens is predicted to peak at {peak.total_bytes / qlora.GiB:.1f} "
                 f"GiB ({peak.peak_phase}), more than the {gpu_bytes / qlora.GiB:.1f} GiB there is",
                 "activations and logits grow with batch x seq_len; the weights do not: try fewer tokens per step.",
                 "ask the estimator: qlora.predict_peak(config, 'default', batch_size=..., seq_len=...).total_bytes, "
                 "and compare with gpu_bytes for each pair on the grid.")
        if b * s < best:
            fail(f"{shape} on {what}: batch {b} x {s} = {b * s:,} tokens per step fits, but some pair on the grid fits "
                 f"with more tokens",
                 "more tokens per step use the GPU better: look for the pair with the largest batch x seq_len that "
                 "still fits.",
                 "loop over every pair of the grid, keep those whose predicted peak is at most gpu_bytes, and take "
                 "the one with the most tokens.")
    config = models.synthetic_config("llama-2-7b")
    b, s = fn(config, t4)
    passed(f"Llama-2-7B QLoRA on a T4: batch {b} x {s} tokens ({b * s:,} per step) is predicted to peak at "
           f"{qlora.predict_peak(config, 'default', batch_size=b, seq_len=s).total_bytes / qlora.GiB:.1f} GiB of the "
           f"{t4 / qlora.GiB:.1f} GiB a T4 gives a run.")
