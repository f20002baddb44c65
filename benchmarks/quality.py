"""Notebook 09's measurements: train and score every arm on the held-out tasks, one CSV row per run.

    nice -n 10 python benchmarks/quality.py --task orders_heldout --steps 8 --arms main
    nice -n 10 python benchmarks/quality.py --task facts --steps 72 --arms lr-sweep

Rows are appended to ``course_lib/resources/measurements/quality.csv`` (or ``--out``) as each run finishes, so an
interrupted run keeps what it measured. Every arm gets the same data, seed, step budget and batch size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_lib import models, quality, resources  # noqa: E402

Arm = quality.Arm
GRIDS = {  # arm, learning rate
    "main": [(Arm("full fine-tuning", method="full"), 1e-4), (Arm("LoRA r=8"), 1e-3),
             (Arm("QLoRA r=8", nf4_base=True), 1e-3), (Arm("LoftQ r=8", nf4_base=True, init="loftq"), 1e-3),
             (Arm("LoRA r=1", r=1), 1e-3), (Arm("LoRA r=64", r=64), 1e-3), (Arm("PiSSA r=8", init="pissa"), 1e-3)],
    # trainable parameters matched within 4%: attention 3840·r, MLP 6336·r, all-linear 10176·r per layer
    "placement": [(Arm("attention r=16", r=16, placement="attention"), 1e-3),
                  (Arm("MLP r=10", r=10, placement="mlp"), 1e-3), (Arm("all-linear r=6", r=6), 1e-3)],
    # the main grid already has LoRA at 1e-3 and full fine-tuning at 1e-4: each side's neighbours, nearest first
    "lr-sweep": [(Arm("LoRA r=8"), 1e-2), (Arm("full fine-tuning", method="full"), 1e-3),
                 (Arm("LoRA r=8"), 1e-4), (Arm("full fine-tuning", method="full"), 1e-5),
                 (Arm("LoRA r=8"), 3e-2), (Arm("full fine-tuning", method="full"), 3e-6)],
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="orders_heldout", choices=["orders_heldout", "facts"])
    parser.add_argument("--arms", default="main", choices=sorted(GRIDS))
    parser.add_argument("--only", nargs="*", help="run only the arms with these names")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--n-eval", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--base", action="store_true", help="also measure the untrained base model first")
    parser.add_argument("--out", type=Path, default=resources.source_folder("measurements") / quality.RESULTS_CSV)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    _, tokenizer = models.load_causal_lm(verbose=False)
    sets = quality.task_sets(args.task, tokenizer, n_eval=args.n_eval)
    if args.base:
        quality.append_csv(args.out, quality.base_row(args.task, sets, tokenizer))
    for arm, lr in GRIDS[args.arms]:
        if args.only and arm.name not in args.only:
            continue
        row = quality.run_arm(arm, args.task, sets, tokenizer, lr=lr, steps=args.steps, batch_size=args.batch_size)
        quality.append_csv(args.out, row)
        print({k: row[k] for k in ("name", "lr", "eval_loss", "score", "general_loss", "seconds")}, flush=True)


if __name__ == "__main__":
    main()
