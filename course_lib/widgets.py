"""Interactive explorers (ipywidgets) that fall back to a static figure where there is no widget frontend.

Each explorer is a thin layer over course_lib functions: ``*_view(...)`` computes and draws one state (testable with
no frontend), and the explorer wires it to sliders. Headless runs (CI, ``make course``, HTML export) set
``COURSE_STATIC_WIDGETS=1``, so the notebooks show the static version there.
"""

from __future__ import annotations

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
    return widgets.interact(lambda k: rank_view(W, k), k=slider)
