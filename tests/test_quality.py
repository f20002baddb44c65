"""Notebook 09's arms and verdicts: bad arm names refused, verdicts follow the numbers, CSV round trip."""

import pytest

from course_lib import quality


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="adapter"), r"unknown method 'adapter'; choose 'lora' or 'full'"),
    (dict(placement="ffn"), r"unknown placement 'ffn'; choose one of"),
    (dict(init="dora"), r"unknown init 'dora'; choose one of \('zero', 'pissa', 'loftq'\)"),
    (dict(init="loftq"), "LoftQ initialises adapters for a quantized base: set nf4_base=True"),
    (dict(nf4_base=True, nf4_impl="gptq"), r"unknown nf4_impl 'gptq'; choose one of \('roundtrip', 'bitsandbytes'\)"),
    (dict(nf4_impl="bitsandbytes"), "needs nf4_base=True and init='zero'"),
    (dict(nf4_base=True, nf4_impl="bitsandbytes", init="loftq"), "needs nf4_base=True and init='zero'"),
    (dict(method="full", dora=True), "full fine-tuning trains every weight; nf4_base, rslora, dora and init apply"),
])
def test_bad_arms_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        quality.Arm("x", **kwargs)


def _rows(**scores):
    names = {"full": "full fine-tuning", "r1": "LoRA r=1", "r8": "LoRA r=8", "r64": "LoRA r=64", "q": "QLoRA r=8",
             "lq": "LoftQ r=8", "p": "PiSSA r=8"}
    return [{"task": "t", "name": names[k], "score": v, "eval_loss": 1.0, "lr": 1e-4 if k == "full" else 1e-3}
            for k, v in scores.items()]


def test_verdicts_follow_the_numbers():
    v = {claim: (measured, verdict) for claim, measured, verdict in
         quality.verdicts(_rows(full=0.80, r1=0.50, r8=0.78, r64=0.79, q=0.60, lq=0.75, p=0.70), "t")}
    assert v["LoRA reaches 95-98% of full fine-tuning"] == ("r=8 / full = 0.97", "holds")
    assert v["QLoRA keeps 90-95% (or 97-99%) of LoRA's quality"][1] == "does not hold"
    assert v["r=64 often does not beat r=8"][1] == "holds"
    assert v["high rank matches full FT, low ranks fall off"][1] == "holds"
    assert v["LoftQ closes the QLoRA-vs-LoRA gap"][1] == "holds"
    assert v["PiSSA beats zero-init LoRA at equal rank and steps"][1] == "does not hold"
    assert v["attention-only underperforms MLP-only at equal parameters"][1] == "not measured in this run"
    v = dict((c, verdict) for c, _, verdict in quality.verdicts(_rows(full=0.9, r8=0.5), "t"))
    assert v["LoRA reaches 95-98% of full fine-tuning"] == "does not hold"
    v = dict((c, verdict) for c, _, verdict in quality.verdicts(_rows(r8=0.70, q=0.75, lq=0.72), "t"))
    assert v["LoftQ closes the QLoRA-vs-LoRA gap"].startswith("no gap to close")
    assert v["r=64 often does not beat r=8"] == "not measured in this run"


def test_lr_sweep_verdict_needs_an_interior_best():
    rows = [{"task": "t", "name": "LoRA r=8", "lr": lr, "eval_loss": loss, "score": 0.5}
            for lr, loss in ((1e-4, 2.0), (1e-3, 1.0), (1e-2, 1.5))]
    rows += [{"task": "t", "name": "full fine-tuning", "lr": lr, "eval_loss": loss, "score": 0.5}
             for lr, loss in ((1e-5, 2.0), (1e-4, 1.0), (1e-3, 1.5))]
    v = {c: (m, verdict) for c, m, verdict in quality.verdicts(rows, "t")}
    assert v["LoRA's best LR is ~10x full fine-tuning's"] == ("best LoRA 0.001 / full 0.0001 = 10x", "holds")
    assert v["LoRA reaches 95-98% of full fine-tuning"] == ("r=8 / full = 1.00 at the main LRs, 1.00 at each one's "
                                                           "best LR", "holds")
    rows[2]["eval_loss"] = 0.5  # LoRA's best now at the largest learning rate tried
    v = {c: verdict for c, _, verdict in quality.verdicts(rows, "t")}
    assert v["LoRA's best LR is ~10x full fine-tuning's"].startswith("not determined")


def test_csv_round_trip(tmp_path):
    path = tmp_path / "q.csv"
    quality.append_csv(path, {"task": "t", "name": "a", "score": 0.123456, "steps": 8})
    quality.append_csv(path, {"task": "t", "name": "b", "score": 0.5, "steps": 8})
    rows = quality.read_csv(path)
    assert [r["name"] for r in rows] == ["a", "b"] and rows[0]["score"] == 0.1235 and rows[1]["steps"] == 8.0


def test_forgetting_verdict_reads_the_general_loss_against_the_base():
    rows = [{"task": "t", "name": "base (no training)", "general_loss": 3.0, "score": 0.0, "eval_loss": 1.0, "lr": ""},
            {"task": "t", "name": "LoRA r=8", "general_loss": 2.5, "score": 0.5, "eval_loss": 1.0, "lr": 1e-3},
            {"task": "t", "name": "full fine-tuning", "general_loss": 2.4, "score": 0.5, "eval_loss": 1.0, "lr": 1e-4},
            {"task": "t", "name": "full fine-tuning", "general_loss": 8.0, "score": 0.5, "eval_loss": 1.0, "lr": 1e-3},
            {"task": "t", "name": "LoRA r=8", "general_loss": 2.9, "score": 0.5, "eval_loss": 1.0, "lr": 1e-2}]
    v = {c: verdict for c, _, verdict in quality.verdicts(rows, "t")}
    claim = "LoRA preserves the base model's knowledge (forgets less than full FT)"
    assert v[claim] == "no forgetting visible at the main LRs; at 10x those LRs only one forgets, full FT more"
    rows[1]["general_loss"] = 3.5
    assert {c: verdict for c, _, verdict in quality.verdicts(rows, "t")}[claim] == "does not hold"


def test_arms_are_averaged_over_seeds_and_the_seed_spread_sets_the_noise():
    rows = [{"task": "t", "name": "LoRA r=8", "lr": 1e-3, "batch_size": 8, "seed": seed, "score": score,
             "eval_loss": 1.0} for seed, score in ((0, 0.90), (1, 0.80), (2, 0.85))]
    rows += [{"task": "t", "name": "LoRA r=8", "lr": 1e-3, "batch_size": 32, "seed": 0, "score": 0.10, "eval_loss": 1.0},
             {"task": "t", "name": "LoRA r=8", "lr": 1e-2, "batch_size": 8, "seed": 0, "score": 0.20, "eval_loss": 1.0}]
    picked = quality._pick(rows, "t", "LoRA r=8")
    assert picked["seeds"] == 3 and abs(picked["score"] - 0.85) < 1e-12 and abs(picked["spread"] - 0.10) < 1e-12
    assert abs(quality.noise(rows, "t") - 0.10) < 1e-12  # larger than MARGIN: the seeds decide
    rows.append({"task": "t", "name": "DoRA r=8", "lr": 1e-3, "score": 0.92, "eval_loss": 1.0, "trainable": 110})
    rows.append({"task": "t", "name": "full fine-tuning", "lr": 1e-4, "batch_size": 32, "score": 0.5, "eval_loss": 1.0})
    rows.append({"task": "t", "name": "full fine-tuning", "lr": 1e-4, "batch_size": 8, "score": 0.5, "eval_loss": 1.0})
    for r in rows:
        r.setdefault("trainable", 100)
    v = {c: (m, verdict) for c, m, verdict in quality.verdicts(rows, "t")}
    assert v["DoRA beats LoRA at the same rank"] == ("DoRA - LoRA = +0.070, +10.0% parameters", "does not hold")
    batch = v["LoRA is more sensitive to large batches than full fine-tuning"]
    assert batch == ("score lost going to batch 32 (same examples): LoRA +0.750, full +0.000", "holds")


def test_loftq_partly_closes_a_gap_and_rslora_needs_rank_to_help():
    rows = _rows(r8=0.90, q=0.70, lq=0.78)
    rows += [{"task": "t", "name": f"rsLoRA r={r}", "lr": 1e-3, "score": s, "eval_loss": 1.0}
             for r, s in ((1, 0.80), (8, 0.80), (64, 0.81))]
    v = {c: (m, verdict) for c, m, verdict in quality.verdicts(rows, "t")}
    assert v["LoftQ closes the QLoRA-vs-LoRA gap"] == ("gap +0.200, LoftQ recovers +0.080", "partly: 40% of the gap")
    assert v["with rsLoRA's alpha/sqrt(r), higher rank trains better"][1] == "does not hold"
    rows[-1]["score"] = 0.90
    v = {c: verdict for c, _, verdict in quality.verdicts(rows, "t")}
    assert v["with rsLoRA's alpha/sqrt(r), higher rank trains better"] == "holds"


def test_rank_lr_verdict_compares_best_rates_across_ranks():
    losses = {"LoRA r=1": (2.0, 1.0, 1.5), "LoRA r=64": (2.0, 1.0, 1.5), "rsLoRA r=1": (1.0, 1.2, 1.5),
              "rsLoRA r=64": (2.0, 1.0, 1.5)}
    rows = [{"task": "t", "name": n, "lr": lr, "eval_loss": loss, "score": 0.5, "seed": 0}
            for n, ls in losses.items() for lr, loss in zip((3e-4, 1e-3, 3e-3), ls, strict=True)]
    claim = "rsLoRA's alpha/sqrt(r) keeps the best LR the same across ranks"
    v = {c: (m, verdict) for c, m, verdict in quality.verdicts(rows, "t")}
    assert v[claim] == ("best LR r=1 / r=64: alpha=2r 0.001 / 0.001; rsLoRA <=0.0003 / 0.001",
                        "does not hold (alpha = 2r does, here)")
    rows[6]["eval_loss"], rows[7]["eval_loss"] = 2.0, 1.0  # rsLoRA r=1 now best at 1e-3 too
    assert {c: verdict for c, _, verdict in quality.verdicts(rows, "t")}[claim] == "holds"
