"""Interactive explorers (ipywidgets) that fall back to a static figure where there is no widget frontend.

Each explorer is a thin layer over course_lib functions: ``*_view(...)`` computes and draws one state (testable with
no frontend), and the explorer wires it to sliders. Headless runs (CI, ``make course``, HTML export) set
``COURSE_STATIC_WIDGETS=1``, so the notebooks show the static version there.
"""

from __future__ import annotations

import functools
import os

import torch

from course_lib import lowrank


def interactive_available() -> bool:
    """True inside a Jupyter kernel with ipywidgets installed, unless COURSE_STATIC_WIDGETS is set."""
    if os.environ.get("COURSE_STATIC_WIDGETS", "").strip() not in {"", "0"}:
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def rank_view(W: torch.Tensor, k: int, *, show_error: bool = True):
    """One state of the rank explorer: the rank-k reconstruction of W, its relative error and its storage.
    Returns a dict of the numbers (and draws the picture); an impossible k gives a message, not an exception."""
    import matplotlib.pyplot as plt

    try:
        approx = lowrank.rank_k_approx(W, k)
    except (ValueError, TypeError) as exc:
        print(f"✗ {exc}")
        return {"error": str(exc)}
    m, n = W.shape
    rel = lowrank.approx_error(W, k) / torch.linalg.matrix_norm(W.double()).item()
    full, factors = lowrank.storage_count(m, n, k)
    panels = {"original": W, f"rank {k}": approx.clamp(W.min(), W.max())}
    if show_error:
        panels["error"] = (W - approx).abs()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (label, img) in zip(axes, panels.items()):
        ax.imshow(img.float().numpy(), cmap="gray")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"rank {k}: relative error {rel:.1%}, storage {factors:,} of {full:,} numbers ({factors / full:.1%})")
    fig.tight_layout()
    plt.show()
    return {"k": k, "relative error": rel, "stored": factors, "full": full}


def rank_explorer(W: torch.Tensor, ks: tuple[int, ...] = (1, 5, 20, 50)):
    """A slider over the rank k for matrix W; without a widget frontend, the static views at ``ks``."""
    W = lowrank._check_matrix(W)
    if not interactive_available():
        print(f"(static view: no widget frontend; ranks {list(ks)})")
        return [rank_view(W, k) for k in ks]
    import ipywidgets as widgets

    slider = widgets.IntSlider(value=ks[1] if len(ks) > 1 else 1, min=1, max=min(W.shape), description="rank k",
                               continuous_update=False)
    return widgets.interact(_shown(lambda k: rank_view(W, k)), k=slider)


def _shown(view):
    """``view`` for ``interact``, which prints whatever its function returns under the figure: the numbers the
    views return are for tests and static runs, so the live explorer drops them."""

    @functools.wraps(view)  # interact reads the controls' names from the wrapped view's signature
    def shown(*args, **kwargs) -> None:
        view(*args, **kwargs)

    return shown


def _show_or_static(view, static_kwargs: list[dict], controls: dict):
    """The one pattern every explorer follows: sliders when a frontend exists, else the view at fixed settings."""
    if not interactive_available():
        print("(static view: no widget frontend; settings: " + "; ".join(
            ", ".join(f"{k}={v}" for k, v in kw.items()) for kw in static_kwargs) + ")")
        return [view(**kw) for kw in static_kwargs]
    import ipywidgets as widgets

    return widgets.interact(_shown(view), **{name: make(widgets) for name, make in controls.items()})


# ------------------------------------------------------------------------------ 03 LoRA parameter calculator
TARGET_CHOICES = {"q_proj + v_proj": ["q_proj", "v_proj"],
                  "attention (q, k, v, o)": ["q_proj", "k_proj", "v_proj", "o_proj"],
                  "all-linear": "all-linear"}


@functools.lru_cache(maxsize=16)
def _meta_model(shape: str):
    from course_lib import models

    return models.synthetic_model(shape)  # meta device: shapes only, no memory


def lora_calculator_view(shape: str = "llama-2-7b", r: int = 8, targets: str = "q_proj + v_proj") -> dict:
    """Trainable LoRA parameters and their share of the model, for a model shape, a rank and a target choice."""
    from course_lib import counting, models

    try:
        if shape not in models.SYNTHETIC_SHAPES:
            raise ValueError(f"unknown model shape {shape!r}; choose one of {sorted(models.SYNTHETIC_SHAPES)}")
        if targets not in TARGET_CHOICES:
            raise ValueError(f"unknown target choice {targets!r}; choose one of {list(TARGET_CHOICES)}")
        model = _meta_model(shape)
        trainable = counting.lora_param_count(model, TARGET_CHOICES[targets], r)
        base = counting.trainable_summary(model)[1]
    except (ValueError, TypeError, KeyError) as exc:
        print(f"✗ {exc}")
        return {"error": str(exc)}
    percent = 100 * trainable / (base + trainable)
    print(f"{shape}, r={r}, {targets}: {trainable:,} trainable of {base + trainable:,} ({percent:.4f}%), "
          f"{trainable * 4 / 2**20:.1f} MiB of fp32 adapters")
    return {"trainable": trainable, "total": base + trainable, "percent": percent}


def lora_calculator(static=({"shape": "llama-2-7b", "r": 8, "targets": "q_proj + v_proj"},
                            {"shape": "llama-3-8b", "r": 16, "targets": "all-linear"})):
    """Choose a model shape, a rank and targets; read the trainable count (the same function notebook 03 checks
    against PEFT)."""
    from course_lib import models

    return _show_or_static(lora_calculator_view, list(static), {
        "shape": lambda w: w.Dropdown(options=sorted(models.SYNTHETIC_SHAPES), value="llama-2-7b"),
        "r": lambda w: w.IntSlider(value=8, min=1, max=256, continuous_update=False),
        "targets": lambda w: w.Dropdown(options=list(TARGET_CHOICES), value="q_proj + v_proj")})


# ------------------------------------------------------------------------------ 04 quantization explorer
def quantization_view(W: torch.Tensor, kind: str = "nf4", blocksize: int = 64, double_quant: bool = False) -> dict:
    """Relative error of a 4-bit format at a block size on W, and the bits each weight costs in storage."""
    import matplotlib.pyplot as plt

    from course_lib import nf4

    try:
        restored = nf4.roundtrip(W, kind, blocksize)
        bits = nf4.bits_per_param(blocksize, double_quant=double_quant)
    except (ValueError, TypeError) as exc:
        print(f"✗ {exc}")
        return {"error": str(exc)}
    W32 = W.detach().float()
    rel = ((W32 - restored).norm() / W32.norm()).item()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist((W32 - restored).flatten().numpy(), bins=100)
    ax.set_title(f"{kind}, block {blocksize}: relative RMSE {rel:.2%}, {bits:.3f} bits/weight")
    ax.set_xlabel("quantization error")
    plt.show()
    return {"relative rmse": rel, "bits per param": bits}


def quantization_explorer(W: torch.Tensor, static=({"kind": "nf4", "blocksize": 64}, {"kind": "int4", "blocksize": 64})):
    """Format and block size -> error and bits per parameter, on the matrix W."""
    from course_lib import nf4

    return _show_or_static(lambda kind, blocksize, double_quant=False: quantization_view(W, kind, blocksize, double_quant),
                           list(static), {
        "kind": lambda w: w.Dropdown(options=["nf4", "fp4", "int4"], value="nf4"),
        "blocksize": lambda w: w.SelectionSlider(options=list(nf4.VALID_BLOCKSIZES), value=64),
        "double_quant": lambda w: w.Checkbox(value=False, description="double quantization")})


# ------------------------------------------------------------------------------ 05 memory planner
def memory_view(shape: str = "llama-2-7b", method: str = "qlora", batch_size: int = 1, seq_len: int = 512,
                gpu: str = "T4") -> dict:
    """Predicted training memory (course_lib.memory) as a stacked bar, and whether it fits the chosen GPU."""
    import matplotlib.pyplot as plt

    from course_lib import memory, models

    try:
        limit = memory.usable_bytes(gpu)  # raises for an unknown GPU, listing the known ones
        if shape not in models.SYNTHETIC_SHAPES:
            raise ValueError(f"unknown model shape {shape!r}; choose one of {sorted(models.SYNTHETIC_SHAPES)}")
        dtype = torch.float16 if gpu == "T4" else torch.bfloat16
        est = memory.estimate_training_memory(models.synthetic_config(shape), method, batch_size=batch_size,
                                              seq_len=seq_len, compute_dtype=dtype)
    except (ValueError, TypeError) as exc:
        print(f"✗ {exc}")
        return {"error": str(exc)}
    fits = memory.fits(est, gpu)
    fig, ax = plt.subplots(figsize=(7, 1.8))
    left = 0.0
    for part, nbytes in est.breakdown().items():
        ax.barh([0], [nbytes / memory.GB], left=left, label=part)
        left += nbytes / memory.GB
    ax.axvline(limit / memory.GB, color="red", ls="--", lw=1)
    ax.set_yticks([])
    ax.set_xlabel("GB")
    ax.set_title(f"{shape} {method}, batch {batch_size} x seq {seq_len}: {est.total_gb:.1f} GB -> "
                 f"{'fits' if fits else 'does NOT fit'} on {gpu}")
    ax.legend(ncol=4, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.45))
    plt.show()
    return {"total GB": est.total_gb, "fits": fits}


def memory_planner(static=({"shape": "llama-2-7b", "method": "lora"}, {"shape": "llama-2-7b", "method": "qlora"})):
    """Model, method, batch and sequence length -> the memory breakdown, and whether it fits a chosen GPU."""
    from course_lib import memory, models

    return _show_or_static(memory_view, list(static), {
        "shape": lambda w: w.Dropdown(options=sorted(models.SYNTHETIC_SHAPES), value="llama-2-7b"),
        "method": lambda w: w.Dropdown(options=list(memory.METHODS), value="qlora"),
        "batch_size": lambda w: w.IntSlider(value=1, min=1, max=16, continuous_update=False),
        "seq_len": lambda w: w.SelectionSlider(options=[128, 256, 512, 1024, 2048, 4096], value=512),
        "gpu": lambda w: w.Dropdown(options=list(memory.GPU_GIB), value="T4")})
