"""What the course's T4 emulation rests on, measured on the GPU machine (``course_lib.t4``; notebooks 07 and 10).

    python benchmarks/t4_emulation.py --out course_lib/resources/measurements     # CUDA GPU, ~2 minutes

1. **Memory outside the allocator.** A Colab T4 reports 15,095 MiB; the CUDA context, the kernel images loaded so
   far and cuBLAS/cuDNN/bitsandbytes' handles take their share outside PyTorch's caching allocator. Measured here as
   ``total - free - reserved`` after real QLoRA training steps (4-bit Llama-3.2-1B shape, LoRA, SDPA), and after a
   paged AdamW step (whose state is unified memory, outside the allocator too). ``memory.CUDA_OVERHEAD_MIB`` is the
   largest such figure of the course's runs (the long-context benchmark records it too); a T4's own context is
   likely smaller, so the emulated T4 has at most the room a real one has. (The math kernel against the
   memory-efficient one, at 2K/4K/8K tokens: ``long_context.py``'s kernel table.)
2. **Which SDPA kernel runs** under the emulation, for a grouped-query model as transformers ships (``enable_gqa``)
   and with ``longctx``'s ``repeat_kv``, and with every kernel allowed (``t4.SDPAKernels``).
3. **Whether the memory-efficient kernel accepts K/V expanded without a copy** (stride 0 over the heads), which
   would save repeat_kv's copies.

Writes ``t4_emulation.csv``. The committed one is from 2026-12-04 (H200, torch 2.11): the grouped-query call as
transformers ships it runs the math kernel under the emulation and the cuDNN kernel with every kernel allowed;
``repeat_kv`` gets the memory-efficient kernel. Outside the allocator: 771 MiB after QLoRA steps, 899 MiB after a
paged AdamW step. The stride-0 check ran the memory-efficient kernel on the expanded views with a result equal to
``repeat_interleave``'s; the call allocated 64 MiB, its 32 MiB output and 32 MiB more, less than the 64 MiB that
copies of K and V would add to the output (what the other 32 MiB hold was not measured). ``longctx.repeat_kv``
still copies; using the views instead is not done yet.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib import longctx, qlora, t4  # noqa: E402

GiB, MiB = 2**30, 2**20
FIELDS = ["kind", "what", "seq_len", "attention", "measured_peak_gib", "predicted_peak_gib", "error_pct", "value",
          "note", "device", "date"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("course_lib/resources/measurements"))
    parser.add_argument("--shape", default="llama-3.2-1b")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    gpu = torch.cuda.get_device_name(0)

    def record(**row):
        row.update(device=gpu, date=datetime.date.today().isoformat())
        rows.append(row)
        with (args.out / "t4_emulation.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows({k: r.get(k, "") for k in FIELDS} for r in rows)
        print(f"[{time.strftime('%H:%M:%S')}] " + ", ".join(f"{k}={v}" for k, v in row.items() if k in FIELDS[:9]
                                                            and v != ""), flush=True)

    from peft import get_peft_model

    preset = qlora.Preset(f"synthetic-{args.shape}", f"synthetic:{args.shape}", needs_gpu=True, seq_len=1024,
                          batch_size=1, steps=1, lr=1e-4, t4_like=True, r=32, alpha=64, targets="all-linear")
    qlora.synthetic_checkpoint(args.shape, torch.device("cuda", 0))
    device, dtype = qlora.setup_device(preset)
    model, _ = qlora.load_4bit(preset, device, dtype)
    model = get_peft_model(qlora.prepare(model, "lean"), qlora.lora_config(32, 64, "all-linear", dropout=0.0))
    model.train()
    config = model.config
    record(kind="setup", what=str(t4.active()), note=f"torch {torch.__version__}")

    def step(n, techniques=(), loss_scale=1.0):
        ids = torch.randint(0, config.vocab_size, (1, n), device=device)
        longctx.zero_gradients(model)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with t4.SDPAKernels() as seen:
            longctx.forward_backward(model, ids, techniques=techniques, autocast_dtype=dtype, check_memory=False,
                                     loss_scale=loss_scale)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        longctx.zero_gradients(model)
        return seen.names, peak

    # 2. which kernel runs
    for label, techniques in (("transformers' sdpa (enable_gqa)", ()), ("repeat_kv", ("repeat_kv",))):
        names, _ = step(1024, techniques)
        record(kind="kernel", what=label, seq_len=1024, attention=names, note="T4 emulation")
    with t4.attention_kernels(("flash", "efficient", "math", "cudnn")):
        for label, techniques in (("transformers' sdpa (enable_gqa)", ()), ("repeat_kv", ("repeat_kv",))):
            names, _ = step(1024, techniques)
            record(kind="kernel", what=label, seq_len=1024, attention=names, note="all kernels allowed")

    # 1. memory outside the allocator: after training steps, then after a paged AdamW update (whose state is CUDA
    # unified memory: on the device while it fits, but not the allocator's)
    import bitsandbytes as bnb

    def outside(when: str, note: str) -> None:
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info(device)
        reserved = torch.cuda.memory_reserved(device)
        record(kind="overhead", what=f"outside the allocator, {when}", value=round((total - free - reserved) / MiB),
               note=f"MiB: device used {(total - free) / MiB:.0f} - allocator reserved {reserved / MiB:.0f}; {note}")

    for techniques in (("repeat_kv", "chunked_loss"), ("repeat_kv",)):
        step(2048, techniques)
    outside("after QLoRA steps", "SDPA, bitsandbytes 4-bit matmuls, the chunked loss")
    opt = bnb.optim.PagedAdamW32bit([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (1, 512), device=device)
    longctx.forward_backward(model, ids, techniques=("repeat_kv",), autocast_dtype=dtype, check_memory=False)
    opt.step()
    opt.zero_grad()
    adam = sum(8 * p.numel() for p in model.parameters() if p.requires_grad)
    outside("after a paged AdamW step", f"includes its {adam / MiB:.0f} MiB of optimizer state")
    del opt
    longctx.zero_gradients(model)
    torch.cuda.empty_cache()

    # 3. does the memory-efficient kernel take stride-0 (expanded) K/V? With batch 1, the KV heads can be the batch
    # dimension and each group's query heads the heads: then K/V need no copy, only a view.
    hq, hkv, n, d = 32, 8, 4096, 128
    g = hq // hkv
    q = torch.randn(1, n, hq, d, device=device, dtype=dtype).transpose(1, 2)  # transformers' layout
    k = torch.randn(1, n, hkv, d, device=device, dtype=dtype).transpose(1, 2)
    v = torch.randn(1, n, hkv, d, device=device, dtype=dtype).transpose(1, 2)
    ref = F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1), is_causal=True)
    try:
        qg = q.reshape(hkv, g, n, d)
        kg = k.reshape(hkv, 1, n, d).expand(hkv, g, n, d)
        vg = v.reshape(hkv, 1, n, d).expand(hkv, g, n, d)
        views = qg.data_ptr() == q.data_ptr() and kg.data_ptr() == k.data_ptr()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        with t4.SDPAKernels() as seen:
            out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True).reshape(1, hq, n, d)
        extra = torch.cuda.max_memory_allocated() - before
        record(kind="expand", what="KV heads as the batch, K/V expanded (stride 0)", seq_len=n, attention=seen.names,
               value=round(extra / MiB, 1),
               note=f"views: {views}; MiB allocated by the call; max |difference| vs repeat_interleave "
                    f"{(out - ref).abs().max().item():.2e}")
    except Exception as e:
        record(kind="expand", what="KV heads as the batch, K/V expanded (stride 0)", seq_len=n,
               note=f"failed: {type(e).__name__}: {str(e)[:160]}")
    print("done", flush=True)


if __name__ == "__main__":
    main()
