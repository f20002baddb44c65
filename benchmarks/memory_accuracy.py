"""Predicted (course_lib.memory) vs measured peak GPU memory of LoRA / QLoRA training on synthetic Llama models.

    python benchmarks/memory_accuracy.py            # on a CUDA GPU (minutes): writes the table course_lib ships
    python benchmarks/memory_accuracy.py --debug    # tiny run on CPU: checks the code path (writes to a temp folder)

Recipe measured (the one the estimator models): sdpa attention, gradient checkpointing (non-reentrant), AdamW,
batch 1, r=8, fp32 adapters; full fine-tuning of the bf16 model is the estimator's ``full_recipe="pure"``. LoRA: the model built in bf16 on the GPU. QLoRA: a bf16 checkpoint saved to disk and
loaded through the real ``from_pretrained(quantization_config=BitsAndBytesConfig(nf4, double quant, bf16))`` path,
then ``peft.prepare_model_for_kbit_training``. For each point: ``memory_allocated`` after loading (model +
adapters) and ``max_memory_allocated`` over 3 optimizer steps (reset after loading). Writes memory_accuracy.csv
into ``course_lib/resources/measurements/`` (package data: notebook 05 and the tests read it), or ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import gc
import shutil
import tempfile
import time
from pathlib import Path

import torch

from course_lib import resources

TARGETS = {"q,v": ("q_proj", "v_proj"), "all-linear": "all-linear"}


def _free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _allocated(device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def train_and_measure(model, vocab: int, seq: int, device, steps: int = 3) -> tuple[int, int, float]:
    """(allocated after loading, peak during `steps` AdamW steps, seconds per step)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.randint(0, vocab, (1, seq), device=device, generator=torch.Generator(device).manual_seed(0))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    after_load = _allocated(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss  # the output (and its logits) is dropped here, as in Trainer
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del loss
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    del optimizer, params
    _free()
    return after_load, peak, seconds


def run(shapes, seqs, out: Path, device, workdir: Path, methods=("lora", "qlora"), full_shapes=()) -> list[dict]:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from course_lib import memory, models

    rows = []
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    today = datetime.date.today().isoformat()

    def record(shape, method, target_name, seq, after_load, peak, seconds, config):
        # the full fine-tuning runs below train a bf16 model with AdamW: the pure bf16 recipe, not mixed precision
        est = memory.estimate_training_memory(config, method, target_modules=TARGETS.get(target_name, ()),
                                              seq_len=seq, compute_dtype=torch.bfloat16, full_recipe="pure")
        static = est.weights + est.quant_state + est.adapters
        row = dict(shape=shape, method=method, targets=target_name, seq_len=seq,
                   predicted_after_load_gb=round(static / 1e9, 3), measured_after_load_gb=round(after_load / 1e9, 3),
                   predicted_peak_gb=round(est.total_bytes / 1e9, 3), measured_peak_gb=round(peak / 1e9, 3),
                   error_pct=round(100 * (est.total_bytes - peak) / peak, 1) if peak else "",
                   predicted_phase=est.peak_phase, seconds_per_step=round(seconds, 2), device=gpu, date=today)
        rows.append(row)
        print(" | ".join(f"{v}" for v in row.values()), flush=True)
        with open(out / "memory_accuracy.csv", "w", newline="") as f:  # rewritten after each point: a crash keeps them
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    def lora_grid(model, shape, method, config):
        for target_name, targets in TARGETS.items():
            peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets,
                                                          lora_dropout=0.0, task_type="CAUSAL_LM"))
            peft_model.train()
            for seq in seqs:
                record(shape, method, target_name, seq, *train_and_measure(peft_model, config.vocab_size, seq, device), config)
            model = peft_model.unload()  # back to the bare base model for the next target set
            del peft_model
            _free()
        return model

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for shape in shapes:
        config = models.synthetic_config(shape)
        model = models.synthetic_model(shape, device=device, dtype=dtype)
        model.config.use_cache = False
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("sdpa")
        if shape in full_shapes:
            model.train()
            for p in model.parameters():
                p.requires_grad_(True)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            for seq in seqs:
                record(shape, "full", "-", seq, *train_and_measure(model, config.vocab_size, seq, device), config)
        if "lora" in methods:
            for p in model.parameters():
                p.requires_grad_(False)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.train()
            model = lora_grid(model, shape, "lora", config)
        if "qlora" not in methods:
            del model
            _free()
            continue
        folder = workdir / shape
        model.save_pretrained(folder, max_shard_size="4GB")
        del model
        _free()
        bnb = models.nf4_config(torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=bnb, dtype=torch.bfloat16,
                                                     device_map={"": device.index or 0} if device.type == "cuda" else "cpu",
                                                     attn_implementation="sdpa")
        model.config.use_cache = False
        model = prepare_model_for_kbit_training(model, gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        model = lora_grid(model, shape, "qlora", config)
        del model
        _free()
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["llama-3.2-1b", "llama-2-7b"])
    parser.add_argument("--seqs", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--full", nargs="*", default=["llama-3.2-1b"], help="shapes also measured with full fine-tuning")
    parser.add_argument("--out", type=Path, default=None, help="default: course_lib/resources/measurements/")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/course_memory_ckpt"))
    parser.add_argument("--debug", action="store_true", help="smollm2-135m, seq 16, on CPU: checks the code path")
    args = parser.parse_args()
    if args.debug:
        device, args.shapes, args.seqs, args.full = torch.device("cpu"), ["smollm2-135m"], [16], ["smollm2-135m"]
    else:
        if not torch.cuda.is_available():
            raise SystemExit("this measurement needs a CUDA GPU (use --debug to check the code path on CPU)")
        device = torch.device("cuda", 0)
    if args.out is None:  # a debug run must not overwrite the committed GPU table
        args.out = Path(tempfile.mkdtemp(prefix="memory-accuracy-debug-")) if args.debug else resources.source_folder("measurements")
    args.out.mkdir(parents=True, exist_ok=True)
    import peft
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}", flush=True)
    rows = run(args.shapes, args.seqs, args.out, device, args.workdir, full_shapes=args.full)
    print(f"\n{'shape':<14}{'method':<7}{'targets':<12}{'seq':>5}{'predicted GB':>14}{'measured GB':>13}{'error':>8}")
    for r in rows:
        print(f"{r['shape']:<14}{r['method']:<7}{r['targets']:<12}{r['seq_len']:>5}{r['predicted_peak_gb']:>14.2f}"
              f"{r['measured_peak_gb']:>13.2f}{str(r['error_pct']) + '%':>8}")


if __name__ == "__main__":
    main()
