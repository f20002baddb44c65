"""Unsloth on the same model, GPU, cap and step as ``benchmarks/long_context.py``: the longest sequence one QLoRA
forward + backward fits and its tokens/s, for the side-by-side of notebook 10. A separate process, because
Unsloth patches transformers and PEFT when it is imported (it must be imported first).

    python benchmarks/long_context_unsloth.py --out course_lib/resources/measurements --budget-s 480

Same as the course's run: random weights of the Llama-3.1-8B shape from the same fp16 checkpoint
($COURSE_SYNTHETIC_DIR, written by long_context.py or here), loaded in 4-bit by Unsloth
(``FastLanguageModel.from_pretrained(load_in_4bit=True)``), LoRA r=32, alpha=64 on all linear layers with
Unsloth's recommended dropout 0 and its offloaded gradient checkpointing (``use_gradient_checkpointing="unsloth"``),
batch 1, fp16 autocast, 15 GiB cap, one ``model(input_ids, labels=input_ids).loss.backward()`` per measurement (its
fused loss). A length fits when it ran and the peak reserved memory stayed within the cap. Writes
``long_context_unsloth.csv``.

Wheels (Python 3.12, none on the GPU image): see /work/shared/tools/gpu-unsloth.md and the README in benchmarks/.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    # isort: off
    import unsloth  # first: it patches transformers and peft when imported
    from unsloth import FastLanguageModel
    # isort: on
    import torch
    from long_context import Bench, arguments, log

    from course_lib import models, qlora

    parser = arguments(__doc__)
    parser.add_argument("--guess", type=int, default=40960, help="first length tried (Unsloth's published 40,724)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        raise SystemExit("Unsloth needs a CUDA GPU")
    device = torch.device("cuda", 0)
    t = time.perf_counter()
    folder = qlora.synthetic_checkpoint(args.shape, device)  # before the cap; reused if long_context.py wrote it
    if not (folder / "tokenizer.json").is_file():  # Unsloth loads a tokenizer with the model: any will do
        models.tiny_chat_tokenizer().save_pretrained(folder)
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib * 2**30 / total), device)

    def step(model, ids):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.item()

    bench = Bench(args, csv_name="long_context_unsloth.csv", step_fn=step)
    model, _ = FastLanguageModel.from_pretrained(model_name=str(folder), max_seq_length=args.max_len,
                                                 dtype=torch.float16, load_in_4bit=True, local_files_only=True)
    model = FastLanguageModel.get_peft_model(model, r=args.r, lora_alpha=2 * args.r, lora_dropout=0,
                                             target_modules=TARGETS, bias="none", random_state=0,
                                             use_gradient_checkpointing="unsloth")
    FastLanguageModel.for_training(model)
    log(f"Unsloth {unsloth.__version__}: loaded and adapted in {time.perf_counter() - t:.0f} s")
    bench.record(step="setup", kind="setup", note=f"unsloth {unsloth.__version__}; torch {torch.__version__}; "
                 f"load {time.perf_counter() - t:.0f} s")
    name = "unsloth"
    try:
        bench.search(model, name, "unsloth", (), guess=args.guess)
        bench.speed(model, name, "unsloth", (), [2048, 4096], predict=False)
    except Exception as e:
        bench.record(step=name, kind="error", note=f"{type(e).__name__}: {e}"[:200])
        raise
    log(f"done in {time.perf_counter() - bench.start:.0f} s -> {bench.csv}")


if __name__ == "__main__":
    main()
