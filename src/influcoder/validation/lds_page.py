"""The page of ``influcoder lds --html``: every method's LDS with its interval, per group.

* :func:`lds_sections`: the rows of :func:`~influcoder.validation.saved.score_runs` as
  sections (the held-out set, then one per ``--by`` field), each group's figures per method;
* :func:`verdict`: one sentence per group: the highest method, and whether its interval
  overlaps the runner-up's (then the two are said to overlap, not ranked);
* :func:`write_lds_page`: the page and its figure (a dot-and-interval plot, one panel per
  section, one colour per group), the PNG next to the page as ``validate``'s report does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from influcoder.io.atomic import atomic_write_bytes
from influcoder.validation.report import page_template
from influcoder.validation.saved import lds_per_field

#: The first section: the runs' held-out set (validate's HELDOUT samples that --where kept; in
#: make validate the 50 harmful queries of both blocks), the set score_runs' own figure is on.
HELDOUT_SECTION = "held-out queries"
#: File name endings the page may have (its figure is the same name ending in .png).
PAGE_SUFFIXES = (".html", ".htm")


@dataclass(frozen=True)
class Section:
    """One table and one panel: ``groups`` (name -> query count) and, per method, each
    group's ``{lds, low, high}``."""

    title: str
    groups: dict[str, int | None]
    figures: dict[str, dict[str, Mapping[str, float]]]


def lds_sections(rows: Sequence[Mapping], by: str | Sequence[str] | None = None) -> list[Section]:
    """The held-out section, then one per field of ``by``, from :func:`score_runs`' rows."""
    heldout = Section(
        HELDOUT_SECTION,
        {"held-out": rows[0].get("lds_queries") if rows else None},
        {
            r["method"]: {"held-out": {"lds": r["lds"], "low": r["lds_low"], "high": r["lds_high"]}}
            for r in rows
        },
    )
    sections = [heldout]
    fields: dict[str, dict[str, dict]] = {}
    for row in rows:
        for field, values in lds_per_field(row, by).items():
            fields.setdefault(field, {})[row["method"]] = values
    for field, per_method in fields.items():
        groups: dict[str, int | None] = {}
        for values in per_method.values():
            for group, v in values.items():
                groups.setdefault(group, v.get("n"))
        sections.append(Section(f"by {field}", groups, per_method))
    return sections


def _interval(v: Mapping[str, float]) -> str:
    return f"{v['lds']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"


def ranked(section: Section, group: str) -> list[tuple[str, Mapping[str, float]]]:
    """The methods with a figure for ``group``, highest LDS first (NaN last)."""
    found = [(m, v[group]) for m, v in section.figures.items() if group in v]
    return sorted(found, key=lambda mv: -mv[1]["lds"] if math.isfinite(mv[1]["lds"]) else math.inf)


def overlap(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Whether two intervals share a point (an interval that is not a number overlaps all)."""
    return not (a["low"] > b["high"] or b["low"] > a["high"])


def verdict(section: Section, group: str) -> str:
    """One sentence: which method is highest on ``group`` and whether its interval overlaps
    the runner-up's."""
    order = ranked(section, group)
    if not order:
        return f"{group}: no method has a figure."
    (best, a), rest = order[0], order[1:]
    if not rest:
        return f"{group}: {best} {_interval(a)}, the only method."
    second, b = rest[0]
    gap = a["lds"] - b["lds"]
    if overlap(a, b) and gap == 0:
        return f"{group}: {best} {_interval(a)} and {second} {_interval(b)} overlap, tied."
    if overlap(a, b):
        return (
            f"{group}: {best} {_interval(a)} and {second} {_interval(b)} overlap; "
            f"{best}'s estimate is {gap:.3f} higher, within the intervals."
        )
    return (
        f"{group}: {best} is highest, {_interval(a)}, {gap:.3f} above the runner-up "
        f"{second}, {_interval(b)}; the intervals do not overlap."
    )


def figure_path(page: str | os.PathLike) -> Path:
    """The figure of ``page``: its name ending in .png, next to it."""
    return Path(page).with_suffix(".png")


def check_page_path(page: str | os.PathLike, spare: Sequence[str | os.PathLike] = ()) -> None:
    """Raise ``ValueError`` unless ``page`` can be written: it ends in .html (its figure is
    the .png of the same name), no folder on its way is a file, and neither it nor its
    figure is one of the ``spare`` paths (other outputs of the same command)."""
    page = Path(page)
    if page.suffix.lower() not in PAGE_SUFFIXES:
        raise ValueError(f"the page must end in .html (its figure gets .png): {page}")
    if page.is_dir():
        raise ValueError(f"{page} is a folder; give the page's file name")
    for parent in page.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{parent} is a file, not a folder; cannot write {page}")
    ours = {page.resolve(), figure_path(page).resolve()}
    for other in spare:
        if Path(other).resolve() in ours:
            raise ValueError(f"{other} would be overwritten by the page or its figure")


def _figure(path: Path, sections: Sequence[Section], methods: Sequence[str]) -> None:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from influcoder.evaluation.figures import save_png

    cmap = colormaps["tab10"]
    height = [0.35 * len(methods) * max(1, min(len(s.groups), 3)) + 0.9 for s in sections]
    fig = Figure(figsize=(8.5, sum(height)), layout="constrained")
    axes = fig.subplots(len(sections), 1, squeeze=False, height_ratios=height)[:, 0]
    for ax, section in zip(axes, sections, strict=True):
        groups = list(section.groups)
        step = 0.7 / len(groups)
        for k, group in enumerate(groups):
            offset = (k - (len(groups) - 1) / 2) * step
            ys, xs, lows, highs = [], [], [], []
            for i, method in enumerate(methods):
                v = section.figures.get(method, {}).get(group)
                if v is None:
                    continue
                ys.append(i + offset)
                xs.append(v["lds"])
                lows.append(v["lds"] - v["low"])
                highs.append(v["high"] - v["lds"])
            n = section.groups[group]
            ax.errorbar(
                xs,
                ys,
                xerr=[lows, highs],
                fmt="o",
                markersize=4,
                capsize=2,
                color=cmap(k % cmap.N) if len(groups) > 1 else "black",
                label=group if n is None else f"{group} ({n})",
            )
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_yticks(range(len(methods)), methods)
        ax.set_ylim(len(methods) - 0.5, -0.5)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(section.title, loc="left")
        if len(groups) > 1:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    axes[-1].set_xlabel("LDS (Spearman), with its 95% interval")
    save_png(fig, path)


def _cell(v: Mapping[str, float] | None, best: bool) -> dict[str, Any] | None:
    if v is None:
        return None
    return {
        "lds": f"{v['lds']:.3f}",
        "interval": f"[{v['low']:.3f}, {v['high']:.3f}]",
        "best": best,
    }


def write_lds_page(
    page: str | os.PathLike,
    rows: Sequence[Mapping],
    *,
    by: str | Sequence[str] | None = None,
    context: Mapping[str, Any],
    title: str = "influcoder LDS",
) -> Path:
    """Write ``page`` (HTML) and its figure (:func:`figure_path`) for :func:`score_runs`'
    ``rows``; ``context``: ``runs``, ``pool``, ``queries``, ``n_boot``. Return the page."""
    check_page_path(page)
    if not rows:
        raise ValueError("no method to show")
    page = Path(page)
    methods = [r["method"] for r in rows]
    sections = lds_sections(rows, by)
    tables = []
    for section in sections:
        tops = {g: ranked(section, g)[0][0] for g in section.groups if ranked(section, g)}
        tables.append(
            {
                "title": section.title,
                "groups": [g if n is None else f"{g} ({n})" for g, n in section.groups.items()],
                "rows": [
                    (
                        m,
                        [
                            _cell(section.figures.get(m, {}).get(g), tops.get(g) == m)
                            for g in section.groups
                        ],
                    )
                    for m in methods
                ],
                "verdicts": [verdict(section, g) for g in section.groups],
            }
        )
    figure = figure_path(page)
    html = page_template("lds.html.j2").render(
        title=title,
        tables=tables,
        figure=figure.name,
        context=context,
        subsets=rows[0]["lds_subsets"],
    )
    page.parent.mkdir(parents=True, exist_ok=True)
    _figure(figure, sections, methods)
    atomic_write_bytes(page, html.encode())
    return page
