import json

import pytest
import torch

from course_lib import data, resources


def test_shipped_task_loads_with_held_out_eval_split():
    for task in data.TASKS:
        ds = data.load_task(task)
        assert (len(ds["train"]), len(ds["eval"])) == (320, 64)
        assert ds["train"].column_names == ["instruction", "response"]
    orders = data.load_task("orders")
    assert not set(orders["train"]["instruction"]) & set(orders["eval"]["instruction"])
    record = json.loads(orders["train"][0]["response"])
    assert list(record) == list(data.ORDER_FIELDS) and isinstance(record["qty"], int)


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    data.write_task_files(tmp_path)
    for path in tmp_path.glob("*.jsonl"):
        assert path.read_text() == resources.read_text("tasks", path.name), path.name


def test_label_mask_covers_exactly_the_reply(chat_tokenizer):
    row = {"instruction": "Say hi", "response": "hi!"}
    ex = data.tokenize_row(row, chat_tokenizer, system=None)
    assert len(ex["input_ids"]) == len(ex["labels"])
    labelled = [t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != data.IGNORE_INDEX]
    assert chat_tokenizer.decode(labelled) == "hi!<|im_end|>\n"
    shown = data.show_label_mask(ex, chat_tokenizer)
    assert shown.startswith("<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n⟦h⟧⟦i⟧⟦!⟧")
    with pytest.raises(ValueError, match="more than max_length=5"):
        data.tokenize_row(row, chat_tokenizer, max_length=5)


def test_messages_rows_and_system_prompt(chat_tokenizer):
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    ex = data.tokenize_row(row, chat_tokenizer, system="S")
    assert chat_tokenizer.decode(ex["input_ids"]).startswith("<|im_start|>system\nS<|im_end|>")
    assert chat_tokenizer.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab >= 0]) == "b<|im_end|>\n"


def test_collate_pads_inputs_masks_and_labels():
    feats = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    batch = data.collate(feats, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert data.padding_fraction(batch) == pytest.approx(2 / 6)
    # -100 labels really are skipped by the loss the model computes
    logits = torch.randn(1, 3, 10)
    full = torch.nn.functional.cross_entropy(logits[0, :2], torch.tensor([6, 7]))
    masked = torch.nn.functional.cross_entropy(logits[0, :2], torch.tensor([-100, 7]))
    assert not torch.isclose(full, masked) and torch.isclose(masked, torch.nn.functional.cross_entropy(logits[0, 1:2], torch.tensor([7])))


@pytest.mark.parametrize("line, match", [
    ('{"instruction": "x"}', r"rows.jsonl, row 2: missing field 'response'"),
    ('{"response": "y"}', r"row 2: missing field 'instruction'"),
    ('{"messages": [{"role": "user", "content": "x"}]}', r"row 2: the last message must be the assistant"),
    ('not json', r"row 2: not valid JSON"),
])
def test_bad_rows_name_the_row_and_field(tmp_path, line, match):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"instruction": "a", "response": "b"}\n' + line + "\n")
    with pytest.raises(ValueError, match=match):
        data.load_jsonl(path)


def test_scoring():
    ref = '{"name": "Maria", "item": "mug", "qty": 3, "city": "Lisbon"}'
    assert data.score_record(ref, ref) == 1.0
    assert data.score_record('Sure! {"name": "Maria", "item": "mugs", "qty": 3, "city": "Lisbon"} done', ref) == 0.75
    assert data.score_record("Maria wants mugs", ref) == 0.0
    assert data.score_record('{"name": "Maria"', ref) == 0.0
    assert data.score_exact(" TO: A ", "TO: A") == 1.0 and data.score_exact("TO: B", "TO: A") == 0.0
    with pytest.raises(ValueError, match="unknown task"):
        data.load_task("poems")


def test_label_mistakes_are_counted_by_field_and_kind():
    assert data.parse_label("TO: PAUL, KRAKOW | 9 x JACKET") == {"name": "PAUL", "city": "KRAKOW", "qty": "9",
                                                                 "item": "JACKET"}
    assert data.parse_label('{"name": "Paul"}') is None
    ref = "TO: PAUL, KRAKOW | 9 x JACKET"
    replies = ["TO: PULSEY, KRAKOW | 9 x HAT", "TO: KENJI, KRAKOW | 2 x BOTTLE", ref, "no label"]
    assert data.label_mistakes(replies, [ref] * 4) == {
        "name": {"not a task value": 1, "another task value": 1}, "qty": {"wrong number": 1},
        "item": {"not a task value": 1, "another task value": 1}, "not a label": {"not a label": 1}}
    assert data.label_mistakes([ref], [ref]) == {}


def test_step_times_are_taken_in_turns():
    import time

    from course_lib import latency

    calls = []
    times = latency.compare_step_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3 and set(times) == {"a", "b"}  # warm-up each, then in turns
    slow = iter([0.0, 0.2, 0.0, 0.0])  # warm-up, then one slow call (a busy CPU) among fast ones
    best = latency.compare_step_times({"a": lambda: time.sleep(next(slow))}, repeats=3)["a"]
    assert best < 0.1  # the best of the timed calls, not the one the load slowed
