"""A self-contained HTML report of an evaluation, for a person to read in a browser.

:func:`write_report` writes ``report.html`` and its figures (PNG, next to it, linked by
relative paths) into one directory, which can be zipped or served as it is. No JavaScript, no
external CSS or fonts. From top to bottom:

1. the results table (one row per method, the best value of each metric in bold);
2. the targets, each marked MET or MISSED;
3. precision-recall curves for finding the planted samples (when labels are given), with the
   positive rate drawn as the chance line;
4. predicted against ground-truth scores, one small panel per method;
5. attribution time, preparation time and storage per sample, per method;
6. with group fidelity (``evaluate --group-by``), "Which data source taught it": each
   method's ``group_spearman`` and ``group_top1`` (a table and bars), the groups with how often
   each method ranks them first and their mean rank, and for the shown queries the groups as
   the ground truth ranks them with each method's rank beside;
7. for a few queries, their top attributed training samples, one column per method, the
   ground truth first; a cell is green when the ground truth also ranks that sample in its top;
8. notes, and a short guide to reading the figures (``docs/EVALUATION.md`` has the full one).

The page is the jinja2 template ``templates/report.html.j2`` (with ``templates/report.css``
inlined), rendered with autoescaping: every sample text, method name, title and note is
escaped, whatever it holds. This module checks the input and renders the page; what goes on
it (formatted cells, best marks, each query's top samples, the groups) is computed by
:mod:`influcoder.evaluation.report_content`, the figures are drawn by
:mod:`influcoder.evaluation.figures`.
"""

from __future__ import annotations

import functools
import html
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from influcoder import metrics
from influcoder.evaluation import figures, report_content
from influcoder.evaluation.evaluate import GROUP_COLUMNS, expected_random_auprc
from influcoder.io.atomic import atomic_write_bytes
from influcoder.io.samples import Sample

if TYPE_CHECKING:
    from influcoder.evaluation.group_fidelity import GroupFidelity

__all__ = ["REPORT_NAME", "write_report"]


REPORT_NAME = "report.html"
#: The page's jinja2 template, in ``templates/`` next to this module (shipped as package data).
TEMPLATE = "report.html.j2"
#: The figures, PNG files next to the page.
PR_FIGURE, SCATTER_FIGURE, COST_FIGURE = "pr_curves.png", "scatter.png", "cost.png"
GROUP_FIGURE = "groups.png"


def _html_escape(value: Any):
    """``value`` escaped by :func:`html.escape`, as jinja2's ``finalize``.

    Autoescaping would use markupsafe, which writes quotes as ``&#34;``/``&#39;``; reports
    have always had ``&quot;``/``&#x27;``, and the tests pin that. The result is
    :class:`~markupsafe.Markup`, which autoescaping then leaves alone; values that already
    are markup pass through unchanged.
    """
    from markupsafe import Markup

    if hasattr(value, "__html__"):
        return value
    return Markup(html.escape(str(value), quote=True))


@functools.cache
def _template():
    """The report template, loaded once (jinja2 is imported only when a report is written)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("influcoder.evaluation", "templates"),
        autoescape=select_autoescape(["html.j2"], default=True),
        finalize=_html_escape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(TEMPLATE)


def _k_of(rows: Sequence[Mapping[str, Any]]) -> int | None:
    """The ``k`` of the rows' ``ndcg@k`` column, or None if they have none."""
    for key in rows[0]:
        if key.startswith("ndcg@"):
            return int(key.split("@", 1)[1])
    return None


def write_report(
    out_dir: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    *,
    gt: np.ndarray,
    method_scores: Mapping[str, np.ndarray],
    labels: np.ndarray | None = None,
    pool_samples: Sequence[Sample] | None = None,
    query_samples: Sequence[Sample] | None = None,
    title: str = "influcoder evaluation",
    notes: Sequence[str] = (),
    targets: Sequence[tuple[str, bool, str]] = (),
    query_indices: Sequence[int] | None = None,
    queries_shown: int = 3,
    top_n: int = 5,
    text_chars: int = 160,
    max_points: int = 4000,
    seed: int = 0,
    groups: GroupFidelity | None = None,
) -> Path:
    """Write ``report.html`` and its PNG figures into ``out_dir``; return the HTML's path.

    Args:
        out_dir: directory to write into (created if needed; existing report files are
            replaced).
        rows: :func:`~influcoder.evaluation.evaluate.evaluate`'s rows.
        gt: ``[n_pool, n_query]`` ground-truth influence.
        method_scores: name -> ``[n_pool, n_query]`` scores, the methods of ``rows``. A method
            whose scores equal ``gt`` (the full gradient) is marked as the ground truth: left
            out of the "best" marks, the scatter plots and the side-by-side columns.
        labels: ``[n_pool]`` booleans marking planted samples; adds the precision-recall
            figure and "planted" badges.
        pool_samples, query_samples: the samples of ``gt``'s rows and columns; needed for the
            side-by-side tables, which are left out without them.
        title: the page title.
        notes: free text paragraphs shown near the end (escaped).
        targets: ``(name, achieved, text)`` triples, e.g. from
            :func:`~influcoder.evaluation.evaluate.check_target`, shown as MET or MISSED.
        query_indices: which queries to show side by side; default the first
            ``queries_shown``.
        top_n: samples per query and method in the side-by-side tables.
        text_chars: characters of sample text shown in a cell.
        max_points: most (pool, query) pairs drawn per scatter panel.
        seed: seed of the scatter subsample.
        groups: the group fidelity of the methods (``evaluate(group_by=...)``), with the
            ``group_spearman`` and ``group_top1`` columns in ``rows``; adds the section
            "Which data source taught it".

    Raises:
        ValueError: if ``rows`` is empty, a matrix does not have ``gt``'s shape, or the samples
            or labels do not match it.
    """
    gt = np.asarray(gt, dtype=np.float64)
    if not rows:
        raise ValueError("no rows to report")
    for name, scores in method_scores.items():
        if np.shape(scores) != gt.shape:
            raise ValueError(
                f"method {name!r}: scores have shape {np.shape(scores)}, the "
                f"ground truth {gt.shape}"
            )
    n_pool, n_query = gt.shape
    if labels is not None:
        labels = np.asarray(labels, dtype=bool)
        if labels.shape != (n_pool,):
            raise ValueError(f"labels must have {n_pool} entries, got shape {labels.shape}")
    if (pool_samples is None) != (query_samples is None):
        raise ValueError("give both pool_samples and query_samples, or neither")
    if pool_samples is not None and (len(pool_samples), len(query_samples)) != gt.shape:
        raise ValueError(
            f"{len(pool_samples)} pool and {len(query_samples)} query samples for "
            f"a ground truth of shape {gt.shape}"
        )
    if query_indices is None:
        query_indices = range(min(queries_shown, n_query))
    if any(not 0 <= j < n_query for j in query_indices):
        raise ValueError(f"query_indices must lie in [0, {n_query})")
    if groups is not None:
        if set(groups.scores) != set(method_scores):
            raise ValueError(
                f"groups judge the methods {sorted(groups.scores)}, the report "
                f"shows {sorted(method_scores)}"
            )
        if any(c not in r for r in rows for c in GROUP_COLUMNS):
            raise ValueError(f"groups given but the rows lack the columns {GROUP_COLUMNS}")
        if len(groups.groups.codes) != n_pool:
            raise ValueError(
                f"groups split {len(groups.groups.codes)} pool samples, the "
                f"ground truth has {n_pool}"
            )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    references = {
        name
        for name, s in method_scores.items()
        if np.array_equal(np.asarray(s, dtype=np.float64), gt)
    }
    judged = {name: s for name, s in method_scores.items() if name not in references}
    names = dict.fromkeys([r["method"] for r in rows] + list(method_scores))
    colors = figures.method_colors(list(names))
    rate = float(labels.mean()) if labels is not None and labels.any() else None

    summary = (
        f"{n_pool} pool samples × {n_query} queries"
        + (f"; {int(labels.sum())} planted ({rate:.1%})" if rate is not None else "")
        + f"; written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    if rate is not None:
        figures.pr_figure(out / PR_FIGURE, method_scores, labels, colors)
    if judged:
        figures.scatter_figure(
            out / SCATTER_FIGURE,
            gt,
            judged,
            {r["method"]: r for r in rows},
            labels,
            colors,
            max_points,
            seed,
        )
    figures.cost_figure(out / COST_FIGURE, rows, n_query, colors)
    side = None
    if pool_samples is not None and len(query_indices):
        side = report_content.side_by_side(
            gt,
            judged,
            pool_samples,
            query_samples,
            query_indices,
            labels,
            min(top_n, n_pool),
            text_chars,
        )
    group_section = None
    if groups is not None:
        group_section = report_content.group_section(
            groups, gt, references, query_samples, query_indices, rows
        )
        if group_section["methods"]:
            figures.group_figure(out / GROUP_FIGURE, rows, group_section["methods"], colors)
    planted = None
    if rate is not None:
        planted = {
            "rate": rate,
            "count": int(labels.sum()),
            "n_pool": n_pool,
            "chance": expected_random_auprc(n_pool, int(labels.sum())),
            "aggregates": metrics.AUPRC_AGGREGATES,
        }
    page = _template().render(
        title=title,
        summary=summary,
        results=report_content.results_table(rows, references),
        targets=list(targets),
        targets_met=sum(bool(achieved) for _, achieved, _ in targets),
        pr_figure=PR_FIGURE if rate is not None else None,
        scatter_figure=SCATTER_FIGURE if judged else None,
        cost_figure=COST_FIGURE,
        side=side,
        notes=list(notes),
        k=_k_of(rows),
        planted=planted,
        groups=group_section,
        group_figure=GROUP_FIGURE if group_section and group_section["methods"] else None,
    )
    path = out / REPORT_NAME
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
