"""The non-saturating tasks of notebook 09: reproducible files, eval really held out, bad rows refused."""

import json

import pytest

from course_lib import data
from course_lib import heldout_tasks as ht


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    ht.write_files(tmp_path)
    names = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    assert len(names) == 5 and set(names) <= {p.name for p in ht.RESOURCE_DIR.glob("*.jsonl")}
    for name in names:
        assert (tmp_path / name).read_text() == (ht.RESOURCE_DIR / name).read_text(), name


def test_orders_heldout_shares_no_entity_or_template_with_training():
    ds = data.load_task("orders_heldout")
    assert len(ds["eval"]) >= 64 and len(ds["train"]) == 256
    records = {split: [json.loads(r) for r in ds[split]["response"]] for split in ("train", "eval")}
    for field in ("name", "item", "city"):
        train_values = {r[field] for r in records["train"]}
        eval_values = {r[field] for r in records["eval"]}
        assert not train_values & eval_values, field
    # no eval message starts like a training template does (their fixed words differ)
    train_prefixes = {t.split("{")[0] for t in data._TEMPLATES if t.split("{")[0]}
    assert not any(row.split("Message: ")[1].startswith(p) for row in ds["eval"]["instruction"]
                   for p in train_prefixes)
    assert not set(ht._EVAL_TEMPLATES) & set(data._TEMPLATES)
    assert data.SCORERS["orders_heldout"] is data.score_record


def test_facts_eval_asks_every_fact_in_a_phrasing_training_never_uses():
    ds = data.load_task("facts")
    assert len(ds["eval"]) >= 64 and len(ds["train"]) == 2 * len(ds["eval"])
    assert set(ds["eval"]["response"]) == set(ds["train"]["response"])  # the facts themselves are trained
    assert not set(ds["eval"]["instruction"]) & set(ds["train"]["instruction"])
    assert all("capital of the country" in q for q in ds["eval"]["instruction"])
    assert not any("capital of the country" in q for q in ds["train"]["instruction"])
    assert data.SCORERS["facts"]("Kamir", "Kamir") == 1.0 and data.SCORERS["facts"]("Kamir.", "Kamir") == 0.0


def test_general_questions_load():
    general = ht.load_general()
    assert len(general) == len(ht.GENERAL_QA) >= 32


def test_old_tasks_still_load_and_unknown_task_lists_all():
    assert len(data.load_task("orders")["eval"]) == 64
    with pytest.raises(ValueError, match=r"unknown task 'order'.*'orders_heldout', 'facts'"):
        data.load_task("order")


def test_a_row_with_a_missing_field_is_refused_with_its_line(tmp_path):
    ht.write_files(tmp_path)
    path = tmp_path / "facts_train.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({"instruction": "What is the capital of Kaloten?"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"facts_train.jsonl, row 3: missing field 'response'"):
        data.load_jsonl(path)
