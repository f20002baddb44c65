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
# # 07 · QLoRA on a GPU — exercises
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/lora-qlora-course/blob/main/solutions/07_qlora_on_a_gpu.ipynb)
#
# **You will:** predict, from a bits-per-weight ledger, how much memory a QLoRA model takes once loaded, and check
# your number against the course's estimator and the committed GPU measurements; then choose the batch size and
# sequence length that use a T4 best without running out of memory. No GPU needed: the checks are arithmetic.
#
# **Runs in:** a few seconds on a 2-core CPU.

# %% tags=["colab-setup"]
# Colab only: install the course and its offline model, keeping Colab's own CUDA torch. Elsewhere: does nothing.
import sys

if "google.colab" in sys.modules:
    class CourseRepositoryNotSet(Exception):
        pass

    raise CourseRepositoryNotSet(
        "This copy of the course does not name its GitHub repository yet (OWNER/lora-qlora-course), so there is "
        "nothing to install from. To publish it: in a checkout, run `make colab REPO=owner/name` (it sets "
        "`repository` under [tool.course] in pyproject.toml and rewrites this cell in every notebook), push, "
        "and open the notebooks from that repository.")

# %%
from course_lib import hardware

hardware.report()

# %%
from course_lib import checks, memory, models, nf4, qlora

# %% [markdown]
# ## Exercise 1 · Memory after loading, by hand
#
# Write `qlora_after_load_bytes(config, targets)`: the bytes on the GPU once a Llama-shaped model is loaded for
# QLoRA with PEFT's default preparation and LoRA adapters of rank 8 are added on `targets` (a list of module
# names, or `"all-linear"`). What is there:
#
# * the linear layers of every decoder layer in NF4 with double quantization (block size 64): their share of
#   bits per weight is `nf4.bits_per_param(64, double_quant=True)`;
# * every other weight (embeddings, output head, norms), which `prepare_model_for_kbit_training` keeps in fp32;
# * the adapters, in fp32.
#
# `memory.parameter_count(config)` counts all weights, `memory.linear_shapes(config)` gives `(in, out)` of each
# linear layer of one decoder layer. The checker compares your figure with the estimator (within 1%) for every
# setting the GPU measured, and prints how far both are from the GPU. It refuses an answer that calls the course's
# memory model: the ledger is yours to write.

# %%
config = models.synthetic_config("llama-2-7b")
print(memory.linear_shapes(config))

# %%
def qlora_after_load_bytes(config, targets, r=8):
    """Bytes of a QLoRA model + adapters right after loading (PEFT's default preparation)."""
    ### BEGIN SOLUTION
    shapes = memory.linear_shapes(config)
    linear = config.num_hidden_layers * sum(i * o for i, o in shapes.values())
    other = memory.parameter_count(config) - linear
    chosen = shapes if targets == "all-linear" else {t: shapes[t] for t in targets}
    adapters = config.num_hidden_layers * sum(r * (i + o) for i, o in chosen.values())
    return linear * nf4.bits_per_param(64, double_quant=True) / 8 + 4 * other + 4 * adapters
    ### END SOLUTION


checks.check_after_load_memory(qlora_after_load_bytes)

# %% [markdown]
# ## Exercise 2 · Batch × sequence for a T4
#
# A free Colab T4 leaves a run `memory.usable_bytes("T4")` bytes. Write `choose_batch_seq(config, gpu_bytes)`: among batch sizes
# 1, 2, 4, 8, 16 and sequence lengths 256, 512, 1024, 2048, 4096, the pair with the **most tokens per step** whose
# predicted peak fits in `gpu_bytes`. Predict with `qlora.predict_peak(config, "default", batch_size=...,
# seq_len=...)` (fp16, r=8 on q and v, PEFT's default preparation). The checker tries Llama-2-7B and Llama-3.2-1B
# on a T4 and Llama-2-7B on an 8 GiB GPU.

# %%
def choose_batch_seq(config, gpu_bytes):
    ### BEGIN SOLUTION
    fitting = [(b, s) for b in (1, 2, 4, 8, 16) for s in (256, 512, 1024, 2048, 4096)
               if qlora.predict_peak(config, "default", batch_size=b, seq_len=s).total_bytes <= gpu_bytes]
    return max(fitting, key=lambda pair: pair[0] * pair[1])
    ### END SOLUTION


checks.check_batch_seq(choose_batch_seq)

# %% [markdown]
# Why a 1B model can fit fewer tokens per step than a 7B one: the logits grow with vocabulary × tokens, and
# Llama-3.2-1B's vocabulary is far larger than Llama-2-7B's. The two models' predicted peaks at the same
# batch × sequence:

# %%
for shape in ("llama-2-7b", "llama-3.2-1b"):
    c = models.synthetic_config(shape)
    est = qlora.predict_peak(c, "default", batch_size=4, seq_len=2048)
    print(f"{shape}: vocabulary {c.vocab_size:,}, peak {est.total_bytes / qlora.GiB:.1f} GiB "
          f"(logits {est.logits / qlora.GiB:.1f} GiB) at batch 4 x 2048")

# %% [markdown] tags=["solution-only"]
# ## Quiz key (the quiz at the end of notebook 07)
# Answers, with the reason for every option. Only the solutions print it; the exercise copies leave it out.

# %% tags=["solution-only"]
from course_lib import quiz

quiz.answers("07")
