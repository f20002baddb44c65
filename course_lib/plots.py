"""Matplotlib helpers shared by the notebooks: one function per figure a notebook draws.

Each helper takes plain data (lists, dicts, DataFrames), draws one figure and returns the matplotlib Axes so a
notebook can tweak it. Other modules may append helpers at the end of this file.
"""
from __future__ import annotations


# ------------------------------------------------------------------------------- 01 low-rank intuition
def plot_spectra(spectra: dict, *, title: str = "Singular value spectra", normalise: bool = True, ax=None):
    """Singular values (largest first) of several matrices on a log y-axis; normalised by the largest if asked."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 4))[1]
    for label, S in spectra.items():
        s = S.double() / S.double().max() if normalise else S.double()
        ax.semilogy(range(1, s.numel() + 1), s.numpy(), label=label)
    ax.set_xlabel("index i")
    ax.set_ylabel("σ_i / σ_1" if normalise else "σ_i")
    ax.set_title(title)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return ax


def plot_energy(spectra: dict, *, max_k: int | None = None, ax=None):
    """Cumulative fraction of energy (sum of σ²) captured by the top k singular values."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 4))[1]
    for label, S in spectra.items():
        e = S.double().pow(2)
        cumulative = (e.cumsum(0) / e.sum()).numpy()
        k = max_k or cumulative.size
        ax.plot(range(1, min(k, cumulative.size) + 1), cumulative[:k], label=label)
    ax.set_xlabel("k (number of singular directions kept)")
    ax.set_ylabel("energy captured")
    ax.set_ylim(0, 1.02)
    ax.axhline(0.9, color="grey", ls=":", lw=1)
    ax.legend()
    ax.grid(True, alpha=0.3)
    return ax


def plot_rank_grid(images: dict, *, cmap: str = "gray", suptitle: str | None = None):
    """Show matrices as images side by side (e.g. a photo reconstructed at several ranks)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(3 * len(images), 3.4))
    for ax, (label, img) in zip(list(getattr(axes, "flat", [axes])), images.items()):
        ax.imshow(img.numpy() if hasattr(img, "numpy") else img, cmap=cmap)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return axes

import matplotlib.pyplot as plt


def plot_rank_sweep(sweeps: dict[str, list[dict]], title: str = "LoRA trainable parameters vs rank"):
    """Rank vs trainable parameters (left) and vs trainable % of the model (right), log-log, one line per sweep.

    ``sweeps`` maps a label (e.g. "Llama-2-7B, q+v") to rows from ``course_lib.counting.rank_sweep``.
    Returns the two Axes.
    """
    fig, (ax_count, ax_pct) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in sweeps.items():
        ranks = [row["r"] for row in rows]
        ax_count.plot(ranks, [row["trainable"] for row in rows], marker=".", label=label)
        ax_pct.plot(ranks, [row["percent"] for row in rows], marker=".", label=label)
    for ax, ylabel in ((ax_count, "trainable parameters"), (ax_pct, "trainable % of the model")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("rank r")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_pct.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    ax_count.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return ax_count, ax_pct


def plot_losses(curves, title: str = "training loss per step", ylabel: str = "loss"):
    """The course's one loss plot: a list of losses (steps 1, 2, ...), or ``{label: curve}`` on one axis, where a
    curve is a list of losses, a list of ``(step, loss)`` pairs, or a ``training.TrainResult``. Returns the Axes."""
    if not isinstance(curves, dict):
        curves = {None: curves}
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for (label, curve), style in zip(curves.items(), ("-o", "--x", ":s", "-.^", "-v", "--d")):
        points = list(getattr(curve, "history", curve))
        if points and not isinstance(points[0], (tuple, list)):
            points = list(enumerate(points, 1))
        if not points:
            raise ValueError(f"curve {label!r} has no losses to plot")
        steps, losses = zip(*points)
        ax.plot(steps, losses, style, label=label, markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if len(curves) > 1 or None not in curves:
        ax.legend()
    fig.tight_layout()
    return ax


# ------------------------------------------------------------------------------- 04 NF4 quantization
def plot_quantization_histograms(w, w_hat, code=None, title: str = "NF4 round trip"):
    """Left: histogram of the weights (with the NF4 levels of the largest block scale marked). Right: errors."""
    import matplotlib.pyplot as plt

    w, w_hat = w.detach().float().reshape(-1), w_hat.detach().float().reshape(-1)
    fig, (ax_w, ax_e) = plt.subplots(1, 2, figsize=(11, 3.5))
    ax_w.hist(w.numpy(), bins=200, color="tab:blue", alpha=0.8)
    ax_w.set(title=f"{title}: weights", xlabel="value", ylabel="count")
    ax_e.hist((w_hat - w).numpy(), bins=200, color="tab:red", alpha=0.8)
    ax_e.set(title="error (dequantized - original)", xlabel="error")
    fig.tight_layout()
    return ax_w, ax_e


# ------------------------------------------------------------------------------- 05 memory budgets
def plot_checkpointing(predicted: dict[str, dict], *, measured: dict[str, dict] | None = None,
                       limit_bytes: float | None = None, limit_label: str = "GPU limit",
                       title: str = "Peak memory with gradient checkpointing on (solid) and off (dashed)"):
    """Peak training memory (GiB) against tokens per step, gradient checkpointing on (solid) and off (dashed).

    ``predicted``: label -> {"tokens": [...], "on": [bytes], "off": [bytes]} (the memory model), one colour per
    label, with a dashed grey line at ``limit_bytes``. ``measured`` (optional, a second panel): label ->
    {"tokens", "on", "off"} measured and {"predicted on", "predicted off"} beside them: markers for the
    measurements, lines for the predictions."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def plain_ticks(ax, xs):  # token counts as written, GiB as numbers: no 3x10^2 on a log axis
        ax.set_xticks(xs)
        if ax.get_yscale() == "log":
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())

    panels = 2 if measured else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    for i, (label, c) in enumerate(predicted.items()):
        colour = f"C{i}"
        ax.plot(c["tokens"], [b / 2**30 for b in c["on"]], color=colour, marker="o", ms=3, label=f"{label}")
        ax.plot(c["tokens"], [b / 2**30 for b in c["off"]], color=colour, ls="--", marker="o", ms=3)
    if limit_bytes:
        ax.axhline(limit_bytes / 2**30, color="gray", ls=":", lw=1.5, label=limit_label)
    ax.set(xscale="log", yscale="log", xlabel="tokens per step (batch x sequence)", ylabel="GiB",
           title="predicted (the memory model)")
    plain_ticks(ax, next(iter(predicted.values()))["tokens"])
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    if measured:
        ax = axes[0][1]
        for i, (label, c) in enumerate(measured.items()):
            colour = f"C{i + len(predicted)}"
            for key, style, marker in (("on", "-", "o"), ("off", "--", "s")):
                ax.plot(c["tokens"], [b / 2**30 for b in c[f"predicted {key}"]], color=colour, ls=style, lw=1)
                ax.scatter(c["tokens"], [b / 2**30 for b in c[key]], color=colour, marker=marker, s=25,
                           label=f"{label}, checkpointing {key}: measured")
        ax.set(xscale="log", xlabel="tokens per step", ylabel="GiB", title="measured on this CPU (markers) vs predicted")
        plain_ticks(ax, next(iter(measured.values()))["tokens"])
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return axes[0]


# ------------------------------------------------------------------------------- 10 long contexts
def plot_memory_waterfall(rows: list[dict], parts: tuple[str, ...], *, measured: dict | None = None,
                          cap_gib: float | None = 15.0, title: str = "Peak memory, step by step"):
    """rows: {"step": name, part: bytes, ...} (``longctx.waterfall``), stacked per step; ``measured``: step -> bytes,
    drawn as a black marker beside each bar; a dashed line marks the cap."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    names = [r["step"] for r in rows]
    bottom = [0.0] * len(rows)
    for part in parts:
        values = [r[part] / 2**30 for r in rows]
        if any(values):
            ax.bar(names, values, bottom=bottom, label=part)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    if measured:
        xs = [i for i, n in enumerate(names) if n in measured]
        ax.scatter([x + 0.3 for x in xs], [measured[names[x]] / 2**30 for x in xs], color="black", marker="_", s=400,
                   linewidths=3, label="measured", zorder=3)
    if cap_gib:
        ax.axhline(cap_gib, color="gray", linestyle="--", label=f"{cap_gib:g} GiB cap")
    ax.set(ylabel="GiB", title=title)
    ax.tick_params(axis="x", labelrotation=20)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return ax
