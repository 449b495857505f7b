"""The charts of one analysis (gradients.json, attention.json) as PNG and SVG beside it."""

from __future__ import annotations

from pathlib import Path

from seqarena.report.collect import collect
from seqarena.report.plots import analysis_charts
from seqarena.report.style import STYLE, Palette


def write_analysis_charts(path: str | Path) -> list[Path]:
    """The analysis' charts beside its JSON, drawn as the report draws them; the files written."""
    import matplotlib

    from seqarena.fileio import atomic_write

    path = Path(path)
    inputs = collect([path])
    written = []
    with matplotlib.rc_context(STYLE):
        for chart in analysis_charts(inputs.analyses[0], Palette.of(inputs)):
            name = chart.slug if path.stem == "gradients" else path.stem  # one map chart per run
            for fmt in ("png", "svg"):
                target = path.parent / f"{name}.{fmt}"
                atomic_write(target,
                             lambda tmp: chart.fig.savefig(tmp, format=fmt, facecolor="white"))
                written.append(target)
    return written
