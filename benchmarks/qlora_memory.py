"""Predicted vs measured peak memory and tokens/s of 16-bit LoRA, QLoRA (PEFT default) and QLoRA (lean) on a GPU
made to behave like a T4 (15 GiB cap, fp16), and the longest batch x sequence that fits.

    python benchmarks/qlora_memory.py --out benchmarks/results      # on a CUDA GPU (minutes)
    python benchmarks/qlora_memory.py --debug                       # synthetic smollm2-135m shape on CPU: code path

Every point is a real ``course_lib.training.train`` run (Trainer, fp16 with loss scaling, paged AdamW, gradient
checkpointing) of ``--steps`` steps on random token ids, on a synthetic model (random weights) loaded through
``from_pretrained`` with ``BitsAndBytesConfig`` (QLoRA) or in fp16 (LoRA). Measured: ``max_memory_allocated``
(which leaves out the paged optimizer's unified memory, a few MB with LoRA; the prediction counts it) and tokens/s
over the steps after the first. A point that runs out of memory under the cap is recorded as OOM. Writes
qlora_memory.csv (rewritten after every point) and qlora_memory.png.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import time
from pathlib import Path

import torch

TARGETS = {"q,v": ("q_proj", "v_proj"), "all-linear": "all-linear"}
POINTS = ((512, 1), (2048, 1), (512, 4))  # (seq_len, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["llama-2-7b", "llama-3.2-1b"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--cap-gib", type=float, default=15.0)
    parser.add_argument("--budget-s", type=float, default=1e9, help="start no new point after this many seconds")
    parser.add_argument("--max-search", nargs="*", default=["llama-2-7b"], help="shapes to search the largest fit for")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args()
    run(args)


def run(args) -> list[dict]:
    from peft import get_peft_model

    from course_lib import data, memory, models, qlora, training

    if args.debug:
        device, dtype = torch.device("cpu"), torch.float32
        args.shapes, args.max_search, points, args.steps = ["smollm2-135m"], ["smollm2-135m"], ((16, 1),), 2
    else:
        if not torch.cuda.is_available():
            raise SystemExit("this benchmark needs a CUDA GPU (use --debug to check the code path on CPU)")
        device, dtype, points = torch.device("cuda", 0), torch.float16, POINTS
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib * 2**30 / total), device)
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    start, rows = time.perf_counter(), []

    def out_of_time() -> bool:
        return time.perf_counter() - start > args.budget_s

    def measure(model, config, seq, batch, steps=None):
        steps = steps or args.steps
        dataset = data.random_token_rows(config.vocab_size, seq, max(batch * steps, 1))
        try:
            r = training.train(model, dataset, steps=steps, lr=1e-4, batch_size=batch, scheduler="constant",
                               compute_dtype=dtype if device.type == "cuda" else None, desc=f"{seq}x{batch}")
            return r.load_bytes, r.peak_bytes, r.tokens_per_second
        except torch.OutOfMemoryError:
            training.free_memory()
            return None

    def record(shape, method, target_name, seq, batch, result, config, search=False):
        kw = dict(r=8, batch_size=batch, seq_len=seq, compute_dtype=dtype)
        if method == "lora-16bit":
            est = memory.estimate_training_memory(config, "lora", target_modules=TARGETS[target_name], **kw)
        else:
            est = qlora.predict_peak(config, method.split("-")[1], targets=TARGETS[target_name], **kw)
        load, peak, tps = result if result else (None, None, None)
        row = dict(shape=shape, method=method, targets=target_name, seq_len=seq, batch=batch,
                   predicted_peak_gb=round(est.total_bytes / 1e9, 3),
                   measured_peak_gb=round(peak / 1e9, 3) if peak else "OOM",
                   measured_load_gb=round(load / 1e9, 3) if load else "",
                   error_pct=round(100 * (est.total_bytes - peak) / peak, 1) if peak else "",
                   tokens_per_s=round(tps, 1) if tps else "", predicted_phase=est.peak_phase,
                   max_search=search, device=gpu, cap_gib=args.cap_gib, date=datetime.date.today().isoformat())
        rows.append(row)
        print(" | ".join(str(v) for v in row.values()), flush=True)
        with open(args.out / "qlora_memory.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    def grid(model, shape, method, config):
        for target_name, targets in TARGETS.items():
            peft_model = get_peft_model(model, qlora.lora_config(8, 16, targets, dropout=0.0))
            for seq, batch in points:
                if out_of_time():
                    break
                record(shape, method, target_name, seq, batch, measure(peft_model, config, seq, batch), config)
            model = peft_model.unload()
            del peft_model
            training.free_memory()
        return model

    def max_search(model, shape, method, config):
        """Largest batch of 2048-token rows (then 4096) that trains under the cap, r=8 q/v."""
        peft_model = get_peft_model(model, qlora.lora_config(8, 16, TARGETS["q,v"], dropout=0.0))
        seq = 16 if args.debug else 2048
        batch, best = 1, None
        while not out_of_time() and batch <= (2 if args.debug else 64):
            result = measure(peft_model, config, seq, batch, steps=2)
            record(shape, method, "q,v", seq, batch, result, config, search=True)
            if result is None:
                break
            best, batch = batch, batch * 2 if batch < 4 else batch + 2
        print(f"MAX {shape} {method}: batch {best} x {seq} tokens fits under {args.cap_gib} GiB", flush=True)
        model = peft_model.unload()
        training.free_memory()
        return model

    for shape in args.shapes:
        if out_of_time():
            break
        config = models.synthetic_config(shape)
        # QLoRA: one 4-bit load; lean first, then PEFT's preparation (which upcasts in place) for the default
        preset = qlora.Preset(shape, f"synthetic:{shape}", needs_gpu=device.type == "cuda", seq_len=512,
                              batch_size=1, steps=args.steps, lr=1e-4)
        model, _ = qlora.load_4bit(preset, device, dtype)
        for prep in ("lean", "default"):
            model = qlora.prepare(model, prep)
            model = grid(model, shape, f"qlora-{prep}", config)
            if shape in args.max_search:
                model = max_search(model, shape, f"qlora-{prep}", config)
        del model
        training.free_memory()
        if out_of_time():
            break
        # 16-bit LoRA: the same checkpoint in fp16 (a 7B model's 13.5 GB leaves little room under a T4's cap)
        try:
            model, _ = qlora.load_model(preset, device, dtype, bits=16)
        except torch.OutOfMemoryError:
            training.free_memory()
            print(f"{shape}: the fp16 weights alone do not fit under the cap", flush=True)
            continue
        model = qlora.prepare(model, "lean")
        model = grid(model, shape, "lora-16bit", config)
        del model
        training.free_memory()
    plot(rows, args.out / "qlora_memory.png")
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["measured_peak_gb"] != "OOM"]
    if not ok:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    colors = {"lora-16bit": "tab:gray", "qlora-default": "tab:blue", "qlora-lean": "tab:green"}
    for method, color in colors.items():
        pts = [r for r in ok if r["method"] == method]
        ax1.scatter([r["predicted_peak_gb"] for r in pts], [r["measured_peak_gb"] for r in pts], c=color,
                    label=method, s=25)
    top = max(max(r["predicted_peak_gb"], r["measured_peak_gb"]) for r in ok) * 1.05
    xs = [0, top]
    ax1.plot(xs, xs, "k-", lw=0.8, label="measured = predicted")
    ax1.fill_between(xs, [x / 1.1 for x in xs], [x / 0.9 for x in xs], color="k", alpha=0.08, label="±10%")
    ax1.axhline(15 * 2**30 / 1e9, color="red", ls="--", lw=0.8, label="T4 cap (15 GiB)")
    ax1.set(xlabel="predicted peak (GB)", ylabel="measured peak (GB)", xlim=(0, top), ylim=(0, top),
            title="peak training memory: predicted vs measured")
    ax1.legend(fontsize=8)
    grid = [r for r in ok if not r["max_search"] and r["tokens_per_s"]]
    labels = [f"{r['shape'].replace('llama-', '')} {r['targets']} {r['seq_len']}x{r['batch']}" for r in grid]
    uniq = list(dict.fromkeys(labels))
    width = 0.27
    for k, (method, color) in enumerate(colors.items()):
        vals = {lab: r["tokens_per_s"] for lab, r in zip(labels, grid) if r["method"] == method}
        ax2.barh([i + (k - 1) * width for i in range(len(uniq))], [vals.get(lab, 0) for lab in uniq], height=width,
                 color=color, label=method)
    ax2.set_yticks(range(len(uniq)), uniq, fontsize=7)
    ax2.set(xlabel="tokens/s (training)", title="throughput (0 = out of memory / not run)")
    ax2.legend(fontsize=8)
    fig.suptitle(f"QLoRA vs LoRA on {rows[0]['device']}, capped at {rows[0]['cap_gib']} GiB, fp16", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
