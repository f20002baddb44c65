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
# # 02 · LoRA from scratch — exercises
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/lora-qlora-course/blob/main/solutions/02_lora_from_scratch.ipynb)
#
# **You will:** write the two functions at the heart of LoRA from its two matrices — the forward pass of a LoRA
# layer and the merge of its update into the frozen weight — and have them checked against
# `course_lib.lora.LoRALinear` and PEFT; then predict which factor gets a gradient on the first step, and check.
#
# **Runs in:** ~10 s on a 2-core CPU.

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
from torch import nn

from course_lib import checks, lora

_ = torch.manual_seed(0)

# %% [markdown]
# A `lora.LoRALinear` layer has what you need as attributes:
#
# | attribute | what it is |
# | --- | --- |
# | `layer.base_layer` | the frozen `nn.Linear` (or GPT-2 `Conv1D`); `layer.base_layer.weight` is W |
# | `layer.lora_A.weight` | A, shape `r × d_in`: the down-projection (it reads the input) |
# | `layer.lora_B.weight` | B, shape `d_out × r`: the up-projection (it writes the output) |
# | `layer.dropout` | dropout applied to the input of A (an `nn.Identity` when dropout is 0) |
# | `layer.scaling` | α/r (or α/√r with rsLoRA) |
# | `layer.fan_in_fan_out` | True for GPT-2's `Conv1D`, whose weight is stored as (d_in, d_out) |

# %%
layer = lora.LoRALinear(nn.Linear(16, 12), r=4, alpha=8)
print(layer)

# %% [markdown]
# ## Exercise 1 — the forward pass
#
# Write `lora_forward(layer, x)`: the base layer's output plus the scaled low-rank update,
# `base(x) + scaling · B A dropout(x)`, with the matrices `A = layer.lora_A.weight` and `B = layer.lora_B.weight`
# (`x` holds one input per row, so multiply by their transposes). The checker compares it with `LoRALinear` on
# an `nn.Linear` and a `Conv1D`, then plugs it into every LoRA layer of a tiny Llama and compares the logits with
# PEFT's. Calling the layer itself (`layer(x)`, `LoRALinear.forward`) would only compare the course with itself:
# the checker refuses it.

# %%
def lora_forward(layer, x):
    """The output of a LoRA layer (unmerged) for input x."""
    ### BEGIN SOLUTION
    A, B = layer.lora_A.weight, layer.lora_B.weight
    update = layer.dropout(x) @ A.T @ B.T
    return layer.base_layer(x) + layer.scaling * update
    ### END SOLUTION


checks.check_lora_forward(lora_forward)

# %% [markdown]
# ## Exercise 2 — merging
#
# Write `lora_merge(layer)`: add `scaling · B @ A` to the base weight **in place** and set `layer.merged = True`
# (the layer's `forward` then skips the adapter). Mind the layout: `nn.Linear` stores W as (d_out, d_in), the
# same as `B @ A`; GPT-2's `Conv1D` stores it as (d_in, d_out), so the update must be transposed when
# `layer.fan_in_fan_out` is True. Work under `torch.no_grad()` so autograd does not record the edit. Build the
# update from the two matrices: `layer.merge()` and `layer.delta_weight()` are the course's answer, refused here.

# %%
def lora_merge(layer):
    """Fold the LoRA update into layer.base_layer.weight, in place."""
    ### BEGIN SOLUTION
    with torch.no_grad():
        delta = (layer.lora_B.weight @ layer.lora_A.weight) * layer.scaling
        if layer.fan_in_fan_out:
            delta = delta.T
        layer.base_layer.weight += delta
    layer.merged = True
    ### END SOLUTION


checks.check_lora_merge(lora_merge)

# %% [markdown]
# ## Exercise 3 — predict, then check: who gets a gradient first?
#
# A fresh LoRA layer has `A` random and `B = 0`. Run one forward pass through your `lora_forward` and one
# backward pass of some loss. **Before running anything**, predict: is the gradient of `A` exactly zero? Is the
# gradient of `B`? Return the two answers as booleans from `predict_zero_gradients()`: `(A_grad_is_zero,
# B_grad_is_zero)`. The checker runs the backward pass through your forward and tells you what happened.

# %%
def predict_zero_gradients() -> tuple[bool, bool]:
    ### BEGIN SOLUTION
    # dL/dA = scaling · Bᵀ (dL/dy) xᵀ is 0 while B = 0; dL/dB = scaling · (dL/dy) (A x)ᵀ is not, since A is random
    return True, False
    ### END SOLUTION


checks.check_first_gradients(predict_zero_gradients, lora_forward)

# %% [markdown] tags=["solution-only"]
# Compare with the course's version, `LoRALinear.merge` (and `delta_weight`, which it uses):

# %% tags=["solution-only"]
from course_lib.source import show_source

show_source(lora.LoRALinear.delta_weight)
show_source(lora.LoRALinear.merge)

# %% [markdown] tags=["solution-only"]
# ## Quiz key (the quiz at the end of notebook 02)
# Answers, with the reason for every option. Only the solutions print it; the exercise copies leave it out.

# %% tags=["solution-only"]
from course_lib import quiz

quiz.answers("02")
