"""Checkers for notebook 06 (LoRA fine-tuning)."""

from __future__ import annotations

from .core import _call, call_own, checker, fail, passed


@checker
def check_collate(fn) -> None:
    """``fn(features, pad_token_id)`` must pad like ``course_lib.data.collate``: inputs, attention mask, labels."""
    from course_lib import data

    features = [{"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]}, {"input_ids": [9, 4], "labels": [-100, 4]}]
    want = data.collate(features, 0)
    got = call_own(fn, features, 0, forbidden=(data.collate,), name="collate",
                   write_from="the rows themselves: pad each to the longest with pad_token_id, build its attention "
                              "mask, and pad its labels with the value cross-entropy ignores",
                   hints=("the checker refuses an answer that calls data.collate, the course's own collator: it "
                          "would only compare the course's collator with itself.",
                          "write three lists per row, padded on the right to the longest row, then torch.tensor(...) of "
                          "each; data.IGNORE_INDEX is the label value that is not learned."))
    if not isinstance(got, dict) or set(got) != set(want):
        fail(f"collate returned {type(got).__name__} with keys {sorted(got) if isinstance(got, dict) else '-'}",
             f"return a dict with the keys {sorted(want)}, each a tensor of shape (batch, longest row).")
    steps = {"input_ids": ("every row must be as long as the longest one: pad the shorter rows on the right.",
                           "the padding value of input_ids is the pad_token_id argument."),
             "attention_mask": ("the mask tells attention which positions are real tokens.",
                                "1 where the row has a real token, 0 where you padded."),
             "labels": ("labels are what the loss grades: prompt and padding must not count.",
                        "keep the -100 the prompt already has; padding needs the value cross-entropy ignores too.",
                        "that value is -100 (data.IGNORE_INDEX), not the pad id: a pad id would be learned.")}
    for key, hints in steps.items():
        if not hasattr(got[key], "tolist"):
            fail(f"{key} is a {type(got[key]).__name__}, not a tensor", "build each value with torch.tensor(...).")
        if got[key].tolist() != want[key].tolist():
            fail(f"for rows of {[len(f['input_ids']) for f in features]} tokens padded with id 0, {key} is "
                 f"{got[key].tolist()}", *hints)
    passed("collate pads inputs, masks padding and keeps padding and prompt out of the loss.")


@checker
def check_save_reload_merge(fn) -> None:
    """``fn(peft_model, folder, fresh_base)`` -> merged plain model whose outputs equal ``peft_model``'s."""
    import torch

    from course_lib import lora, models, training

    model = training.add_lora(models.tiny_model("llama"), "peft", r=4, alpha=8, dropout=0.0)
    lora.randomize_lora_B(model, std=0.1)
    x = torch.randint(0, 200, (2, 6))
    with torch.no_grad():
        expected = model(x).logits
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "adapter"
        merged = _call(fn, model, folder, models.tiny_model("llama"), name="save_reload_merge")
        if not (folder / "adapter_model.safetensors").is_file():
            found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "nothing"
            fail(f"no adapter_model.safetensors in {folder} (found {found})",
                 "the first step saves only the adapter into folder.",
                 "course_lib.training has a helper that saves an adapter.")
    if merged is None or any("lora" in name for name, _ in merged.named_modules()):
        fail("the returned model still has LoRA layers" if merged is not None else "save_reload_merge returned None",
             "return a plain model: the adapter folded into the base weights.",
             "PEFT models have a method that merges the adapters and removes the LoRA wrappers.")
    with torch.no_grad():
        err = (merged(x).logits - expected).abs().max().item()
    if err > 1e-4:
        fail(f"merged outputs differ from the trained model's by {err:.3g}",
             "the adapter you merge must be the one you saved, loaded onto fresh_base.",
             "course_lib.training has a helper that loads an adapter folder onto a base model.")
    passed(f"saved, reloaded onto a fresh base and merged: outputs agree (max difference {err:.1e}).")


# Another task and a budget ten times smaller than notebook 06's runs: notebook 06's learning rate (3e-3) falls
# short here (solutions/06 sweeps it), so the student has to measure the rate.
RECIPE_TASK, RECIPE_STEPS, RECIPE_MAX_TRAINABLE, RECIPE_TARGET_LOSS = "labels", 6, 50_000, 1.5


def recipe_data(tokenizer, eval_rows: int = 16):
    """(train, eval) of the recipe exercise, tokenized: what the checker trains and scores on."""
    from course_lib import data

    task = data.load_task(RECIPE_TASK)
    return (data.tokenize_dataset(task["train"], tokenizer),
            data.tokenize_dataset(task["eval"].select(range(eval_rows)), tokenizer))


def recipe_model(recipe: dict):
    """SmolLM2 with the LoRA adapters of ``recipe`` (seeded, so a recipe always gets the same start)."""
    from course_lib import models, training

    model = models.load_causal_lm(verbose=False)[0]
    training.seed_everything(0)
    return training.add_lora(model, "peft", r=recipe["r"], alpha=recipe["alpha"], targets=recipe["targets"],
                             dropout=0.0)


@checker
def check_recipe(fn) -> None:
    """``fn()`` -> ``{"r", "alpha", "targets", "lr"}``: a LoRA recipe that, on SmolLM2 and the labels task, gets the
    held-out loss to at most ``RECIPE_TARGET_LOSS`` in ``RECIPE_STEPS`` steps of batch 4 with at most
    ``RECIPE_MAX_TRAINABLE`` trainable parameters. The checker really trains it (about 15 s on a CPU)."""
    from course_lib import models, training

    recipe = _call(fn, name="choose_recipe")
    if not isinstance(recipe, dict) or not {"r", "alpha", "targets", "lr"} <= set(recipe):
        fail(f"choose_recipe returned {recipe!r}", 'return a dict like {"r": ..., "alpha": ..., "targets": [...], "lr": ...}')
    try:
        model = recipe_model(recipe)
    except (ValueError, TypeError) as exc:
        fail(f"that recipe cannot be applied: {exc}", "r a positive int, alpha > 0, targets a list of module names "
             "of SmolLM2 (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj).")
    trainable = training.count_trainable(model)[0]
    if trainable > RECIPE_MAX_TRAINABLE:
        fail(f"{trainable:,} trainable parameters, over the budget of {RECIPE_MAX_TRAINABLE:,}",
             "each adapted layer costs r·(d_in + d_out) per decoder layer, and SmolLM2 has 30 of them: fewer target "
             "modules or a smaller r.",
             "SmolLM2's q_proj maps 576 -> 576 and v_proj 576 -> 192: count what one module at r = 1 or 2 costs "
             "over 30 layers.")
    tokenizer = models.load_causal_lm(verbose=False)[1]
    train_set, eval_set = recipe_data(tokenizer)
    training.train(model, train_set, pad_token_id=tokenizer.pad_token_id, steps=RECIPE_STEPS, lr=recipe["lr"],
                   batch_size=4, desc="your recipe")
    loss = training.evaluate(model, eval_set, pad_token_id=tokenizer.pad_token_id)["loss"]
    if not loss <= RECIPE_TARGET_LOSS:
        fail(f"held-out loss {loss:.3f} after {RECIPE_STEPS} steps at lr={recipe['lr']:g} with {trainable:,} "
             f"trainable parameters; the target is {RECIPE_TARGET_LOSS}",
             "with so few steps and parameters, the size of each step decides: the learning rate matters most.",
             "notebook 06 trained ten times the parameters for 16 steps on another task at 3e-3: that rate was "
             "not chosen for this budget. Measure your own with training.lr_sweep over a few rates (each takes "
             "~10 s).",
             "too large a rate diverges (the loss jumps up, or is inf): look between the rate that is too timid "
             "and the one that blows up. alpha / r multiplies the update as well.")
    passed(f"held-out loss {loss:.3f} after {RECIPE_STEPS} steps with {trainable:,} trainable parameters.")
