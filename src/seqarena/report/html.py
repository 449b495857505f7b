"""One self-contained HTML page: inline SVG charts, tables, the machine and the commands.

The page loads nothing: no script, no font, no stylesheet from elsewhere. A Content-Security-Policy
says so to the browser, which then refuses any request a future edit might add by mistake.
Each chart is also written as PNG and SVG in `<report>_figures/`, for papers and READMEs.
"""

from __future__ import annotations

import datetime
import html
import io
import math
import re
import shlex
import sys
import urllib.parse
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import matplotlib

from seqarena import __version__
from seqarena.errors import UserError
from seqarena.fileio import atomic_write, atomic_write_text
from seqarena.report.collect import Inputs, Run, Source, collect
from seqarena.bench.ledger import BreakEven, LedgerRow
from seqarena.report.comparison import comparison_charts
from seqarena.report.serving import ledger_map
from seqarena.report.plots import analysis_charts, metric_vs_length, training_curves
from seqarena.report.speed import bench_charts, decode_position
from seqarena.report.style import STYLE, Chart, Palette, slug
from seqarena.results import BenchResult, machine_label

SECTIONS = ["Training", "Accuracy", "Speed", "Memory", "Inference", "Serving", "Gradient flow",
            "Inside the models"]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def write_report(paths: list, out: str | Path | None = None,
                 log: Callable[[str], None] | None = _stderr) -> Path:
    """Read runs, compare dirs, bench results and analyses under `paths`; write one HTML page.

    `out` defaults to report.html inside the first path (when it is a directory). Whatever could
    not be read is named on the page and, one line each, passed to `log`.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("nothing to report: give run directories, compare directories or "
                        "bench results")
    inputs = collect(paths)
    if inputs.empty():
        why = "; ".join(inputs.skipped) or "nothing found"
        raise UserError(f"nothing to report in {', '.join(map(str, paths))}: {why}")
    if out is None:
        out = (paths[0] if paths[0].is_dir() else paths[0].parent) / "report.html"
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {out}: the report is an HTML file; give a name ending in .html")
    for line in inputs.skipped:
        if log:
            log(f"seqarena report: skipped {line}")
    figures = out.with_name(out.stem + "_figures")
    colour = Palette.of(inputs)  # one colour per model, in charts and tables alike
    with matplotlib.rc_context(STYLE):
        charts, found = _charts(inputs, colour)
        rendered = [(c, _render(c, figures)) for c in charts]
    atomic_write_text(out, _page(inputs, colour, rendered, found, figures.name))
    return out


def _charts(inputs: Inputs, colour: Palette) -> tuple[list[Chart], list[dict]]:
    summarised = {s.task for s in inputs.comparisons}  # their charts draw the summary's intervals
    charts = training_curves(inputs.runs, colour) + comparison_charts(inputs.comparisons, colour)
    charts += metric_vs_length([r for r in inputs.runs if r.task not in summarised], colour)
    bench, found = bench_charts(inputs.benches, colour)
    charts += bench
    for b in inputs.benches:
        if b.serving.get("ledger"):
            charts += ledger_map([LedgerRow(**r) for r in b.serving["ledger"]], colour,
                                 [BreakEven(**x) for x in b.serving.get("break_even", [])],
                                 [b.source])
    for analysis in inputs.analyses:
        charts += analysis_charts(analysis, colour)
    charts.sort(key=lambda c: SECTIONS.index(c.section) if c.section in SECTIONS else -1)
    _unique_slugs(charts)
    return charts, found


def _unique_slugs(charts: list[Chart]) -> None:
    seen: dict[str, int] = defaultdict(int)
    for c in charts:
        seen[c.slug] += 1
        if seen[c.slug] > 1:
            c.slug = f"{c.slug}_{seen[c.slug]}"


def _render(chart: Chart, figures: Path) -> str:
    """Save the PNG and SVG copies; return the SVG, its ids made unique within the page."""
    buf = io.StringIO()
    chart.fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    atomic_write_text(figures / f"{chart.slug}.svg", svg)
    atomic_write(figures / f"{chart.slug}.png",
                 lambda tmp: chart.fig.savefig(tmp, format="png", facecolor="white",
                                               metadata={"Software": None}))
    svg = svg[svg.index("<svg"):]
    # Every matplotlib SVG numbers its clip paths from p0: prefix ids so charts do not share them.
    prefix = f"{chart.slug}-"
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m[1]}"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m[1]})", svg)
    svg = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m[1]}"', svg)
    # Shown at its own size (text at its real point size), shrunk only on a narrow screen.
    svg = re.sub(r'<svg([^>]*?) width="([^"]*)" height="[^"]*"',
                 lambda m: f'<svg{m[1]} class="chart" style="max-width:{m[2]}" role="img" '
                           f'aria-label="{html.escape(chart.title)}"', svg, count=1)
    return svg


# --- page -----------------------------------------------------------------------------------

def _page(inputs: Inputs, colour: Palette, rendered: list[tuple[Chart, str]],
          found: list[dict], figures_dir: str) -> str:
    sources = inputs.sources()
    machines = list(dict.fromkeys(machine_label(s.machine) for s in sources if s.machine))
    parts = [_header(machines)]
    nav = [("summary", "Summary")] if inputs.runs else []
    nav += [("bench", "Bench tables")] if any(b.results for b in inputs.benches) else []
    nav += [(_anchor(s), s) for s in SECTIONS if any(c.section == s for c, _ in rendered)]
    nav += [("reproduce", "Reproduce")]
    parts.append("<nav>" + "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in nav)
                 + "</nav>")
    if inputs.skipped:
        parts.append('<section class="notice" id="skipped"><h2>Skipped</h2><p>These inputs could '
                     'not be shown, or only in part:</p><ul>'
                     + "".join(f"<li><code>{html.escape(s)}</code></li>" for s in inputs.skipped)
                     + "</ul></section>")
    if inputs.verdicts:
        forests = {c.slug: _figure(c, svg, figures_dir) for c, svg in rendered
                   if c.section == "Verdicts"}
        parts.append(_verdicts(inputs, forests))
    glance = _glance(inputs, found)
    if glance:
        parts.append(glance)
    if inputs.runs:
        parts.append(_summary_table(inputs, colour))
    if any(b.results for b in inputs.benches):
        parts.append(_bench_tables(inputs, colour))
    for section in SECTIONS:  # "Verdicts" charts stand in the verdicts section, beside their text
        charts = [(c, svg) for c, svg in rendered if c.section == section]
        if charts:
            parts.append(f'<section id="{_anchor(section)}"><h2>{html.escape(section)}</h2>'
                         + "".join(_figure(c, svg, figures_dir) for c, svg in charts)
                         + "</section>")
    parts.append(_reproduce(sources))
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts.append(f'<footer>Written by seqarena {__version__} on {now}. Charts are also in '
                 f'<code>{html.escape(figures_dir)}/</code> as PNG and SVG.</footer>')
    return (_HEAD + "\n".join(parts) + "\n</main></body></html>\n")


def _header(machines: list[str]) -> str:
    where = "".join(f"<li>{html.escape(m)}</li>" for m in machines) or "<li>unknown machine</li>"
    return ('<header><h1>seqarena report</h1><p class="lede">Recurrent networks against '
            'Transformers, measured. <span class="chip recurrent">recurrent</span> models are '
            'drawn in blues, <span class="chip attention">attention</span> models in oranges.</p>'
            f'<div class="machine"><span>Measured on</span><ul>{where}</ul></div></header>')


def _verdicts(inputs: Inputs, forests: dict[str, str]) -> str:
    """The comparison's answer first: per length, best at equal steps and at equal training time,
    fastest to train, each beside its paired differences; then the failed runs."""
    out = ['<section id="verdicts" class="glance"><h2>Verdicts</h2><p class="hint">A model is '
           'named best only when a paired test on the same examples separates it from every other '
           'model (Holm-corrected); otherwise the line is a tie. Throughput: the 25th to 75th '
           'percentile of the logged windows must not overlap.</p>']
    if not inputs.comparisons:  # a file from before the summary: its lines only
        out.append("<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in inputs.verdicts)
                   + "</ul>")
    for s in inputs.comparisons:
        out.append(f'<p class="hint">{html.escape(s.task)}: {html.escape(s.coverage)}.</p>')
        for L in sorted({d["seq_len"] for d in s.verdicts}):
            lines = "".join(f"<li>{html.escape(d['text'])}</li>" for d in s.verdicts
                            if d["seq_len"] == L)
            forest = forests.get(f"compare_{slug(s.task)}_forest_L{L}", "")
            out.append(f'<div class="verdict"><ul>{lines}</ul>{forest}</div>')
        if s.failed:
            out.append("<p><b>Failed runs</b> (left out of every verdict):</p><ul>" + "".join(
                f"<li>{html.escape(f.model)} L = {f.seq_len} seed {f.seed}: "
                f'<span class="status bad">{html.escape(f.status)}</span> {html.escape(f.why)}</li>'
                for f in s.failed) + "</ul>")
    return "".join(out) + "</section>"


def _glance(inputs: Inputs, found: list[dict]) -> str:
    items = [f"<li><b>Held equal</b>: {html.escape(h)}</li>" for h in inputs.held_equal]
    groups = defaultdict(list)
    for r in inputs.runs:
        if r.result.status == "ok" and _finite(r.result.metric):
            groups[(r.task, r.seq_len)].append(r.result)
    if inputs.verdicts:  # a comparison's verdicts say who is best, the noise taken into account
        groups.clear()
    for (task, seq_len), res in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        means = defaultdict(list)
        for r in res:
            means[r.model].append(r.metric)
        shown = ", ".join(f"{m} {_fmt(_mean(v))}" for m, v in means.items())
        items.append(f'<li><b>{html.escape(task)}, L = {seq_len}</b>: '
                     f'{html.escape(res[0].metric_name)} {html.escape(shown)} (separate runs, '
                     f'not a comparison: no verdict, so no model is named best)</li>')
    by_mode = defaultdict(list)
    for c in found:
        by_mode[c["mode"]].append(c)
    for mode, cs in by_mode.items():
        cs.sort(key=lambda c: c["at"])
        said = "; ".join(f"{html.escape(c['other'])} overtakes {html.escape(c['leader'])} "
                         f"at L = {c['at']:,} ({_ratio_text(c)})" for c in cs)
        items.append(f"<li><b>Crossover in {html.escape(mode)} throughput</b>: {said}</li>")
    stated = [c["text"] for b in inputs.benches for c in b.crossovers if "text" in c]
    if stated:  # the bench's own lines: every pair, at the lengths it measured
        items.append(f"<li><details><summary>Every crossover the bench reported "
                     f"({len(stated)})</summary><ul>"
                     + "".join(f"<li>{html.escape(line)}</li>" for line in stated)
                     + "</ul></details></li>")
    if not items:
        return ""
    return '<section id="glance" class="glance"><h2>At a glance</h2><ul>' + "".join(items) \
        + "</ul></section>"


def _ratio_text(c: dict) -> str:
    """A crossover's ratio with its interval, and whether it lies within the noise."""
    interval = "" if c.get("low") is None else f" [{c['low']:.2f}-{c['high']:.2f}]"
    return f"{c['ratio']:.2f}x{interval}" + ("; within the noise" if c.get("within_noise") else "")


def _summary_table(inputs: Inputs, colour: Palette) -> str:
    rows = sorted(inputs.runs, key=lambda r: (r.task, r.seq_len or 0, colour.order(r.model),
                                              r.seed or 0))
    head = ["model", "task", "L", "params", "metric [95 % interval]", "lr",
            "train tokens/s [25-75 %]", "peak memory", "train time", "wall time", "steps", "seed",
            "status"]
    body = []
    for r in rows:
        res = r.result
        is_best = res.status == "ok" and inputs.named_best(r.task, r.seq_len) == r.model
        metric = (f'<td class="num{" best" if is_best else ""}" data-value="{res.metric}">'
                  f'<span class="unit">{html.escape(res.metric_name)}</span> '
                  f'{_fmt(res.metric)}{_interval(res.metric_ci, _fmt)}</td>'
                  if _finite(res.metric) else '<td class="num">–</td>')
        speed = (f'<td class="num" data-value="{res.train_tokens_per_s}">'
                 f'{res.train_tokens_per_s:,.0f}'
                 f'{_interval(res.train_tokens_per_s_spread, lambda v: f"{v:,.0f}")}</td>')
        lr = _td("–") if res.lr is None else \
            _td(f"{res.lr:g}" + (" (tuned)" if res.lr_tuned else ""))
        cells = [_model_cell(r.model, colour), _td(r.task), _num(res.seq_len),
                 _num(res.params), metric, lr, speed,
                 _num(res.peak_mem_bytes / 2**20 if res.peak_mem_bytes else None, ",.1f",
                      " MiB", raw=res.peak_mem_bytes),
                 _num(res.train_s, ".1f", " s", raw=res.train_s),
                 _num(res.wall_s, ".1f", " s", raw=res.wall_s), _num(res.steps), _num(res.seed),
                 f'<td><span class="status {"ok" if res.status == "ok" else "bad"}">'
                 f'{html.escape(res.status)}</span></td>']
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ('<section id="summary"><h2>Summary</h2><p class="hint">One row per trained model. '
            'The model a comparison\'s verdict named best is highlighted (nothing on a tie). Train '
            'time counts training '
            'steps only; wall time adds evaluation and checkpoints. "(tuned)": the rate the '
            'validation search chose for the model.</p>'
            + _table(head, body, "summary", numeric=range(2, 12)) + "</section>")


def _interval(pair: list[float] | None, fmt) -> str:
    if not pair:
        return ""
    return f' <span class="unit">[{html.escape(fmt(pair[0]))}, {html.escape(fmt(pair[1]))}]</span>'


def _bench_tables(inputs: Inputs, colour: Palette) -> str:
    """One pivot per mode: a row per model, a column per length (position for decode)."""
    rows = [r for b in inputs.benches for r in b.results]
    out = ['<section id="bench"><h2>Bench tables</h2><p class="hint">Medians of repeated timings. '
           'Throughput in tokens/s for train, forward and prefill; milliseconds per token for '
           'decode. Failed points show their status.</p>']
    for mode in ("train", "forward", "prefill", "decode"):
        sel = [r for r in rows if r.mode == mode]
        if not sel:
            continue
        x = decode_position if mode == "decode" else (lambda r: r.seq_len)
        cols = sorted({x(r) for r in sel})
        lines = defaultdict(dict)
        for r in sel:
            lines[_bench_key(r)][x(r)] = r
        one_setting = len({k[2] for k in lines}) == 1
        head = ["model", "impl"] + ([] if one_setting else ["setting"]) \
            + [f"{'pos' if mode == 'decode' else 'L'} {c:,}" for c in cols]
        body = []
        for (model, impl, setting), cells in sorted(lines.items(),
                                                    key=lambda kv: (colour.order(kv[0][0]), kv[0])):
            tds = [_model_cell(model, colour), _td(impl)] + ([] if one_setting else [_td(setting)])
            for c in cols:
                r = cells.get(c)
                tds.append(_bench_cell(r, mode))
            body.append("<tr>" + "".join(tds) + "</tr>")
        unit = "ms per token" if mode == "decode" else "tokens/s"
        if one_setting:
            unit += f"; {next(iter(lines))[2]}"
        out.append(f'<details open><summary>{mode} ({unit})</summary>'
                   + _table(head, body, f"bench-{mode}",
                            numeric=range(len(head) - len(cols), len(head)))
                   + "</details>")
    return "".join(out) + "</section>"


def _bench_key(r: BenchResult) -> tuple[str, str, str]:
    return r.model, r.impl, f"{r.device} {r.dtype}, B={r.batch} D={r.d_model} " \
                            f"layers={r.layers}, {r.threads} threads"


def _bench_cell(r: BenchResult | None, mode: str) -> str:
    if r is None:
        return '<td class="num">–</td>'
    if r.status != "ok":
        return f'<td class="num"><span class="status bad">{html.escape(r.status)}</span></td>'
    if mode == "decode":
        v = r.latency_s * 1e3 if _finite(r.latency_s) else None
        return _num(v, ".3g", raw=r.latency_s)
    mfu = f'<span class="sub">MFU {r.mfu:.1%}</span>' if _finite(r.mfu) else ""
    if not _finite(r.tokens_per_s):
        return '<td class="num">–</td>'
    return f'<td class="num" data-value="{r.tokens_per_s}">{r.tokens_per_s:,.0f}{mfu}</td>'


def _figure(c: Chart, svg: str, figures_dir: str) -> str:
    machines = list(dict.fromkeys(machine_label(s.machine) for s in c.sources if s.machine))
    commands = list(dict.fromkeys(shlex.join(s.command) for s in c.sources if s.command))
    meta = ""
    if machines:
        meta += f'<div><span class="k">machine</span> {html.escape("; ".join(machines))}</div>'
    for cmd in commands:
        meta += f'<div><span class="k">reproduce</span> <code>{html.escape(cmd)}</code></div>'
    where = urllib.parse.quote(f"{figures_dir}/{c.slug}")
    links = f'<a href="{where}.png">PNG</a> · <a href="{where}.svg">SVG</a>'
    return (f'<figure id="fig-{c.slug}"><div class="fighead"><h3>{html.escape(c.title)}</h3>'
            f'<span class="links">{links}</span></div>{svg}<figcaption><p>{html.escape(c.note)}</p>'
            f'{meta}</figcaption></figure>')


def _reproduce(sources: list[Source]) -> str:
    rows = []
    for s in sources:
        rows.append("<tr>" + _td(s.kind) + f"<td><code>{html.escape(str(s.path))}</code></td>"
                    + _td(machine_label(s.machine) if s.machine else "–")
                    + f"<td><code>{html.escape(shlex.join(s.command) if s.command else '–')}"
                    + "</code></td>"
                    + "</tr>")
    return ('<section id="reproduce"><h2>Reproduce</h2><p class="hint">Every file this report '
            'read, the machine it was measured on, and the command that wrote it.</p>'
            + _table(["kind", "file", "machine", "command"], rows, "sources") + "</section>")


# --- small HTML helpers ---------------------------------------------------------------------

def _table(head: list[str], body: list[str], name: str, numeric: range = range(0)) -> str:
    """A table; the columns in `numeric` hold numbers, so their headers align right too."""
    return (f'<div class="scroll"><table class="{name}"><thead><tr>'
            + "".join(f'<th{" class=num" if i in numeric else ""}>{html.escape(h)}</th>'
                      for i, h in enumerate(head))
            + "</tr></thead><tbody>" + "".join(body) + "</tbody></table></div>")


def _td(v: Any) -> str:
    return f"<td>{html.escape(str(v))}</td>"


def _num(v: Any, spec: str = ",", unit: str = "", raw: Any = None) -> str:
    if not _finite(v):
        return '<td class="num">–</td>'
    raw = v if raw is None else raw
    text = format(v, spec) if not (spec == "," and isinstance(v, float) and not v.is_integer()) \
        else _fmt(v)
    return f'<td class="num" data-value="{raw}">{text}{unit}</td>'


def _model_cell(model: str, colour: Palette) -> str:
    return (f'<td class="model"><span class="swatch" style="background:{colour(model)}"></span>'
            f'{html.escape(model)}</td>')


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _anchor(s: str) -> str:
    return s.lower().replace(" ", "-")


_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>seqarena report</title>
<style>
:root { --ink:#0f172a; --muted:#475569; --faint:#94a3b8; --line:#e2e8f0; --bg:#f8fafc;
        --card:#ffffff; --rec:#2563eb; --att:#ea580c; --good:#15803d; --bad:#b91c1c; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
             sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 28px 60px; }
header h1 { font-size: 30px; letter-spacing: -0.02em; margin: 0 0 4px; }
.lede { color: var(--muted); margin: 0 0 12px; }
.machine { display:flex; gap:10px; align-items:baseline; color:var(--muted); font-size:14px; }
.machine ul { margin:0; padding:0; list-style:none; }
.machine li { color: var(--ink); font-weight: 500; }
nav { position: sticky; top: 0; z-index: 2; background: rgba(248,250,252,.94);
      border-bottom: 1px solid var(--line); margin: 18px -28px 8px; padding: 8px 28px;
      display:flex; flex-wrap:wrap; gap: 4px 18px; font-size:14px; }
nav a { color: var(--muted); text-decoration: none; }
nav a:hover { color: var(--ink); }
h2 { font-size: 21px; margin: 34px 0 10px; letter-spacing: -0.01em; }
h3 { font-size: 16px; margin: 0; }
section { scroll-margin-top: 48px; }
.hint { color: var(--muted); margin: -4px 0 10px; font-size: 14px; }
.chip { display:inline-block; padding: 0 8px; border-radius: 999px; font-size: 13px;
        color:#fff; font-weight:600; }
.chip.recurrent { background: var(--rec); } .chip.attention { background: var(--att); }
.notice { background:#fff7ed; border:1px solid #fed7aa; border-radius:10px;
          padding: 4px 18px 8px; margin-top:18px; }
.notice h2 { font-size:16px; margin: 10px 0 4px; color:#9a3412; }
.notice p { margin: 0; color: var(--muted); font-size:14px; }
.notice li { font-size: 13.5px; margin: 3px 0; }
.glance { margin-top: 18px; background: var(--card); border:1px solid var(--line);
          border-radius:12px; padding: 2px 22px 10px; }
.glance h2 { font-size: 17px; margin: 14px 0 6px; }
.glance li { margin: 4px 0; }
.verdict { display: flex; flex-wrap: wrap; gap: 12px; align-items: center;
  border-top: 1px solid var(--line); padding: 6px 0; }
.verdict ul { flex: 1 1 380px; }
.scroll { overflow-x: auto; background: var(--card); border: 1px solid var(--line);
          border-radius: 10px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th { text-align:left; font-weight:600; color: var(--muted); font-size: 12.5px;
     text-transform: uppercase; letter-spacing: .03em; padding: 9px 12px;
     border-bottom: 1px solid var(--line); white-space: nowrap; }
td { padding: 7px 12px; border-bottom: 1px solid #f1f5f9; vertical-align: top; }
tbody tr:nth-child(even) { background: #fbfdff; }
tbody tr:hover { background: #f1f5f9; }
th.num { text-align: right; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { font-weight: 700; color: var(--good); }
td.model { font-weight: 600; white-space: nowrap; }
.swatch { display:inline-block; width: 10px; height: 10px; border-radius: 3px; margin-right: 7px; }
.unit, .sub { color: var(--faint); font-weight: 400; font-size: 12px; }
.sub { display:block; }
.status { font-size: 12px; padding: 1px 8px; border-radius: 999px; font-weight: 600; }
.status.ok { background:#dcfce7; color: var(--good); }
.status.bad { background:#fee2e2; color: var(--bad); }
details { margin: 10px 0; } summary { cursor: pointer; font-weight: 600; margin-bottom: 6px; }
figure { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
         margin: 0 0 18px; padding: 16px 18px 12px; }
.fighead { display:flex; justify-content: space-between; align-items: baseline;
           margin-bottom: 6px; }
.links { font-size: 13px; } .links a { color: var(--muted); }
svg.chart { width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { font-size: 13.5px; color: var(--muted); border-top: 1px solid #f1f5f9;
             margin-top: 8px; padding-top: 8px; }
figcaption p { margin: 0 0 6px; color: var(--ink); }
figcaption .k { display:inline-block; min-width: 72px; color: var(--faint);
                text-transform: uppercase; font-size: 11.5px; letter-spacing: .04em; }
code { font: 12.5px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono",
             monospace; background: #f1f5f9; padding: 1px 5px; border-radius: 5px;
       word-break: break-all; }
footer { margin-top: 40px; color: var(--faint); font-size: 13px; }
</style></head>
<body><main>
"""
