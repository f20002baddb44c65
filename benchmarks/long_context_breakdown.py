"""Where the peak of one long-context QLoRA step goes, tensor by tensor: what checks ``longctx.predict_peak``.

For each step of notebook 10's waterfall (``longctx.STEPS``) this runs one forward + backward of the Llama-3.1-8B
shape (random weights, NF4, LoRA r=32 on all linear layers, fp16 autocast, gradient checkpointing) with PyTorch's
allocator trace on (``torch.cuda.memory._record_memory_history``), replays the trace to the moment of the peak, and
groups the tensors alive then by their size per token (``h fp16`` = hidden size x 2 bytes per token, ...) and the
line of Python that allocated them. Beside it: the parts ``longctx.predict_peak`` predicts for the same step.
No memory cap, so every step runs at the same lengths; the peak of allocated bytes does not depend on a cap.

    python benchmarks/long_context_breakdown.py --out $OUT           # CUDA GPU, ~3 minutes with the checkpoint

Writes ``long_context_breakdown.csv`` (one row per group) under ``--out``. Also measures, at 2,048 tokens, the
adapter gradients of all techniques against the plain path at loss scales 1, 2^10 and 2^16: fp16 gradients of a
long sequence underflow without loss scaling, which is what the Trainer's GradScaler is for.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # before torch touches CUDA

import argparse  # noqa: E402
import csv  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import long_context as lc  # noqa: E402

from course_lib import longctx, qlora  # noqa: E402

GiB = 2**30
FIELDS = ["step", "seq_len", "measured_peak_gib", "predicted_peak_gib", "error_pct", "group", "allocated_by",
          "count", "gib", "note"]


def per_token_names(config) -> dict[int, str]:
    """Bytes per token -> a name, for the tensors one token row of which is that many bytes."""
    dims = {"h": config.hidden_size, "inter": config.intermediate_size, "V": config.vocab_size,
            "kv": config.num_key_value_heads * config.hidden_size // config.num_attention_heads,
            "heads": config.num_attention_heads}
    names = {}
    for dim, size in dims.items():
        for dtype, nbytes in (("bool", 1), ("fp16", 2), ("fp32", 4)):
            names.setdefault(size * nbytes, f"{dim} {dtype}")
    return names


def short(frame: dict) -> str:
    name = frame["filename"]
    for marker in ("site-packages/", "course_lib/", "benchmarks/"):
        if marker in name:
            name = name.split(marker)[-1] if marker == "site-packages/" else marker + name.split(marker)[-1]
            break
    return f"{name}:{frame['line']} {frame['name']}"


def allocated_by(frames: list[dict]) -> str:
    """The innermost line outside torch itself (the model or library code that asked), with the torch op under it."""
    if not frames:
        return "(no Python frame: the autograd engine, in backward)"
    inner = short(frames[0])
    for f in frames:
        if "/torch/" not in f["filename"]:
            return short(f) + ("" if f is frames[0] else f"  [via {inner}]")
    return inner


def live_at_peak(trace: list[dict], start_bytes: int):
    """Replay the allocator trace: (peak bytes, {addr: (size, frames)} alive at the peak, pre-existing bytes freed
    before the peak). ``start_bytes``: allocated when recording began."""
    cur, peak, peak_at = start_bytes, start_bytes, -1
    for i, e in enumerate(trace):
        if e["action"] == "alloc":
            cur += e["size"]
            if cur > peak:
                peak, peak_at = cur, i
        elif e["action"] == "free_completed":
            cur -= e["size"]
    live, old_freed = {}, 0
    for e in trace[:peak_at + 1]:
        if e["action"] == "alloc":
            live[e["addr"]] = (e["size"], e.get("frames", []))
        elif e["action"] == "free_completed":
            if e["addr"] in live:
                del live[e["addr"]]
            else:
                old_freed += e["size"]
    return peak, live, old_freed


def breakdown(model, n: int, techniques, step: str, prep: str, args) -> list[dict]:
    ids = torch.randint(0, model.config.vocab_size, (1, n), device="cuda")
    longctx.zero_gradients(model)
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    torch.cuda.memory._record_memory_history(max_entries=args.max_entries, stacks="python")
    try:
        longctx.forward_backward(model, ids, techniques=techniques, autocast_dtype=torch.float16)
        torch.cuda.synchronize()
        snapshot = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    measured = torch.cuda.max_memory_allocated()
    del ids
    longctx.zero_gradients(model)
    trace = snapshot["device_traces"][0]
    peak, live, old_freed = live_at_peak(trace, start)
    est = longctx.predict_peak(model.config, techniques, n, prep=prep, r=args.r, targets="all-linear")
    names = per_token_names(model.config)
    groups = defaultdict(lambda: [0, 0])
    for size, frames in live.values():
        if size < (1 << 20):
            group = "small (< 1 MiB)"
        else:
            per_token = size / n
            match = [name for bpt, name in names.items() if abs(per_token - bpt) * n <= 512]
            group = match[0] if match else next((f"{k} x {name}" for bpt, name in names.items()
                                                 for k in (2, 3, 4) if abs(per_token - k * bpt) * n <= 512),
                                                f"{size / 2**20:.1f} MiB ({per_token:.0f} bytes/token)")
        key = (group, allocated_by(frames) if size >= (1 << 20) else "")
        groups[key][0] += 1
        groups[key][1] += size
    base = dict(step=step, seq_len=n, measured_peak_gib=round(measured / GiB, 3),
                predicted_peak_gib=round(est.total_bytes / GiB, 3),
                error_pct=round(100 * (est.total_bytes - measured) / measured, 1))
    rows = [dict(base, group="allocated before the step", allocated_by="weights, quantization state, adapters",
                 count="", gib=round((start - old_freed) / GiB, 3),
                 note=f"trace peak {peak / GiB:.3f} GiB vs max_memory_allocated {measured / GiB:.3f}")]
    rows += [dict(base, group=g, allocated_by=by, count=c, gib=round(b / GiB, 3), note="")
             for (g, by), (c, b) in sorted(groups.items(), key=lambda kv: -kv[1][1])]
    parts = {k: v for k, v in est.breakdown().items() if v}
    rows.append(dict(base, group="predicted parts", allocated_by="; ".join(f"{k} {v / GiB:.3f}" for k, v in
                                                                           parts.items()), count="", gib="",
                     note=f"phase {est.peak_phase}; " + "; ".join(f"{k}: {v / GiB:.3f}" for k, v in
                                                                 est.details.get("phases", {}).items())))
    print(f"\n=== {step} at {n:,} tokens: measured {measured / GiB:.3f} GiB, predicted {est.total_bytes / GiB:.3f} "
          f"({base['error_pct']:+.1f}%), {est.peak_phase}", flush=True)
    for r in rows[:args.top]:
        print(f"  {r['gib']!s:>7} GiB  {r['count']!s:>4} x {r['group']:<28} {r['allocated_by']}")
    print("  predicted:", rows[-1]["allocated_by"], "|", rows[-1]["note"])
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama-3.1-8b")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--r", type=int, default=32)
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--long", type=int, default=40960, help="one more length for the last step (tiled MLP)")
    parser.add_argument("--max-entries", type=int, default=400_000)
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("this breakdown needs a CUDA GPU (the allocator trace is CUDA's)")
    from peft import get_peft_model

    args.out.mkdir(parents=True, exist_ok=True)
    preset = qlora.Preset(f"synthetic-{args.shape}", f"synthetic:{args.shape}", needs_gpu=True, seq_len=4096,
                          batch_size=1, steps=1, lr=1e-4, t4_like=False, r=args.r, alpha=2 * args.r,
                          targets="all-linear")
    qlora.synthetic_checkpoint(args.shape, torch.device("cuda", 0))
    model, _ = qlora.load_4bit(preset, torch.device("cuda", 0), torch.float16)
    lora = qlora.lora_config(r=args.r, alpha=2 * args.r, targets="all-linear", dropout=0.05)
    model = get_peft_model(qlora.prepare(model, "default"), lora)
    model.train()
    rows = []
    path = args.out / "long_context_breakdown.csv"
    for step, prep, techniques in longctx.STEPS:
        if prep == "lean" and not techniques:
            lc.to_lean(model, torch.float16)
        if "no_lora_dropout" in techniques and longctx.lora_dropout(model) > 0:
            longctx.remove_lora_dropout(model)
        lengths = args.lengths + ([args.long] if techniques == longctx.TECHNIQUES else [])
        for n in lengths:
            try:
                rows += breakdown(model, n, techniques, step, prep, args)
            except torch.OutOfMemoryError:
                rows.append(dict(step=step, seq_len=n, note="OOM"))
                longctx.zero_gradients(model)
                torch.cuda.empty_cache()
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=FIELDS)
                writer.writeheader()
                writer.writerows({k: r.get(k, "") for k in FIELDS} for r in rows)

    # fp16 gradients with and without loss scaling (dropout is off by now: both paths are deterministic)
    bench = lc.Bench(argparse.Namespace(budget_s=1e9, cap_gib=80.0, debug=False, shape=args.shape, out=args.out),
                     csv_name="long_context_equivalence.csv")
    for scale in (1.0, 2.0**10, 2.0**16):
        lc.compare(bench, model, 2048, longctx.TECHNIQUES, None, f"all techniques vs plain, loss scale {scale:g}",
                   loss_scale=scale)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
