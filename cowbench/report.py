"""`cowbench report DIR`: one self-contained HTML page and one Markdown file for every
experiment found under DIR.

An experiment run leaves `<name>.experiment.json` next to its tables and figures
(see cowbench/experiment.py); the report reads those, in the suite's order, and
shows for each: what it reproduces, the command that made it, the published
numbers next to the simulated ones, a summary table and every figure. The HTML
embeds the figures (base64 PNG) and its style, so it can be mailed or attached
as one file; the Markdown links the PNGs by relative path, for GitHub.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from pathlib import Path

import pandas as pd

from .fileio import atomic_write

__all__ = ["write_report", "find_runs"]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #1f77b4; padding-bottom: .2em; }
h2 { margin-top: 2.2em; border-bottom: 1px solid #ccc; padding-bottom: .15em; }
h3 { margin-bottom: .3em; color: #444; }
p.meta, p.note { color: #555; font-size: 90%; }
code, pre { background: #f5f5f5; border-radius: 3px; font-size: 90%; }
code { padding: .1em .3em; }
pre { padding: .6em; overflow-x: auto; white-space: pre-wrap; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 88%; }
th, td { border: 1px solid #ddd; padding: .25em .55em; text-align: left; vertical-align: top; }
th { background: #f0f4f8; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #666; font-size: 85%; }
nav ol { columns: 2; }
"""


def find_runs(directory) -> list[tuple[Path, dict]]:
    """(directory, metadata) of every experiment run under `directory`, in the suite's order."""
    from .experiment import META_SUFFIX, ORDER

    runs = []
    for path in sorted(Path(directory).rglob(f"*{META_SUFFIX}")):
        if "_points" in path.parts:
            continue
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if meta.get("cowbench_experiment") == 1 and "name" in meta:
            runs.append((path.parent, meta))
    rank = {n: i for i, n in enumerate(ORDER)}
    runs.sort(key=lambda r: (rank.get(r[1]["name"], len(ORDER)), r[1]["name"], str(r[0])))
    return runs


def _read_table(d: Path, name: str | None) -> pd.DataFrame | None:
    if not name or not (d / name).exists():
        return None
    df = pd.read_csv(d / name)
    return df.fillna("")


def _fmt(v) -> str:
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for v in rec:
            cls = ' class="num"' if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            cells.append(f"<td{cls}>{html.escape(_fmt(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _md_cell(v) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


def _md_table(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    out = ["| " + " | ".join(_md_cell(c) for c in cols) + " |",
           "| " + " | ".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns) + " |"]
    for rec in df.itertuples(index=False):
        out.append("| " + " | ".join(_md_cell(v) for v in rec) + " |")
    return "\n".join(out)


def _paragraphs(text: str) -> list[str]:
    return [" ".join(line.strip() for line in block.splitlines()) if not block.lstrip().startswith("-")
            else block for block in text.strip().split("\n\n") if block.strip()]


def _html_text(text: str) -> str:
    out = []
    for block in _paragraphs(text):
        lines = block.splitlines()
        if block.lstrip().startswith("-"):
            items, cur = [], []
            for ln in lines:
                if ln.lstrip().startswith("- ") and cur:
                    items.append(" ".join(cur))
                    cur = []
                cur.append(ln.strip().removeprefix("- "))
            items.append(" ".join(cur))
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items if i) + "</ul>")
        else:
            out.append(f"<p>{html.escape(block)}</p>")
    return "\n".join(out)


def _anchor(name: str) -> str:
    return "exp-" + "".join(c if c.isalnum() else "-" for c in name)


def write_report(directory, out_html=None, out_md=None, title: str = "cowbench experiments") -> tuple[Path, Path]:
    """Write report.html (self-contained) and report.md into `directory`; return both paths."""
    directory = Path(directory)
    runs = find_runs(directory)
    if not runs:
        raise FileNotFoundError(f"cowbench report: no experiment results under {directory} "
                                f"(run `cowbench run NAME --out {directory}/NAME` first)")
    out_html = Path(out_html) if out_html else directory / "report.html"
    out_md = Path(out_md) if out_md else directory / "report.md"
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    quick = any(m.get("quick") for _, m in runs)

    h = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
         f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
         f"<p class='meta'>{len(runs)} experiments, report written {now}"
         f"{' (some run with the quick grid)' if quick else ''}. Every table and figure below was produced "
         "by the simulator; published numbers are quoted next to them.</p>", "<nav><ol>"]
    md = [f"# {title}", "", f"{len(runs)} experiments, report written {now}"
          f"{' (some run with the quick grid)' if quick else ''}. Every table and figure below was produced "
          "by the simulator; published numbers are quoted next to them.", ""]
    for _, m in runs:
        h.append(f"<li><a href='#{_anchor(m['name'])}'>{html.escape(m['title'] or m['name'])}</a></li>")
        md.append(f"1. [{m['title'] or m['name']}](#{_anchor(m['name'])})")
    h.append("</ol></nav>")
    md.append("")

    for d, m in runs:
        name = m["name"]
        tables = m.get("tables", {})
        h.append(f"<h2 id='{_anchor(name)}'>{html.escape(m['title'] or name)}</h2>")
        md += [f"<a id='{_anchor(name)}'></a>", "", f"## {m['title'] or name}", ""]
        done = m.get("points_computed", m["points"])
        timing = (f"{m['seconds']:g} s" if done == m["points"]
                  else f"{done} computed and {m['points'] - done} reused in {m['seconds']:g} s")
        grid_kind = " (quick grid)" if m.get("quick") else ""
        h.append(f"<p class='meta'>experiment <code>{html.escape(name)}</code>, {m['points']} points{grid_kind}, "
                 f"{html.escape(timing)}, finished {html.escape(m['finished'])}</p>")
        md += [f"*experiment `{name}`, {m['points']} points{grid_kind}, {timing}, finished {m['finished']}*", ""]
        h.append(_html_text(m.get("description", "")))
        md += [m.get("description", ""), ""]
        h.append(f"<p>Regenerate with:</p><pre>{html.escape(m['command'])}</pre>")
        md += ["Regenerate with:", "", "```sh", m["command"], "```", ""]

        comp = _read_table(d, tables.get("comparison"))
        if comp is not None and len(comp):
            notes = [n for n in comp.get("note", []) if n]
            shown = comp.drop(columns=[c for c in ("note",) if c in comp.columns])
            h += ["<h3>Published vs simulated</h3>", _html_table(shown)]
            md += ["### Published vs simulated", "", _md_table(shown), ""]
            for n in notes:
                h.append(f"<p class='note'>Note: {html.escape(n)}</p>")
                md += [f"*Note: {n}*", ""]
        summ = _read_table(d, tables.get("summary"))
        if summ is not None and len(summ):
            h += ["<h3>Summary</h3>", _html_table(summ)]
            md += ["### Summary", "", _md_table(summ), ""]
        for fig in m.get("figures", []):
            p = d / fig
            if not p.exists():
                continue
            b64 = base64.b64encode(p.read_bytes()).decode("ascii")
            h.append(f"<figure><img alt='{html.escape(fig)}' src='data:image/png;base64,{b64}'>"
                     f"<figcaption>{html.escape(fig)}</figcaption></figure>")
            rel = p.resolve().relative_to(out_md.parent.resolve()) if p.resolve().is_relative_to(
                out_md.parent.resolve()) else p.resolve()
            md += [f"![{fig}]({rel.as_posix()})", ""]
        try:
            where = d.resolve().relative_to(out_md.parent.resolve()).as_posix()
        except ValueError:
            where = str(d)
        data = ", ".join(f"{where}/{r}" if where != "." else r for r in m.get("results", []))
        h.append(f"<p class='meta'>Tidy results: {html.escape(data)}</p>")
        md += [f"Tidy results: {data}", ""]
    h.append("</body></html>")

    atomic_write(out_html, lambda p: Path(p).write_text("\n".join(h), encoding="utf-8"))
    atomic_write(out_md, lambda p: Path(p).write_text("\n".join(md), encoding="utf-8"))
    return out_html, out_md
