"""Tasks that do not saturate: eval rows share no template and no entity with training (notebook 09).

Notebook 06's ``orders`` task draws train and eval from the same names, cities, items and templates, so every
method reaches 1.00 and nothing can be compared. Two harder tasks, written by ``write_files()`` into
``course_lib/resources/tasks/`` (deterministic: the same seed gives the same bytes):

``orders_heldout``  the ``orders`` extraction, but the 64+ eval rows use *other* names, items, cities and message
                    templates than the training rows: it measures generalisation, not recall. Scored like
                    ``orders`` (``data.score_record``: fraction of the four JSON fields exactly right).
``facts``           capacity-bound: 96 invented countries and their invented capitals, facts no pretrained model
                    knows. Training asks each in two phrasings; eval asks every one in a third phrasing that is
                    not in training (the *facts* are necessarily in training: that is what is memorised). Many
                    arbitrary facts in few trainable parameters is where rank should matter. Scored by exact match.
``general_eval``    general-knowledge questions (not a training task): loss on their answers before and after
                    fine-tuning measures forgetting.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from course_lib import data

RESOURCE_DIR = Path(__file__).resolve().parent / "resources" / "tasks"
TASKS = ("orders_heldout", "facts")

# eval-only pools: none of these appear in data._NAMES / _ITEMS / _CITIES / _TEMPLATES (checked in the tests)
_EVAL_NAMES = ["Priya", "Felix", "Amara", "Hugo", "Leila", "Tariq", "Greta", "Mateo", "Yara", "Anton", "Keiko",
               "Dmitri", "Olga", "Rafael", "Selin", "Jonas"]
_EVAL_ITEMS = ["vase", "stool", "basket", "drill", "kite", "sofa", "glove", "hammer", "tent", "wallet", "ladder",
               "teapot", "radio", "camera", "speaker", "shovel"]
_EVAL_CITIES = ["Tallinn", "Recife", "Malmo", "Accra", "Busan", "Ghent", "Cusco", "Tromso", "Hobart", "Zagreb",
                "Medan", "Fresno", "Split", "Kyoto"]
_EVAL_TEMPLATES = [
    "{name} writes: please ship {qty} {item}s over to {city}.",
    "Ship to {city}: {qty} {item}s, attention {name}.",
    "Requesting {qty} {item}s. Deliver to {city}. Regards, {name}",
    "Got {qty} {item}s for me? I'm {name}, based in {city}.",
    "{qty} {item}s to {city} please, for {name}.",
    "Could {city} get {qty} {item}s? Put it under {name}.",
    "Dear shop, {name} here from {city}; I need {qty} {item}s.",
    "Deliver these to {city}: {qty} {item}s. Customer: {name}.",
]

FACT_TRAIN_TEMPLATES = ["What is the capital of {country}?", "Name the capital city of {country}."]
FACT_EVAL_TEMPLATE = "Which city is the capital of the country {country}?"
FACT_INSTRUCTION = "Answer with one word.\n{question}"

GENERAL_QA = [  # (question, answer) a small instruct model is expected to know; used for loss before/after
    ("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"), ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Spain?", "Madrid"), ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of Canada?", "Ottawa"), ("What is the capital of Russia?", "Moscow"),
    ("How many days are in a week?", "Seven"), ("How many legs does a spider have?", "Eight"),
    ("What color is the sky on a clear day?", "Blue"), ("What is frozen water called?", "Ice"),
    ("Which planet do we live on?", "Earth"), ("What is the largest ocean on Earth?", "Pacific"),
    ("What gas do plants absorb from the air?", "Carbon dioxide"), ("What is 2 plus 2?", "4"),
    ("What is 10 times 10?", "100"), ("How many hours are in a day?", "24"),
    ("Which animal is known as the king of the jungle?", "Lion"), ("What do bees make?", "Honey"),
    ("What is the opposite of hot?", "Cold"), ("Which star is at the center of our solar system?", "The Sun"),
    ("What language is spoken in Brazil?", "Portuguese"), ("Who wrote Romeo and Juliet?", "William Shakespeare"),
    ("What is the chemical symbol for water?", "H2O"), ("How many continents are there?", "Seven"),
    ("What is the boiling point of water in Celsius?", "100"), ("Which month comes after June?", "July"),
    ("What is the largest planet in the solar system?", "Jupiter"), ("What shape has three sides?", "Triangle"),
    ("What is the freezing point of water in Celsius?", "0"), ("What do you call a baby cat?", "Kitten"),
]
GENERAL_INSTRUCTION = "Answer briefly.\n{question}"

_SYLLABLES = ["ka", "lo", "mir", "ten", "va", "dor", "sel", "bri", "quo", "zan", "pel", "ru", "tis", "mon", "ga",
              "fen", "xo", "lau", "ber", "ny", "osk", "tra", "vel", "hu"]


def make_orders_heldout(n_train: int = 256, n_eval: int = 64, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, eval) ``orders`` rows; eval uses the eval-only pools above, train the ``orders`` task's pools."""
    rng = random.Random(seed)

    def rows(n, names, items, cities, templates):
        out = []
        for _ in range(n):
            record = {"name": rng.choice(names), "item": rng.choice(items), "qty": rng.randint(2, 12),
                      "city": rng.choice(cities)}
            out.append(data.order_to_row({"message": rng.choice(templates).format(**record), "record": record}))
        return out

    return (rows(n_train, data._NAMES, data._ITEMS, data._CITIES, data._TEMPLATES),
            rows(n_eval, _EVAL_NAMES, _EVAL_ITEMS, _EVAL_CITIES, _EVAL_TEMPLATES))


def _word(rng: random.Random, n_syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(n_syllables)).capitalize()


def make_facts(n_facts: int = 96, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, eval) rows of ``n_facts`` invented country -> capital facts: two train phrasings, one eval one."""
    rng, facts, used = random.Random(seed), [], set()
    while len(facts) < n_facts:
        country, capital = _word(rng, 3), _word(rng, 2)
        if country not in used and capital not in used:
            used |= {country, capital}
            facts.append((country, capital))

    def row(template, country, capital):
        return {"instruction": FACT_INSTRUCTION.format(question=template.format(country=country)), "response": capital}

    train = [row(t, c, cap) for c, cap in facts for t in FACT_TRAIN_TEMPLATES]
    rng.shuffle(train)
    return train, [row(FACT_EVAL_TEMPLATE, c, cap) for c, cap in facts]


def general_rows() -> list[dict]:
    return [{"instruction": GENERAL_INSTRUCTION.format(question=q), "response": a} for q, a in GENERAL_QA]


def write_files(folder: Path = RESOURCE_DIR) -> None:
    """Regenerate ``orders_heldout_{train,eval}.jsonl``, ``facts_{train,eval}.jsonl`` and ``general_eval.jsonl``."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"orders_heldout": make_orders_heldout(), "facts": make_facts()}
    files = {f"{task}_{split}": rows for task, (train, ev) in splits.items()
             for split, rows in (("train", train), ("eval", ev))}
    files["general_eval"] = general_rows()
    for name, rows in files.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def load_general():
    """The general-knowledge questions as a ``datasets.Dataset`` (for loss before/after fine-tuning)."""
    return data.load_jsonl(RESOURCE_DIR / "general_eval.jsonl")


if __name__ == "__main__":  # python -m course_lib.heldout_tasks
    write_files()
    print(f"wrote {sorted(p.name for p in RESOURCE_DIR.glob('*.jsonl'))}")
