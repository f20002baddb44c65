"""LoRA and QLoRA on several processes with Hugging Face accelerate (notebook 08): one script, 1 to N processes.

    accelerate launch --config_file $(python -m course_lib.distributed --config ddp_cpu_2proc.yaml) \\
        -m course_lib.distributed --out run.json
    accelerate launch --config_file $(python -m course_lib.distributed --config fsdp_2gpu_qlora.yaml) \\
        -m course_lib.distributed --model synthetic:llama-2-7b --method qlora --global-batch 2 --seq-len 512 --out run.json

The configs ship inside the package (``course_lib/resources/accelerate/``, ``config_text(name)`` shows one).

The course writes no distributed code of its own: accelerate starts the processes, wraps the model in PyTorch's
DDP or FSDP (chosen by the config file, not by this code) and all-reduces. What this module adds is the one rule
that makes N processes train *exactly* like one process on the same global batch:

* every process walks the same seeded order of global batches and takes its own ``global_batch / N`` rows;
* the loss is a sum over label tokens divided by the number of label tokens in the *global* batch (not the
  local one), multiplied by N because DDP and FSDP *average* gradients over processes. Then the averaged gradient
  is the gradient of the global-batch mean loss: the same number one process computes on the whole batch.

Data and LoRA come from the same code as notebooks 06/07: ``course_lib.data`` (the shipped ``orders`` task,
chat template, label masking, ``collate``) and ``course_lib.training.add_lora`` (PEFT, dropout 0 here so
runs are deterministic). The tiny model needs no download; a character-level tokenizer built here fits its vocab.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

import course_lib
from course_lib import data, memory, models, resources, training
from course_lib.fsutil import atomic_write_text

CPU_CONFIG = "ddp_cpu_2proc.yaml"  # a name in course_lib/resources/accelerate/
METHODS = ("lora", "qlora")


def config_names() -> list[str]:
    """The accelerate configs the course ships."""
    return resources.names("accelerate", ".yaml")


def config_text(name: str) -> str:
    """The text of the shipped accelerate config ``name`` (e.g. ``"fsdp_2gpu_qlora.yaml"``)."""
    return resources.read_text("accelerate", name)


# ----------------------------------------------------------------------------------------- the global batch
def global_batches(n_rows: int, global_batch: int, steps: int, seed: int = 0) -> list[list[int]]:
    """Row indices of each step's global batch: seeded shuffles of the dataset, one after another. Every
    process computes the same list, whatever the number of processes."""
    if global_batch > n_rows:
        raise ValueError(f"global_batch={global_batch} is larger than the dataset ({n_rows} rows); lower it.")
    rng, order, batches = random.Random(seed), [], []
    while len(batches) < steps:
        if len(order) < global_batch:
            epoch = list(range(n_rows))
            rng.shuffle(epoch)
            order += epoch
        batches.append(order[:global_batch])
        order = order[global_batch:]
    return batches


def local_rows(batch: list[int], rank: int, num_processes: int) -> list[int]:
    """The rows of ``batch`` that process ``rank`` trains on: a contiguous ``len(batch) / num_processes`` slice."""
    if len(batch) % num_processes:
        raise ValueError(
            f"the global batch ({len(batch)} rows) does not split evenly over {num_processes} processes; "
            f"use a global batch that is a multiple of {num_processes} (e.g. {num_processes * max(1, len(batch) // num_processes)}).")
    per = len(batch) // num_processes
    return batch[rank * per:(rank + 1) * per]


def label_tokens(labels: torch.Tensor) -> int:
    """Tokens that count in the loss: labels that are not -100, after the model's shift by one position."""
    return int((labels[:, 1:] != data.IGNORE_INDEX).sum())


# ------------------------------------------------------------------------------------------------ the model
def fsdp_bnb_config(compute_dtype: torch.dtype = torch.bfloat16):
    """4-bit NF4 with double quantization, packed into ``compute_dtype`` storage: FSDP shards only float tensors
    and wants one dtype per unit, so ``bnb_4bit_quant_storage`` must equal the dtype of the rest of the model."""
    return models.nf4_config(compute_dtype, quant_storage=compute_dtype)


def build_model(args, device: torch.device):
    """``(model with LoRA, tokenized rows, pad id)`` for ``args.model``: ``tiny`` (CPU) or ``synthetic:<shape>``."""
    if args.model == "tiny":
        if args.method != "lora":
            raise ValueError("the tiny model trains with --method lora; QLoRA needs a GPU (use synthetic:<shape>).")
        tokenizer = models.tiny_chat_tokenizer()
        rows = data.tokenize_dataset(data.load_task("orders")["train"], tokenizer, max_length=512)
        rows = [rows[i] for i in range(len(rows))]
        model = models.tiny_model("llama", seed=args.seed, max_position_embeddings=512)
        pad = tokenizer.pad_token_id
    elif args.model.startswith("synthetic:"):
        if device.type != "cuda":
            raise RuntimeError("synthetic full-size models need CUDA GPUs; on a CPU use --model tiny.")
        shape = args.model.split(":", 1)[1]
        dtype = torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
        folder = Path(args.checkpoints) / shape
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no checkpoint of {shape} in {folder}: write it once, before launching, with "
                                    f"course_lib.models.save_synthetic_checkpoint({shape!r}, {str(folder)!r}).")
        from transformers import AutoModelForCausalLM

        quant = fsdp_bnb_config(dtype) if args.method == "qlora" else None
        # No device_map: under FSDP with cpu_ram_efficient_loading, rank 0 loads and FSDP broadcasts the shards.
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, quantization_config=quant)
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        rows = data.random_token_rows(model.config.vocab_size, args.seq_len, max(args.global_batch * args.steps, 1), args.seed)
        pad = 0
    else:
        raise ValueError(f"unknown --model {args.model!r}: use 'tiny' or 'synthetic:<shape>' with a shape from "
                         f"{sorted(models.SYNTHETIC_SHAPES)}.")
    model = training.add_lora(model, "peft", r=args.r, alpha=2 * args.r, targets=args.targets, dropout=0.0,
                              seed=args.seed)
    return model, rows, pad


# ---------------------------------------------------------------------------------------------- the loop
def run(args) -> dict | None:
    """Train on this process's share of each global batch; the main process returns (and writes) the log."""
    from accelerate import Accelerator

    torch.set_num_threads(args.threads)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    world, rank = accelerator.num_processes, accelerator.process_index
    if args.expect_processes and world != args.expect_processes:
        raise RuntimeError(
            f"expected {args.expect_processes} processes but this run has {world}. On a CPU, "
            "`accelerate launch --cpu --num_processes 2` starts ONE process (multi-CPU needs mpirun); use "
            f"`accelerate launch --config_file {resources.file('accelerate', CPU_CONFIG)}` instead.")
    if args.cap_gib and accelerator.device.type == "cuda":
        total = torch.cuda.get_device_properties(accelerator.device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib * 2**30 / total), accelerator.device)
    training.seed_everything(args.seed)
    model, rows, pad = build_model(args, accelerator.device)
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is not None:  # FSDP1 with use_orig_params=False: trainable LoRA layers need units of their own
        from peft.utils.other import fsdp_auto_wrap_policy

        plugin.auto_wrap_policy = fsdp_auto_wrap_policy(model)
    model = accelerator.prepare(model)  # DDP or FSDP, as the config says; the optimizer comes after (FSDP)
    optimizer = accelerator.prepare(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr))
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator.device)

    from tqdm.auto import tqdm

    losses, tokens, start = [], 0, None
    model.train()
    batches = global_batches(len(rows), args.global_batch, args.steps, args.seed)
    for step, batch_rows in enumerate(tqdm(batches, desc=f"{world} process(es)", disable=not accelerator.is_main_process)):
        if step == 1:  # the first step pays for warm-up (allocations, kernels): time the others
            start = time.perf_counter()
        whole = data.collate([rows[i] for i in batch_rows], pad)  # every process can see the global batch
        global_tokens = label_tokens(whole["labels"])
        batch = data.collate([rows[i] for i in local_rows(batch_rows, rank, world)], pad)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        if args.local_mean:  # the naive way: each process's own mean; the average of means is not the mean
            loss = model(**batch).loss / world
        else:  # sum of this process's token losses / the global batch's token count
            loss = model(**batch, num_items_in_batch=torch.tensor(global_tokens, device=accelerator.device)).loss
        accelerator.backward(loss * world)  # x N: DDP and FSDP average the gradients over the N processes
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(accelerator.reduce(loss.detach(), reduction="sum").item())  # = the global-batch mean loss
        if step >= 1:
            tokens += int(whole["attention_mask"].sum())
    seconds = time.perf_counter() - start if start is not None else float("nan")
    peaks = None  # per process, GPUs only (on a CPU the processes share one memory)
    if accelerator.device.type == "cuda":
        peak = torch.tensor([torch.cuda.max_memory_allocated(accelerator.device)], device=accelerator.device)
        peaks = accelerator.gather(peak).tolist()
    result = dict(model=args.model, method=args.method, num_processes=world, global_batch=args.global_batch,
                  per_process_batch=args.global_batch // world, steps=args.steps, seed=args.seed, losses=losses,
                  distributed_type=str(accelerator.distributed_type).split(".")[-1],
                  backend=torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
                  timed_steps=max(args.steps - 1, 0), seconds=seconds, tokens_per_second=tokens / seconds if tokens else None,
                  peak_memory_bytes=peaks, device=str(accelerator.device), local_mean=args.local_mean)
    if accelerator.is_main_process and args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2))
    # Free DDP's reducer while every process is still alive: its gloo group's destructor joins threads that wait
    # on the peers, so freeing it after a peer has exited hangs that process (seen on a loaded 2-core CPU).
    del model, optimizer
    accelerator.free_memory()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result if accelerator.is_main_process else None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m course_lib.distributed", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="'tiny' (CPU) or 'synthetic:<shape>', e.g. synthetic:llama-2-7b")
    p.add_argument("--method", default="lora", choices=METHODS)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--global-batch", type=int, default=8, help="rows per optimizer step, over all processes")
    p.add_argument("--seq-len", type=int, default=512, help="synthetic models: tokens per row")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--targets", nargs="+", default=["q_proj", "v_proj"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--checkpoints", default=str(models.cache_dir() / "synthetic"), help="folder of synthetic checkpoints")
    p.add_argument("--cap-gib", type=float, default=0.0, help="GPU memory cap per process (0: none)")
    p.add_argument("--local-mean", action="store_true",
                   help="(for the demo) average per-process mean losses instead of normalizing by the global batch")
    p.add_argument("--expect-processes", type=int, default=0, help="fail unless launched with this many processes")
    p.add_argument("--out", default="", help="JSON file for the log (written by the main process)")
    p.add_argument("--config", default="", help="print the path of a shipped accelerate config (e.g. ddp_2gpu.yaml) and exit")
    return p


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.config:  # for a shell: accelerate launch --config_file "$(python -m course_lib.distributed --config NAME)"
        print(resources.file("accelerate", args.config))
        return
    run(args)


# --------------------------------------------------------------------------------- launching from Python
def launch(num_processes: int, out: str | Path, *, config_file: str | Path | None = None, timeout: float = 600,
           **script_args) -> dict:
    """Run ``accelerate launch [...] -m course_lib.distributed`` on ``num_processes`` processes; return its log.

    On a CPU, N > 1 uses the shipped ``ddp_cpu_2proc.yaml`` (DDP over gloo) with ``--num_processes N``;
    ``config_file`` is a path, or the name of a shipped config (``config_names()``).
    ``script_args`` become flags (``global_batch=8`` -> ``--global-batch 8``). Raises with the run's last output
    lines when it fails.
    """
    if config_file is None and num_processes > 1 and not torch.cuda.is_available():
        config_file = CPU_CONFIG
    if config_file is not None and not Path(config_file).is_file():
        with resources.as_path("accelerate", str(config_file)) as path:  # accelerate reads a real file
            return launch(num_processes, out, config_file=path, timeout=timeout, **script_args)
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file is not None:
        cmd += ["--config_file", str(config_file)]
    elif not torch.cuda.is_available():
        cmd += ["--cpu"]
    cmd += ["--num_processes", str(num_processes), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
            "-m", "course_lib.distributed", "--out", str(out), "--expect-processes", str(num_processes)]
    for key, value in script_args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
            continue
        cmd += [flag, *map(str, value)] if isinstance(value, (list, tuple)) else [flag, str(value)]
    env = dict(os.environ, OMP_NUM_THREADS=str(script_args.get("threads", 1)), TQDM_DISABLE="1",
               # the processes import this very course_lib, installed or not
               PYTHONPATH=os.pathsep.join([str(Path(course_lib.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0 or not Path(out).is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"the {num_processes}-process run failed (exit code {proc.returncode}):\n{tail}")
    return json.loads(Path(out).read_text())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compare_runs(a: dict, b: dict) -> dict:
    """Largest absolute and relative difference between two runs' per-step losses (same steps required)."""
    if len(a["losses"]) != len(b["losses"]):
        raise ValueError(f"the runs have {len(a['losses'])} and {len(b['losses'])} steps; compare runs of equal length.")
    diffs = [abs(x - y) for x, y in zip(a["losses"], b["losses"])]
    rel = [d / max(abs(x), 1e-12) for d, x in zip(diffs, a["losses"])]
    return {"max_abs_diff": max(diffs), "max_rel_diff": max(rel)}


def predicted_table(shapes=("llama-2-7b", "llama-2-13b", "llama-2-70b"), methods=METHODS, gpus=(1, 2, 4, 8),
                    **kwargs) -> list[dict]:
    """Predicted peak GB per GPU under DDP (any N) and FSDP on each number of GPUs (``memory.estimate_per_gpu_memory``)."""
    rows = []
    for shape in shapes:
        config = models.synthetic_config(shape)
        for method in methods:
            row = {"shape": shape, "method": method,
                   "DDP (any N)": memory.estimate_per_gpu_memory(config, method, 2, "ddp", **kwargs).total_gb}
            for n in gpus:
                row[f"FSDP {n}"] = memory.estimate_per_gpu_memory(config, method, n, "fsdp", **kwargs).total_gb
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
