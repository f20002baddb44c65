"""Matplotlib helpers shared by the notebooks: one function per figure a notebook draws.

Each helper takes plain data (lists, dicts, DataFrames), draws one figure and returns the matplotlib Axes so a
notebook can tweak it. Other modules may append helpers at the end of this file.
"""
from __future__ import annotations


# ------------------------------------------------------------------------------- 01 low-rank intuition
def plot_spectra(spectra: dict, *, title: str = "Singular value spectra", normalise: bool = True, ax=None,
                 baselines: dict | None = None):
    """Singular values (largest first) of several matrices on a log y-axis; normalised by the largest if asked.
    ``baselines`` maps some of the same labels to the spectrum of a random matrix *of that matrix's shape*, drawn
    dashed in the same colour: a random spectrum depends on the aspect ratio, so each matrix needs its own."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 4))[1]
    for label, S in spectra.items():
        s = S.double() / S.double().max() if normalise else S.double()
        (line,) = ax.semilogy(range(1, s.numel() + 1), s.numpy(), label=label)
        if baselines and label in baselines:
            b = baselines[label].double()
            b = b / b.max() if normalise else b
            ax.semilogy(range(1, b.numel() + 1), b.numpy(), ls="--", color=line.get_color(),
                        label=f"random, same shape as {label.split(' ')[0]}")
    ax.set_xlabel("index i")
    ax.set_ylabel("σ_i / σ_1" if normalise else "σ_i")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return ax


def plot_energy(spectra: dict, *, max_k: int | None = None, ax=None, baselines: dict | None = None):
    """Cumulative fraction of energy (sum of σ²) captured by the top k singular values; ``baselines`` as in
    ``plot_spectra`` (a random matrix of each matrix's own shape, dashed)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 4))[1]

    def draw(S, **style):
        e = S.double().pow(2)
        cumulative = (e.cumsum(0) / e.sum()).numpy()
        k = max_k or cumulative.size
        return ax.plot(range(1, min(k, cumulative.size) + 1), cumulative[:k], **style)[0]

    for label, S in spectra.items():
        line = draw(S, label=label)
        if baselines and label in baselines:
            draw(baselines[label], ls="--", color=line.get_color(), label=f"random, same shape as {label.split(' ')[0]}")
    ax.set_xlabel("k (number of singular directions kept)")
    ax.set_ylabel("energy captured")
    ax.set_ylim(0, 1.02)
    ax.axhline(0.9, color="grey", ls=":", lw=1)
    ax.legend(fontsize=8)
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


# ------------------------------------------------------------------------------- 02 LoRA from scratch
def plot_lora_diagram(d_in: int = 576, d_out: int = 576, r: int = 8, alpha: float = 16, *, ax=None):
    """The LoRA block: x goes through the frozen W and, beside it, down through A (r x d_in) to r numbers and
    up through B (d_out x r); the side path is scaled by alpha/r and added. Heights are drawn to scale of the
    dimensions (d_in, r, d_out), so the bottleneck is visible. Returns the Axes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Polygon, Rectangle

    ax = ax or plt.subplots(figsize=(10, 4.2))[1]
    unit = 2.4 / max(d_in, d_out)  # data units per dimension
    h_in, h_out, h_r = d_in * unit, d_out * unit, max(r * unit, 0.08)
    top, bottom = 2.6, 0.0  # vertical centres of the frozen path and the LoRA path

    def arrow(x0, y0, x1, y1, **kw):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=14, lw=1.4,
                                     color=kw.pop("color", "black"), **kw))

    # input x
    ax.add_patch(Rectangle((0, 1.3 - h_in / 2), 0.25, h_in, color="tab:gray", alpha=0.6))
    ax.text(0.12, 1.3 - h_in / 2 - 0.25, f"x\n({d_in})", ha="center", va="top")
    # frozen W
    ax.add_patch(Rectangle((2.0, top - h_out / 2), 2.2, h_out, color="tab:blue", alpha=0.25))
    ax.text(3.1, top, f"W  (frozen)\n{d_out} × {d_in}", ha="center", va="center")
    arrow(0.3, 1.3 + 0.2, 1.95, top)
    # A: d_in -> r, B: r -> d_out (trapezoids that narrow, then widen)
    ax.add_patch(Polygon([(1.5, bottom - h_in / 2), (1.5, bottom + h_in / 2), (2.9, bottom + h_r / 2),
                          (2.9, bottom - h_r / 2)], color="tab:orange", alpha=0.45))
    ax.text(2.0, bottom, f"A\n{r} × {d_in}", ha="center", va="center")
    ax.add_patch(Polygon([(3.3, bottom - h_r / 2), (3.3, bottom + h_r / 2), (4.7, bottom + h_out / 2),
                          (4.7, bottom - h_out / 2)], color="tab:green", alpha=0.45))
    ax.text(4.2, bottom, f"B\n{d_out} × {r}", ha="center", va="center")
    ax.text(3.1, bottom + h_r / 2 + 0.12, f"r = {r}", ha="center", va="bottom", fontsize=9)
    arrow(0.3, 1.3 - 0.2, 1.45, bottom)
    arrow(2.9, bottom, 3.3, bottom)
    # scale alpha / r
    ax.add_patch(plt.Circle((5.55, bottom), 0.45, color="tab:purple", alpha=0.25))
    ax.text(5.55, bottom, f"× α/r\n= {alpha / r:g}", ha="center", va="center", fontsize=9)
    arrow(4.75, bottom, 5.08, bottom)
    # sum and output
    ax.add_patch(plt.Circle((6.6, 1.3), 0.25, fill=False, lw=1.4))
    ax.text(6.6, 1.3, "+", ha="center", va="center", fontsize=16)
    arrow(4.25, top, 6.42, 1.45)
    arrow(5.95, bottom + 0.2, 6.45, 1.12)
    ax.add_patch(Rectangle((7.3, 1.3 - h_out / 2), 0.25, h_out, color="tab:gray", alpha=0.6))
    ax.text(7.42, 1.3 - h_out / 2 - 0.25, f"h\n({d_out})", ha="center", va="top")
    arrow(6.86, 1.3, 7.28, 1.3)
    ax.set_title("h = W x + (α/r) · B (A x)\n"
                 f"trainable: A and B, r·(d_in + d_out) = {r * (d_in + d_out):,} numbers; W: {d_in * d_out:,}, frozen",
                 fontsize=10)
    ax.set_xlim(-0.3, 8.0)
    ax.set_ylim(-1.9, 4.1)
    ax.set_aspect("equal")
    ax.axis("off")
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


def plot_4bit_grids(codes: dict, *, sigma: float, scaled: dict | None = None, title: str | None = None):
    """One row per 4-bit format, on a shared [-1, 1] axis: the format's 16 (or 15) levels as stems, the borders
    between them (where rounding switches level) as faint lines, and the normal density N(0, sigma²) that NF4's
    levels are quantiles of (sigma = 1 / ndtri(offset): ±1 sits at the offset quantile). ``scaled`` maps a label
    to values already scaled into [-1, 1] (e.g. Gaussian blocks divided by their absmax), drawn as a histogram
    in every row: the values each grid really has to cover. Returns the Axes."""
    import math

    import matplotlib.pyplot as plt
    import torch

    fig, axes = plt.subplots(len(codes), 1, figsize=(10, 1.9 * len(codes)), sharex=True)
    axes = list(getattr(axes, "flat", [axes]))
    xs = torch.linspace(-1.05, 1.05, 500)
    density = torch.exp(-0.5 * (xs / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    for ax, (label, code) in zip(axes, codes.items(), strict=True):
        levels = torch.as_tensor(code).float().unique().sort().values  # FP4 holds -0 and +0: one level
        for name, values in (scaled or {}).items():
            ax.hist(torch.as_tensor(values).reshape(-1).numpy(), bins=120, range=(-1.05, 1.05), density=True,
                    color="tab:gray", alpha=0.35, label=name)
        ax.plot(xs.numpy(), density.numpy(), color="tab:blue", lw=1.2, label=f"N(0, {sigma:.2f}²): what NF4 assumes")
        for border in ((levels[:-1] + levels[1:]) / 2).tolist():
            ax.axvline(border, color="black", alpha=0.12, lw=0.8)
        ax.stem(levels.numpy(), [density.max().item() * 1.08] * len(levels), linefmt="tab:red", markerfmt="o",
                basefmt=" ")
        ax.set_ylabel(f"{label}\n{len(levels)} levels", rotation=0, ha="right", va="center")
        ax.set_yticks([])
        ax.set_xlim(-1.08, 1.08)
    axes[-1].set_xlabel("value after dividing by the block's absmax")
    fig.suptitle(title or "4-bit grids on [-1, 1]: where each format puts its levels (red)")
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.94), ncol=2, fontsize=8, frameon=False)
    return axes


def plot_level_usage(usage: dict, *, ideal: float = 1 / 16):
    """Bars of the share of values each code receives (``nf4.level_usage``), one group per label, with the
    equal share ``ideal`` dashed. Returns the Axes."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2))
    width = 0.8 / len(usage)
    for i, (label, shares) in enumerate(usage.items()):
        ax.bar([c + (i - (len(usage) - 1) / 2) * width for c in range(len(shares))],
               [100 * float(v) for v in shares], width=width, label=label)
    ax.axhline(100 * ideal, color="black", ls="--", lw=1, label=f"equal share ({100 * ideal:.2f}%)")
    ax.set(xlabel="NF4 code (0 = -1.0, 7 = 0, 15 = +1.0)", ylabel="% of the values", xticks=range(16))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return ax


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
