"""The files course_lib reads at run time, shipped inside the package so an ordinary (non-editable) install, as on
Colab, has them too. Read them through this module (``importlib.resources``), never by a path beside the package.

    tasks/         the shipped task datasets, ``{task}_{split}.jsonl`` (written by ``data.write_task_files``)
    accelerate/    accelerate launch configurations (notebook 08, ``course_lib.distributed``)
    measurements/  committed GPU measurement tables (written by ``benchmarks/*.py --out`` on a GPU)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importlib.resources.abc is Python 3.11+; 3.10 has the same class in importlib.abc
    from importlib.resources.abc import Traversable

KINDS = ("tasks", "accelerate", "measurements")


def folder(kind: str) -> Traversable:
    """The shipped folder of ``kind`` (one of ``KINDS``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown resource kind {kind!r}; course_lib ships {KINDS}.")
    return resources.files(__name__) / kind


def names(kind: str, suffix: str = "") -> list[str]:
    """The file names shipped in ``kind``, sorted; only those ending in ``suffix`` when given."""
    return sorted(p.name for p in folder(kind).iterdir() if p.is_file() and p.name.endswith(suffix))


def exists(kind: str, name: str) -> bool:
    return (folder(kind) / name).is_file()


def file(kind: str, name: str) -> Traversable:
    """One shipped file; a missing one raises ``FileNotFoundError`` naming what is shipped and why it may lack."""
    path = folder(kind) / name
    if not path.is_file():
        shipped = ", ".join(names(kind)) or "nothing"
        hint = {"measurements": " Measurement tables are written on a GPU by the scripts in benchmarks/ "
                                "(e.g. python benchmarks/memory_accuracy.py) and committed.",
                "tasks": " For your own data use course_lib.data.load_jsonl(path)."}.get(kind, "")
        raise FileNotFoundError(
            f"course_lib ships no {kind}/{name} (it has: {shipped}).{hint} If you installed course_lib from a "
            "checkout, reinstall it so the package data is included (pip install .).")
    return path


def read_text(kind: str, name: str) -> str:
    return file(kind, name).read_text(encoding="utf-8")


def measurements(name: str) -> list[dict]:
    """The rows of a committed measurement table ``measurements/{name}`` (CSV), as dicts of strings."""
    import csv

    return list(csv.DictReader(read_text("measurements", name).splitlines()))


@contextlib.contextmanager
def as_path(kind: str, name: str) -> Iterator[Path]:
    """A real file path for tools that need one (``accelerate launch --config_file``), valid inside the ``with``."""
    with resources.as_file(file(kind, name)) as path:
        yield Path(path)


def source_folder(kind: str) -> Path:
    """Where the benchmarks WRITE ``kind`` in a checkout: the package's own folder (then commit the files)."""
    return Path(__file__).resolve().parent / folder(kind).name
