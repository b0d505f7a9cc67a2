"""The HTML report: files that exist, valid PNG figures, tables, escaping."""

from __future__ import annotations

import re

import numpy as np
import pytest

from influcoder.evaluation.evaluate import metric_rows
from influcoder.evaluation.group_fidelity import (
    add_group_columns,
    evaluation_groups,
    judge_groups,
)
from influcoder.evaluation.report import write_report
from influcoder.io.samples import Sample

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script> & \"quotes\""


@pytest.fixture()
def case():
    rng = np.random.default_rng(0)
    n_pool, n_query = 40, 6
    gt = rng.normal(size=(n_pool, n_query))
    labels = np.zeros(n_pool, dtype=bool)
    labels[[1, 7, 30]] = True
    gt[labels] += 1.0
    method_scores = {
        "gradient": gt.copy(),
        "distilled": gt + 0.4 * rng.normal(size=gt.shape),
        "semantic": gt + 1.5 * rng.normal(size=gt.shape),
        "random": rng.random(gt.shape),
    }
    infos = {
        "gradient": {"seconds": 0.002, "prepare_seconds": 0.01, "bytes_per_sample": 16384},
        "distilled": {"seconds": 0.5, "prepare_seconds": 20.0, "bytes_per_sample": 1536},
        "semantic": {"seconds": 0.4, "prepare_seconds": 18.0, "bytes_per_sample": 1536},
        "random": {"seconds": 1e-5, "prepare_seconds": 0.0, "bytes_per_sample": 0},
    }
    rows = metric_rows(gt, {n: (s, infos[n]) for n, s in method_scores.items()}, labels=labels, k=5)
    pool = [
        Sample(
            id=f"p{i}", prompt=f"pool prompt {i}", response=EVIL if i == 3 else f"pool response {i}"
        )
        for i in range(n_pool)
    ]
    queries = [
        Sample(id=f"q{j}", prompt=f"query {j} <i>asks</i>", response="r") for j in range(n_query)
    ]
    return rows, gt, method_scores, labels, pool, queries


def _images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def test_full_report(case, tmp_path):
    rows, gt, method_scores, labels, pool, queries = case
    # Make sample 3 the ground truth's top sample for query 0, so it appears side by side.
    gt[3, 0] = method_scores["gradient"][3, 0] = 10.0
    targets = [
        ("distilled spearman", True, "per_anchor_spearman 0.9 >= 0.5"),
        ("semantic <beats> random", False, "auprc 0.2 < 0.5"),
    ]
    path = write_report(
        tmp_path / "r",
        rows,
        gt=gt,
        method_scores=method_scores,
        labels=labels,
        pool_samples=pool,
        query_samples=queries,
        title="Eval <1>",
        notes=["a note with <html> & more"],
        targets=targets,
        queries_shown=2,
        top_n=3,
    )
    assert path == tmp_path / "r" / "report.html"
    page = path.read_text(encoding="utf-8")
    images = _images(page)
    assert images == ["pr_curves.png", "scatter.png", "cost.png"]
    for name in images:
        data = (path.parent / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    # Results table at the top, with every method; the ground truth marked as such.
    assert page.index("<h2>Results</h2>") < page.index("<h2>Targets")
    assert page.index("<h2>Targets") < page.index("pr_curves.png")
    assert "gradient (ground truth)" in page
    for row in rows:
        assert f"<td>{row['method']}" in page
    # Targets: one met, one missed, escaped.
    assert "1 of 2 met (1 MISSED)" in page
    assert '<span class="missed">MISSED</span> <b>semantic &lt;beats&gt; random</b>' in page
    # Side by side: ground truth first, then the methods that are not the ground truth.
    assert page.count('<table class="side">') == 2
    header = re.search(r'<table class="side"><tr>(.*?)</tr>', page).group(1)
    assert re.findall(r"<th>(.*?)</th>", header) == [
        "rank",
        "ground truth",
        "distilled",
        "semantic",
        "random",
    ]
    assert 'class="planted"' in page
    # Everything user-supplied is escaped.
    assert "<script>" not in page and "<i>asks</i>" not in page and "<html>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert "<title>Eval &lt;1&gt;</title>" in page and "a note with &lt;html&gt; &amp; more" in page


def test_minimal_report_without_labels_or_samples(case, tmp_path):
    rows, gt, method_scores, _, _, _ = case
    rows = metric_rows(gt, {"distilled": (method_scores["distilled"], {"seconds": 0.1})}, k=5)
    path = write_report(
        tmp_path, rows, gt=gt, method_scores={"distilled": method_scores["distilled"]}
    )
    page = path.read_text(encoding="utf-8")
    assert _images(page) == ["scatter.png", "cost.png"]
    assert not (tmp_path / "pr_curves.png").exists()
    assert "side by side" not in page and "Targets" not in page
    assert "n/a" in page  # the missing costs


def test_report_refuses_inconsistent_input(case, tmp_path):
    rows, gt, method_scores, labels, pool, queries = case
    with pytest.raises(ValueError, match="method 'bad': scores have shape"):
        write_report(tmp_path, rows, gt=gt, method_scores={"bad": gt[:3]})
    with pytest.raises(ValueError, match="labels must have 40 entries"):
        write_report(tmp_path, rows, gt=gt, method_scores=method_scores, labels=labels[:3])
    with pytest.raises(ValueError, match="give both"):
        write_report(tmp_path, rows, gt=gt, method_scores=method_scores, pool_samples=pool)
    with pytest.raises(ValueError, match="query_indices"):
        write_report(
            tmp_path,
            rows,
            gt=gt,
            method_scores=method_scores,
            pool_samples=pool,
            query_samples=queries,
            query_indices=[6],
        )


def test_script_in_sample_texts_and_names_is_escaped_everywhere(case, tmp_path):
    """Sample texts and ids, query texts, method names, target names, the title and notes
    all reach the page as text: no tag, and no quote that ends an attribute early."""
    rows, gt, method_scores, labels, pool, queries = case
    script = "<script>alert(1)</script>"
    breakout = '" onmouseover="alert(2)'
    pool = [Sample(id=f"{script}{i}", prompt=script, response=breakout) for i in range(len(pool))]
    queries = [
        Sample(id=f"q{j}{script}", prompt=script, response=breakout) for j in range(len(queries))
    ]
    method_scores = {f"{script}{name}": s for name, s in method_scores.items()}
    rows = [{**row, "method": f"{script}{row['method']}"} for row in rows]
    path = write_report(
        tmp_path,
        rows,
        gt=gt,
        method_scores=method_scores,
        labels=labels,
        pool_samples=pool,
        query_samples=queries,
        title=script,
        notes=[script],
        targets=[(script, True, script)],
        top_n=3,
    )
    page = path.read_text(encoding="utf-8")
    assert "<script" not in page and 'onmouseover="' not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"<title>{escaped}</title>" in page
    assert f"<td>{escaped}distilled</td>" in page  # results table
    assert f"<th>{escaped}distilled</th>" in page  # side-by-side header
    assert f'<h3>Query 1: <span class="id">q0{escaped}</span></h3>' in page
    assert re.search(f'<span class="id">{re.escape(escaped)}[0-9]+</span>', page)  # pool ids
    assert f'<p class="query">{escaped} → &quot; onmouseover=&quot;alert(2)</p>' in page
    assert f'title="{escaped} → &quot; onmouseover=&quot;alert(2)"' in page  # a cell's tooltip
    assert f"<p>{escaped}</p>" in page and f"<b>{escaped}</b>: {escaped}</li>" in page


def _groups(case, names):
    """Group fidelity of the case's methods over pool groups named by ``names`` (cycled)."""
    rows, gt, method_scores, _, pool, _ = case
    samples = [
        Sample(
            id=s.id, prompt=s.prompt, response=s.response, meta={"source": names[i % len(names)]}
        )
        for i, s in enumerate(pool)
    ]
    groups = judge_groups(method_scores, gt, evaluation_groups(samples, "source"))
    return add_group_columns(rows, groups), groups


def test_group_section_only_with_groups(case, tmp_path):
    rows, gt, method_scores, labels, pool, queries = case
    names = ["web", "books", "code", "chat"]
    group_rows, groups = _groups(case, names)
    path = write_report(
        tmp_path / "g",
        group_rows,
        gt=gt,
        method_scores=method_scores,
        labels=labels,
        pool_samples=pool,
        query_samples=queries,
        queries_shown=2,
        groups=groups,
    )
    page = path.read_text(encoding="utf-8")
    assert _images(page) == ["pr_curves.png", "scatter.png", "groups.png", "cost.png"]
    assert (path.parent / "groups.png").read_bytes().startswith(PNG_SIGNATURE)
    section = page[page.index("<h2>Which data source taught it</h2>") : page.index("<h2>Cost")]
    assert "<b>source</b> into 4 groups" in section
    # The fidelity table: the judged methods (not the ground truth), figures as in the rows.
    fidelity = re.findall(
        r"<tr><td>([^<]+)</td><td class=\"num[^\"]*\">([^<]+)</td>"
        r"<td class=\"num[^\"]*\">([^<]+)</td>",
        section.split("<img")[0],
    )
    by_name = {r["method"]: r for r in group_rows}
    assert [f[0] for f in fidelity] == ["distilled", "semantic", "random"]
    for name, rho, top1 in fidelity:
        assert (rho, top1) == (
            f"{by_name[name]['group_spearman']:.3f}",
            f"{by_name[name]['group_top1']:.3f}",
        )
    # The overview: each group's share of queries whose top group it is, for the ground
    # truth counted here directly (no ties in random scores).
    top = groups.scores["gradient"].argmax(axis=1)
    for g, name in enumerate(names):
        share = f"{100 * np.mean(top == g):.0f}%"
        assert re.search(
            f'<tr><td>{name}</td><td class="num">10</td><td class="num">{share} · ', section
        ), name
    # One table per shown query, its groups ranked by the ground truth.
    assert section.count("its top 4 groups by the ground truth") == 2
    ranks = re.findall(r'<tr><td class="num">(\d)</td><td>(\w+)</td>', section.split("<h3>")[1])
    order = np.argsort(-groups.scores["gradient"][0])
    assert ranks == [(str(i + 1), names[g]) for i, g in enumerate(order)]
    assert "group_spearman</b>: for each query" in page  # the guide at the end
    # Without groups the same report has no such section (and the figure is not linked).
    page = write_report(
        tmp_path / "n",
        rows,
        gt=gt,
        method_scores=method_scores,
        labels=labels,
        pool_samples=pool,
        query_samples=queries,
    ).read_text()
    assert "Which data source" not in page and "groups.png" not in page
    assert "group_spearman" not in page


def test_group_names_are_escaped_and_inconsistent_groups_refused(case, tmp_path):
    rows, gt, method_scores, *_ = case
    group_rows, groups = _groups(case, ["<script>alert(1)</script>", 'x" onclick="y'])
    page = write_report(
        tmp_path, group_rows, gt=gt, method_scores=method_scores, groups=groups
    ).read_text()
    assert "<script" not in page and 'onclick="' not in page
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in page
    with pytest.raises(ValueError, match="rows lack the columns"):
        write_report(tmp_path, rows, gt=gt, method_scores=method_scores, groups=groups)
    with pytest.raises(ValueError, match="groups judge the methods"):
        write_report(
            tmp_path,
            group_rows,
            gt=gt,
            groups=groups,
            method_scores={name: s for name, s in method_scores.items() if name != "random"},
        )


def test_the_template_ships_with_the_package():
    """pyproject.toml's package-data names every file of the report's templates directory,
    so an installed influcoder (not only a checkout) can write a report."""
    import fnmatch
    import tomllib
    from pathlib import Path

    import influcoder

    root = Path(__file__).parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["influcoder"]
    package = Path(influcoder.__file__).parent
    files = [
        p.relative_to(package).as_posix()
        for p in (package / "evaluation" / "templates").rglob("*")
        if p.is_file()
    ]
    assert "evaluation/templates/report.html.j2" in files
    assert all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns) for f in files), files
