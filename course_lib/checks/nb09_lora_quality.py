"""Checkers for notebook 09 (what LoRA buys and what it costs, measured): counting an adapter from a config,
choosing an arm within a parameter budget from the committed table (``quality.read_csv()``), and QLoRA's share of
LoRA's score. Counts are checked against ``counting.lora_param_count`` (PEFT's matching rules, on meta models) and
against the trainable counts PEFT reported for the measured runs; the table functions against a reference here.
Arithmetic only: fast on any CPU."""

from __future__ import annotations

import math

from .core import _call, checker, fail, passed


def arm_means(rows: list[dict], task: str) -> dict[str, tuple[float, int, int]]:
    """name -> (mean score over seeds, trainable parameters, number of seeds) of each adapter arm of ``task`` at
    its main learning rate and batch size (``quality._pick``: the sweep and batch-32 rows are something else)."""
    from course_lib import quality

    names = dict.fromkeys(r["name"] for r in rows if r.get("task") == task and r.get("method") == "lora")
    picked = {name: quality._pick(rows, task, name) for name in names}
    return {name: (p["score"], int(p["trainable"]), p["seeds"]) for name, p in picked.items() if p is not None}


def best_within(rows: list[dict], task: str, budget: float) -> tuple[str, float] | None:
    """(name, mean score) of the best adapter arm whose trainable count fits ``budget``, or None."""
    fits = [(mean, name) for name, (mean, n, _) in arm_means(rows, task).items() if n <= budget]
    if not fits:
        return None
    mean, name = max(fits)
    return name, mean


def ratio(rows: list[dict], task: str, name: str = "QLoRA r=8", reference: str = "LoRA r=8") -> float:
    """Mean score of arm ``name`` over seeds / mean score of ``reference``, both at the main lr and batch."""
    means = arm_means(rows, task)
    return means[name][0] / means[reference][0]


# ------------------------------------------------------------------------------------------------ exercise 1
@checker
def check_trainable_lora_params(fn) -> None:
    """``fn(config, r, placement)`` -> trainable LoRA parameters of a Llama-style model, ``placement`` a key of
    ``quality.PLACEMENTS``: checked against PEFT's rules on three shapes and PEFT's counts of the measured runs."""
    from course_lib import counting, models, quality

    for shape in ("smollm2-135m", "llama-3.2-1b", "llama-2-7b"):
        config = models.synthetic_config(shape)
        meta = counting.meta_model(config)
        for placement in quality.PLACEMENTS:
            for r in (1, 8, 16):
                got = _call(fn, config, r, placement, name="trainable_lora_params")
                want = counting.lora_param_count(meta, quality.PLACEMENTS[placement], r)
                if not isinstance(got, (int, float)) or got != want:
                    shown = f"{got:,}" if isinstance(got, (int, float)) else repr(got)
                    fail(f"{shape}, r={r}, placement {placement!r}: you say {shown}; PEFT would train {want:,}",
                         "each adapted linear layer d_in -> d_out adds A (r x d_in) and B (d_out x r), once per "
                         "decoder layer: sum over the targeted layers, times num_hidden_layers.",
                         "k_proj and v_proj are smaller than q_proj when the model has fewer key/value heads than "
                         "query heads: memory.linear_shapes(config) gives each layer's (d_in, d_out).",
                         "quality.PLACEMENTS[placement] names the layers; 'all-linear' means all seven linear layers "
                         "of a decoder layer (not the output head).")
    config = models.synthetic_config("smollm2-135m")
    measured = {(int(r["r"]), r["placement"]): int(r["trainable"]) for r in quality.read_csv()
                if r.get("method") == "lora" and r.get("dora") == "False"}
    for (r, placement), want in sorted(measured.items()):
        got = _call(fn, config, r, placement, name="trainable_lora_params")
        if got != want:
            fail(f"SmolLM2-135M, r={r}, placement {placement!r}: you say {got!r}; PEFT counted {want:,} trainable "
                 "parameters in the measured run (quality.csv)",
                 "these runs used SmolLM2-135M: your function on models.synthetic_config('smollm2-135m') with the "
                 "same r and placement must give PEFT's count.",
                 "the DoRA arm is left out of this comparison (it trains a magnitude per output row too); every "
                 "other adapter arm trains exactly its A and B matrices.")
    passed(f"trainable_lora_params agrees with PEFT on 3 shapes x {len(quality.PLACEMENTS)} placements x 3 ranks, "
           f"and with the {len(measured)} trainable counts PEFT reported for the measured SmolLM2 runs.")


@checker
def check_best_arm_within_budget(fn) -> None:
    """``fn(rows, task, budget)`` -> the name of the adapter arm with the highest mean score over seeds (main lr
    1e-3, batch 8) among those whose trainable count fits ``budget``, or None when none fits."""
    from course_lib import quality

    full = quality.read_csv()
    # the same table without the one-seed placement runs, so that the three-seed LoRA r=8 arm can win
    no_placement = [r for r in full if r.get("placement") not in ("attention", "mlp") and r.get("name") != "all-linear r=6"]
    cases = [("orders_heldout", 200_000, full), ("orders_heldout", 400_000, full), ("orders_heldout", 1_850_000, full),
             ("orders_heldout", 2_500_000, full), ("orders_heldout", 2_500_000, no_placement),
             ("facts", 3_000_000, full), ("facts", 100_000_000, full)]
    for task, budget, rows in cases:
        label = f"{task}, budget {budget:,}" + ("" if rows is full else " (table without the placement runs)")
        got = _call(fn, [dict(r) for r in rows], task, budget, name="best_arm_within_budget")
        want = best_within(rows, task, budget)
        means = arm_means(rows, task)
        if want is None:
            if got is not None:
                why = ("it is not an adapter arm" if got not in means else
                       f"it trains {means[got][1]:,} parameters")
                fail(f"{label}: you say {got!r}, but {why}; no adapter arm fits this budget",
                     "return None when no adapter arm's trainable count is within the budget.",
                     "only adapter arms count (method 'lora'): the base model trains nothing, but it is no arm.")
            continue
        if got is not None and got in means and means[got][1] <= budget and math.isclose(means[got][0], want[1]):
            continue  # a tie for the best mean is fine
        seen = (f"{got!r} (mean {means[got][0]:.3f} over {means[got][2]} seed(s), {means[got][1]:,} trainable)"
                if got in means else f"{got!r}")
        fail(f"{label}: you say {seen}; the best arm within the budget has a mean score of "
             f"{want[1]:.3f}",
             "keep the rows of this task whose method is 'lora' and whose trainable count is within the budget; "
             "average the score over seeds per arm name.",
             "some arm names have rows at other learning rates and batch sizes (the sweeps): keep lr 1e-3 and "
             "batch size 8 only, so that each arm is its main run.",
             "then pick the name with the highest mean score; None when nothing is left.")
    o, f = best_within(full, "orders_heldout", 2_500_000), best_within(full, "facts", 100_000_000)
    passed(f"best_arm_within_budget agrees with the reference on {len(cases)} budgets (orders_heldout within "
           f"2,500,000: {o[0]!r}; facts within 100,000,000: {f[0]!r}).")


# ------------------------------------------------------------------------------------------------ exercise 2
@checker
def check_qlora_ratio(fn) -> None:
    """``fn(rows, task)`` -> mean QLoRA r=8 (NF4 round trip) score over seeds / mean LoRA r=8 score over seeds,
    both at the main lr 1e-3 and batch size 8."""
    from course_lib import quality

    rows = quality.read_csv()
    two_seeds = [r for r in rows if r.get("seed") in (0.0, 1.0, "")]
    for label, table in (("the whole table", rows), ("the table without seed 2", two_seeds)):
        for task in ("orders_heldout", "facts"):
            got = _call(fn, [dict(r) for r in table], task, name="qlora_ratio")
            want = ratio(table, task)
            if not isinstance(got, (int, float)) or not math.isclose(got, want, abs_tol=1e-3):
                named = sum(r.get("task") == task and r.get("name") == "LoRA r=8" for r in table)
                main = arm_means(table, task)["LoRA r=8"][2]
                fail(f"{task}, {label}: you say {got!r}, not the ratio of the two arms' mean scores over their "
                     f"seeds ({named} rows of this task are named 'LoRA r=8', {main} of them its main run)",
                     "the ratio is mean(QLoRA r=8 scores) / mean(LoRA r=8 scores) over the seeds of the task "
                     "you are given.",
                     "'LoRA r=8' also names the learning-rate sweep and the batch-32 run: keep lr 1e-3 and batch "
                     "size 8 for both arms.",
                     "the arm named exactly 'QLoRA r=8' is the NF4 round trip; 'QLoRA r=8 bitsandbytes' is "
                     "another arm.")
    passed(f"qlora_ratio: QLoRA keeps {ratio(rows, 'orders_heldout'):.2f} of LoRA's score on orders_heldout and "
           f"{ratio(rows, 'facts'):.2f} on facts (means over the measured seeds).")


@checker
def check_prediction(fn) -> None:
    """``fn()`` -> True or False: a prediction, written down before the run. Only its form is checked."""
    got = _call(fn, name="qlora_keeps_up")
    if not isinstance(got, bool):
        fail(f"qlora_keeps_up returned {got!r}, not True or False",
             "a prediction is a yes or no: return True (QLoRA keeps up) or False (it falls behind).",
             "decide from the ratios you just computed and what differs in the new setting, then return that "
             "bool; the run below tells you whether it held.")
    passed(f"prediction recorded: QLoRA r=8 {'keeps up with' if got else 'falls behind'} LoRA r=8 in the run below.")
