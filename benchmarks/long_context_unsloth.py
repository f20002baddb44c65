"""Unsloth on the same model, GPU, cap and step as ``benchmarks/long_context.py``: the longest sequence one QLoRA
forward + backward fits and its tokens/s, for the side-by-side of notebook 10. A separate process, because
Unsloth patches transformers and PEFT when it is imported (it must be imported first).

    python benchmarks/long_context_unsloth.py --out course_lib/resources/measurements --budget-s 480

Same as the course's run: random weights of the Llama-3.1-8B shape from the same fp16 checkpoint
($COURSE_SYNTHETIC_DIR, written by long_context.py or here), loaded in 4-bit by Unsloth
(``FastLanguageModel.from_pretrained(load_in_4bit=True)``), LoRA r=32, alpha=64 on all linear layers with
Unsloth's recommended dropout 0 and its offloaded gradient checkpointing (``use_gradient_checkpointing="unsloth"``),
batch 1, fp16 autocast, under the same T4 emulation (``course_lib.t4.emulate``: the T4's usable memory as the cap,
TF32 off, SDPA limited to the memory-efficient and math kernels; ``--kernels all`` lifts the kernel limit), one
``model(input_ids, labels=input_ids).loss.backward()`` per measurement (its fused loss). A length fits when it ran
and the peak reserved memory stayed within the cap. The SDPA kernel it ran is recorded (``t4.SDPAKernels``).
Writes ``long_context_unsloth.csv``.

Wheels (Python 3.12; none of them on the GPU image; 38 MiB): ``unsloth==2026.10.9 unsloth-zoo==2026.10.9
trl==1.15.0 datasets==4.3.0 dill==0.4.0 multiprocess==0.70.18 tyro docstring-parser shtab typeguard
cut-cross-entropy==25.1.1 torchao hf_transfer msgspec`` (``pip download --no-deps --only-binary=:all:
--python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any``), carried
as ``.whl`` in the call right after long_context.py's, which installed bitsandbytes into /root/site1:

    pip install -q --no-index --no-deps --target /root/site2 .whl/*.whl && export PYTHONPATH=/root/site2:/root/site1:$PWD \
      COURSE_SYNTHETIC_DIR=/root/course_synthetic && python3 benchmarks/long_context_unsloth.py --out $OUT --budget-s 480

(Unsloth's folder first on PYTHONPATH; see /work/shared/tools/gpu-unsloth.md.)
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

    from course_lib import models, qlora, t4

    parser = arguments(__doc__)
    parser.add_argument("--guess", type=int, default=36864, help="first length tried (36,864 fitted here before)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        raise SystemExit("Unsloth needs a CUDA GPU")
    device = torch.device("cuda", 0)
    t = time.perf_counter()
    folder = qlora.synthetic_checkpoint(args.shape, device)  # before the cap; reused if long_context.py wrote it
    if not (folder / "tokenizer.json").is_file():  # Unsloth loads a tokenizer with the model: any will do
        models.tiny_chat_tokenizer().save_pretrained(folder)
    emulation = t4.emulate(device, cap_bytes=int(args.cap_gib * 2**30))
    if args.kernels == "all":
        t4.limit_attention_kernels(("flash", "efficient", "math", "cudnn"))
    log(str(emulation) + ("; flash allowed (--kernels all)" if args.kernels == "all" else ""))

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
                 f"load {time.perf_counter() - t:.0f} s; {emulation}")
    name = "unsloth"
    bench.which_kernel(model, name, ())
    try:
        bench.search(model, name, "unsloth", (), guess=args.guess)
        bench.speed(model, name, "unsloth", (), [2048, 4096], predict=False)
    except Exception as e:
        bench.record(step=name, kind="error", note=f"{type(e).__name__}: {e}"[:200])
        raise
    log(f"done in {time.perf_counter() - bench.start:.0f} s -> {bench.csv}")


if __name__ == "__main__":
    main()
