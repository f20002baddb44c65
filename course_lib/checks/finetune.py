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
