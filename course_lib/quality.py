"""What LoRA buys and what it costs, measured (notebook 09): one function trains and scores one *arm*.

An arm is a way of fine-tuning: full fine-tuning, LoRA at some rank and placement, QLoRA (the frozen base in NF4),
or LoRA started with PiSSA or LoftQ (``course_lib.variants``). ``run_arm`` gives every arm the same data, seed,
step budget and batch size, and measures the same things: held-out task score and loss, and the loss on general
questions before and after (forgetting). ``benchmarks/quality.py`` runs the full grid into
``course_lib/resources/measurements/quality.csv``; the notebook runs a smaller grid with the same function.

QLoRA here keeps the frozen base as the NF4 round trip of every linear weight (bit-exact with bitsandbytes'
storage, notebook 04; no double quantization) and computes in fp32: the numbers bitsandbytes' 4-bit layer would
compute with an fp32 compute dtype, at CPU speed.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from course_lib import data, heldout_tasks, models, resources, training, variants

RESULTS_CSV = "quality.csv"  # committed in course_lib/resources/measurements/ by benchmarks/quality.py
INITS = ("zero", "pissa", "loftq")
NF4_IMPLS = ("roundtrip", "bitsandbytes")
PLACEMENTS = {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"], "mlp": ["gate_proj", "up_proj", "down_proj"],
              "all-linear": "all-linear", "q,v": ["q_proj", "v_proj"]}
MAX_NEW_TOKENS = {"facts": 8, "orders_heldout": 40}


@dataclass(frozen=True)
class Arm:
    name: str
    method: str = "lora"  # "lora" or "full"
    r: int = 8
    alpha: float | None = None  # None: 2r (the LoRA paper's common choice; scaling alpha/r = 2 at every rank)
    placement: str = "all-linear"
    init: str = "zero"  # "zero" (plain LoRA), "pissa" or "loftq"
    nf4_base: bool = False  # QLoRA: the frozen base weights in NF4
    nf4_impl: str = "roundtrip"  # "roundtrip": W replaced by its NF4 round trip; "bitsandbytes": Linear4bit layers
    rslora: bool = False  # scale the update by alpha/sqrt(r) instead of alpha/r (PEFT's use_rslora)
    dora: bool = False  # DoRA: a trained magnitude per output row on top of the LoRA direction (PEFT's use_dora)

    def __post_init__(self):
        if self.method not in ("lora", "full"):
            raise ValueError(f"arm {self.name!r}: unknown method {self.method!r}; choose 'lora' or 'full'.")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"arm {self.name!r}: unknown placement {self.placement!r}; choose one of {sorted(PLACEMENTS)}.")
        if self.init not in INITS:
            raise ValueError(f"arm {self.name!r}: unknown init {self.init!r}; choose one of {INITS}.")
        if self.nf4_impl not in NF4_IMPLS:
            raise ValueError(f"arm {self.name!r}: unknown nf4_impl {self.nf4_impl!r}; choose one of {NF4_IMPLS}.")
        if self.nf4_impl == "bitsandbytes" and (not self.nf4_base or self.init != "zero"):
            raise ValueError(f"arm {self.name!r}: nf4_impl='bitsandbytes' loads the base as Linear4bit layers: it "
                             "needs nf4_base=True and init='zero' (PiSSA/LoftQ here rewrite fp32 weights).")
        if self.method == "full" and (self.nf4_base or self.rslora or self.dora or self.init != "zero"):
            raise ValueError(f"arm {self.name!r}: full fine-tuning trains every weight; nf4_base, rslora, dora and "
                             "init apply to adapter arms only.")
        if self.init == "loftq" and not self.nf4_base:
            raise ValueError(f"arm {self.name!r}: LoftQ initialises adapters for a quantized base: set nf4_base=True.")


def build(arm: Arm, seed: int = 0, device=None):
    """A fresh trainable model for ``arm`` (loaded from the embedded SmolLM2 each time), on ``device`` (default: the
    CPU; the Trainer moves it to the GPU if there is one)."""
    if arm.nf4_impl == "bitsandbytes":  # the real thing: every decoder linear a bitsandbytes Linear4bit, fp32 compute
        import torch

        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, _ = models.load_causal_lm(verbose=False, quantization_config=models.nf4_config(torch.float32),
                                         device_map={"": device})
    else:
        model, _ = models.load_causal_lm(verbose=False, device=device)
    if arm.method == "full":
        return model.train()
    if arm.nf4_base and arm.nf4_impl == "roundtrip" and arm.init != "loftq":
        variants.quantize_linears(model)  # QLoRA: zero-init adapters on top of Q(W)
    alpha = 2 * arm.r if arm.alpha is None else arm.alpha
    model = training.add_lora(model, "peft", r=arm.r, alpha=alpha, targets=PLACEMENTS[arm.placement], dropout=0.0,
                              seed=seed, use_rslora=arm.rslora, use_dora=arm.dora)
    if arm.init != "zero":
        if arm.init == "loftq" and arm.placement != "all-linear":
            raise ValueError("LoftQ here needs placement 'all-linear', so that every quantized layer has an adapter.")
        variants.apply(model, arm.init)
    return model


def _measure(model, tokenizer, sets: dict, task: str) -> dict:
    pad = tokenizer.pad_token_id
    out = {"eval_loss": training.evaluate(model, sets["eval_tok"], pad_token_id=pad)["loss"],
           "general_loss": training.evaluate(model, sets["general_tok"], pad_token_id=pad)["loss"]}
    out["score"], out["replies"] = training.task_score(model, tokenizer, sets["eval"], data.SCORERS[task],
                                                       max_new_tokens=MAX_NEW_TOKENS[task])
    if task == "facts":  # recall on phrasings seen in training: memorisation, apart from the held-out phrasing
        out["train_recall"], _ = training.task_score(model, tokenizer, sets["recall"], data.score_exact,
                                                     max_new_tokens=MAX_NEW_TOKENS[task])
    return out


def task_sets(task: str, tokenizer, n_eval: int | None = None, n_train: int | None = None) -> dict:
    """Train and eval rows of ``task`` (raw and tokenized) and the general questions, as ``run_arm`` wants them."""
    ds = data.load_task(task)
    train, ev = ds["train"], ds["eval"]
    if n_train:
        train = train.select(range(n_train))
    if n_eval:
        ev = ev.select(range(n_eval))
    general = heldout_tasks.load_general()
    sets = {"train": train, "eval": ev, "train_tok": data.tokenize_dataset(train, tokenizer),
            "eval_tok": data.tokenize_dataset(ev, tokenizer), "general_tok": data.tokenize_dataset(general, tokenizer)}
    if task == "facts":
        sets["recall"] = train.select(range(min(len(ev), len(train))))
    return sets


def run_arm(arm: Arm, task: str, sets: dict, tokenizer, *, lr: float, steps: int, batch_size: int = 8,
            seed: int = 0, device=None) -> dict:
    """Train ``arm`` on ``task`` and measure it; one row of the results table (a plain dict)."""
    model = build(arm, seed, device)
    trainable, total = training.count_trainable(model)
    start = time.perf_counter()
    result = training.train(model, sets["train_tok"], pad_token_id=tokenizer.pad_token_id, steps=steps, lr=lr,
                            batch_size=batch_size, seed=seed, desc=f"{task} {arm.name} lr={lr:g}")
    seconds = time.perf_counter() - start
    measured = _measure(model, tokenizer, sets, task)
    del model
    final = [loss for _, loss in result.history[-5:]]
    row = {"task": task, **{k: v for k, v in asdict(arm).items()}, "lr": lr, "steps": steps,
           "batch_size": batch_size, "seed": seed, "trainable": trainable, "total": total,
           "train_loss_last5": sum(final) / len(final) if final else float("nan"), "seconds": round(seconds, 1),
           **{k: v for k, v in measured.items() if k != "replies"}, "example_reply": measured["replies"][0]}
    if not math.isfinite(row["eval_loss"]):
        row["eval_loss"] = float("inf")
    return row


def base_row(task: str, sets: dict, tokenizer, device=None) -> dict:
    """The untrained base model on the same measurements: the 'before' of every arm."""
    model, _ = models.load_causal_lm(verbose=False, device=device)
    measured = _measure(model, tokenizer, sets, task)
    return {"task": task, "name": "base (no training)", "method": "none", "trainable": 0, "steps": 0,
            **{k: v for k, v in measured.items() if k != "replies"}, "example_reply": measured["replies"][0]}


FIELDS = ["task", "name", "method", "r", "alpha", "placement", "init", "nf4_base", "nf4_impl", "rslora", "dora", "lr", "steps", "batch_size", "seed",
          "trainable", "total", "train_loss_last5", "eval_loss", "score", "train_recall", "general_loss", "seconds",
          "example_reply"]


def append_csv(path: Path, row: dict) -> None:
    """Add one row to a results CSV (header written once), so a long run keeps what it has measured so far."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file()
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})


def read_csv(path: Path | None = None) -> list[dict]:
    """The rows of a results CSV (default: the committed ``quality.csv``), numbers as floats where they parse."""
    def value(v):
        try:
            return float(v)
        except ValueError:
            return v

    if path is None:
        rows = resources.measurements(RESULTS_CSV)
    else:
        with open(path, encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    return [{k: value(v) for k, v in row.items()} for row in rows]


# ------------------------------------------------------------------------------------------------- verdicts
MARGIN = 0.02  # score differences smaller than this are not called a difference (64 rows x 4 fields: 1/256 steps)


MAIN_LR = {"full fine-tuning": 1e-4}  # the arms compared in the verdicts ran at these learning rates; others 1e-3


def _pick(rows: list[dict], task: str, name: str) -> dict | None:
    """The row of arm ``name`` on ``task`` at its main learning rate (the LR sweep adds rows at other rates)."""
    found = [r for r in rows if r.get("task") == task and r.get("name") == name]
    at_main = [r for r in found if r.get("lr") in ("", None) or math.isclose(r["lr"], MAIN_LR.get(name, 1e-3))]
    return (at_main or found or [None])[0]


def verdicts(rows: list[dict], task: str) -> list[tuple[str, str, str]]:
    """(claim, measured, verdict) for each claim of notebook 09 that ``rows`` can answer on ``task``; claims whose
    arms are missing say so instead of guessing."""
    arm = {name: _pick(rows, task, name) for name in ("full fine-tuning", "LoRA r=1", "LoRA r=8", "LoRA r=64",
                                                      "QLoRA r=8", "LoftQ r=8", "PiSSA r=8", "base (no training)",
                                                      "attention r=16", "MLP r=10", "all-linear r=6")}
    out = []

    def need(*names):
        return all(arm[n] is not None for n in names)

    def ratio(a, b):
        return arm[a]["score"] / arm[b]["score"] if arm[b]["score"] else float("nan")

    missing = "not measured in this run"
    if need("LoRA r=8", "full fine-tuning"):
        x = ratio("LoRA r=8", "full fine-tuning")
        swept = {n: [r for r in rows if r.get("task") == task and r.get("name") == n]
                 for n in ("LoRA r=8", "full fine-tuning")}
        if all(len(v) >= 2 for v in swept.values()):  # both swept: compare each at its best learning rate too
            best = {n: min(v, key=lambda r: r["eval_loss"]) for n, v in swept.items()}
            y = best["LoRA r=8"]["score"] / best["full fine-tuning"]["score"]
            out.append(("LoRA reaches 95-98% of full fine-tuning", f"r=8 / full = {x:.2f} at the main LRs, {y:.2f} "
                        f"at each one's best LR", "holds" if y >= 0.95 else "does not hold"))
        else:
            out.append(("LoRA reaches 95-98% of full fine-tuning", f"r=8 / full = {x:.2f}",
                        "holds" if x >= 0.95 else "does not hold"))
    else:
        out.append(("LoRA reaches 95-98% of full fine-tuning", "", missing))
    if need("QLoRA r=8", "LoRA r=8"):
        x = ratio("QLoRA r=8", "LoRA r=8")
        out.append(("QLoRA keeps 90-95% (or 97-99%) of LoRA's quality", f"QLoRA / LoRA = {x:.2f}",
                    "holds (at >= 90%)" if x >= 0.90 else "does not hold"))
    else:
        out.append(("QLoRA keeps 90-95% (or 97-99%) of LoRA's quality", "", missing))
    if need("LoRA r=64", "LoRA r=8"):
        d = arm["LoRA r=64"]["score"] - arm["LoRA r=8"]["score"]
        out.append(("r=64 often does not beat r=8", f"r=64 - r=8 = {d:+.3f}",
                    "holds" if d <= MARGIN else "does not hold"))
    else:
        out.append(("r=64 often does not beat r=8", "", missing))
    if need("LoRA r=1", "LoRA r=8", "LoRA r=64", "full fine-tuning"):
        low = arm["LoRA r=8"]["score"] - arm["LoRA r=1"]["score"]
        high = ratio("LoRA r=64", "full fine-tuning")
        v = ("holds" if low > MARGIN and high >= 0.95 else
             "does not hold: low rank does not fall off" if low <= MARGIN else "does not hold: r=64 < 95% of full")
        out.append(("high rank matches full FT, low ranks fall off", f"r=8 - r=1 = {low:+.3f}; r=64 / full = {high:.2f}", v))
    else:
        out.append(("high rank matches full FT, low ranks fall off", "", missing))
    if need("attention r=16", "MLP r=10"):
        d = arm["MLP r=10"]["score"] - arm["attention r=16"]["score"]
        out.append(("attention-only underperforms MLP-only at equal parameters", f"MLP - attention = {d:+.3f}",
                    "holds" if d > MARGIN else "does not hold"))
    else:
        out.append(("attention-only underperforms MLP-only at equal parameters", "", missing))
    lr_rows = {m: [r for r in rows if r.get("task") == task and r.get("name") == n]
               for m, n in (("lora", "LoRA r=8"), ("full", "full fine-tuning"))}
    if all(len(v) >= 3 for v in lr_rows.values()):
        best = {m: min(v, key=lambda r: r["eval_loss"]) for m, v in lr_rows.items()}
        interior = all(min(r["lr"] for r in lr_rows[m]) < best[m]["lr"] < max(r["lr"] for r in lr_rows[m])
                       for m in best)
        x = best["lora"]["lr"] / best["full"]["lr"]
        out.append(("LoRA's best LR is ~10x full fine-tuning's", f"best LoRA {best['lora']['lr']:g} / full "
                    f"{best['full']['lr']:g} = {x:g}x", ("holds" if 3 <= x <= 30 else "does not hold") if interior
                    else "not determined: a best LR is at the edge of the grid"))
    else:
        out.append(("LoRA's best LR is ~10x full fine-tuning's", "", missing))
    claim = "LoRA preserves the base model's knowledge (forgets less than full FT)"
    if need("base (no training)", "LoRA r=8", "full fine-tuning"):
        base = arm["base (no training)"]["general_loss"]
        # the same step up for both: ten times each one's main learning rate (the sweep's nearest larger rate)
        worst = {n: max([r["general_loss"] for r in rows if r.get("task") == task and r.get("name") == n
                         and math.isclose(r["lr"] or 0, 10 * MAIN_LR.get(n, 1e-3))] or [float("nan")])
                 for n in ("LoRA r=8", "full fine-tuning")}
        lo, fu = arm["LoRA r=8"]["general_loss"], arm["full fine-tuning"]["general_loss"]
        measured = (f"general loss: base {base:.2f}; main LR LoRA {lo:.2f}, full {fu:.2f}; "
                    f"10x main LR LoRA {worst['LoRA r=8']:.2f}, full {worst['full fine-tuning']:.2f}")
        if lo <= base and fu <= base:
            v = "no forgetting visible at the main LRs"
            if all(math.isfinite(x) for x in worst.values()) and max(worst.values()) > base:
                v += ("; at 10x those LRs " + ("both forget" if min(worst.values()) > base else "only one forgets")
                      + (", full FT more" if worst["full fine-tuning"] > worst["LoRA r=8"] else ", LoRA more"))
        else:
            v = "holds" if lo < fu else "does not hold"
        out.append((claim, measured, v))
    else:
        out.append((claim, "", missing))
    if need("QLoRA r=8", "LoftQ r=8", "LoRA r=8"):
        gap = arm["LoRA r=8"]["score"] - arm["QLoRA r=8"]["score"]
        closed = arm["LoftQ r=8"]["score"] - arm["QLoRA r=8"]["score"]
        v = ("no gap to close (QLoRA is not below LoRA by more than the margin)" if gap <= MARGIN else
             "holds" if closed >= gap / 2 else "does not hold")
        out.append(("LoftQ closes the QLoRA-vs-LoRA gap", f"gap {gap:+.3f}, LoftQ recovers {closed:+.3f}", v))
    else:
        out.append(("LoftQ closes the QLoRA-vs-LoRA gap", "", missing))
    if need("PiSSA r=8", "LoRA r=8"):
        d = arm["PiSSA r=8"]["score"] - arm["LoRA r=8"]["score"]
        out.append(("PiSSA beats zero-init LoRA at equal rank and steps", f"PiSSA - LoRA = {d:+.3f}",
                    "holds" if d > MARGIN else "does not hold"))
    else:
        out.append(("PiSSA beats zero-init LoRA at equal rank and steps", "", missing))
    return out
