# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Exercises: LoRA fine-tuning
#
# **You will:** write the collator that pads a batch and keeps prompt and padding out of the loss, then save an
# adapter, load it onto a fresh base model and merge it.
#
# **Runs in:** under a minute on a 2-core CPU (the checks use a tiny random model, not SmolLM2).

# %%
from course_lib import hardware

hardware.report()

# %%
import torch

from course_lib import checks, data, training

torch.manual_seed(0)

# %% [markdown]
# ## Exercise 1 · The label-masking collator
#
# `features` is a list of tokenized rows, each with `input_ids` and `labels` (already `-100` on the prompt).
# Return a dict of tensors padded on the right to the longest row: `input_ids` (padded with `pad_token_id`),
# `attention_mask` (1 for real tokens, 0 for padding) and `labels` (padding gets `-100`, so it is not learned).

# %% tags=["exercise"]
def collate(features, pad_token_id):
    ### BEGIN SOLUTION
    longest = max(len(f["input_ids"]) for f in features)
    ids, mask, labels = [], [], []
    for f in features:
        pad = longest - len(f["input_ids"])
        ids.append(list(f["input_ids"]) + [pad_token_id] * pad)
        mask.append([1] * len(f["input_ids"]) + [0] * pad)
        labels.append(list(f["labels"]) + [data.IGNORE_INDEX] * pad)
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}
    ### END SOLUTION


checks.check_collate(collate)

# %% [markdown]
# ## Exercise 2 · Save, reload and merge an adapter
#
# Save only the adapter of `peft_model` into `folder` (use `training.save_adapter`), load it onto `fresh_base`
# (`training.load_adapter`) and return the merged plain model (`merge_and_unload()`). The check compares its outputs
# with the trained model's.

# %% tags=["exercise"]
def save_reload_merge(peft_model, folder, fresh_base):
    ### BEGIN SOLUTION
    training.save_adapter(peft_model, folder)
    reloaded = training.load_adapter(fresh_base, folder)
    return reloaded.merge_and_unload()
    ### END SOLUTION


checks.check_save_reload_merge(save_reload_merge)
