"""Checkers for notebook 06 (LoRA fine-tuning)."""

from __future__ import annotations

from .core import _call, fail, passed


def check_collate(fn) -> None:
    """``fn(features, pad_token_id)`` must pad like ``course_lib.data.collate``: inputs, attention mask, labels."""
    from course_lib import data

    features = [{"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]}, {"input_ids": [9, 4], "labels": [-100, 4]}]
    got = _call(fn, features, 0, name="collate")
    want = data.collate(features, 0)
    if not isinstance(got, dict) or set(got) != set(want):
        fail(f"collate returned {type(got).__name__} with keys {sorted(got) if isinstance(got, dict) else '-'}",
             f"return a dict with the keys {sorted(want)}, each a tensor of shape (batch, longest).")
    for key, hint in (("input_ids", "pad the shorter rows on the right with pad_token_id."),
                      ("attention_mask", "1 for real tokens, 0 for padding."),
                      ("labels", "keep the -100 of the prompt, and put -100 (not the pad id) on padding: padding "
                                 "must not count in the loss.")):
        if got[key].tolist() != want[key].tolist():
            fail(f"{key} is {got[key].tolist()}, expected {want[key].tolist()}", hint)
    passed("collate pads inputs, masks padding and keeps padding and prompt out of the loss.")


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
            fail(f"no adapter_model.safetensors in {folder}", "save the adapter with training.save_adapter(model, folder).")
    if merged is None or any("lora" in name for name, _ in merged.named_modules()):
        fail("the returned model still has LoRA layers (or is None)", "return reloaded.merge_and_unload().")
    with torch.no_grad():
        err = (merged(x).logits - expected).abs().max().item()
    if err > 1e-4:
        fail(f"merged outputs differ from the trained model's by {err:.3g}",
             "load the adapter onto the fresh base (training.load_adapter), then merge it.")
    passed(f"saved, reloaded onto a fresh base and merged: outputs agree (max difference {err:.1e}).")


RECIPE_STEPS, RECIPE_MAX_TRAINABLE, RECIPE_TARGET_LOSS = 6, 1_000_000, 0.1


def check_recipe(fn) -> None:
    """``fn()`` -> ``{"r", "alpha", "targets", "lr"}``: a LoRA recipe that, on SmolLM2 and the orders task, gets the
    held-out loss below ``RECIPE_TARGET_LOSS`` in ``RECIPE_STEPS`` steps of batch 4 with at most
    ``RECIPE_MAX_TRAINABLE`` trainable parameters. The checker really trains it (about 15 s on a CPU)."""
    from course_lib import data, models, training

    recipe = _call(fn, name="choose_recipe")
    if not isinstance(recipe, dict) or not {"r", "alpha", "targets", "lr"} <= set(recipe):
        fail(f"choose_recipe returned {recipe!r}", 'return a dict like {"r": 8, "alpha": 16, "targets": [...], "lr": ...}')
    model, tokenizer = models.load_causal_lm(verbose=False)
    try:
        model = training.add_lora(model, "peft", r=recipe["r"], alpha=recipe["alpha"], targets=recipe["targets"],
                                  dropout=0.0)
    except (ValueError, TypeError) as exc:
        fail(f"that recipe cannot be applied: {exc}", "r a positive int, alpha > 0, targets a list of module names.")
    trainable = training.count_trainable(model)[0]
    if trainable > RECIPE_MAX_TRAINABLE:
        fail(f"{trainable:,} trainable parameters, over the budget of {RECIPE_MAX_TRAINABLE:,}",
             "fewer target modules or a smaller r: q_proj and v_proj at r=8 train 460,800.")
    orders = data.load_task("orders")
    train_set = data.tokenize_dataset(orders["train"], tokenizer)
    eval_set = data.tokenize_dataset(orders["eval"].select(range(16)), tokenizer)
    training.train(model, train_set, pad_token_id=tokenizer.pad_token_id, steps=RECIPE_STEPS, lr=recipe["lr"],
                   batch_size=4, desc="your recipe")
    loss = training.evaluate(model, eval_set, pad_token_id=tokenizer.pad_token_id)["loss"]
    if not loss <= RECIPE_TARGET_LOSS:
        fail(f"held-out loss {loss:.3f} after {RECIPE_STEPS} steps, the target is {RECIPE_TARGET_LOSS}",
             "the learning rate matters most with so few steps: LoRA's update starts at zero and wants a much "
             "larger learning rate than full fine-tuning (see the sweep in notebook 06).")
    passed(f"held-out loss {loss:.3f} after {RECIPE_STEPS} steps with {trainable:,} trainable parameters.")
