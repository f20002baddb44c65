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
MARGIN = 0.02  # score differences smaller than this are never called a difference (64 rows x 4 fields)
MAIN_LR = {"full fine-tuning": 1e-4}  # the arms compared in the verdicts ran at these learning rates; others 1e-3
MAIN_BATCH = 8
MEANS = ("score", "eval_loss", "general_loss", "train_recall", "trainable")


def _number(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _pick(rows: list[dict], task: str, name: str) -> dict | None:
    """Arm ``name`` on ``task`` at its main learning rate and batch size, averaged over its seeds (the sweeps add
    rows at other rates and batch sizes). ``seeds`` and ``spread`` (max - min score over seeds) come with it."""
    found = [r for r in rows if r.get("task") == task and r.get("name") == name]
    main = [r for r in found if (_number(r.get("lr")) is None or math.isclose(r["lr"], MAIN_LR.get(name, 1e-3)))
            and (_number(r.get("batch_size")) is None or r["batch_size"] == MAIN_BATCH)]
    if not main:
        return None
    out = dict(main[0], seeds=len(main), spread=max(r["score"] for r in main) - min(r["score"] for r in main))
    for key in MEANS:
        values = [r[key] for r in main if _number(r.get(key)) is not None]
        if values:
            out[key] = sum(values) / len(values)
    return out


def noise(rows: list[dict], task: str) -> float:
    """The smallest score difference called a difference on ``task``: MARGIN, or the seed-to-seed spread of
    LoRA r=8 when that is larger (a difference smaller than what another seed gives is not a result)."""
    lora = _pick(rows, task, "LoRA r=8")
    return max(MARGIN, lora["spread"] if lora else 0.0)


def _best_lr(rows: list[dict], task: str, name: str) -> tuple[dict | None, bool]:
    """The row of ``name`` (batch 8, seed 0 or unseeded) with the lowest held-out loss over the learning rates
    tried, and whether that rate is interior (neither the smallest nor the largest tried)."""
    swept = [r for r in rows if r.get("task") == task and r.get("name") == name and r.get("seed") in (0, 0.0, "", None)
             and (_number(r.get("batch_size")) is None or r["batch_size"] == MAIN_BATCH)]
    if len(swept) < 3:
        return None, False
    best = min(swept, key=lambda r: r["eval_loss"])
    lrs = [r["lr"] for r in swept]
    return best, min(lrs) < best["lr"] < max(lrs)


def verdicts(rows: list[dict], task: str) -> list[tuple[str, str, str]]:
    """(claim, measured, verdict) for each claim of notebook 09 that ``rows`` can answer on ``task``; claims whose
    arms are missing say so instead of guessing. Scores are means over seeds (``_pick``); differences smaller than
    ``noise`` (the seed spread, at least MARGIN) are not called differences."""
    names = ("full fine-tuning", "LoRA r=1", "LoRA r=8", "LoRA r=64", "LoRA r=256", "QLoRA r=8",
             "QLoRA r=8 bitsandbytes", "LoftQ r=8", "PiSSA r=8", "DoRA r=8", "base (no training)", "attention r=16",
             "MLP r=10", "all-linear r=6", "rsLoRA r=1", "rsLoRA r=8", "rsLoRA r=64")
    arm = {name: _pick(rows, task, name) for name in names}
    eps = noise(rows, task)
    out = []

    def need(*names):
        return all(arm[n] is not None for n in names)

    def ratio(a, b):
        return arm[a]["score"] / arm[b]["score"] if arm[b]["score"] else float("nan")

    def claim(text, names, measure):
        """One row: ``measure()`` -> (measured, verdict) when every arm in ``names`` was run."""
        out.append((text, *measure()) if need(*names) else (text, "", "not measured in this run"))

    def lora_vs_full():
        x = ratio("LoRA r=8", "full fine-tuning")
        bl, bf = _best_lr(rows, task, "LoRA r=8")[0], _best_lr(rows, task, "full fine-tuning")[0]
        if bl and bf:  # both swept: compare each at its best learning rate too
            y = bl["score"] / bf["score"]
            return f"r=8 / full = {x:.2f} at the main LRs, {y:.2f} at each one's best LR", \
                "holds" if y >= 0.95 else "does not hold"
        return f"r=8 / full = {x:.2f}", "holds" if x >= 0.95 else "does not hold"
    claim("LoRA reaches 95-98% of full fine-tuning", ["LoRA r=8", "full fine-tuning"], lora_vs_full)

    def qlora_vs_lora():
        x = ratio("QLoRA r=8", "LoRA r=8")
        return f"QLoRA / LoRA = {x:.2f}", "holds (at >= 90%)" if x >= 0.90 else "does not hold"
    claim("QLoRA keeps 90-95% (or 97-99%) of LoRA's quality", ["QLoRA r=8", "LoRA r=8"], qlora_vs_lora)

    def roundtrip_vs_bnb():
        d = arm["QLoRA r=8 bitsandbytes"]["score"] - arm["QLoRA r=8"]["score"]
        return f"bitsandbytes - round trip = {d:+.3f}", "holds" if abs(d) <= eps else "does not hold"
    claim("the NF4 round trip trains like bitsandbytes' Linear4bit (method check)",
          ["QLoRA r=8", "QLoRA r=8 bitsandbytes"], roundtrip_vs_bnb)

    def r64_vs_r8():
        d = arm["LoRA r=64"]["score"] - arm["LoRA r=8"]["score"]
        return f"r=64 - r=8 = {d:+.3f}", "holds" if d <= eps else "does not hold"
    claim("r=64 often does not beat r=8", ["LoRA r=64", "LoRA r=8"], r64_vs_r8)

    def rank_capacity():
        low = arm["LoRA r=8"]["score"] - arm["LoRA r=1"]["score"]
        high = ratio("LoRA r=64", "full fine-tuning")
        v = ("holds" if low > eps and high >= 0.95 else
             "does not hold: low rank does not fall off" if low <= eps else "does not hold: r=64 < 95% of full")
        return f"r=8 - r=1 = {low:+.3f}; r=64 / full = {high:.2f}", v
    claim("high rank matches full FT, low ranks fall off", ["LoRA r=1", "LoRA r=8", "LoRA r=64", "full fine-tuning"],
          rank_capacity)

    def placement():
        d = arm["MLP r=10"]["score"] - arm["attention r=16"]["score"]
        return f"MLP - attention = {d:+.3f}", "holds" if d > eps else "does not hold"
    claim("attention-only underperforms MLP-only at equal parameters", ["attention r=16", "MLP r=10"], placement)

    def lr_ratio():
        (bl, il), (bf, iff) = _best_lr(rows, task, "LoRA r=8"), _best_lr(rows, task, "full fine-tuning")
        x = bl["lr"] / bf["lr"]
        v = ("holds" if 3 <= x <= 30 else "does not hold") if il and iff else \
            "not determined: a best LR is at the edge of the grid"
        return f"best LoRA {bl['lr']:g} / full {bf['lr']:g} = {x:g}x", v
    if _best_lr(rows, task, "LoRA r=8")[0] and _best_lr(rows, task, "full fine-tuning")[0]:
        claim("LoRA's best LR is ~10x full fine-tuning's", [], lr_ratio)
    else:
        out.append(("LoRA's best LR is ~10x full fine-tuning's", "", "not measured in this run"))

    def alpha_moves_lr():
        (b2, i2), (b1, i1) = _best_lr(rows, task, "LoRA r=8"), _best_lr(rows, task, "LoRA r=8 alpha=8")
        moved = "up" if b1["lr"] > b2["lr"] else "down" if b1["lr"] < b2["lr"] else "nowhere"
        measured = f"best LR: alpha=2r {b2['lr']:g}, alpha=r {b1['lr']:g}"
        if not (i1 and i2):
            return measured, "not determined: a best LR is at the edge of its grid"
        return measured, "holds" if moved == "up" else f"does not hold (moved {moved})"
    if _best_lr(rows, task, "LoRA r=8")[0] and _best_lr(rows, task, "LoRA r=8 alpha=8")[0]:
        claim("alpha acts as a learning-rate multiplier (halving alpha raises the best LR)", [], alpha_moves_lr)
    else:
        out.append(("alpha acts as a learning-rate multiplier (halving alpha raises the best LR)", "",
                    "not measured in this run"))

    def rslora():
        s = [arm[f"rsLoRA r={r}"]["score"] for r in (1, 8, 64)]
        return (f"rsLoRA r=1/8/64: {s[0]:.3f} / {s[1]:.3f} / {s[2]:.3f}",
                "holds" if s[2] - s[0] > eps else "does not hold")
    claim("with rsLoRA's alpha/sqrt(r), higher rank trains better", ["rsLoRA r=1", "rsLoRA r=8", "rsLoRA r=64"],
          rslora)

    def rank_lr():
        best = {n: _best_lr(rows, task, n) for n in ("LoRA r=1", "LoRA r=64", "rsLoRA r=1", "rsLoRA r=64")}

        def show(n):  # the best rate, or a bound when it is the smallest or largest rate tried
            row, interior = best[n]
            lrs = [r["lr"] for r in rows if r.get("task") == task and r.get("name") == n]
            return ("" if interior else "<=" if row["lr"] == min(lrs) else ">=") + f"{row['lr']:g}"
        same = {k: best[f"{k} r=1"][0]["lr"] == best[f"{k} r=64"][0]["lr"] and best[f"{k} r=1"][1]
                and best[f"{k} r=64"][1] for k in ("LoRA", "rsLoRA")}
        measured = (f"best LR r=1 / r=64: alpha=2r {show('LoRA r=1')} / {show('LoRA r=64')}; "
                    f"rsLoRA {show('rsLoRA r=1')} / {show('rsLoRA r=64')}")
        return measured, ("holds" if same["rsLoRA"] else "does not hold" + (" (alpha = 2r does, here)"
                                                                              if same["LoRA"] else ""))
    if all(_best_lr(rows, task, n)[0] for n in ("LoRA r=1", "LoRA r=64", "rsLoRA r=1", "rsLoRA r=64")):
        claim("rsLoRA's alpha/sqrt(r) keeps the best LR the same across ranks", [], rank_lr)
    else:
        out.append(("rsLoRA's alpha/sqrt(r) keeps the best LR the same across ranks", "", "not measured in this run"))

    def batch():
        big = {n: [r for r in rows if r.get("task") == task and r.get("name") == n and r.get("batch_size", 8) > 8
                   and math.isclose(r.get("lr") or 0, MAIN_LR.get(n, 1e-3))] for n in ("LoRA r=8", "full fine-tuning")}
        drop = {n: arm[n]["score"] - sum(r["score"] for r in v) / len(v) for n, v in big.items()}
        bs = int(big["LoRA r=8"][0]["batch_size"])
        v = "holds" if drop["LoRA r=8"] - drop["full fine-tuning"] > eps else "does not hold"
        return (f"score lost going to batch {bs} (same examples): LoRA {drop['LoRA r=8']:+.3f}, "
                f"full {drop['full fine-tuning']:+.3f}", v)
    if all(any(r.get("task") == task and r.get("name") == n and r.get("batch_size", 8) > 8 for r in rows)
           for n in ("LoRA r=8", "full fine-tuning")):
        claim("LoRA is more sensitive to large batches than full fine-tuning", ["LoRA r=8", "full fine-tuning"], batch)
    else:
        out.append(("LoRA is more sensitive to large batches than full fine-tuning", "", "not measured in this run"))

    def forgetting():
        base = arm["base (no training)"]["general_loss"]
        # the same step up for both: ten times each one's main learning rate (the sweep's nearest larger rate)
        worst = {n: max([r["general_loss"] for r in rows if r.get("task") == task and r.get("name") == n
                         and math.isclose(r["lr"] or 0, 10 * MAIN_LR.get(n, 1e-3))] or [float("nan")])
                 for n in ("LoRA r=8", "full fine-tuning")}
        lo, fu = arm["LoRA r=8"]["general_loss"], arm["full fine-tuning"]["general_loss"]
        measured = f"general loss: base {base:.2f}; main LR LoRA {lo:.2f}, full {fu:.2f}"
        if all(math.isfinite(x) for x in worst.values()):
            measured += f"; 10x main LR LoRA {worst['LoRA r=8']:.2f}, full {worst['full fine-tuning']:.2f}"
        if lo <= base and fu <= base:
            v = "no forgetting visible at the main LRs"
            if all(math.isfinite(x) for x in worst.values()) and max(worst.values()) > base:
                v += ("; at 10x those LRs " + ("both forget" if min(worst.values()) > base else "only one forgets")
                      + (", full FT more" if worst["full fine-tuning"] > worst["LoRA r=8"] else ", LoRA more"))
        else:
            v = "holds" if lo < fu else "does not hold"
        return measured, v
    claim("LoRA preserves the base model's knowledge (forgets less than full FT)",
          ["base (no training)", "LoRA r=8", "full fine-tuning"], forgetting)

    def loftq():
        gap = arm["LoRA r=8"]["score"] - arm["QLoRA r=8"]["score"]
        closed = arm["LoftQ r=8"]["score"] - arm["QLoRA r=8"]["score"]
        v = ("no gap to close (QLoRA is not below LoRA by more than the noise)" if gap <= eps else
             "holds" if closed >= gap / 2 else f"partly: {closed / gap:.0%} of the gap" if closed > eps else
             "does not hold")
        return f"gap {gap:+.3f}, LoftQ recovers {closed:+.3f}", v
    claim("LoftQ closes the QLoRA-vs-LoRA gap", ["QLoRA r=8", "LoftQ r=8", "LoRA r=8"], loftq)

    def pissa():
        d = arm["PiSSA r=8"]["score"] - arm["LoRA r=8"]["score"]
        return f"PiSSA - LoRA = {d:+.3f}", "holds" if d > eps else "does not hold"
    claim("PiSSA beats zero-init LoRA at equal rank and steps", ["PiSSA r=8", "LoRA r=8"], pissa)

    def dora():
        d = arm["DoRA r=8"]["score"] - arm["LoRA r=8"]["score"]
        extra = arm["DoRA r=8"]["trainable"] / arm["LoRA r=8"]["trainable"] - 1
        return f"DoRA - LoRA = {d:+.3f}, {extra:+.1%} parameters", "holds" if d > eps else "does not hold"
    claim("DoRA beats LoRA at the same rank", ["DoRA r=8", "LoRA r=8"], dora)
    return out
