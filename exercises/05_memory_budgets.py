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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/lora-qlora-course/blob/main/exercises/05_memory_budgets.ipynb)
#
# **You will:** compute the static memory of LoRA by hand and compare your number with `course_lib.memory`.
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
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


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
# ## Quiz answers (the quiz at the end of notebook 05)

# %%
from course_lib import quiz

quiz.answers("05")
