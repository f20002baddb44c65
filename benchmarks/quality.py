"""Notebook 09's measurements: train and score every arm on the held-out tasks, one CSV row per run.

    python benchmarks/quality.py --arms main --seeds 0 1 2 --base      # on a CUDA GPU: fp32, ~10 s an arm
    nice -n 10 python benchmarks/quality.py --arms main --steps 8       # on a CPU: 1-4 minutes an arm

Rows are appended to ``course_lib/resources/measurements/quality.csv`` (or ``--out``) as each run finishes, so an
interrupted run keeps what it measured. Every arm of a grid gets the same data, seeds, step budget and batch size
(the "batch" grid changes the batch size and keeps the number of examples seen). Training is fp32 wherever it runs:
on a GPU the Trainer uses bitsandbytes' paged 32-bit AdamW, on a CPU torch's AdamW (the same update).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_lib import models, quality, resources  # noqa: E402

Arm = quality.Arm
STEPS = {"orders_heldout": 40, "facts": 120}  # facts: 192 training rows seen ~5 times, so capacity can show
# grid -> (task, [(arm, learning rate, batch size)]); batch size 8 unless said
GRIDS = {
    "main": ("orders_heldout", [
        (Arm("full fine-tuning", method="full"), 1e-4), (Arm("LoRA r=8"), 1e-3), (Arm("LoRA r=1", r=1), 1e-3),
        (Arm("LoRA r=64", r=64), 1e-3), (Arm("LoRA r=256", r=256), 1e-3),
        (Arm("QLoRA r=8", nf4_base=True), 1e-3), (Arm("QLoRA r=8 bitsandbytes", nf4_base=True,
                                                      nf4_impl="bitsandbytes"), 1e-3),
        (Arm("LoftQ r=8", nf4_base=True, init="loftq"), 1e-3), (Arm("PiSSA r=8", init="pissa"), 1e-3),
        (Arm("DoRA r=8", dora=True), 1e-3)]),
    # trainable parameters matched within 4%: attention 3840·r, MLP 6336·r, all-linear 10176·r per layer
    "placement": ("orders_heldout", [(Arm("attention r=16", r=16, placement="attention"), 1e-3),
                                     (Arm("MLP r=10", r=10, placement="mlp"), 1e-3),
                                     (Arm("all-linear r=6", r=6), 1e-3)]),
    # around each main rate (in "main"), half a decade apart, far enough that each best rate is interior
    "lr-sweep": ("orders_heldout", [(Arm("LoRA r=8"), lr) for lr in (1e-4, 3e-4, 3e-3, 1e-2, 3e-2)]
                 + [(Arm("full fine-tuning", method="full"), lr) for lr in (3e-6, 1e-5, 3e-5, 3e-4, 1e-3)]),
    # alpha scales the update like a learning rate: LoRA r=8 at alpha = r (scaling 1) across rates, and rsLoRA's
    # alpha/sqrt(r) at three ranks (alpha 16: scaling 16, 5.7 and 2 at r = 1, 8, 64)
    "alpha": ("orders_heldout", [(Arm("LoRA r=8 alpha=8", alpha=8), lr) for lr in (1e-3, 3e-3, 1e-2)]
              + [(Arm(f"rsLoRA r={r}", r=r, alpha=16, rslora=True), 1e-3) for r in (1, 8, 64)]),
    # the two smaller rates for alpha = r, so that its best rate can be interior; and the best rate per rank, with
    # alpha = 2r (scaling 2 at every rank) and with rsLoRA (alpha 16: scaling 16 at r=1, 2 at r=64)
    "alpha-lr": ("orders_heldout", [(Arm("LoRA r=8 alpha=8", alpha=8), lr) for lr in (1e-4, 3e-4)]
                 + [(Arm(n, r=r, rslora=rs, alpha=16 if rs else None), lr) for n, r, rs in
                    (("LoRA r=1", 1, False), ("LoRA r=64", 64, False), ("rsLoRA r=1", 1, True),
                     ("rsLoRA r=64", 64, True)) for lr in (3e-4, 3e-3)]),
    # the same 320 examples in 10 steps of 32 instead of 40 of 8, each method at its main rate
    "batch": ("orders_heldout", [(Arm("LoRA r=8"), 1e-3, 32), (Arm("full fine-tuning", method="full"), 1e-4, 32)]),
    "facts": ("facts", [(Arm("full fine-tuning", method="full"), 1e-4), (Arm("LoRA r=1", r=1), 1e-3),
                        (Arm("LoRA r=8"), 1e-3), (Arm("LoRA r=64", r=64), 1e-3), (Arm("LoRA r=256", r=256), 1e-3),
                        (Arm("QLoRA r=8", nf4_base=True), 1e-3)]),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default="main", choices=sorted(GRIDS))
    parser.add_argument("--only", nargs="*", help="run only the arms with these names")
    parser.add_argument("--steps", type=int, help="steps at batch size 8 (default: STEPS of the grid's task)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n-eval", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--base", action="store_true", help="also measure the untrained base model first")
    parser.add_argument("--out", type=Path, default=resources.source_folder("measurements") / quality.RESULTS_CSV)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    task, grid = GRIDS[args.arms]
    steps = args.steps or STEPS[task]
    _, tokenizer = models.load_causal_lm(verbose=False)
    sets = quality.task_sets(task, tokenizer, n_eval=args.n_eval)
    if args.base:
        quality.append_csv(args.out, quality.base_row(task, sets, tokenizer, device=args.device))
    for seed in args.seeds:
        for arm, lr, *batch in grid:
            if args.only and arm.name not in args.only:
                continue
            batch_size = batch[0] if batch else 8
            row = quality.run_arm(arm, task, sets, tokenizer, lr=lr, steps=steps * 8 // batch_size,
                                  batch_size=batch_size, seed=seed, device=args.device)
            quality.append_csv(args.out, row)
            print({k: row[k] for k in ("name", "lr", "seed", "eval_loss", "score", "general_loss", "seconds")},
                  flush=True)


if __name__ == "__main__":
    main()
