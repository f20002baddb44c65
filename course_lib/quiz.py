"""End-of-notebook self-checks: multiple choice with immediate feedback (ipywidgets), or plain text without a frontend.

The questions live here, once: ``quiz.show("03")`` ends notebook 03. Every option carries its reason, so a wrong
pick is answered with why it is wrong (not with the right answer) and a right pick with why it is right.
``quiz.answers("03")`` prints the key (answers and every reason): only the solution notebooks call it, never the
student copies. Each notebook has recall questions and applied ones (compute a count, a memory figure, a
bits-per-parameter value; pick the fix for a failure). Every number here is computed by ``course_lib``:
``tests/test_quiz.py`` reads each number out of the text and recomputes it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    prompt: str
    options: tuple[str, ...]
    answer: int  # index into options
    reasons: tuple[str, ...]  # one per option: why it is right, or why it is wrong
    applied: bool = False  # the student computes a number or decides on a fix, not recalls a fact

    def __post_init__(self):
        if len(self.reasons) != len(self.options) or not 0 <= self.answer < len(self.options):
            raise ValueError(f"question {self.prompt[:40]!r}: one reason per option and a valid answer index")

    @property
    def why(self) -> str:
        return self.reasons[self.answer]


def _q(prompt: str, answer: int, *options: tuple[str, str], applied: bool = False) -> Question:
    """A question from (option, reason) pairs; ``answer`` is the index of the right option."""
    return Question(prompt, tuple(o for o, _ in options), answer, tuple(r for _, r in options), applied)


QUIZZES: dict[str, list[Question]] = {
    "01": [
        _q("The best rank-k approximation of W leaves a Frobenius error equal to…", 3,
           ("the (k+1)-th singular value", "That is the error in the spectral norm (the largest singular value "
            "left out), not in the Frobenius norm, which counts every dropped direction."),
           ("the sum of the first k singular values", "Those are the directions that are kept; the error comes from "
            "the ones dropped."),
           ("it depends on the optimiser", "The truncated SVD is computed in closed form; no optimiser is involved."),
           ("sqrt of the sum of the squared singular values after the k-th", "Eckart–Young: the error is exactly "
            "the dropped tail; the table in section 2 shows it digit for digit.")),
        _q("In notebook 01, what was much closer to low rank?", 2,
           ("the trained weight matrix W", "W needed hundreds of directions to hold most of its energy."),
           ("a random Gaussian matrix", "A random matrix spreads its energy over all directions: it is the "
            "opposite of low rank, the baseline the notebook compares with."),
           ("the fine-tuning update ΔW", "ΔW put most of its energy in a few directions, while W needed hundreds: "
            "that is the observation LoRA is built on.")),
        _q("A matrix has singular values 4, 3, 2 and 1. What Frobenius error does its best rank-2 approximation "
           "leave?", 1,
           ("2", "2 is the third singular value: the spectral-norm error. The Frobenius error also counts the "
            "fourth direction."),
           ("√5 ≈ 2.236", "Keep 4 and 3, drop 2 and 1: sqrt(2² + 1²) = √5 ≈ 2.236 (lowrank.approx_error on "
            "diag(4, 3, 2, 1) measures exactly this)."),
           ("3", "3 is the sum 2 + 1; the norm squares the dropped singular values before adding them."),
           ("5", "5 is 2² + 1², the squared error: take its square root."), applied=True),
        _q("For the same singular values 4, 3, 2, 1: what fraction of the energy (squared Frobenius norm) does "
           "rank 2 keep?", 2,
           ("70%", "70% is (4 + 3) / (4 + 3 + 2 + 1): energy adds the squared singular values."),
           ("50%", "Rank 2 keeps 2 of the 4 directions, but not half the energy: the first ones are the largest."),
           ("83.3%", "(4² + 3²) / (4² + 3² + 2² + 1²) = 25 / 30 = 83.3% (lowrank.energy_captured)."),
           ("96.7%", "That would leave only 1 of the 30 units of energy out; rank 2 leaves out 2² + 1² = 5."),
           applied=True),
        _q("Storing a 4096 × 4096 matrix as rank-8 factors B (4096 × 8) and A (8 × 4096) takes how many numbers?", 0,
           ("65,536", "8 · (4096 + 4096) = 65,536, about 0.39% of the 16,777,216 entries of the full matrix."),
           ("32,768", "32,768 counts only one of the two factors."),
           ("16,777,216", "That is the full matrix, 4096 · 4096: the thing the factors replace."),
           ("131,072", "131,072 counts each factor twice."), applied=True),
    ],
    "02": [
        _q("What does LoRA's rank r control?", 3,
           ("the learning rate", "The learning rate is an optimiser setting; r is a shape."),
           ("the number of layers adapted", "Which layers are adapted is target_modules, not r."),
           ("the numeric precision of the base model", "Precision is the dtype (or 4-bit in QLoRA); r is a shape."),
           ("the inner dimension of A and B, hence trainable parameters and capacity", "A is r × d_in and B is "
            "d_out × r: r·(d_in + d_out) trainable numbers per layer.")),
        _q("Why is B initialised to zeros?", 0,
           ("so the wrapped model starts exactly equal to the base model", "BA = 0 at step 0, so training starts "
            "from the pretrained behaviour; A is random so gradients flow to B."),
           ("to save memory", "A zero matrix takes the same memory as any other."),
           ("because A is zero too", "A is random: if both were zero, neither would receive a gradient."),
           ("PEFT requires it for merging", "Merging adds scaling·BA whatever B is; the zero start is about the "
            "first forward pass.")),
        _q("With lora_alpha=16 and r=8 (standard LoRA), the update is scaled by…", 1,
           ("0.5", "0.5 is r / alpha: the ratio upside down."),
           ("2", "scaling = alpha / r = 16 / 8 = 2 (rsLoRA would use alpha / sqrt(r) ≈ 5.66)."),
           ("16", "16 is alpha alone; LoRA divides it by the rank."),
           ("128", "128 is alpha · r; LoRA divides."), applied=True),
        _q("You raise r from 8 to 16 on a 2048 × 2048 layer and keep lora_alpha=16. What changes?", 3,
           ("nothing: the scaling is alpha, so only capacity grows", "The scaling is alpha / r, so it changes too."),
           ("the adapter keeps 32,768 parameters and the scaling doubles to 4", "The parameter count grows with r, "
            "and the scaling alpha / r shrinks when r grows."),
           ("the adapter grows to 131,072 parameters and the scaling stays 2", "r·(2048 + 2048) at r=16 is "
            "65,536, and alpha / r falls to 1."),
           ("the adapter grows from 32,768 to 65,536 parameters and the scaling halves from 2 to 1",
            "r·(d_in + d_out) doubles with r; alpha / r = 16 / 16 = 1. The halving is the point of dividing by r: "
            "with Adam, B·A's step grows with r and alpha / r takes that back, so a fixed alpha lets you change r "
            "without re-tuning the learning rate (notebook 02 measures it; alpha = 2r instead lets a larger rank "
            "take larger steps)."), applied=True),
        _q("Merging LoRA into GPT-2's c_attn fails with a shape mismatch: the update B @ A is 2304 × 768 but the "
           "weight is 768 × 2304. What is the fix?", 2,
           ("use r = 768", "The rank does not change the outer shape of B @ A."),
           ("reshape the weight to 2304 × 768", "A reshape scrambles the entries; the weight is stored transposed, "
            "not laid out differently."),
           ("transpose the update: GPT-2's Conv1D stores its weight as (d_in, d_out), which fan_in_fan_out=True "
            "records", "nn.Linear stores (d_out, d_in) like B @ A; Conv1D stores the transpose, so the update "
            "must be transposed before it is added."),
           ("merge in fp32", "The dtype does not change shapes."), applied=True),
    ],
    "03": [
        _q("LoRA at r=8 on a 4096 × 4096 layer trains how many numbers?", 1,
           ("32,768", "32,768 is r · 4096: only one of the two factors."),
           ("65,536", "8 · (4096 + 4096) = 65,536, about 0.39% of the layer's 16,777,216."),
           ("16,777,216", "That is the frozen layer itself, 4096 · 4096."),
           ("4,194,304", "4,194,304 is the count of Llama-2-7B with q_proj and v_proj in all 32 layers."),
           applied=True),
        _q("LoRA r=8 on q_proj and v_proj of Llama-3.2-1B trains…", 2,
           ("4,194,304", "4,194,304 is Llama-2-7B's count (32 layers of 4096-wide q and v)."),
           ("1,048,576", "1,048,576 treats v_proj as 2048 → 2048; with grouped-query attention it maps "
            "2048 → 512."),
           ("851,968", "16 layers · 8 · ((2048 + 2048) + (2048 + 512)) = 851,968: grouped-query attention "
            "makes v_proj only 512 wide."),
           ("65,536", "65,536 is one 4096 × 4096 layer at r=8.")),
        _q("How do you find the right target_modules names for a new architecture?", 3,
           ("guess q_proj and v_proj", "Names differ per architecture: GPT-2 has no q_proj."),
           ("use the model's tokenizer", "The tokenizer knows nothing about layer names."),
           ("they are the same in every model", "They are not: see GPT-2's c_attn and BERT's query/value."),
           ("list model.named_modules() and pick the linear layers", "GPT-2 calls its fused attention "
            "projection c_attn, BERT query/value, Llama q_proj/v_proj: the model says which names it has.")),
        _q("get_peft_model on GPT-2 with target_modules=['q_proj', 'v_proj'] raises \"Target modules "
           "{'q_proj', 'v_proj'} not found in the base model\". What do you do?", 2,
           ("upgrade peft", "The library is right: GPT-2 has no module called q_proj."),
           ("load the model in 4-bit first", "Quantization does not rename layers."),
           ("list model.named_modules(), see GPT-2's fused attention projection c_attn, and target it",
            "The names come from the model: GPT-2 computes q, k and v in one Conv1D called c_attn."),
           ("set r=0 for the missing layers", "r must be positive, and it does not choose layers."),
           applied=True),
        _q("LoRA r=8 on GPT-2's c_attn (12 blocks, 768 → 2304) trains how many parameters?", 0,
           ("294,912", "12 · 8 · (768 + 2304) = 294,912."),
           ("24,576", "24,576 is one block's c_attn: GPT-2 has 12."),
           ("147,456", "147,456 treats c_attn as 768 → 768; it computes q, k and v at once, so it outputs 2304."),
           ("1,179,648", "1,179,648 is \"all-linear\" (c_attn, both c_proj and c_fc in every block)."),
           applied=True),
    ],
    "04": [
        _q("NF4 puts its 16 levels at quantiles of a normal distribution. Quantizing Gaussian weights in blocks of "
           "64, how often is each level used?", 1,
           ("about 6.25% each: quantile levels hold equal shares", "Equal shares would need values spread like the "
            "normal NF4 was built for, whose ±1 sits at 1.85σ. Each block is divided by its own absmax, near 2.6σ "
            "for 64 Gaussian values, so the scaled values crowd the middle levels."),
           ("from about 1.7% at the ends to 9.2% in the middle", "A block's absmax sits near 2.6σ, further out than "
            "the 1.85σ NF4 maps to ±1, so the scaled values crowd the middle levels (notebook 04 measures it). "
            "NF4 is information-theoretically optimal (equal-probability levels, the full 4 bits per code) only "
            "for normal values scaled so that 1.85σ lands on ±1: blockwise absmax does not give it that input "
            "(3.88 of 4 bits per code), and equal-probability levels do not minimise the squared error either. "
            "At equal bits it still has the lowest error of the four formats on Gaussian weights."),
           ("only the 8 positive levels", "The 7 negative levels are used as much as the positive ones: Gaussian "
            "weights are symmetric around 0."),
           ("the two end levels most: absmax scaling pushes values out to ±1", "Only each block's largest value is "
            "sure to land on ±1; the other 63 spread over the levels in between.")),
        _q("NF4 with block size 64 and double quantization costs about how many bits per weight?", 1,
           ("4.0", "4.0 forgets the block scales: each block of 64 shares a scale that costs bits too."),
           ("4.127", "4 bits + 8/64 for the 8-bit block scales + 32/(64·256) for the second-level scales ≈ 4.127."),
           ("4.5", "4.5 is without double quantization: 4 + 32/64 for an fp32 absmax per block."),
           ("8", "8 bits would be an int8 format.")),
        _q("Block size 128 without double quantization (one fp32 absmax per block): how many bits per weight?", 0,
           ("4.25", "4 + 32/128 = 4.25 (nf4.bits_per_param(128, double_quant=False))."),
           ("4.063", "4.063 is block size 128 *with* double quantization: the scale stored in 8 bits."),
           ("4.5", "4.5 is block size 64: twice as many scales per weight."),
           ("4.0", "4.0 forgets the block scale."), applied=True),
        _q("A 4096 × 4096 weight stored in NF4 (block size 64, double quantization) takes about how many MB?", 2,
           ("33.55 MB", "33.55 MB is the same weight in bf16, 2 bytes per entry."),
           ("8.39 MB", "8.39 MB counts only the 4-bit codes, not the block scales."),
           ("8.65 MB", "16,777,216 weights · 4.127 bits / 8 ≈ 8.65 MB (nf4.stored_bytes)."),
           ("9.44 MB", "9.44 MB is without double quantization (4.5 bits per weight)."), applied=True),
        _q("What does double quantization quantize?", 2,
           ("the weights a second time, to 2 bits", "The weights stay 4-bit; there is no 2-bit step."),
           ("the LoRA adapters", "The adapters stay in 16 or 32 bits: they train."),
           ("the per-block absmax scales, from fp32 to 8 bits, with one fp32 scale per 256 blocks",
            "The block constants are small but numerous; storing them in 8 bits saves about 0.37 bits per weight."),
           ("the activations", "Activations are computed in the compute dtype; QLoRA does not quantize them.")),
    ],
    "05": [
        _q("What is the key difference between LoRA and QLoRA?", 2,
           ("QLoRA trains fewer adapter parameters", "The adapters are the same; only the frozen base changes."),
           ("QLoRA computes in 4-bit", "Matmuls run in the 16-bit compute dtype after dequantization."),
           ("QLoRA stores the frozen base model in 4-bit NF4", "Same adapters; the frozen weights are stored in "
            "4-bit and dequantized to the compute dtype on the fly."),
           ("QLoRA does not need gradients", "The adapters are trained by gradients exactly as in LoRA.")),
        _q("For Llama-2-7B with LoRA at short sequences, what dominates training memory?", 2,
           ("the optimizer state", "AdamW's state covers only the adapters: tens of MB."),
           ("the adapters' gradients", "They are as small as the adapters."),
           ("the frozen base weights", "The 16-bit weights are 13.48 GB of the 13.88 GB peak predicted for "
            "r=8 on q and v at 512 tokens: that is what 4-bit storage attacks."),
           ("the tokenizer", "The tokenizer is a few MB of host memory.")),
        _q("Full fine-tuning the way a T4 must run it: mixed precision (16-bit compute, fp32 master weights, "
           "fp32 AdamW moments). How many bytes per parameter before activations (memory.bytes_per_param)?", 2,
           ("2", "2 bytes is a 16-bit weight alone."),
           ("8", "8 is the pure bf16 recipe (2 + 2 + 4: parameters, gradients and moments all in bf16). A T4 has no "
            "bf16, and fp16 parameters cannot be trained with loss scaling: GradScaler refuses them."),
           ("16", "4 (the fp32 parameter, which is the master weight) + 4 (its fp32 gradient) + 8 (AdamW's two fp32 "
            "moments) = 16; autocast's 16-bit copies for the matmuls are short-lived."),
           ("20", "20 is the peak at the step with PyTorch's foreach AdamW, which allocates one more fp32 copy of "
            "the parameters (notebook 05 measures it); the state itself is 16."), applied=True),
        _q("Llama-2-7B (6,738,415,616 parameters) with LoRA: bf16 frozen weights plus 4,194,304 fp32 adapter "
           "parameters trained by AdamW. How much static memory is that?", 0,
           ("13.54 GB", "2 bytes per frozen weight + 16 per adapter parameter (4 value + 4 gradient + 8 AdamW) "
            "= 13.54 GB."),
           ("13.48 GB", "13.48 GB is the frozen weights alone: the adapters add their values, gradients and state."),
           ("27.02 GB", "27.02 GB stores the frozen weights in fp32 (4 bytes); LoRA keeps them in bf16."),
           ("107.81 GB", "107.81 GB is 16 bytes for *every* parameter: full fine-tuning with fp32 master weights."),
           applied=True),
        _q("For Llama-3.2-1B with r=8 on q and v at 512 tokens, the course predicts 3.31 GB with LoRA and "
           "2.43 GB with QLoRA: much less than the 4x saving on the weights. Why?", 3,
           ("4-bit weights are slower", "Speed is not memory."),
           ("QLoRA trains more parameters", "Both train the same 851,968 adapter parameters."),
           ("the estimate is wrong for small models", "The GPU measurements agree with both predictions within 3%."),
           ("its large vocabulary (128,256 tokens): the embeddings stay unquantized and the logits (0.79 GB) are "
            "the same in both", "Only linear layers of the decoder are 4-bit; the embeddings and the loss over "
            "the vocabulary do not shrink."), applied=True),
    ],
    "06": [
        _q("What does label masking do?", 2,
           ("hides the padding from attention only", "That is the attention mask; labels decide what is graded."),
           ("removes the system prompt", "The prompt stays in the input; only its labels are masked."),
           ("makes only the response tokens count in the loss", "Prompt tokens get label -100, which "
            "cross-entropy ignores; the model is graded on its answers only."),
           ("shuffles the labels", "Labels are the input shifted by one, never shuffled.")),
        _q("Before deploying one fine-tuned task, what can you do to drop the adapter overhead at inference?", 3,
           ("quantize the adapter", "The adapter would still run as an extra branch."),
           ("delete lora_A", "Without A the update is gone: the fine-tuning is lost."),
           ("raise r", "A larger r adds work."),
           ("merge the adapter into the base weights (merge_and_unload)", "Merging gives plain linear layers with "
            "the same outputs (checked in notebook 06); keep adapters separate when one base serves several "
            "tasks.")),
        _q("A row has a 3-token prompt and a 2-token response, and the batch is padded to 7 tokens. How many of its "
           "positions count in the loss?", 0,
           ("2", "Only the response: prompt positions and padding both carry label -100."),
           ("5", "5 counts the prompt too; its labels are -100."),
           ("7", "7 counts the padding too; collate gives padding label -100."),
           ("4", "4 counts the 2 padding positions as if they were answers."), applied=True),
        _q("Your LoRA run (r=8, q and v) barely moves its loss in a few dozen steps at lr=2e-5, a rate that works "
           "for full fine-tuning. What do you change first?", 0,
           ("raise the learning rate by one to two orders of magnitude", "LoRA's update starts at zero (B = 0) and "
            "moves through a few parameters, so it needs larger steps: notebook 06 trains at 3e-3, and notebook 09 "
            "sweeps the learning rate of LoRA and of full fine-tuning on the same task."),
           ("raise r to 64", "More capacity does not help when each step barely moves the weights."),
           ("add the embeddings to target_modules", "The problem is the step size, not where the adapters sit."),
           ("switch to full fine-tuning", "That trains 135M parameters to fix a learning-rate setting."),
           applied=True),
        _q("SmolLM2-135M with LoRA r=8 on q_proj and v_proj trains how many parameters?", 1,
           ("921,600", "921,600 is r=16."),
           ("460,800", "30 layers · 8 · ((576 + 576) + (576 + 192)) = 460,800."),
           ("2,442,240", "2,442,240 is \"all-linear\" at r=8."),
           ("15,360", "15,360 is a single layer: SmolLM2 has 30."), applied=True),
    ],
    "07": [
        _q("What do paged optimizers do?", 2,
           ("keep optimizer state on disk", "Nothing is written to disk."),
           ("quantize the optimizer to 4-bit", "paged_adamw_32bit keeps 32-bit state; paging is about where it lives."),
           ("let optimizer state move to CPU RAM under GPU memory pressure, avoiding out-of-memory spikes",
            "They use CUDA unified memory: pages migrate to the host only when the GPU runs short."),
           ("run the optimizer on the CPU always", "The step runs on the GPU; pages move only under pressure.")),
        _q("On a T4, which compute dtype does the course choose, and why?", 3,
           ("bf16, because torch says it is supported", "torch.cuda.is_bf16_supported() is True there through slow "
            "emulation; capability >= 8.0 is the real test."),
           ("fp32, because 4-bit needs it", "4-bit weights are dequantized to the compute dtype, 16-bit works."),
           ("int8", "int8 is a storage format here, not the dtype of the matmuls."),
           ("fp16 with loss scaling: a T4 (compute capability 7.5) has no native bf16", "fp16 runs on the T4's "
            "tensor cores; loss scaling keeps small gradients from underflowing.")),
        _q("Your QLoRA script passes bf16=True and on a Colab T4 crawls (or hardware.compute_dtype refuses it). "
           "What is the fix?", 2,
           ("update the NVIDIA driver", "The T4's hardware lacks native bf16; no driver adds it."),
           ("set bnb_4bit_compute_dtype=torch.float32", "fp32 works but doubles activation memory and is slow."),
           ("fp16=True with loss scaling and bnb_4bit_compute_dtype=torch.float16", "The T4 has fast fp16; the "
            "Trainer's loss scaling handles fp16's narrow range."),
           ("lower r", "The rank does not change the dtype."), applied=True),
        _q("QLoRA on Llama-2-7B (r=8 on q and v, batch 1, 512 tokens) is predicted to peak at 5.02 GB. "
           "Which part is largest?", 0,
           ("the 4-bit weights, 4.29 GB (with the fp32 embeddings and head)", "The 4-bit linears plus the fp32 "
            "non-quantized weights are most of it; the GPU measured 5.29 GB at the peak."),
           ("the activations, 0.56 GB", "With gradient checkpointing they stay small at 512 tokens."),
           ("the optimizer state, 0.03 GB", "AdamW's state covers only the adapters."),
           ("the quantization state, 0.10 GB", "The block scales are a small share of the weights' memory."),
           applied=True),
        _q("A training run runs out of memory on a T4 at batch 16 × 2048 tokens. What do you try first?", 1,
           ("raise r", "More adapter parameters add memory."),
           ("fewer tokens per step (smaller batch or shorter sequences), with gradient accumulation to keep the "
            "effective batch", "Activations and logits grow with batch × sequence; the weights do not."),
           ("turn off double quantization", "That adds memory (about 0.37 bits per weight)."),
           ("switch the compute dtype to fp32", "fp32 doubles the activations."), applied=True),
    ],
    "08": [
        _q("With DDP and LoRA on 2 GPUs, what does each GPU hold?", 0,
           ("a full copy of the frozen model and of the adapters; adapter gradients are averaged across GPUs after "
            "each backward", "DDP replicates; FSDP shards parameters, gradients and optimizer state across GPUs."),
           ("half of the model", "That is FSDP's sharding; DDP replicates."),
           ("only the adapters", "The forward pass needs the frozen weights on every GPU."),
           ("only the optimizer state", "No: each GPU runs the whole model on its own rows.")),
        _q("Why must `bnb_4bit_quant_storage` equal the compute dtype for FSDP with QLoRA?", 2,
           ("it makes NF4 more accurate", "The codes are the same; only their container dtype changes."),
           ("it enables paged optimizers", "Paging is an optimizer setting, unrelated to storage dtype."),
           ("FSDP flattens and shards each unit's parameters together, which needs one storage dtype for the 4-bit "
            "and the other weights", "The packed 4-bit codes are then stored in bf16/fp16 containers that FSDP "
            "can shard with the rest."),
           ("it is only needed on a T4", "It is needed for FSDP on any GPU.")),
        _q("1 and 2 processes gave the same loss curve in notebook 08 because…", 1,
           ("the seed was fixed", "A fixed seed alone would not make different data splits agree."),
           ("each process saw the same rows of every global batch and the loss was normalised by the tokens of the "
            "whole global batch", "DDP averages gradients over processes; a per-process mean over unequal token "
            "counts would differ."),
           ("gloo is deterministic", "Determinism of the backend does not make two different computations equal."),
           ("the model was tiny", "Size does not matter: the same global batch and normalisation do.")),
        _q("QLoRA on Llama-2-70B with FSDP (r=8 on q and v, 512 tokens per GPU): the course predicts 38.05 GB on one "
           "GPU. What does one GPU hold with 4 GPUs?", 2,
           ("38.05 GB: FSDP only adds speed", "FSDP shards the weights: each GPU holds a quarter."),
           ("9.51 GB: everything divides by 4", "Activations and quantization state are not sharded, and the "
            "gathered layers add communication buffers."),
           ("13.30 GB", "The weights, adapters, gradients and optimizer state divide by 4; the activations, "
            "the quantization state and the gathered layers do not (memory.estimate_per_gpu_memory)."),
           ("22.18 GB", "22.18 GB is the figure for 2 GPUs."), applied=True),
        _q("LoRA on Llama-2-7B needs 13.88 GB on one GPU. With DDP on 4 GPUs, each GPU needs…", 3,
           ("3.47 GB", "That divides everything by 4; DDP replicates the model on every GPU."),
           ("6.94 GB", "DDP does not halve anything either."),
           ("13.88 GB exactly", "DDP adds its gradient buckets: a copy of the trainable gradients."),
           ("13.90 GB: a full replica plus DDP's gradient buckets; more GPUs give more examples per step, not "
            "more room", "To make room, shard with FSDP."), applied=True),
    ],
    "10": [
        _q("For the 8B shape (vocabulary 128,256) at a few thousand tokens, what is the largest part of the lean "
           "QLoRA step's predicted peak?", 1,
           ("the 4-bit weights", "Fixed whatever the length: the logits outgrow them within a few thousand tokens."),
           ("the logits and their gradients (12 bytes per token per vocabulary entry)",
            "tokens x 128,256 x 12 bytes outgrows the whole 4-bit model: section 1's first bars."),
           ("the LoRA adapters", "Tens of MB at r=32."),
           ("the optimizer state", "Two fp32 states per adapter parameter: also tens of MB.")),
        _q("What does the chunked cross-entropy keep between the forward and the backward pass?", 1,
           ("the full fp32 logits", "That is the plain loss, the memory it removes."),
           ("the hidden states entering the output head; each chunk's logits are recomputed in backward",
            "Memory for logits drops to one chunk's, at the price of a second pass through the output head."),
           ("nothing at all", "The backward pass needs the hidden states to recompute the logits."),
           ("only the loss value", "A scalar cannot give the gradient of the head's input.")),
        _q("Offloading with gradient checkpointing moves which tensors to CPU memory?", 2,
           ("the 4-bit weights", "The weights stay on the GPU: every layer needs them in forward and backward."),
           ("the optimizer state", "That is a paged optimizer's job, and LoRA's state is small."),
           ("each decoder layer's input, saved as the checkpoint",
            "Non-reentrant checkpointing saves only the layer inputs: the tensors a saved_tensors_hooks context "
            "around the forward pass sees."),
           ("the LoRA gradients", "Gradients are made in backward and used by the optimizer step on the GPU.")),
        _q("Why does LoRA dropout cost memory on long sequences?", 1,
           ("dropout masks are fp32", "The mask is not the problem; the dropped copy of the input is."),
           ("each adapted layer keeps its own dropped copy of its input for the backward pass",
            "With dropout 0 the adapter reuses the input the frozen 4-bit layer keeps anyway."),
           ("it doubles the adapter size", "Dropout has no parameters."),
           ("it disables gradient checkpointing", "Checkpointing still runs; dropout adds saved tensors inside it.")),
        _q("The 8B shape (vocabulary 128,256), batch 1, at 8,192 tokens: how much memory do the logits take at the "
           "loss's backward with the plain loss, and with the chunked loss at 1,024 tokens a chunk?", 0,
           ("11.74 GiB plain, 0.98 GiB chunked", "Plain: 12 bytes x 8,192 x 128,256 = 11.74 GiB (three fp32 tensors "
            "of tokens x vocabulary); chunked: 8 bytes x 1,024 x 128,256 = 0.98 GiB, whatever the length."),
           ("3.91 GiB plain, 0.49 GiB chunked", "That counts one fp32 tensor, 4 bytes per logit: the plain loss's "
            "backward holds three at once, and the chunked model counts 8 bytes per logit of the chunk."),
           ("11.74 GiB plain, 7.83 GiB chunked", "7.83 GiB is 8 bytes for every token's logits: chunking keeps only "
            "one chunk's at a time, so its share does not grow with the sequence."),
           ("1.96 GiB plain, 0.98 GiB chunked", "1.96 GiB is one fp16 copy, 2 bytes per logit: the loss computes in "
            "fp32 and holds three tensors of that size at its backward."), applied=True),
        _q("A step at 4,096 tokens with the 8B vocabulary (128,256) in fp16. The loss is a mean, so each logit's "
           "gradient is about 1/(tokens x vocabulary). What happens to it without loss scaling?", 1,
           ("nothing: fp16 rounds it up to its smallest number, about 6e-8", "Rounding goes to the nearest "
            "representable number, and for a number far below half the smallest subnormal that is 0."),
           ("at about 1.9e-9 it is below fp16's smallest subnormal (about 6e-8) and becomes 0; GradScaler's starting "
            "scale of 65,536 lifts it to about 1.2e-4, which fp16 holds",
            "That is why fp16 training scales the loss, and why notebook 10's fp16 gradient checks do "
            "(forward_backward's loss_scale): with it, the committed T4-emulation run's gradients with all "
            "techniques differ from the plain path's by 0.98% (relative norm; the two paths also run different "
            "attention kernels)."),
           ("it overflows to inf", "Overflow threatens numbers above fp16's largest, 65,504; this gradient is tiny."),
           ("the loss becomes 0 instead", "The loss is about ln(128,256) ≈ 11.8 for a model that has not learned: "
            "well inside fp16's range. Each logit's gradient is what is tiny."), applied=True),
        _q("Offloading keeps 4 layer inputs on the GPU (longctx.OFFLOAD_GPU_COPIES) instead of all 32. For the 8B "
           "shape (hidden 4,096, fp16) at 32,768 tokens, how much GPU memory does it take back?", 2,
           ("8.00 GiB", "That is all 32 layer inputs: a few stay on the GPU, the one backward is using, the one being "
            "fetched and copies the allocator cannot reuse yet."),
           ("0.25 GiB", "That is one layer input, 32,768 x 4,096 x 2 bytes: offloading takes back 28 of them."),
           ("7.00 GiB", "(32 - 4) x 32,768 x 4,096 x 2 bytes = 7.00 GiB. The 4 that stay: the layer input in use, "
            "the one prefetched, and copies whose memory the allocator can reuse only once the side stream has "
            "finished with them."),
           ("7.75 GiB", "That keeps only the one in use; the backward pass also fetches the next one ahead, and a "
            "copy's memory is free only after the side stream finishes with it."), applied=True),
        _q("With all six techniques, at the 70,000 tokens or so they reach under the T4 emulation, what is the "
           "predicted peak of the recomputed decoder layer's backward?", 3,
           ("the MLP's backward: three intermediate-sized gradients per token", "That is the peak without the tiled "
            "MLP (and without dropout); tiling keeps the MLP's wide tensors for one tile at a time."),
           ("an RMSNorm's backward, which holds five hidden-sized fp32 temporaries per token", "That was the peak "
            "with the MLP tiled; chunked_norm computes the norms a chunk of tokens at a time."),
           ("the attention scores, tokens x tokens", "Only the math kernel stores them. With repeat_kv a T4's "
            "memory-efficient kernel runs, and what attention keeps grows linearly with the tokens."),
           ("attention's own backward: q, K and V (repeated to the query's heads) with their gradients",
            "Everything that works token by token now exists for one chunk at a time; what attention needs across "
            "the whole sequence is left: longctx.predict_peak's 'attention backward' moment.")),
        _q("Under the T4 emulation the course also searched Llama-2-7B's shape: every step it ran, from PEFT's "
           "default to five of the techniques, fits 4,096 tokens and no more is tried. What does that say about "
           "the techniques?", 1,
           ("they do not work on Llama-2", "They work on any Llama-family model: on the Llama-2-7B shape, all six "
            "techniques against the plain path agreed to 0.25% (relative gradient norm)."),
           ("nothing: 4,096 is Llama-2's position limit (max_position_embeddings), so every step fits the whole "
            "limit and none can show how much further it would go", "Longer sequences are refused "
            "(SequenceTooLongError): its rotary embeddings were not trained that far. The 8B shape, with 131,072 "
            "positions, is what shows the differences."),
           ("its vocabulary of 32,000 makes the logits too small to matter", "A smaller vocabulary does shrink the "
            "logits, but that is not why every step stops at the very same length: the search stopped at the "
            "position limit, not at memory."),
           ("a T4 cannot hold Llama-2-7B beyond 4,096 tokens", "Every step, even PEFT's default, fits at 4,096: the "
            "position limit stopped the search, not memory.")),
        _q("Llama-3.1-8B (32 query heads sharing 8 key/value heads), batch 1, no padding mask, on a T4. Which "
           "scaled_dot_product_attention kernel runs transformers' sdpa attention, and why?", 2,
           ("flash attention: SDPA always picks the fastest kernel", "Flash attention needs compute capability 8.0; "
            "a T4 is 7.5 and has only the memory-efficient and math kernels."),
           ("the memory-efficient kernel: it needs no tokens x tokens matrix", "It would, but with no mask "
            "transformers passes the 8 key/value heads with enable_gqa=True, and in torch 2.11 that kernel "
            "refuses unequal head counts."),
           ("the math kernel: enable_gqa is accepted only by flash, which a T4 lacks, so SDPA falls back to the one "
            "kernel left, which stores every score", "longctx's repeat_kv repeats K and V to 32 heads first: "
            "equal head counts, no enable_gqa, and the memory-efficient kernel runs (t4_emulation.csv records "
            "both)."),
           ("cuDNN attention: NVIDIA's library is tuned for its own GPUs", "cuDNN attention in PyTorch also needs "
            "compute capability 8.0 or newer.")),
        _q("The math kernel keeps 4 fp32 score matrices per head in a recomputed layer's backward pass "
           "(longctx.MATH_SCORE_COPIES). For the 8B shape's 32 heads at 8,192 tokens, how much is that?", 1,
           ("2.00 GiB", "That is a quarter of one matrix: one is 32 x 8,192 x 8,192 x 4 bytes = 8.00 GiB, and "
            "there are 4."),
           ("32.00 GiB", "4 x 32 heads x 8,192 x 8,192 x 4 bytes = 32.00 GiB: twice what a T4 has for the whole "
            "run. Doubling the length quadruples it; the memory-efficient kernel's linear terms double."),
           ("8.00 GiB", "That is one of the four: each is 32 x 8,192 x 8,192 x 4 bytes."),
           ("0.50 GiB", "That is two heads' share of one matrix: 8,192 x 8,192 x 4 bytes is 0.25 GiB a head, "
            "with 32 heads and 4 matrices."), applied=True),
    ],
    "09": [
        _q("Why can notebook 06's `orders` task not compare LoRA with full fine-tuning?", 1,
           ("it is too small to train on a CPU", "It trains in minutes on a CPU; size is not the problem."),
           ("its eval rows reuse the training names, items, cities and templates, so every method gets every field "
            "right",
            "A task that every arm aces hides every difference; `orders_heldout` evaluates on unseen entities and "
            "templates."),
           ("it has no eval split", "It has one: 64 rows, but made of the training rows' parts."),
           ("its score is a loss", "Its score is the share of fields right, from generated replies.")),
        _q("What does PiSSA freeze?", 1,
           ("the top-r singular directions of W", "Those go into the adapter and are trained."),
           ("the residual W - BA left after moving W's top-r singular directions into the adapter",
            "The adapter starts as W's principal part and is trained; the rest of W stays frozen."),
           ("nothing: it trains W", "W's residual is frozen, as in LoRA."),
           ("the quantized weights", "That is QLoRA/LoftQ; PiSSA works on 16-bit weights.")),
        _q("A rank-8 LoftQ adapter removes only a small share of NF4's error on a weight. Why?", 1,
           ("LoftQ is buggy", "Its result matches PEFT's own LoftQ (tests/test_variants.py)."),
           ("rounding noise is spread over nearly all singular directions, and rank 8 captures only 8 of them",
            "The quantization error is close to full rank; a low-rank correction captures its largest few "
            "directions only."),
           ("NF4 has no error", "Notebook 04 measured it."),
           ("LoftQ only works on embeddings", "It works on every quantized linear layer.")),
        _q("On `facts` (invented countries and capitals, 120 steps) LoRA r=1 scores near zero and r=64 matches full "
           "fine-tuning; on `orders_heldout` r=1 stays within a few points of r=8 on every seed. What explains the "
           "difference?", 2,
           ("facts needed more steps, and r=1 did not get them", "Every arm of a task got the same steps: at the "
            "same 120 steps r=1 stays near zero while r=64 reaches full fine-tuning. The gap is rank, not steps."),
           ("r=1 diverged on facts", "Its held-out loss fell far below the base model's (the eval loss column): it "
            "learned, as much as rank 1 can hold."),
           ("facts must store many new associations in the weights, so its update needs capacity and rank "
            "matters; orders_heldout needs a small update (a format the model nearly has), which rank 1 already "
            "holds", "Rank is capacity: it matters when the task is capacity-bound, and hardly at all when it is "
            "not. That is why 'r=8 is enough' and 'rank matters' are both true, for different tasks."),
           ("low rank always hurts; orders_heldout is too noisy to show it", "On orders_heldout r=1's three seeds "
            "sit close to r=8's: the task does not need the capacity, so there is little for rank to add.")),
        _q("From the table (orders_heldout, 40 steps, three seeds each): LoRA r=8's mean score is above full "
           "fine-tuning's. Compute the difference of the two means and each arm's spread over its seeds (highest "
           "minus lowest). What do you conclude?", 1,
           ("LoRA r=8 beats full fine-tuning on this task", "The difference of the means (0.020) is smaller than "
            "the spread of either arm's own seeds: another seed could reverse it."),
           ("the difference is smaller than either arm's seed-to-seed spread: the table cannot tell them apart on "
            "this task", "Means 0.911 (LoRA r=8) and 0.892 (full) differ by 0.020, while LoRA r=8's seeds spread "
            "over 0.027 and full fine-tuning's over 0.043. A difference inside the seed spread is not a result."),
           ("full fine-tuning is better: it trains every weight", "Its mean is the lower one here; more trainable "
            "parameters do not promise a higher score after 40 steps."),
           ("seeds cannot matter: every seed trains on the same rows", "The seed sets the adapter's random start "
            "and the order of the batches; one arm's seeds differ by as much as the two arms do."), applied=True),
        _q("The table has QLoRA r=8 twice: the NF4 round trip (every linear weight replaced by its NF4 values, "
           "fp32 arithmetic on any CPU) and bitsandbytes' Linear4bit layers. Compare their scores seed by seed. "
           "What follows?", 0,
           ("they agree within 0.01 on every seed: the round trip is a faithful, CPU-friendly stand-in for the real "
            "4-bit layers", "Both freeze the same NF4 codes (notebook 04); bitsandbytes also quantizes the block "
            "scales (double quantization) and uses its own kernels, and the scores still differ by a field or two "
            "of the held-out set, far below the seed spread."),
           ("bitsandbytes scores clearly higher: real 4-bit storage beats a simulation", "The per-seed differences "
            "are a field or two of the held-out set, far smaller than the differences between seeds."),
           ("the round trip is optimistic: it keeps the fp32 weights", "It replaces every linear weight by its NF4 "
            "round trip before training: the frozen base holds the 4-bit values, stored in fp32."),
           ("they differ by more than the seed spread, so CPU results cannot be trusted", "Compute it: the largest "
            "per-seed difference is below 0.01, while QLoRA's own seeds spread far wider."), applied=True),
        _q("You train LoRA r=8 with Adam and change lora_alpha from 2r to r, keeping the learning rate. Roughly "
           "what did you change?", 3,
           ("nothing: alpha scales BA, which starts at zero", "BA starts at zero, but every step after that is "
            "scaled by alpha/r: the weights move at half the speed."),
           ("the adapter's capacity: it can now use half its rank", "Capacity is r, the shape of A and B; alpha is "
            "only a scale."),
           ("the strength of a regulariser, like weight decay", "alpha multiplies the update; nothing pulls the "
            "weights toward zero."),
           ("about what halving the learning rate would: Adam's steps do not depend on the gradient's scale, and "
            "the weight change is alpha/r times the adapter's", "Each Adam step moves A and B by about the learning "
            "rate whatever alpha is; W changes by alpha/r times that. So alpha and the learning rate trade against "
            "each other: tune one, fix the other.")),
        _q("In the table, 'rsLoRA r=64' (alpha 16, update scaled by alpha/√r) and seed 0 of 'LoRA r=64' (alpha 2r, "
           "scaled by alpha/r) have the same held-out loss, score and general loss. Why?", 1,
           ("rsLoRA is switched off at high rank", "PEFT applies alpha/√r at every rank; here it just gives the "
            "same factor."),
           ("both scale the update by the same factor, 16/√64 = 2 = 128/64, so the two runs compute the same thing",
            "Same start, same data order, same factor: the same run. At r=8 the factors differ (16/√8 = 5.66 "
            "against 2), and so do the rows."),
           ("scores saturate at r=64", "Saturation would not make two losses equal to every digit, and these "
            "scores are not the table's highest."),
           ("a copy-paste error in the table", "Each row is its own run of benchmarks/quality.py; the scaling "
            "factor explains the match exactly."), applied=True),
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
    return False, f"✗ Not quite: {q.reasons[choice]} Try again."


def show(notebook: str) -> None:
    """The quiz as widgets (pick, check, feedback), or as text when there is no widget frontend. Returns None, so
    that the notebook cell ending with it shows the quiz and no text repr of its widgets."""
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


def answers(notebook: str) -> None:
    """The key: each question's answer and the reason for every option (solution notebooks only)."""
    for i, q in enumerate(questions(notebook), 1):
        print(f"Q{i}. {q.prompt}\n    answer: ({'abcdef'[q.answer]}) {q.options[q.answer]}")
        for letter, option, reason in zip("abcdef", q.options, q.reasons):
            print(f"    ({letter}){' ✓' if letter == 'abcdef'[q.answer] else ''} {option}: {reason}")
