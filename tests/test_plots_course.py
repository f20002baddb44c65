"""The figures notebooks 01, 02 and 04 draw: they render headless and say what the course says (shapes in PEFT's
A/B convention, NF4's levels where the normal density is)."""

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from course_lib import lowrank, nf4, plots  # noqa: E402


def _texts(ax):
    return [t.get_text() for t in ax.texts] + [ax.get_title()]


def test_lora_diagram_labels_the_factors_in_peft_convention():
    ax = plots.plot_lora_diagram(d_in=576, d_out=1536, r=8, alpha=16)
    texts = " ".join(_texts(ax))
    assert "A\n8 × 576" in texts and "B\n1536 × 8" in texts  # A is r × d_in, B is d_out × r
    assert "× α/r\n= 2" in texts and "W  (frozen)\n1536 × 576" in texts
    assert f"{8 * (576 + 1536):,} numbers" in texts


def test_4bit_grids_draw_every_level_and_the_normal_nf4_assumes():
    g = torch.randn(100, 64, generator=torch.Generator().manual_seed(0))
    axes = plots.plot_4bit_grids({"NF4": nf4.NF4_CODE, "FP4": nf4.FP4_CODE, "INT4": nf4.INT4_CODE},
                                 sigma=1 / nf4.nf4_edge_sigma(), scaled={"blocks": g / g.abs().amax(1, keepdim=True)})
    assert [ax.get_ylabel() for ax in axes] == ["NF4\n16 levels", "FP4\n15 levels", "INT4\n15 levels"]
    stems = [c for c in axes[0].containers if type(c).__name__ == "StemContainer"][0]
    assert torch.allclose(torch.tensor(stems.markerline.get_xdata(), dtype=torch.float32), nf4.NF4_CODE)
    ax = plots.plot_level_usage({"x": nf4.level_usage(g.reshape(-1))})
    assert len(ax.patches) == 16


def test_spectra_draw_a_random_baseline_of_each_matrix_own_shape():
    W = torch.randn(20, 60, generator=torch.Generator().manual_seed(1))
    spectra = {"W (trained)": lowrank.singular_values(W)}
    baselines = {"W (trained)": lowrank.singular_values(lowrank.random_like(W))}
    ax = plots.plot_spectra(spectra, baselines=baselines)
    assert [line.get_linestyle() for line in ax.get_lines()] == ["-", "--"]
    assert ax.get_lines()[0].get_color() == ax.get_lines()[1].get_color()
    assert ax.get_legend().get_texts()[1].get_text() == "random, same shape as W"
