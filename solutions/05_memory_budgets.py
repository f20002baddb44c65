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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/lora-qlora-course/blob/main/solutions/05_memory_budgets.ipynb)
#
# **You will:** write the memory ledger of full fine-tuning, LoRA and QLoRA from bytes per parameter; predict from
# it what fits on a T4, then check your prediction against the course's estimator and see where a ledger falls
# short; then count the memory of the logits, which sets the peak of a small model with a large vocabulary.
# The checkers refuse an answer that calls `course_lib.memory`: the arithmetic is yours to write.
#
# **Runs in:** ~5 s on a 2-core CPU.

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
