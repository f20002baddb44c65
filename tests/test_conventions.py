"""One naming of LoRA's two factors everywhere, PEFT's: A is r × d_in (it reads the input), B is d_out × r (it writes
the output), and the update is ΔW = B·A. Checked over every text a student reads: notebook and solution sources
(markdown and code), the quizzes, checker hints and messages, course_lib's docstrings (shown with show_source),
the README and the instructor guide."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RANK = {"r", "k", "rank"}

# "A (r × d_in)", "`B` of shape d_out × r", "A is 8 x 576", "lora_A: r x d_in", "B (576 x 8)"
SHAPE = re.compile(r"(?<!\w)`?(?:lora_)?(?P<name>[AB])\b`?(?:\s*\(|\s+of\s+shape\s+|\s+is\s+|\s*:\s*|\s+)`?\(?\s*"
                   r"(?P<p>[\w.]+)\s*[×x]\s*(?P<q>[\w.]+)\b")
# "A (d_in -> r)", "B (r → d_out)"
ARROW = re.compile(r"(?<!\w)`?(?:lora_)?(?P<name>[AB])\b`?\s*\(\s*(?P<p>[\w.]+)\s*(?:->|→)\s*(?P<q>[\w.]+)\s*\)")
# "ΔW = AB", "W + A·B", "W ≈ A @ B": the factors in the wrong order
PRODUCT = re.compile(r"(?:ΔW|W'|W_k|W)\s*(?:=|≈|\+|←)\s*(?:\([^)]*\)\s*[·*]?\s*)?`?A\s*[·@*]?\s*B\b")


def _dims(p: str, q: str):
    return (int(p), int(q)) if p.isdigit() and q.isdigit() else None


def violations(text: str) -> list[str]:
    """Every place in ``text`` that names LoRA's factors against PEFT's convention."""
    found = []
    for m in SHAPE.finditer(text):
        name, p, q = m["name"], m["p"], m["q"]
        if re.search(r"[@·*]\s*`?$|B\s*$", text[max(0, m.start() - 4):m.start()]):
            continue  # "B @ A is 2304 × 768": the shape of the product, not of A
        rank_first = p in RANK or (_dims(p, q) is not None and _dims(p, q)[0] < _dims(p, q)[1])
        rank_second = q in RANK or (_dims(p, q) is not None and _dims(p, q)[0] > _dims(p, q)[1])
        if (name == "A" and rank_second) or (name == "B" and rank_first):
            found.append(m.group(0))
    for m in ARROW.finditer(text):  # A maps d_in -> r, B maps r -> d_out
        name, p, q = m["name"], m["p"], m["q"]
        if (name == "A" and p in RANK) or (name == "B" and q in RANK):
            found.append(m.group(0))
    found += [m.group(0) for m in PRODUCT.finditer(text)]
    return found


def student_texts() -> dict[str, str]:
    from course_lib import quiz

    files = [*ROOT.glob("notebooks/[0-9][0-9]_*.py"), *ROOT.glob("solutions/[0-9][0-9]_*.py"),
             *ROOT.glob("course_lib/**/*.py"), ROOT / "README.md", *ROOT.glob("docs/*.md")]
    texts = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in files}
    for nb, questions in quiz.QUIZZES.items():  # the quiz as a student reads it, not as Python source
        texts[f"quiz {nb}"] = "\n".join(" ".join((q.prompt, *q.options, *q.reasons)) for q in questions)
    return texts


BAD = ["A (d×r), B (r×d)", "rank-8 factors A (4096 × 8) and B (8 × 4096)", "W ≈ A·B with A of shape m x r",
       "the update ΔW = AB", "W' = W + (α/r) AB", "`A` of shape d×r", "A (r -> d_out)", "B (d_in -> r)",
       "lora_A: d_in x r"]
GOOD = ["the update B @ A is 2304 × 768", "A (r × d_in) and B (d_out × r)", "factors B (576 x 8) and A (8 x 576)", "ΔW = B·A", "W ≈ B·A",
        "y = W x + (α/r)·B (A x)", "A is r × d_in, B is d_out × r", "down through A (d_in -> r), then up through "
        "B (r -> d_out)", "`B` of shape `d_out × r` and `A` of shape `r × d_in`", "lora_A: r x d_in",
        "A and B, r·(d_in + d_out)", "x → A x → B(Ax)", "W ← W + (α/r)·BA"]


@pytest.mark.parametrize("text", BAD)
def test_the_check_catches_the_other_convention(text):
    assert violations(text), f"not flagged: {text!r}"


@pytest.mark.parametrize("text", GOOD)
def test_the_check_accepts_the_peft_convention(text):
    assert not violations(text), f"flagged: {violations(text)}"


def test_one_a_b_convention_in_every_text_a_student_reads():
    texts = student_texts()
    assert len(texts) > 40 and any(k.startswith("quiz") for k in texts)
    bad = {where: v for where, text in texts.items() if (v := violations(text))}
    assert not bad, f"A/B named against PEFT's convention (A: r x d_in, B: d_out x r, ΔW = B·A): {bad}"
