"""QLoRA (and LoRA) with FSDP on 1 vs 2 GPUs: peak memory per GPU, tokens/s, scaling efficiency, the largest
shape that fits per GPU count, and the per-GPU prediction of ``course_lib.memory.estimate_per_gpu_memory``.

    python benchmarks/scaling_out.py                                       # on a machine with 2 CUDA GPUs
    python benchmarks/scaling_out.py --debug                               # tiny model, DDP over gloo, on a CPU

NOT RUN YET: written and checked with ``--debug`` on a CPU; no 2-GPU machine was available when it was written,
so there is no committed scaling_out.csv and notebook 08 says so. Everything below the debug path is unmeasured.

Every point is a real ``accelerate launch --config_file fsdp_2gpu_qlora.yaml --num_processes N -m
course_lib.distributed`` run (the config ships in ``course_lib/resources/accelerate/``; FSDP FULL_SHARD, 4-bit NF4 stored in bf16, LoRA r=8 on q,v,
gradient checkpointing, random token ids) on a synthetic checkpoint (random weights of the published shape,
written once into ``--checkpoints``). The per-GPU batch is fixed (weak scaling): scaling efficiency is
tokens/s on 2 GPUs / (2 x tokens/s on 1 GPU). The fit search runs each shape at seq 512, batch 1 per GPU under a
``--cap-gib`` memory cap per GPU (24 GiB: a consumer card), smallest shape first. A run that fails is recorded
with the last line of its error (OOM or otherwise). Writes scaling_out.csv, rewritten after every point, into
``course_lib/resources/measurements/`` (package data: notebook 08 reads it), or ``--out``.
Disk: a bf16 checkpoint takes 2 bytes per parameter (7B: 13.5 GB, 13B: 26 GB, 33B: 65 GB, 70B: 138 GB); shapes
whose checkpoint does not fit the free disk are skipped with that reason.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import shutil
import tempfile
from pathlib import Path

import torch

FSDP_CONFIG = "fsdp_2gpu_qlora.yaml"  # shipped in course_lib/resources/accelerate/
POINTS = ((512, 1), (2048, 1), (512, 4))  # (seq_len, batch per GPU)
FIT_SHAPES = ("llama-2-7b", "llama-2-13b", "llama-33b", "llama-2-70b")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["llama-2-7b", "llama-2-13b"])
    parser.add_argument("--methods", nargs="+", default=["qlora"])
    parser.add_argument("--gpus", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--cap-gib", type=float, default=24.0, help="memory cap per GPU for the fit search")
    parser.add_argument("--fit-shapes", nargs="*", default=list(FIT_SHAPES))
    parser.add_argument("--checkpoints", type=Path, default=None, help="where synthetic checkpoints are written")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: course_lib/resources/measurements/ (package data notebook 08 reads)")
    parser.add_argument("--debug", action="store_true", help="tiny model on a CPU: checks the code path only")
    run(parser.parse_args())


def run(args) -> list[dict]:
    from course_lib import distributed, memory, models

    if args.debug:
        args.shapes, args.methods, args.fit_shapes, points = ["tiny"], ["lora"], [], ((0, 4),)
        config_file = None  # launch() picks the CPU (gloo) config
        args.out = Path(tempfile.mkdtemp(prefix="scaling-out-debug-"))
    else:
        if torch.cuda.device_count() < max(args.gpus):
            raise SystemExit(f"this benchmark needs {max(args.gpus)} CUDA GPUs, found {torch.cuda.device_count()}; "
                             "use --debug to check the code path on a CPU.")
        config_file, points = FSDP_CONFIG, POINTS
    from course_lib.models import cache_dir

    checkpoints = args.checkpoints or cache_dir() / "synthetic"
    if args.out is None:
        from course_lib import resources

        args.out = resources.source_folder("measurements")
    args.out.mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix="scaling-out-runs-"))  # each launch's JSON log; the CSV keeps what matters
    csv_path = args.out / "scaling_out.csv"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    rows: list[dict] = []

    def ensure_checkpoint(shape: str) -> str | None:
        """None when the checkpoint is there (written now if needed), else why it cannot be."""
        if shape == "tiny" or (checkpoints / shape / "config.json").is_file():
            return None
        need = memory.parameter_count(models.synthetic_config(shape)) * 2 * 1.05
        checkpoints.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(checkpoints).free
        if free < need:
            return f"skipped: its bf16 checkpoint needs {need / 1e9:.0f} GB of disk, {free / 1e9:.0f} GB free"
        print(f"writing a synthetic {shape} checkpoint into {checkpoints / shape} (once) ...", flush=True)
        models.save_synthetic_checkpoint(shape, checkpoints / shape, dtype=torch.bfloat16)
        return None

    def point(shape, method, n, seq, batch, cap_gib=0.0, purpose="throughput"):
        row = dict(shape=shape, method=method, num_gpus=n, seq_len=seq, batch_per_gpu=batch, cap_gib=cap_gib,
                   purpose=purpose, gpu=gpu, date=datetime.date.today().isoformat())
        if shape != "tiny":
            config = models.synthetic_config(shape)
            est = memory.estimate_per_gpu_memory(config, method, n, "fsdp", seq_len=seq, batch_size=batch)
            row["predicted_gb_per_gpu"] = round(est.total_gb, 3)
        why = ensure_checkpoint(shape)
        if why:
            row["status"] = why
        else:
            kw = dict(model="tiny" if shape == "tiny" else f"synthetic:{shape}", method=method, steps=args.steps,
                      global_batch=batch * n, checkpoints=str(checkpoints))
            if seq:
                kw["seq_len"] = seq
            if cap_gib:
                kw["cap_gib"] = cap_gib
            try:
                log = distributed.launch(n, runs / f"{shape}-{method}-{n}-{seq}-{batch}.json",
                                         config_file=config_file, timeout=1800, **kw)
                peaks = log["peak_memory_bytes"] or [0]
                row.update(status="ok", measured_gb_per_gpu=round(max(peaks) / 1e9, 3),
                           tokens_per_second=round(log["tokens_per_second"], 1), final_loss=round(log["losses"][-1], 4))
            except RuntimeError as exc:
                last = str(exc).strip().splitlines()[-1]
                row["status"] = "OOM" if "OutOfMemory" in str(exc) or "out of memory" in str(exc) else f"failed: {last[:200]}"
        rows.append(row)
        _write(csv_path, rows)
        print({k: v for k, v in row.items() if k not in ("gpu", "date")}, flush=True)
        return row

    # 1. memory and speed on 1 vs 2 GPUs, same per-GPU batch
    for shape in args.shapes:
        for method in args.methods:
            for seq, batch in points:
                by_n = {n: point(shape, method, n, seq, batch) for n in args.gpus}
                if 1 in by_n and 2 in by_n and by_n[1].get("tokens_per_second") and by_n[2].get("tokens_per_second"):
                    eff = by_n[2]["tokens_per_second"] / (2 * by_n[1]["tokens_per_second"])
                    by_n[2]["scaling_efficiency"] = round(eff, 3)
                    _write(csv_path, rows)
    # 2. the largest shape that fits under the cap, per GPU count (stop at the first shape that does not fit)
    for n in args.gpus:
        for shape in args.fit_shapes:
            row = point(shape, "qlora", n, 512, 1, cap_gib=args.cap_gib, purpose="fit search")
            if row.get("status") != "ok":
                break
    print(f"wrote {csv_path}")
    return rows


def _write(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


if __name__ == "__main__":
    main()
