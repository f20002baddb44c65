"""End-of-notebook self-checks: multiple choice with immediate feedback (ipywidgets), or plain text without a frontend.

The questions live here, once; ``quiz.show("03")`` ends notebook 03 and ``quiz.answers("03")`` prints the answers
with their reasons in the solution notebook. Answers refer to what the notebooks measured, not to folklore.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    prompt: str
    options: tuple[str, ...]
    answer: int  # index into options
    why: str


QUIZZES: dict[str, list[Question]] = {
    "01": [
        Question("The best rank-k approximation of W leaves a Frobenius error equal to…",
                 ("the (k+1)-th singular value", "sqrt of the sum of the squared singular values after the k-th",
                  "the sum of the first k singular values", "it depends on the optimiser"), 1,
                 "Eckart–Young: the error is exactly the dropped tail; the table in section 2 shows it digit for digit."),
        Question("In notebook 01, what was much closer to low rank?",
                 ("the trained weight matrix W", "a random Gaussian matrix", "the fine-tuning update ΔW"), 2,
                 "ΔW put most of its energy in a few directions; W needed hundreds of directions for 90%."),
    ],
    "02": [
        Question("What does LoRA's rank r control?",
                 ("the learning rate", "the inner dimension of A and B, hence trainable parameters and capacity",
                  "the number of layers adapted", "the numeric precision of the base model"), 1,
                 "A is r × d_in and B is d_out × r: r·(d_in + d_out) trainable numbers per layer."),
        Question("Why is B initialised to zeros?",
                 ("to save memory", "so the wrapped model starts exactly equal to the base model",
                  "because A is zero too", "PEFT requires it for merging"), 1,
                 "BA = 0 at step 0, so training starts from the pretrained behaviour; A is random so gradients flow to B."),
        Question("With lora_alpha=16 and r=8 (standard LoRA), the update is scaled by…", ("0.5", "2", "16", "128"), 1,
                 "scaling = alpha / r = 2 (rsLoRA would use alpha / sqrt(r) ≈ 5.66)."),
    ],
    "03": [
        Question("LoRA at r=8 on a 4096 × 4096 layer trains how many numbers?", ("32,768", "65,536", "16,777,216", "4,194,304"), 1,
                 "8 · (4096 + 4096) = 65,536, about 0.39% of the layer's 16.8 M."),
        Question("LoRA r=8 on q_proj and v_proj of Llama-3.2-1B trains…", ("4,194,304", "851,968", "1,048,576", "65,536"), 1,
                 "16 layers · 8 · ((2048+2048) + (2048+512)) = 851,968. 4,194,304 is Llama-2-7B's count."),
        Question("How do you find the right target_modules names for a new architecture?",
                 ("guess q_proj and v_proj", "list model.named_modules() and pick the linear layers",
                  "use the model's tokenizer", "they are the same in every model"), 1,
                 "GPT-2 calls its fused attention projection c_attn, BERT query/value, Llama q_proj/v_proj."),
    ],
    "04": [
        Question("Why does NF4 place its 16 levels at quantiles of a normal distribution?",
                 ("to make dequantization faster", "because trained weights are roughly normal, so each level is used "
                  "about equally and the error is lower than with evenly spaced levels", "to represent 0 exactly",
                  "to avoid storing a scale"), 1,
                 "Information-theoretically optimal for normal data; the error table shows NF4 below INT4 and FP4."),
        Question("NF4 with block size 64 and double quantization costs about how many bits per weight?",
                 ("4.0", "4.127", "4.5", "8"), 1,
                 "4 bits + 8/64 for the 8-bit block scales + 32/(64·256) for the second-level scales ≈ 4.127."),
    ],
    "05": [
        Question("What is the key difference between LoRA and QLoRA?",
                 ("QLoRA trains fewer adapter parameters", "QLoRA stores the frozen base model in 4-bit NF4",
                  "QLoRA computes in 4-bit", "QLoRA does not need gradients"), 1,
                 "Same adapters; the frozen weights are stored in 4-bit and dequantized to the compute dtype on the fly."),
        Question("For a 7B model with LoRA at short sequences, what dominates training memory?",
                 ("the optimizer state", "the adapters' gradients", "the frozen base weights", "the tokenizer"), 2,
                 "Adapters are MBs; the 16-bit weights are ~13.5 GB — which is what 4-bit storage attacks."),
    ],
    "06": [
        Question("What does label masking do?",
                 ("hides the padding from attention only", "makes only the response tokens count in the loss",
                  "removes the system prompt", "shuffles the labels"), 1,
                 "Prompt tokens get label -100, which cross-entropy ignores; the model is graded on its answers only."),
        Question("Before deploying one fine-tuned task, what can you do to drop the adapter overhead at inference?",
                 ("quantize the adapter", "merge the adapter into the base weights (merge_and_unload)",
                  "delete lora_A", "raise r"), 1,
                 "Merging gives plain linear layers with the same outputs (checked in notebook 06); keep adapters "
                 "separate when one base serves several tasks."),
    ],
    "07": [
        Question("What do paged optimizers do?",
                 ("keep optimizer state on disk", "let optimizer state move to CPU RAM under GPU memory pressure, "
                  "avoiding out-of-memory spikes", "quantize the optimizer to 4-bit", "run the optimizer on the CPU always"), 1,
                 "They use CUDA unified memory: pages migrate to the host only when the GPU runs short."),
        Question("On a T4, which compute dtype does the course choose, and why?",
                 ("bf16, because torch says it is supported", "fp16 with loss scaling: a T4 (compute capability 7.5) "
                  "has no native bf16", "fp32, because 4-bit needs it", "int8"), 1,
                 "torch.cuda.is_bf16_supported() is True there through slow emulation; capability >= 8.0 is the real test."),
    ],
    "08": [
        Question("With DDP and LoRA on 2 GPUs, what does each GPU hold?",
                 ("half of the model", "a full copy of the frozen model and of the adapters; adapter gradients are "
                  "averaged across GPUs after each backward", "only the adapters", "only the optimizer state"), 1,
                 "DDP replicates; FSDP shards parameters, gradients and optimizer state across GPUs."),
        Question("Why must `bnb_4bit_quant_storage` equal the compute dtype for FSDP with QLoRA?",
                 ("it makes NF4 more accurate", "FSDP flattens and shards each unit's parameters together, which needs "
                  "one storage dtype for the 4-bit and the other weights", "it enables paged optimizers",
                  "it is only needed on a T4"), 1,
                 "The packed 4-bit codes are then stored in bf16/fp16 containers that FSDP can shard with the rest."),
        Question("1 and 2 processes gave the same loss curve in notebook 08 because…",
                 ("the seed was fixed", "each process saw the same rows of every global batch and the loss was "
                  "normalised by the tokens of the whole global batch", "gloo is deterministic",
                  "the model was tiny"), 1,
                 "DDP averages gradients over processes; a per-process mean over unequal token counts would differ."),
    ],
    "09": [
        Question("Why can notebook 06's `orders` task not compare LoRA with full fine-tuning?",
                 ("it is too small to train on a CPU", "its eval rows reuse the training names, items, cities and "
                  "templates, so every method reaches 1.00", "it has no eval split", "its score is a loss"), 1,
                 "A task that every arm aces hides every difference; `orders_heldout` evaluates on unseen entities "
                 "and templates."),
        Question("What does PiSSA freeze?",
                 ("the top-r singular directions of W", "the residual W - BA left after moving W's top-r singular "
                  "directions into the adapter", "nothing: it trains W", "the quantized weights"), 1,
                 "The adapter starts as W's principal part and is trained; the rest of W stays frozen."),
        Question("A rank-8 LoftQ adapter removes only a small share of NF4's error on a weight. Why?",
                 ("LoftQ is buggy", "rounding noise is spread over nearly all singular directions, and rank 8 "
                  "captures only 8 of them", "NF4 has no error", "LoftQ only works on embeddings"), 1,
                 "The quantization error is close to full rank; a low-rank correction captures its largest few "
                 "directions only."),
    ],
}


def questions(notebook: str) -> list[Question]:
    if notebook not in QUIZZES:
        raise KeyError(f"no quiz for notebook {notebook!r}; quizzes exist for {sorted(QUIZZES)}")
    return QUIZZES[notebook]


def grade(notebook: str, index: int, choice: int | None) -> tuple[bool, str]:
    """The feedback a student sees for answering question ``index`` with option ``choice``."""
    qs = questions(notebook)
    if not 0 <= index < len(qs):
        return False, f"there is no question {index + 1} in quiz {notebook} (it has {len(qs)})"
    q = qs[index]
    if choice is None or not 0 <= choice < len(q.options):
        return False, "pick one of the options first"
    if choice == q.answer:
        return True, f"✓ Right. {q.why}"
    return False, "✗ Not quite — look back at the section this question is about, and try again."


def show(notebook: str):
    """The quiz as widgets (pick, check, feedback), or as text when there is no widget frontend."""
    from course_lib import widgets as course_widgets

    qs = questions(notebook)
    if not course_widgets.interactive_available():
        for i, q in enumerate(qs, 1):
            print(f"Q{i}. {q.prompt}")
            for letter, option in zip("abcdef", q.options):
                print(f"    ({letter}) {option}")
        print(f"\nAnswers with reasons: quiz.answers({notebook!r}), run in solutions/{notebook}_*.ipynb.")
        return None
    import ipywidgets as widgets
    from IPython.display import display

    boxes = []
    for i, q in enumerate(qs):
        pick = widgets.RadioButtons(options=list(q.options), value=None, layout={"width": "max-content"})
        feedback = widgets.HTML()
        button = widgets.Button(description="Check")

        def on_click(_, i=i, pick=pick, feedback=feedback):
            choice = None if pick.value is None else qs[i].options.index(pick.value)
            feedback.value = grade(notebook, i, choice)[1]

        button.on_click(on_click)
        boxes.append(widgets.VBox([widgets.HTML(f"<b>Q{i + 1}. {q.prompt}</b>"), pick, button, feedback]))
    display(widgets.VBox(boxes))
    return boxes


def answers(notebook: str) -> None:
    for i, q in enumerate(questions(notebook), 1):
        print(f"Q{i}. {q.prompt}\n    answer: ({'abcdef'[q.answer]}) {q.options[q.answer]}\n    why: {q.why}")
