"""Instruction data for fine-tuning: the course's own small dataset, chat formatting, label masking, batching.

The shipped task, ``orders``, turns a short customer message into a fixed JSON record::

    "Hi, Maria here. Please send 3 mugs to Lisbon."  ->  {"name": "Maria", "item": "mug", "qty": 3, "city": "Lisbon"}

Success is scored automatically (``score_record``: the fraction of the four fields a reply gets exactly right), so
"did fine-tuning work?" is a number, not an impression. A second task, ``labels``, maps the same kind of messages
to a one-line shipping label: two adapters trained on the two tasks show per-request adapter switching.

The files in ``course_lib/resources/tasks/`` were written by ``write_task_files()`` from the seeded generator below. Any JSONL
file whose rows hold ``instruction`` and ``response`` strings (or a chat ``messages`` list) works the same way
through ``load_jsonl``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TASKS = ("orders", "labels")
SYSTEM_PROMPT = "You are a precise assistant."  # short on purpose: the template's default costs ~20 tokens per row
IGNORE_INDEX = -100  # the label value PyTorch's cross-entropy skips

ORDER_FIELDS = ("name", "item", "qty", "city")
_NAMES = ["Maria", "Tom", "Aisha", "Kenji", "Lena", "Omar", "Sofia", "Ivan", "Chloe", "Ravi", "Nora", "Diego",
          "Emma", "Yusuf", "Hana", "Paul", "Zoe", "Marek", "Ines", "Leo", "Ada", "Bruno", "Mia", "Sam"]
_ITEMS = ["mug", "lamp", "chair", "notebook", "backpack", "kettle", "pillow", "candle", "helmet", "scarf",
          "blender", "towel", "clock", "umbrella", "jacket", "bottle", "printer", "mirror", "plant", "rug"]
_CITIES = ["Lisbon", "Oslo", "Nairobi", "Osaka", "Denver", "Lyon", "Porto", "Seoul", "Cairo", "Dublin", "Quito",
           "Perth", "Krakow", "Austin", "Hanoi", "Turin", "Leeds", "Bergen"]
_TEMPLATES = [
    "Hi, {name} here. Please send {qty} {item}s to {city}.",
    "I'd like {qty} {item}s delivered to {city}. Thanks, {name}",
    "Order for {name}: {qty} x {item}, ship to {city}.",
    "Can you ship {qty} {item}s to my place in {city}? - {name}",
    "{name} from {city} wants {qty} {item}s.",
    "Please deliver {qty} {item}s to {city}, name on the order is {name}.",
    "Hello! {name} in {city} needs {qty} {item}s asap.",
    "Send {city} {qty} {item}s for {name}, please.",
]
ORDERS_INSTRUCTION = "Extract the order as JSON with keys name, item, qty, city.\nMessage: {message}"
LABELS_INSTRUCTION = "Write the shipping label for this message.\nMessage: {message}"


# ------------------------------------------------------------------------------------------ the shipped dataset
def make_orders(n: int, seed: int = 0) -> list[dict]:
    """``n`` seeded order messages, each as ``{"message", "record"}``; the source of the shipped JSONL files."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        record = {"name": rng.choice(_NAMES), "item": rng.choice(_ITEMS), "qty": rng.randint(2, 12),
                  "city": rng.choice(_CITIES)}
        rows.append({"message": rng.choice(_TEMPLATES).format(**record), "record": record})
    return rows


def order_to_row(order: dict, task: str = "orders") -> dict:
    """One order as an instruction/response row of ``task`` (JSON record, or a shipping label)."""
    r = order["record"]
    if task == "orders":
        return {"instruction": ORDERS_INSTRUCTION.format(message=order["message"]),
                "response": json.dumps({k: r[k] for k in ORDER_FIELDS})}
    if task == "labels":
        return {"instruction": LABELS_INSTRUCTION.format(message=order["message"]),
                "response": f"TO: {r['name'].upper()}, {r['city'].upper()} | {r['qty']} x {r['item'].upper()}"}
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


def write_task_files(folder: Path | None = None, n_train: int = 320, n_eval: int = 64, seed: int = 0) -> None:
    """Regenerate ``{task}_{split}.jsonl`` (by default into the checkout's ``course_lib/resources/tasks/``).
    Train and eval come from different seeds, so eval is held out."""
    from course_lib import resources

    folder = Path(folder) if folder is not None else resources.source_folder("tasks")
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": make_orders(n_train, seed), "eval": make_orders(n_eval, seed + 1)}
    for task in TASKS:
        for split, orders in splits.items():
            lines = [json.dumps(order_to_row(o, task)) for o in orders]
            (folder / f"{task}_{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------- loading
def load_jsonl(path: str | Path):
    """A ``datasets.Dataset`` from a JSONL file of ``instruction``/``response`` rows or chat ``messages`` rows.

    Every row is checked first, so a bad row gets an error naming its line and the missing field instead of a
    KeyError deep inside training.
    """
    path = Path(path)
    return _rows_to_dataset(path.read_text(encoding="utf-8"), path.name)


def _rows_to_dataset(text: str, name: str):
    from datasets import Dataset

    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}, row {lineno}: not valid JSON ({exc.msg}).") from exc
        rows.append(_checked_row(row, f"{name}, row {lineno}"))
    if not rows:
        raise ValueError(f"{name} holds no rows; expected one JSON object per line.")
    return Dataset.from_list(rows)


def _checked_row(row, where: str) -> dict:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}.")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise ValueError(f"{where}: field 'messages' must be a list of {{'role', 'content'}} objects.")
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"{where}: the last message must be the assistant's reply (the part that is learned).")
        return {"messages": messages}
    for field in ("instruction", "response"):
        if not isinstance(row.get(field), str) or not row[field].strip():
            raise ValueError(f"{where}: missing field {field!r} (a non-empty string). Each row needs "
                             f"'instruction' and 'response', or a chat 'messages' list; this row has {sorted(row)}.")
    return {"instruction": row["instruction"], "response": row["response"]}


def load_task(name: str = "orders"):
    """The shipped task ``name`` as a ``DatasetDict`` with ``train`` and ``eval`` splits."""
    from datasets import DatasetDict

    from course_lib import resources
    from course_lib.heldout_tasks import TASKS as HELDOUT_TASKS

    if name not in TASKS + HELDOUT_TASKS:
        raise ValueError(f"unknown task {name!r}; the shipped tasks are {TASKS + HELDOUT_TASKS}. For your own data "
                         "use load_jsonl(path).")
    files = {split: f"{name}_{split}.jsonl" for split in ("train", "eval")}
    return DatasetDict({split: _rows_to_dataset(resources.read_text("tasks", f), f) for split, f in files.items()})


# ------------------------------------------------------------------------------------------- chat formatting
def to_messages(row: dict, system: str | None = SYSTEM_PROMPT) -> list[dict]:
    """A row as chat messages (system, user, assistant)."""
    if "messages" in row and row["messages"]:
        messages = list(row["messages"])
    else:
        messages = [{"role": "user", "content": row["instruction"]},
                    {"role": "assistant", "content": row["response"]}]
    if system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}] + messages
    return messages


def prompt_text(row: dict, tokenizer, system: str | None = SYSTEM_PROMPT) -> str:
    """What the model sees at generation time: everything up to the assistant's turn."""
    messages = to_messages(row, system)[:-1]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def tokenize_row(row: dict, tokenizer, max_length: int = 128, system: str | None = SYSTEM_PROMPT) -> dict:
    """``input_ids`` of the whole chat and ``labels`` equal to them on the reply, ``-100`` on the prompt.

    The loss is then computed on the reply only: the model is not trained to predict the user's message.
    """
    prompt = tokenizer(prompt_text(row, tokenizer, system), add_special_tokens=False)["input_ids"]
    full_text = tokenizer.apply_chat_template(to_messages(row, system), tokenize=False)
    full = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    if full[: len(prompt)] != prompt:
        raise ValueError("the chat template renders the prompt differently with and without the reply, so the "
                         "reply tokens cannot be located; use a tokenizer whose template extends the prompt.")
    if len(full) > max_length:
        raise ValueError(f"a row is {len(full)} tokens long, more than max_length={max_length}; raise max_length "
                         "or shorten the row (truncating would cut off the reply the loss is computed on).")
    labels = [IGNORE_INDEX] * len(prompt) + full[len(prompt):]
    return {"input_ids": full, "labels": labels}


def tokenize_dataset(dataset, tokenizer, max_length: int = 128, system: str | None = SYSTEM_PROMPT):
    """``tokenize_row`` over a dataset; the text columns are dropped (the Trainer only wants tensors)."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()  # a bar for a map that takes a fraction of a second is noise
    try:
        return dataset.map(lambda row: tokenize_row(row, tokenizer, max_length, system),
                           remove_columns=dataset.column_names, load_from_cache_file=False)
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


def show_label_mask(example: dict, tokenizer) -> str:
    """The tokens of one example, with the ones that carry a label (count in the loss) between ⟦ and ⟧."""
    parts = []
    for token, label in zip(example["input_ids"], example["labels"]):
        text = tokenizer.decode([token])
        parts.append(f"⟦{text}⟧" if label != IGNORE_INDEX else text)
    return "".join(parts)


# ------------------------------------------------------------------------------------------------- batching
def collate(features: list[dict], pad_token_id: int) -> dict:
    """Pad a list of tokenized examples to the longest one: a batch of tensors for a causal LM.

    Padding positions get ``pad_token_id`` in ``input_ids``, 0 in ``attention_mask`` (not attended to) and
    ``-100`` in ``labels`` (no loss); the prompt's ``-100`` labels are kept as they are.
    """
    import torch

    longest = max(len(f["input_ids"]) for f in features)
    batch = {"input_ids": [], "attention_mask": [], "labels": []}
    for f in features:
        pad = longest - len(f["input_ids"])
        batch["input_ids"].append(list(f["input_ids"]) + [pad_token_id] * pad)
        batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
        batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * pad)
    return {key: torch.tensor(value) for key, value in batch.items()}


class Collator:
    """``collate`` with the pad id bound, in the callable form the Trainer wants as ``data_collator``."""

    def __init__(self, pad_token_id: int, collate_fn=collate):
        self.pad_token_id, self.collate_fn = pad_token_id, collate_fn

    def __call__(self, features: list[dict]) -> dict:
        return self.collate_fn(features, self.pad_token_id)


def padding_fraction(batch: dict) -> float:
    """Share of a padded batch that is padding: compute spent on nothing (packing would remove it)."""
    mask = batch["attention_mask"]
    return 1.0 - mask.sum().item() / mask.numel()


# --------------------------------------------------------------------------------------------------- scoring
def parse_record(text: str) -> dict | None:
    """The first JSON object in ``text``, or None when there is none that parses."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def score_record(prediction: str, reference: str) -> float:
    """Fraction of the reference JSON's fields that the prediction gets exactly right (0 if it does not parse)."""
    ref, pred = json.loads(reference), parse_record(prediction)
    if pred is None:
        return 0.0
    return sum(pred.get(k) == v for k, v in ref.items()) / len(ref)


def score_exact(prediction: str, reference: str) -> float:
    """1.0 when the reply equals the reference (surrounding spaces ignored), else 0.0: for the ``labels`` task."""
    return float(prediction.strip() == reference.strip())


SCORERS = {"orders": score_record, "labels": score_exact, "orders_heldout": score_record, "facts": score_exact}
LABEL_FIELDS = ("name", "city", "qty", "item")


def parse_label(text: str) -> dict | None:
    """The fields of a shipping label ``TO: NAME, CITY | QTY x ITEM``, or None when the text is not one."""
    import re

    found = re.match(r"\s*TO:\s*(.+?),\s*(.+?)\s*\|\s*(\d+)\s*x\s*(.+?)\s*$", text)
    return dict(zip(LABEL_FIELDS, found.groups())) if found else None


def label_mistakes(replies: list[str], references: list[str]) -> dict[str, dict[str, int]]:
    """Per field of the ``labels`` task, how many replies got it wrong, and how: ``another task value`` (a name,
    city or item the task uses, but not this row's), ``not a task value`` (a word the task never uses: a misspelt
    name, or another word altogether), ``wrong number`` (qty). Replies that are not a label: ``not a label``."""
    values = {"name": {n.upper() for n in _NAMES}, "city": {c.upper() for c in _CITIES},
              "item": {i.upper() for i in _ITEMS}}
    counts = {field: {} for field in (*LABEL_FIELDS, "not a label")}
    for reply, reference in zip(replies, references, strict=True):
        got, want = parse_label(reply), parse_label(reference)
        if got is None:
            counts["not a label"]["not a label"] = counts["not a label"].get("not a label", 0) + 1
            continue
        for field in LABEL_FIELDS:
            if got[field] != want[field]:
                kind = ("wrong number" if field == "qty" else
                        "another task value" if got[field] in values[field] else "not a task value")
                counts[field][kind] = counts[field].get(kind, 0) + 1
    return {field: kinds for field, kinds in counts.items() if kinds}


def random_token_rows(vocab_size: int, seq_len: int, n: int, seed: int = 0) -> list[dict]:
    """``n`` rows of random token ids, labels = inputs: for speed and memory runs on synthetic models, where the
    values do not matter (same cost as real text of that length)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (n, seq_len), generator=g).tolist()
    return [{"input_ids": row, "labels": row} for row in ids]
