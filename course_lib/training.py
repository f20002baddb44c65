"""Fine-tuning with LoRA on transformers' ``Trainer``: train, evaluate, generate, save and load adapters safely.

One ``train`` function runs the same loop for PEFT's LoRA and for the course's from-scratch ``LoRALinear``
(``add_lora(model, impl=...)``), so their loss curves and speed can be compared on the same data and seed.
Saving is safe: adapters are written to a temporary folder and renamed into place, checkpoints count only once a
``COMPLETE`` marker is written after them, and an adapter refuses to load onto a base model it was not trained on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from course_lib import data
from course_lib.models import atomic_folder

COMPLETE = "COMPLETE"  # marker written into a checkpoint folder once everything in it is on disk
FINGERPRINT = "base_model_fingerprint.json"


class WrongBaseModelError(ValueError):
    """An adapter was trained on a different base model than the one it is being loaded onto."""


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


@contextlib.contextmanager
def _quiet_deprecations():
    """PEFT calls transformers' deprecated ``is_gradient_checkpointing``: a warning no student can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


# ------------------------------------------------------------------------------------------------ adding LoRA
def add_lora(model, impl: str = "peft", *, r: int = 8, alpha: float = 16, targets=("q_proj", "v_proj"),
             dropout: float = 0.05, init: dict | None = None, seed: int = 0):
    """``model`` with LoRA on ``targets``: a PEFT ``PeftModel`` (``impl="peft"``) or the same model with our
    ``LoRALinear`` layers swapped in (``impl="ours"``). ``init`` (from ``lora_init``) copies starting A/B values,
    so two implementations start from the very same adapter."""
    from course_lib import lora

    seed_everything(seed)
    targets = targets if isinstance(targets, str) else list(targets)
    if impl == "peft":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout, task_type="CAUSAL_LM")
        with _quiet_deprecations():
            model = get_peft_model(model, config)
    elif impl == "ours":
        lora.inject_lora(model, targets, r=r, alpha=alpha, dropout=dropout)
    else:
        raise ValueError(f"impl must be 'peft' or 'ours', got {impl!r}.")
    if init is not None:
        lora.load_lora_weights(model, init)
    return model


def lora_init(model) -> dict:
    """A copy of every LoRA (A, B) pair, to start another model from the same adapter values."""
    from course_lib import lora

    return {name: (A.detach().clone(), B.detach().clone()) for name, (A, B) in lora.lora_weights(model).items()}


def count_trainable(model) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# ------------------------------------------------------------------------------------------------- callbacks
class ProgressAndHistory(TrainerCallback):
    """One tqdm bar with the current loss, and the loss of every step kept for plotting (no printed log lines)."""

    def __init__(self, desc: str = "training"):
        self.desc, self.bar, self.history = desc, None, []

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.desc)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.history.append((state.global_step, logs["loss"]))
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


class MarkComplete(TrainerCallback):
    """After the Trainer has written a checkpoint, mark it complete (write a temp file, then rename it).

    A run killed half-way through saving leaves a checkpoint without the marker, and ``last_checkpoint`` skips it.
    """

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            _atomic_write_text(folder / COMPLETE, f"step {state.global_step}\n")


class StopAfter(TrainerCallback):
    """Raise ``KeyboardInterrupt`` after ``step`` steps: simulates a run that is killed (for tests and demos)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise KeyboardInterrupt(f"simulated interruption after step {state.global_step}")


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest *complete* ``checkpoint-N`` folder in ``output_dir``, or None."""
    folders = [p for p in Path(output_dir).glob("checkpoint-*") if (p / COMPLETE).is_file()]
    return max(folders, key=lambda p: int(p.name.split("-")[-1]), default=None)


# ---------------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    history: list = field(default_factory=list)  # (step, loss)
    seconds: float = 0.0
    steps: int = 0
    tokens: int = 0

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(self.steps, 1)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def training_arguments(output_dir, *, steps: int, lr: float, batch_size: int, seed: int, save_steps: int | None):
    """The Trainer settings used in the course: a fixed number of steps, one log line per step kept for the plot
    (not printed), no external reporting, checkpoints only when ``save_steps`` is given."""
    return TrainingArguments(
        output_dir=str(output_dir), max_steps=steps, learning_rate=lr, per_device_train_batch_size=batch_size,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, seed=seed, data_seed=seed,
        logging_steps=1, report_to="none", disable_tqdm=True, remove_unused_columns=False,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500,
        include_num_input_tokens_seen=True, dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning is for copies to a GPU; on a CPU it only warns
    )


def train(model, train_dataset, *, pad_token_id: int, steps: int = 60, lr: float = 2e-3, batch_size: int = 8,
          seed: int = 0, output_dir: str | Path | None = None, save_steps: int | None = None, resume: bool = False,
          collate_fn=data.collate, callbacks=(), desc: str = "training") -> TrainResult:
    """Train the trainable parameters of ``model`` (its LoRA adapters) for ``steps`` steps with ``Trainer``.

    ``train_dataset`` is tokenized (``data.tokenize_dataset``). With ``save_steps`` a checkpoint is written every
    that many steps into ``output_dir``; ``resume=True`` continues from the last complete one.
    """
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("the model has no trainable parameters: add LoRA first (training.add_lora).")
    if resume and output_dir is None:
        raise ValueError("resume=True needs the output_dir of the interrupted run.")
    seed_everything(seed)
    with contextlib.ExitStack() as stack:
        if output_dir is None:
            output_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="course-train-"))
        progress = ProgressAndHistory(desc)
        trainer = Trainer(
            model=model, args=training_arguments(output_dir, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                                                 save_steps=save_steps),
            train_dataset=train_dataset, data_collator=data.Collator(pad_token_id, collate_fn),
            callbacks=[progress, MarkComplete(), *callbacks],
        )
        trainer.remove_callback(PrinterCallback)  # it prints every log line; our bar shows the loss instead
        checkpoint = last_checkpoint(output_dir) if resume else None
        start_step = int(checkpoint.name.split("-")[-1]) if checkpoint else 0
        start = time.perf_counter()
        # transformers 5.2x warns about its own deprecated call inside Trainer: not something a student can fix
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        finally:
            if progress.bar is not None:
                progress.bar.close()
        seconds = time.perf_counter() - start
    model.eval()
    return TrainResult(history=progress.history, seconds=seconds, steps=trainer.state.global_step - start_step,
                       tokens=int(trainer.state.num_input_tokens_seen))


def lr_sweep(make_model, train_dataset, eval_dataset, lrs, *, pad_token_id: int, steps: int = 6,
             batch_size: int = 4, desc: str = "") -> dict[float, float]:
    """Held-out loss after ``steps`` steps at each learning rate; ``make_model()`` builds a fresh trainable model
    each time (LoRA-wrapped, or a plain model for full fine-tuning). A diverged run reports ``inf``."""
    losses = {}
    for lr in lrs:
        model = make_model()
        train(model, train_dataset, pad_token_id=pad_token_id, steps=steps, lr=lr, batch_size=batch_size,
              desc=f"{desc} lr={lr:g}")
        loss = evaluate(model, eval_dataset, pad_token_id=pad_token_id)["loss"]
        losses[lr] = loss if math.isfinite(loss) else float("inf")
        del model
    return losses


# ------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model, eval_dataset, *, pad_token_id: int, batch_size: int = 16) -> dict:
    """Mean loss per reply token on a tokenized dataset, and perplexity = exp(loss)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(eval_dataset), batch_size):
        batch = data.collate([eval_dataset[i] for i in range(start, min(start + batch_size, len(eval_dataset)))],
                             pad_token_id)
        n = (batch["labels"][:, 1:] != data.IGNORE_INDEX).sum().item()  # the model shifts labels by one
        total += model(**batch).loss.item() * n
        count += n
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss)}


@torch.no_grad()
def generate(model, tokenizer, rows, *, max_new_tokens: int = 40, batch_size: int = 16) -> list[str]:
    """Greedy replies to the prompts of ``rows`` (instruction/response rows), batched with left padding."""
    model.eval()
    replies, side = [], tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation appends on the right, so prompts must end at the same column
    try:
        for start in range(0, len(rows), batch_size):
            prompts = [data.prompt_text(rows[i], tokenizer) for i in range(start, min(start + batch_size, len(rows)))]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            replies += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return [r.strip() for r in replies]


def task_score(model, tokenizer, rows, scorer=data.score_record, *, max_new_tokens: int = 40) -> tuple[float, list[str]]:
    """Mean ``scorer(reply, reference)`` over ``rows``, and the replies."""
    rows = [rows[i] for i in range(len(rows))]
    replies = generate(model, tokenizer, rows, max_new_tokens=max_new_tokens)
    scores = [scorer(reply, row["response"]) for reply, row in zip(replies, rows)]
    return sum(scores) / len(scores), replies


# ----------------------------------------------------------------------------------------- saving and loading
def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old file or the new one, never half


def base_fingerprint(model) -> dict:
    """What identifies a base model: its architecture's shape and a hash of a slice of its embedding weights."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    weights = base.get_input_embeddings().weight[:8, :64].detach().float().cpu()
    digest = hashlib.sha256(torch.round(weights * 1e4).to(torch.int64).numpy().tobytes()).hexdigest()[:16]
    return {"model_type": cfg.model_type, "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
            "vocab_size": cfg.vocab_size, "embedding_hash": digest}


def save_adapter(model, folder: str | Path) -> Path:
    """Save only the adapter of a PEFT model (plus the base model's fingerprint), atomically: written into a
    temporary sibling folder, then renamed, so an interrupted save never leaves a half-written adapter."""
    folder = Path(folder)
    if not hasattr(model, "peft_config"):
        raise TypeError("save_adapter expects a PEFT model (training.add_lora(..., impl='peft')); for a full model "
                        "use model.save_pretrained.")
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp)
        (tmp / FINGERPRINT).write_text(json.dumps(base_fingerprint(model), indent=2), encoding="utf-8")
    return folder


def check_base(model, folder: str | Path) -> None:
    """Raise ``WrongBaseModelError`` when the adapter in ``folder`` was trained on another base model."""
    path = Path(folder) / FINGERPRINT
    if not path.is_file():
        return  # an adapter saved elsewhere: PEFT's own shape checks are all we have
    saved, actual = json.loads(path.read_text(encoding="utf-8")), base_fingerprint(model)
    diff = {k: (saved[k], actual.get(k)) for k in saved if saved[k] != actual.get(k)}
    if diff:
        details = ", ".join(f"{k}: adapter {a!r} vs model {b!r}" for k, (a, b) in diff.items())
        raise WrongBaseModelError(
            f"the adapter in {Path(folder).name!r} was trained on a different base model ({details}). Its update only makes "
            "sense on the weights it was trained with: load the same base model it was trained on.")


def load_adapter(model, folder: str | Path, adapter_name: str = "default"):
    """Load a saved adapter onto ``model`` after checking it belongs to this base. A plain model becomes a
    ``PeftModel``; a ``PeftModel`` gets one more adapter named ``adapter_name`` (see ``set_adapter``)."""
    from peft import PeftModel

    check_base(model, folder)
    with _quiet_deprecations():
        if isinstance(model, PeftModel):
            model.load_adapter(str(folder), adapter_name=adapter_name)
            return model
        return PeftModel.from_pretrained(model, str(folder), adapter_name=adapter_name)


def folder_size(folder: str | Path) -> int:
    """Bytes on disk of all files under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def plot_history(histories: dict, title: str = "training loss per step"):
    """Loss per step of one or more runs (``{label: TrainResult}``), on one axis."""
    import matplotlib.pyplot as plt

    ax = plt.subplots(figsize=(7, 3.5))[1]
    for label, result in histories.items():
        steps, losses = zip(*result.history)
        ax.plot(steps, losses, marker=".", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (reply tokens)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax
