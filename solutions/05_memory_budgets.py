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
# **You will:** compute the static memory of LoRA by hand and compare your number with `course_lib.memory`;
# then count the memory of the logits, which sets the peak of a small model with a large vocabulary.
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
# ## Exercise — the static part of LoRA
#
# A LoRA run keeps the frozen base model in bf16 (2 bytes per weight) and trains fp32 adapters: each adapter
# parameter needs its value, its gradient and AdamW's two moments. Write `lora_static_bytes(params,
# adapter_params)`.

# %%
def lora_static_bytes(params: int, adapter_params: int) -> int:
    ### BEGIN SOLUTION
    return 2 * params + (4 + 4 + 8) * adapter_params
    ### END SOLUTION


checks.check_lora_memory(lora_static_bytes)

# %% [markdown]
# Your formula against the estimator for Llama-2-7B with r = 8 on q and v (the estimator also counts
# allocation rounding and, separately, the activations and logits):

# %%
config = models.synthetic_config("llama-2-7b")
est = memory.estimate_training_memory(config, "lora")
mine = lora_static_bytes(memory.parameter_count(config), est.trainable_params)
print(f"by hand {mine / 1e9:.3f} GB, estimator (weights + adapters + grads + AdamW) "
      f"{(est.weights + est.adapters + est.gradients + est.optimizer_state) / 1e9:.3f} GB")

# %% [markdown]
# ## Exercise 2 · The logits
#
# For a small model with a large vocabulary the logits, not the weights, set the peak (notebook 05, section 4).
# Write `logits_bytes(batch_size, seq_len, vocab_size)`: the bytes alive for the logits at the loss of a training
# step, as the course's estimator counts them. The checker compares with `memory.estimate_training_memory` on
# SmolLM2, Llama-3.2-1B and Llama-2-7B.

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
config_1b = models.synthetic_config("llama-3.2-1b")
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
