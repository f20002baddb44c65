"""course_lib.resources: what the notebooks read at run time ships inside the package; a missing file says why."""

import fnmatch
import re
from pathlib import Path

import pytest

from course_lib import data, distributed, resources

ROOT = Path(__file__).resolve().parents[1]


def test_every_resource_file_is_package_data():
    """What is in course_lib/resources/ must match [tool.setuptools.package-data], or a wheel leaves it out."""
    patterns = re.findall(r'"(resources/[^"]+)"', (ROOT / "pyproject.toml").read_text())
    package = ROOT / "course_lib"
    shipped = [p.relative_to(package).as_posix() for p in (package / "resources").rglob("*")
               if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert shipped and patterns
    assert [f for f in shipped if not any(fnmatch.fnmatch(f, pat) for pat in patterns)] == []
    for kind in resources.KINDS:
        assert resources.names(kind), f"nothing shipped in {kind}/"


def test_readers_use_the_shipped_files():
    assert set(resources.names("tasks", ".jsonl")) >= {f"{t}_{s}.jsonl" for t in data.TASKS for s in ("train", "eval")}
    assert "ddp_cpu_2proc.yaml" in distributed.config_names()
    assert "num_processes: 2" in distributed.config_text("ddp_cpu_2proc.yaml")
    assert len(resources.measurements("memory_accuracy.csv")) >= 16
    with resources.as_path("accelerate", "ddp_cpu_2proc.yaml") as path:  # a real file, as accelerate needs
        assert path.is_file() and path.read_text() == distributed.config_text("ddp_cpu_2proc.yaml")


def test_missing_resources_are_explained(monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"ships no measurements/nope.csv \(it has: .*memory_accuracy.csv.*benchmarks/"):
        resources.read_text("measurements", "nope.csv")
    with pytest.raises(ValueError, match=r"unknown resource kind 'configs'; course_lib ships \('tasks'"):
        resources.folder("configs")
    with pytest.raises(FileNotFoundError, match=r"ships no accelerate/ddp_9gpu.yaml \(it has: ddp_2gpu.yaml"):
        distributed.launch(2, "/tmp/never-written.json", config_file="ddp_9gpu.yaml")
    with pytest.raises(FileNotFoundError, match="ships no measurements/gone.csv.*python benchmarks/memory_accuracy.py"):
        resources.measurements("gone.csv")


def test_shell_users_get_the_path_of_a_shipped_config(capsys):
    distributed.main(["--config", "fsdp_2gpu_qlora.yaml"])
    path = Path(capsys.readouterr().out.strip())
    assert path.is_file() and path.read_text() == distributed.config_text("fsdp_2gpu_qlora.yaml")
