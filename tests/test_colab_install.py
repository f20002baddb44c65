"""The student's path, run for real: the notebooks' setup cell, fetching this checkout from a local "GitHub"
(tools/colab_stack.py: git's insteadOf, so the cell's code is the published one), installs the course into a fresh
venv that already has torch (as Colab has its CUDA torch) and has imported an older tqdm than the course needs.
torch must stay untouched, the cell must say that the session needs a restart (tqdm changed under it), and the
notebooks that read package data (05, 07 with its CPU smoke preset, 08), generated from their sources, must run
from a folder outside the checkout. Needs the package registry; several minutes on the 2-core machine."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import colab_stack  # noqa: E402
import nbtool  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.network]
NOTEBOOKS = ("05", "07", "08")  # the ones that read course_lib/resources (08 also launches accelerate)
PROBE = "import torch, pathlib; p = pathlib.Path(torch.__file__); print(torch.__version__, p.stat().st_mtime_ns)"


def _env(home: Path, **extra) -> dict:
    """A clean environment: no PYTHONPATH into the checkout, pip's and the converted model's caches reused."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(cache / "pip")),
           "COURSE_LIB_CACHE": os.environ.get("COURSE_LIB_CACHE", str(cache / "course_lib")), "HF_HUB_OFFLINE": "1"}
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})  # the registry this machine uses
    return env | extra


@pytest.fixture(scope="module")
def colab_venv(tmp_path_factory):
    """(python of a fresh venv with torch and the course installed by the setup cell, torch probe before, tmp,
    the cell's run)."""
    tmp = tmp_path_factory.mktemp("colab")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", nbtool.pin("torch"), "tqdm==4.65.0"], check=True, env=_env(tmp))
    before = subprocess.run([py, "-c", PROBE], check=True, capture_output=True, text=True).stdout
    github = colab_stack.fake_github(tmp)
    keep = {k: v for k, v in _env(tmp).items() if k != "PATH"}
    run = colab_stack.run_cell(py, tmp, github | keep, before="import tqdm  # a session that has loaded tqdm 4.65")
    return py, before, tmp, run


def test_colab_cell_installs_the_course_without_touching_torch(colab_venv):
    py, before, tmp, run = colab_venv
    assert run.returncode != 0 and "Installed: " in run.stdout, run.stdout + run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("CourseSetupError: the course is installed, but pip replaced packages this session had "
                           "already loaded (tqdm 4.65.0 -> ") and "Runtime > Restart session" in last, last
    after = subprocess.run([py, "-c", PROBE], check=True, capture_output=True, text=True).stdout
    assert after == before, f"torch was reinstalled or upgraded: {before!r} -> {after!r}"
    check = subprocess.run([py, "-c", "import course_lib, course_lib.lora, course_lib.models as m, peft, bitsandbytes; "
                                      "print(course_lib.__file__); print(m._gguf_path(m.DEFAULT_MODEL) is not None)"],
                           check=True, capture_output=True, text=True, cwd=tmp, env=_env(tmp))
    where, gguf = check.stdout.split()
    assert "site-packages" in where and not where.startswith(str(ROOT))  # the installed copy, not the checkout
    assert gguf == "True"  # the offline model's GGUF is in place too


RUN_NOTEBOOKS = """
import sys, nbformat
from nbclient import NotebookClient
for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
    nbformat.write(nb, path)
    print("executed", path, flush=True)
"""


def test_notebooks_run_on_the_installed_wheel_outside_the_checkout(colab_venv):
    py, before, tmp, _ = colab_venv
    keep_torch = tmp / "keep-torch.txt"
    keep_torch.write_text(f"torch=={before.split()[0]}\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "-c", str(ROOT / "requirements" / "ci.txt"), "-c", str(keep_torch),
                    "nbclient", "nbformat", "ipykernel"], check=True, env=_env(tmp))
    run = tmp / "student"
    run.mkdir()
    paths = []
    for py_source in nbtool.sources(nbtool.NOTEBOOKS, list(NOTEBOOKS)):  # the notebooks as `check` keeps them
        paths.append(run / f"{py_source.stem}.ipynb")
        nbformat.write(nbtool.read_source(py_source), paths[-1])
    proc = subprocess.run([py, "-c", RUN_NOTEBOOKS, *paths], cwd=run, capture_output=True, text=True,
                          env=_env(tmp, PATH=f"{Path(py).parent}:/usr/bin:/bin", COURSE_STATIC_WIDGETS="1",
                                   COURSE_QLORA_PRESET="smoke"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report = "".join(o.get("text", "") for c in nbformat.read(paths[0], as_version=4).cells
                     for o in c.get("outputs", []) if "compute dtype" in o.get("text", ""))
    assert "datasets " in report and "not installed" not in report and "not pip-installed" not in report, report
