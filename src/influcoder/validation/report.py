"""The validation's outputs: a terminal table, ``results.json``/``.csv``, a figure and a page.

* :func:`summary_rows`: the figures people read first, one row per method (loss changes in
  percent of the full pool's loss, with intervals; LDS), for the terminal and the CSV;
* :func:`checks`: the issue's targets as plain sentences, MET or MISSED, when the methods
  they compare are present (a distilled encoder against the gradient and random);
* :func:`write_validation`: ``results.json`` (everything, including the removed samples' ids
  and the per-seed figures), ``results.csv``, ``validation.png`` and ``report.html``.
"""

from __future__ import annotations

import csv
import functools
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from influcoder.io.atomic import atomic_write_bytes, atomic_write_json
from influcoder.validation.run import CONTROL, HELDOUT, Validation

FIGURE, PAGE = "validation.png", "report.html"


def summary_rows(validation: Validation) -> list[dict]:
    """Per method: how many samples it removed (and of them, planted), the held-out and
    control loss change in percent with 95% intervals, and LDS with its interval."""
    out = []
    for row in validation.rows:
        line = {"method": row["method"], "removed": row["removed"]}
        if "planted_removed" in row:
            line["planted_removed"] = row["planted_removed"]
        for name in (HELDOUT, CONTROL):
            if f"{name}_delta" in row:
                scale = 100 / row[f"{name}_full"]
                line[f"{name}_change_%"] = row[f"{name}_delta"] * scale
                line[f"{name}_95%"] = (
                    f"[{row[f'{name}_low'] * scale:+.2f}, {row[f'{name}_high'] * scale:+.2f}]"
                )
        if "lds" in row:
            line["lds"] = row["lds"]
            line["lds_95%"] = f"[{row['lds_low']:+.3f}, {row['lds_high']:+.3f}]"
        for kind, v in row.get("lds_by", {}).items():
            line[f"lds_{kind}"] = v["lds"]
            line[f"lds_{kind}_95%"] = f"[{v['low']:+.3f}, {v['high']:+.3f}]"
        out.append(line)
    return out


def checks(
    validation: Validation,
    method: str = "distilled",
    reference: str = "gradient",
    chance: str = "random",
) -> list[tuple[bool, str]]:
    """The issue-16 targets for ``method``: its removal raises the held-out loss by at least
    80% of ``reference``'s removal and at least twice ``chance``'s; the control loss moves less
    than the held-out loss. Empty when a method is missing."""
    by = {row["method"]: row for row in validation.rows}
    if method not in by or reference not in by:
        return []
    m, g = by[method][f"{HELDOUT}_delta"], by[reference][f"{HELDOUT}_delta"]
    found = [
        (
            g > 0 and m >= 0.8 * g,
            f"{method}'s removal raises the held-out loss by {m:+.4f}, "
            f"{m / g:.0%} of {reference}'s {g:+.4f} (target >= 80%)"
            if g
            else f"{reference}'s removal does not change the held-out loss",
        )
    ]
    if chance in by:
        r = by[chance][f"{HELDOUT}_delta"]
        found.append(
            (
                m > 0 and m >= 2 * r,
                f"{method}'s {m:+.4f} against {chance}'s {r:+.4f} (target >= 2x)",
            )
        )
    if f"{CONTROL}_delta" in by[method]:
        c = by[method][f"{CONTROL}_delta"]
        found.append(
            (
                abs(c) < m,
                (
                    f"{method}'s removal moves the control loss by {c:+.4f}, "
                    f"less than the held-out {m:+.4f}"
                ),
            )
        )
    return found


def _figure(path: Path, validation: Validation) -> None:
    from matplotlib.figure import Figure

    from influcoder.evaluation.figures import method_colors, save_png

    rows = validation.rows
    names = [r["method"] for r in rows]
    colors = method_colors(names)
    has_lds = any("lds" in r for r in rows)
    fig = Figure(figsize=(11 if has_lds else 6.5, 3.6 + 0.1 * len(rows)), layout="constrained")
    axes = fig.subplots(1, 2 if has_lds else 1, squeeze=False)[0]
    ax = axes[0]
    sets = [s for s in (HELDOUT, CONTROL) if f"{s}_delta" in rows[0]]
    width = 0.8 / len(sets)
    for k, name in enumerate(sets):
        for i, r in enumerate(rows):
            d = r[f"{name}_delta"]
            ax.bar(
                i + (k - (len(sets) - 1) / 2) * width,
                d,
                width,
                yerr=[[d - r[f"{name}_low"]], [r[f"{name}_high"] - d]],
                capsize=3,
                color=colors[r["method"]],
                alpha=1.0 if name == HELDOUT else 0.4,
                label=name if i == 0 else None,
            )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), names, rotation=20)
    ax.set_ylabel("loss change after removal")
    ax.set_title(
        f"removing each method's top {validation.settings['fraction']:.0%}"
        + (" (solid: held-out, faded: control)" if len(sets) > 1 else "")
    )
    if has_lds:
        ax = axes[1]
        for i, r in enumerate(rows):
            ax.bar(
                i,
                r["lds"],
                0.6,
                yerr=[[r["lds"] - r["lds_low"]], [r["lds_high"] - r["lds"]]],
                capsize=3,
                color=colors[r["method"]],
            )
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(rows)), names, rotation=20)
        ax.set_ylabel("LDS (Spearman)")
        ax.set_title(f"linear datamodeling score, {validation.settings['lds_subsets']} subsets")
    save_png(fig, path)


@functools.cache
def page_template(name: str):
    """The jinja2 template ``name`` of this package's ``templates/`` (HTML autoescaped), for
    validate's report and the LDS page."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("influcoder.validation", "templates"),
        autoescape=select_autoescape(["html.j2"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(name)


def write_validation(
    out: str | os.PathLike,
    validation: Validation,
    *,
    context: Mapping[str, Any],
    title: str = "influcoder validation",
) -> Path:
    """Write ``results.json``, ``results.csv``, the figure and ``report.html`` into ``out``;
    return the page's path."""
    from influcoder.io.tables import format_value

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = summary_rows(validation)
    found = checks(validation)
    atomic_write_json(
        out / "results.json",
        {
            **dict(context),
            "rows": validation.rows,
            "summary": table,
            "checks": [{"met": met, "text": text} for met, text in found],
            "removed": validation.removed,
            "full_losses": validation.full_losses,
            "start_losses": validation.start_losses,
            "warnings": validation.warnings,
            "settings": validation.settings,
            "seconds": validation.seconds,
            "notes": validation.notes,
        },
    )
    buffer = io.StringIO()
    columns = list(table[0])
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    atomic_write_bytes(out / "results.csv", buffer.getvalue().encode())
    _figure(out / FIGURE, validation)
    page = page_template("report.html.j2").render(
        title=title,
        columns=columns,
        rows=[[format_value(c, r.get(c, "")) for c in columns] for r in table],
        checks=found,
        figure=FIGURE,
        context=context,
        notes=[f"Warning: {w}" for w in validation.warnings] + validation.notes,
        settings=validation.settings,
    )
    atomic_write_bytes(out / PAGE, page.encode())
    return out / PAGE


def format_checks(found: Sequence[tuple[bool, str]]) -> list[str]:
    return [f"{'MET   ' if met else 'MISSED'}  {text}" for met, text in found]
