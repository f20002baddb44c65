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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/lora-qlora-course/blob/main/exercises/03_counting_lora_parameters.ipynb)
#
# **You will:** do the classic exercise (LoRA on GPT-2 at r = 4, 8, 16, 32, count, plot) without downloading
# GPT-2, and predict a Llama model's LoRA count from its config by hand.
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
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


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
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


checks.check_predict_qv_count(predict_qv_count)

# %%
# NBVAL_CHECK_OUTPUT
print(f"Llama-3.2-1B, q+v, r=8: predicted {predict_qv_count(config, 8):,}, "
      f"lora_param_count {counting.lora_param_count(models.synthetic_model('llama-3.2-1b'), ['q_proj', 'v_proj'], 8):,}")
