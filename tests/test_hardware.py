import pytest
import torch

from course_lib import hardware

# What this machine should get: CI has no GPU, a developer's machine or Colab may have one.
if torch.cuda.is_available():
    HERE = "cuda"
    HERE_DTYPE = torch.bfloat16 if torch.cuda.get_device_capability() >= (8, 0) else torch.float16
elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
    HERE, HERE_DTYPE = "mps", torch.float16
else:
    HERE, HERE_DTYPE = "cpu", torch.float32


def test_defaults_follow_the_machine():
    assert hardware.pick_device() == torch.device(HERE)
    assert hardware.compute_dtype() == HERE_DTYPE
    assert hardware.compute_dtype("cpu") == torch.float32
    assert hardware.supports_bf16("cpu") is False


def test_without_a_gpu_it_is_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "_mps_available", lambda: False)
    assert hardware.pick_device() == torch.device("cpu")
    assert hardware.compute_dtype() == torch.float32


def test_forcing_an_absent_device_explains(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="not available here.*T4 GPU"):
        hardware.pick_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        hardware.pick_device("tpu")


@pytest.mark.parametrize("capability, expected", [((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_dtype_follows_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what a T4 claims; not trusted
    assert hardware.compute_dtype("cuda") == expected


def test_bf16_on_a_t4_is_refused_with_the_way_out(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(ValueError, match=r"Tesla T4 \(compute capability 7.5\).*float16"):
        hardware.compute_dtype("cuda", requested=torch.bfloat16)
    assert hardware.compute_dtype("cuda", requested=torch.float16) == torch.float16


def test_report_prints_versions(capsys):
    assert hardware.report() is None  # nothing for a notebook to echo a second time
    out = capsys.readouterr().out
    info = hardware.environment()
    for key in ("torch", "transformers", "peft", "bitsandbytes", "device", "compute dtype"):
        assert key in info and key in out
    assert info["device"] == HERE and info["compute dtype"] == str(HERE_DTYPE).removeprefix("torch.")
    assert ("gpu" in info) == (HERE == "cuda")


def test_report_names_course_lib_and_datasets(monkeypatch):
    import importlib.metadata

    import course_lib

    info = hardware.environment()
    assert info["datasets"] != "not installed"
    assert info["course_lib"].startswith(course_lib.__version__)  # "0.1.0", or "0.1.0 (editable)"

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)  # imported through PYTHONPATH
    assert hardware.course_lib_version().startswith(f"{course_lib.__version__} (not pip-installed: imported from ")


def test_report_names_a_run_dtype_that_is_not_the_default(capsys, monkeypatch):
    from course_lib import qlora

    other = torch.float16 if HERE_DTYPE != torch.float16 else torch.bfloat16
    hardware.report(run_dtype=other)
    out = capsys.readouterr().out
    assert f"{str(other).removeprefix('torch.')} (this run; the default here is {str(HERE_DTYPE).removeprefix('torch.')})" in out
    assert hardware.environment(HERE_DTYPE)["compute dtype"] == str(HERE_DTYPE).removeprefix("torch.")
    # notebook 07's T4-like preset computes in fp16 on any GPU, and its report says so before the preset is chosen
    monkeypatch.setattr(qlora, "bnb_status", lambda: (True, "pretend"))
    monkeypatch.setattr(hardware, "supports_bf16", lambda device=None: True)
    assert qlora.preset_dtype("t4-smollm2-135m") == torch.float16 == qlora.run_dtype(qlora.PRESETS["t4"])
    assert qlora.preset_dtype("smoke") == torch.float32
