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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/lora-qlora-course/blob/main/exercises/08_scaling_out.ipynb)
#
# **You will:** work out what FSDP splits across GPUs and what it does not, part by part, and find the fewest GPUs
# on which QLoRA of a large model fits. Checked against `course_lib.memory.estimate_per_gpu_memory`: no GPU needed.
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
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


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
    # YOUR CODE HERE
    raise NotImplementedError("Exercise: write your code here, then run the check below.")


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
