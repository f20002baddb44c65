"""A hand-written training loop for notebook 02: a few AdamW steps on one batch, and which parameters moved.

The course's real fine-tunes use the Trainer (``course_lib.training``); this loop exists to show, with nothing
hidden, that training a model with ``inject_lora`` changes the adapters and leaves every frozen weight bit-identical.
"""

from __future__ import annotations

import torch
from torch import nn


def trainable_names(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter, to see later which ones a training run changed."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed_parameters(before: dict[str, torch.Tensor], model: nn.Module) -> list[str]:
    """Names of parameters that are not bit-identical to ``before`` (``torch.equal``, no tolerance)."""
    return [name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())]


def train_steps(model: nn.Module, input_ids: torch.Tensor, steps: int = 10, lr: float = 1e-3, *,
                progress: bool = True) -> list[float]:
    """A few AdamW steps of next-token prediction on one batch; returns the losses. Only trainable
    parameters (the adapters, after ``inject_lora``) are given to the optimizer."""
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: call inject_lora first.")
    optimizer = torch.optim.AdamW(params, lr=lr)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="training", disable=not progress):
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def update_size_by_rank(base_model: nn.Module, input_ids: torch.Tensor, ranks, alpha_for_rank, *, steps: int = 5,
                        lr: float = 2e-3, targets=("q_proj", "v_proj"), seed: int = 0) -> list[dict]:
    """Train a fresh copy of ``base_model`` with LoRA at each rank (``alpha = alpha_for_rank(r)``), the same
    steps on the same batch from the same seed, and measure what the training did: the update's size
    |scaling·BA| / |W| over all adapted layers, and the loss before and after. Shows how α and r together
    set the size of an Adam-trained update (notebook 02)."""
    import copy

    from tqdm.auto import tqdm

    from course_lib import lora

    rows = []
    for r in tqdm(list(ranks), desc="ranks"):
        model = copy.deepcopy(base_model)
        torch.manual_seed(seed)  # the same random A at every rank (as far as the shapes allow)
        alpha = alpha_for_rank(r)
        lora.inject_lora(model, list(targets), r=r, alpha=alpha)
        losses = train_steps(model, input_ids, steps=steps, lr=lr, progress=False)
        layers = lora.lora_layers(model).values()
        update = sum(layer.delta_weight().pow(2).sum().item() for layer in layers) ** 0.5
        weight = sum(layer.base_layer.weight.pow(2).sum().item() for layer in layers) ** 0.5
        rows.append({"r": r, "alpha": alpha, "scaling": alpha / r, "update": update / weight,
                     "loss_before": losses[0], "loss_after": losses[-1]})
        del model
    return rows
