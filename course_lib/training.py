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
from course_lib.fsutil import atomic_folder, atomic_write_text

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
             dropout: float = 0.05, init: dict | None = None, seed: int = 0, use_rslora: bool = False,
             use_dora: bool = False):
    """``model`` with LoRA on ``targets``: a PEFT ``PeftModel`` (``impl="peft"``) or the same model with our
    ``LoRALinear`` layers swapped in (``impl="ours"``). ``init`` (from ``lora_init``) copies starting A/B values,
    so two implementations start from the very same adapter. ``use_rslora``/``use_dora``: PEFT's variants (PEFT
    only)."""
    from course_lib import lora

    seed_everything(seed)
    targets = targets if isinstance(targets, str) else list(targets)
    if impl == "peft":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout, task_type="CAUSAL_LM",
                            use_rslora=use_rslora, use_dora=use_dora)
        with _quiet_deprecations():
            model = get_peft_model(model, config)
    elif impl == "ours":
        if use_rslora or use_dora:
            raise ValueError("use_rslora and use_dora are PEFT's: use impl='peft' for them.")
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
            atomic_write_text(folder / COMPLETE, f"step {state.global_step}\n")


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
class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; training stopped at that step."""


class StopOnNonFiniteLoss(TrainerCallback):
    """Stop at the first NaN/inf loss with a message that says what happened and what to change, instead of
    training on garbage (the fp16 loss scaler skips steps with infinite gradients, but not a broken forward)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            precision = "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32"
            raise NonFiniteLossError(
                f"the training loss became {loss} at step {state.global_step} ({precision}). In fp16 this is usually "
                "an overflow: activations above 65,504. Keep the residual stream and loss in fp32 (QLoRA: "
                "qlora.prepare(model, 'default')), lower the learning rate, or use bf16 on a GPU of compute "
                "capability >= 8.0 (a T4 has none).")


class StepTimer(TrainerCallback):
    """Wall time and tokens of every optimizer step (the GPU is synchronized, so the time is the step's own)."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.tokens, self._t, self._seen = device, [], [], 0.0, 0

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._t, self._seen = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.seconds.append(time.perf_counter() - self._t)
        self.tokens.append(state.num_input_tokens_seen - self._seen)


@dataclass
class TrainResult:
    history: list = field(default_factory=list)  # (step, loss)
    seconds: float = 0.0
    steps: int = 0
    tokens: int = 0
    step_seconds: list = field(default_factory=list)
    step_tokens: list = field(default_factory=list)
    max_batch_shape: tuple = (0, 0)  # the largest (rows, tokens) batch trained on: what the peak depends on
    load_bytes: int = 0  # measurement.measure around training: allocated before (weights, quantization state, adapters),
    peak_bytes: int = 0  # ... the peak during training,
    after_bytes: int = 0  # ... and after it (optimizer state and activations released)
    memory_note: str = ""

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(self.steps, 1)

    @property
    def tokens_per_second(self) -> float:
        """Tokens per second over the steps after the first (the first includes warm-up and allocation)."""
        return self.throughput(warmup=1)

    def throughput(self, warmup: int = 1) -> float:
        """Tokens per second over the steps after the first ``warmup`` steps (all steps if there are no more)."""
        times, tokens = self.step_seconds[warmup:], self.step_tokens[warmup:]
        if not times:
            times, tokens = self.step_seconds, self.step_tokens
        if not times:
            return self.tokens / self.seconds if self.seconds else float("nan")
        return sum(tokens) / sum(times)


def _fingerprint(model) -> torch.Tensor:
    """One number per trainable parameter (its sum of squares): cheap, and it moves when training moves it."""
    with torch.no_grad():
        return torch.stack([p.detach().float().pow(2).sum().cpu() for p in model.parameters() if p.requires_grad])


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def training_arguments(output_dir, *, steps: int, lr: float, batch_size: int, seed: int = 0,
                       save_steps: int | None = None, device: torch.device | None = None,
                       compute_dtype: torch.dtype = torch.float32, scheduler: str = "linear"):
    """The one Trainer configuration of the course: a fixed number of steps, a log line per step kept for the
    plot (not printed), no external reporting, checkpoints only when ``save_steps`` is given. On CUDA:
    ``paged_adamw_32bit`` (fp32 Adam states in unified memory, which the driver pages to CPU RAM only if the GPU
    runs short) and mixed precision in ``compute_dtype`` (fp16 with loss scaling on a T4, bf16 on Ampere or newer).
    On a CPU: the default AdamW in fp32 (paged optimizers need CUDA)."""
    from course_lib import hardware

    device = device or torch.device("cpu")
    cuda = device.type == "cuda"
    if compute_dtype == torch.bfloat16 and cuda and not hardware.supports_bf16(device):
        hardware.compute_dtype(device, requested=torch.bfloat16)  # raises, naming the GPU and the way out
    return TrainingArguments(
        output_dir=str(output_dir), max_steps=steps, learning_rate=lr, per_device_train_batch_size=batch_size,
        lr_scheduler_type=scheduler, warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=seed, data_seed=seed,
        logging_steps=1, report_to="none", disable_tqdm=True, remove_unused_columns=False,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500,
        include_num_input_tokens_seen=True, dataloader_num_workers=0, dataloader_pin_memory=cuda,
        use_cpu=not cuda, fp16=cuda and compute_dtype == torch.float16, bf16=cuda and compute_dtype == torch.bfloat16,
        **({"optim": "paged_adamw_32bit"} if cuda else {}),
    )


class _ShapeRecorder:
    """A collator wrapper that remembers the largest batch it built: (rows, tokens after padding)."""

    def __init__(self, collator):
        self.collator, self.max_shape = collator, (0, 0)

    def __call__(self, rows):
        batch = self.collator(rows)
        shape = tuple(batch["input_ids"].shape)
        if shape[0] * shape[1] > self.max_shape[0] * self.max_shape[1]:
            self.max_shape = shape
        return batch


def free_memory() -> None:
    """Collect garbage and give cached GPU memory back, so the next measurement starts clean."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train(model, train_dataset, *, pad_token_id: int = 0, steps: int = 60, lr: float = 2e-3, batch_size: int = 8,
          seed: int = 0, output_dir: str | Path | None = None, save_steps: int | None = None, resume: bool = False,
          collate_fn=data.collate, callbacks=(), desc: str = "training", compute_dtype: torch.dtype | None = None,
          scheduler: str = "linear") -> TrainResult:
    """Train the trainable parameters of ``model`` (its LoRA adapters, or all of them) for ``steps`` steps with
    ``Trainer``, on the device the model is on; measure memory (``measurement.measure``) and every step's time.

    ``train_dataset`` is tokenized (``data.tokenize_dataset``). With ``save_steps`` a checkpoint is written every
    that many steps into ``output_dir``; ``resume=True`` continues from the last complete one. ``compute_dtype``
    (CUDA only): fp16/bf16 mixed precision; None is fp32. Training stops at the first non-finite loss
    (``NonFiniteLossError``).
    """
    from course_lib import measurement

    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("the model has no trainable parameters: add LoRA first (training.add_lora).")
    if resume and output_dir is None:
        raise ValueError("resume=True needs the output_dir of the interrupted run.")
    device = _model_device(model)
    seed_everything(seed)
    free_memory()
    before = _fingerprint(model)
    with contextlib.ExitStack() as stack:
        if output_dir is None:
            output_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="course-train-"))
        progress, timer = ProgressAndHistory(desc), StepTimer(device)
        collator = _ShapeRecorder(data.Collator(pad_token_id, collate_fn))
        args = training_arguments(output_dir, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                                  save_steps=save_steps, device=device,
                                  compute_dtype=compute_dtype or torch.float32, scheduler=scheduler)
        trainer = Trainer(model=model, args=args, train_dataset=train_dataset, data_collator=collator,
                          callbacks=[progress, timer, StopOnNonFiniteLoss(), MarkComplete(), *callbacks])
        trainer.remove_callback(PrinterCallback)  # it prints every log line; our bar shows the loss instead
        checkpoint = last_checkpoint(output_dir) if resume else None
        start_step = int(checkpoint.name.split("-")[-1]) if checkpoint else 0
        # transformers 5.2x warns about its own deprecated call inside Trainer: not something a student can fix
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        measured = stack.enter_context(measurement.measure(device))
        start = time.perf_counter()
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        finally:
            if progress.bar is not None:
                progress.bar.close()
            seconds = time.perf_counter() - start
            trainer.optimizer = None  # release the optimizer state before measuring "after"
            free_memory()
    model.eval()
    if trainer.state.global_step > start_step and torch.equal(before, _fingerprint(model)):
        raise RuntimeError(
            f"{trainer.state.global_step - start_step} training steps ran but no trainable parameter changed: no "
            "gradient reached them. Seen with bitsandbytes' CPU backend on a 4-bit model that generated text before "
            "training: load the model afresh for training (generate afterwards, or on another copy).")
    return TrainResult(history=progress.history, seconds=seconds, steps=trainer.state.global_step - start_step,
                       tokens=int(trainer.state.num_input_tokens_seen), step_seconds=timer.seconds,
                       step_tokens=timer.tokens, max_batch_shape=collator.max_shape, load_bytes=measured.start_bytes,
                       peak_bytes=measured.peak_bytes, after_bytes=measured.end_bytes, memory_note=measured.note)


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
        batch = {k: v.to(_model_device(model)) for k, v in batch.items()}  # where the model is (a GPU, or the CPU)
        n = (batch["labels"][:, 1:] != data.IGNORE_INDEX).sum().item()  # the model shifts labels by one
        total += model(**batch).loss.item() * n
        count += n
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss)}


class NonFiniteLogitsError(FloatingPointError):
    """The model's logits were NaN or infinite: text or scores computed from them would be garbage."""


@contextlib.contextmanager
def finite_logits(model, what: str = "generation"):
    """Raise ``NonFiniteLogitsError`` as soon as the output layer of ``model`` produces a NaN or infinite logit
    at the position a token is chosen from (the last one). Greedy decoding picks *some* token from NaN logits, so
    without this a broken forward pass (an fp16 overflow) scores 0, which looks like an untrained model."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None

    def check(module, args, output):
        logits = output[:, -1] if output.dim() == 3 else output
        if not torch.isfinite(logits).all():
            kind = "NaN" if torch.isnan(logits).any() else "infinite"
            raise NonFiniteLogitsError(
                f"the model produced {kind} logits during {what} (computing in {str(logits.dtype).replace('torch.', '')}"
                f" on {logits.device.type}): its replies would be garbage and score 0, like an untrained model's. "
                "In fp16 this is usually an overflow (a value above 65,504): compute in fp32 (model.float(); on a "
                "CPU fp32 is the default), or in bf16 on a GPU of compute capability >= 8.0; for a 4-bit model keep "
                "the residual stream in fp32 (qlora.prepare(model, 'default')). If training diverged first, its "
                "weights are NaN: retrain with a lower learning rate.")

    handle = head.register_forward_hook(check) if head is not None else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


@torch.no_grad()
def generate(model, tokenizer, rows, *, max_new_tokens: int = 40, batch_size: int = 16) -> list[str]:
    """Greedy replies to the prompts of ``rows`` (instruction/response rows), batched with left padding.
    A NaN or infinite logit raises ``NonFiniteLogitsError`` (see ``finite_logits``)."""
    model.eval()
    replies, side = [], tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation appends on the right, so prompts must end at the same column
    try:
        for start in range(0, len(rows), batch_size):
            prompts = [data.prompt_text(rows[i], tokenizer) for i in range(start, min(start + batch_size, len(rows)))]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(_model_device(model))  # the prompts go where the model is (a GPU, or the CPU)
            with finite_logits(model):
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            replies += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return [r.strip() for r in replies]


def task_score(model, tokenizer, rows, scorer=data.score_record, *, max_new_tokens: int = 40) -> tuple[float, list[str]]:
    """Mean ``scorer(reply, reference)`` over ``rows``, and the replies. Non-finite logits raise
    ``NonFiniteLogitsError`` instead of scoring 0."""
    rows = [rows[i] for i in range(len(rows))]
    replies = generate(model, tokenizer, rows, max_new_tokens=max_new_tokens)
    scores = [scorer(reply, row["response"]) for reply, row in zip(replies, rows)]
    return sum(scores) / len(scores), replies


# ----------------------------------------------------------------------------------------- saving and loading
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
