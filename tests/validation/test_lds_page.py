"""``influcoder lds --html``: the page's tables equal the JSON's figures, the figure is there,
each group's sentence names the leader or says "overlap" as the intervals do, bad pages are
refused before anything is scored; in Chromium the tables fit a 1024-pixel window."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest

from influcoder.validation.lds_page import Section, verdict

from ..conftest import write_jsonl
from .test_validate_cli import COLLECT, TRAIN, run

#: Two fields on every query: the kind (label) and a second grouping (size).
POOL = [
    ("What is the capital of France?", "Paris.", "chat"),
    ("How do I boil an egg?", "Boil it for nine minutes.", "chat"),
    ("Tell me a joke.", "Why did the chicken cross the road?", "chat"),
    ("Write a poem about the sea.", "The sea is blue and deep and wide.", "harmful"),
    ("What is two plus two?", "Four.", "chat"),
    ("Write about the sea.", "The sea is deep and wide and blue.", "harmful"),
]
TARGETS = [("A poem about the sea.", "The sea is wide and blue.", "harmful")]
HELDOUT = [
    ("Write a poem about the blue sea.", "The sea is deep and blue.", "harmful", "long"),
    ("Sing about the sea.", "The sea is wide.", "harmful", "short"),
    ("How do I fry an egg?", "Heat oil and crack the egg in.", "chat", "long"),
    ("Name a colour.", "Blue.", "chat", "short"),
]


def samples(kind, rows):
    out = []
    for i, (prompt, response, label, *size) in enumerate(rows):
        sample = {"id": f"{kind}{i}", "prompt": prompt, "response": response, "label": label}
        out.append({**sample, "size": size[0]} if size else sample)
    return out


@pytest.fixture(scope="module")
def saved(tiny_model_dir, tmp_path_factory):
    """Stores and a run store of 4 LDS subsets whose queries carry two fields."""
    tmp = tmp_path_factory.mktemp("ldspage")
    files = {
        name: write_jsonl(tmp / f"{name}.jsonl", samples(name[0], data))
        for name, data in (("pool", POOL), ("targets", TARGETS), ("heldout", HELDOUT))
    }
    r = run("collect", files["pool"], "-o", tmp / "pool", "--model", tiny_model_dir, *COLLECT)
    assert r.exit_code == 0, r.output
    for name in ("targets", "heldout"):
        r = run("collect", files[name], "-o", tmp / name, "--like", tmp / "pool", "--quiet")
        assert r.exit_code == 0, r.output
    r = run(
        "validate",
        tmp / "pool",
        tmp / "targets",
        tmp / "heldout",
        "-o",
        tmp / "v",
        "--where",
        "label=harmful",
        *TRAIN,
        "--seeds",
        "0",
        "--lds-subsets",
        "4",
    )
    assert r.exit_code == 0, r.output
    return tmp


def lds(saved, *extra):
    return run(
        "lds",
        saved / "v" / "runs",
        saved / "pool",
        saved / "heldout",
        "--baselines",
        "bm25,tfidf,random",
        "--n-boot",
        "50",
        *extra,
    )


class Page(HTMLParser):
    """The page's tables (header cells and rows of cell texts), list items and images."""

    def __init__(self):
        super().__init__()
        self.tables, self.items, self.images, self.links = [], [], [], []
        self._cell = self._item = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "li":
            self._item = ""
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag in ("link", "script") or (tag == "a" and "href" in attrs):
            self.links.append(attrs.get("href") or attrs.get("src"))

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(" ".join(self._cell.split()))
            self._cell = None
        elif tag == "li":
            self.items.append(" ".join(self._item.split()))
            self._item = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._item is not None:
            self._item += data


def read_page(path) -> Page:
    page = Page()
    page.feed(Path(path).read_text(encoding="utf-8"))
    return page


def cell(v) -> str:
    return f"{v['lds']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"


def test_page_shows_the_json_figures_per_field(saved, tmp_path):
    out = tmp_path / "page" / "lds.html"  # the folder is made
    r = lds(saved, "--by", "label,size", "--json", tmp_path / "lds.json", "--html", out)
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "lds.json").read_text())
    assert data["by"] == ["label", "size"]
    rows = data["rows"]
    methods = [row["method"] for row in rows]
    assert methods == ["gradient", "bm25", "tfidf", "random"]
    figure = out.with_suffix(".png")
    assert figure.read_bytes().startswith(b"\x89PNG") and figure.stat().st_size > 5000
    page = read_page(out)
    assert page.images == ["lds.png"] and page.links == []  # self-contained but the figure
    held, label, size = page.tables
    assert held[0] == ["method", "held-out (2)"]
    assert label[0] == ["method", "chat (2)", "harmful (2)"]
    assert size[0] == ["method", "long (2)", "short (2)"]
    for table, field in ((label, "label"), (size, "size")):
        for line, row in zip(table[1:], rows, strict=True):
            figures = row["lds_by"][field]
            assert line == [row["method"]] + [cell(figures[g]) for g in sorted(figures)]
    for line, row in zip(held[1:], rows, strict=True):
        assert line == [
            row["method"],
            cell({"lds": row["lds"], "low": row["lds_low"], "high": row["lds_high"]}),
        ]
    # one sentence per group, naming the leader, or "overlap" exactly when the intervals do
    groups = [
        (
            "held-out",
            {
                r["method"]: {"lds": r["lds"], "low": r["lds_low"], "high": r["lds_high"]}
                for r in rows
            },
        )
    ]
    for field in ("label", "size"):
        for g in sorted(rows[0]["lds_by"][field]):
            groups.append((g, {r["method"]: r["lds_by"][field][g] for r in rows}))
    assert len(page.items) == len(groups)
    for sentence, (group, figures) in zip(page.items, groups, strict=True):
        (best, a), (second, b) = sorted(figures.items(), key=lambda mv: -mv[1]["lds"])[:2]
        assert sentence.startswith(f"{group}: {best} ")
        assert second in sentence
        apart = a["low"] > b["high"]
        assert ("do not overlap" in sentence) == apart
        assert (" overlap;" in sentence) == (not apart), sentence


def test_one_field_keeps_the_json_and_the_terminal_table(saved, tmp_path):
    r = lds(saved, "--by", "label", "--json", tmp_path / "a.json", "--html", tmp_path / "a.html")
    assert r.exit_code == 0, r.output
    assert "lds_harmful" in r.output and "label=" not in r.output
    row = json.loads((tmp_path / "a.json").read_text())["rows"][0]
    assert sorted(row["lds_by"]) == ["chat", "harmful"]  # value -> figures, as validate writes
    r = lds(saved, "--by", "label,size")
    assert r.exit_code == 0 and "lds_label=harmful" in r.output and "lds_size=short" in r.output
    assert len(read_page(tmp_path / "a.html").tables) == 2
    r = lds(saved, "--html", tmp_path / "b.html")  # no --by: the held-out set alone
    assert r.exit_code == 0, r.output
    assert len(read_page(tmp_path / "b.html").tables) == 1


def verdict_of(figures: dict) -> str:
    section = Section("s", {"g": 3}, {m: {"g": v} for m, v in figures.items()})
    return verdict(section, "g")


def test_the_sentence_ranks_only_apart_intervals():
    apart = verdict_of(
        {
            "bm25": {"lds": 0.2, "low": 0.1, "high": 0.3},
            "gradient": {"lds": 0.5, "low": 0.45, "high": 0.55},
            "random": {"lds": 0.0, "low": -0.05, "high": 0.05},
        }
    )
    assert apart == (
        "g: gradient is highest, 0.500 [0.450, 0.550], 0.300 above the runner-up bm25, "
        "0.200 [0.100, 0.300]; the intervals do not overlap."
    )
    close = verdict_of(
        {
            "gradient": {"lds": 0.5, "low": 0.35, "high": 0.55},
            "distilled": {"lds": 0.42, "low": 0.3, "high": 0.5},
        }
    )
    assert close == (
        "g: gradient 0.500 [0.350, 0.550] and distilled 0.420 [0.300, 0.500] overlap; "
        "gradient's estimate is 0.080 higher, within the intervals."
    )
    assert verdict_of({"only": {"lds": 0.1, "low": 0.0, "high": 0.2}}).endswith("the only method.")


def test_names_are_escaped(saved, tmp_path):
    page = tmp_path / "x.html"
    r = run(
        "lds",
        saved / "v" / "runs",
        saved / "pool",
        saved / "heldout",
        "--baselines",
        "random",
        "-m",
        f"<b>x</b>={saved / 'pool'},{saved / 'heldout'}",
        "--n-boot",
        "20",
        "--html",
        page,
    )
    assert r.exit_code == 0, r.output
    text = page.read_text()
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text


def under_a_file(tmp):
    (tmp / "file").write_text("x")
    return tmp / "file" / "lds.html"


def a_folder(tmp):
    (tmp / "d.html").mkdir()
    return tmp / "d.html"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "lds.png", "must end in .html"),
        (lambda tmp: tmp / "lds", "must end in .html"),
        (under_a_file, "is a file"),
        (a_folder, "d.html"),
    ],
)
def test_bad_page_paths_are_refused_before_scoring(saved, tmp_path, make, message):
    page = make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    r = lds(saved, "--html", page)
    assert r.exit_code == 2 and message in r.output, r.output
    assert sorted(tmp_path.rglob("*")) == before  # nothing written
    assert "Traceback" not in r.output


def test_json_and_page_must_differ(saved, tmp_path):
    r = lds(saved, "--json", tmp_path / "lds.png", "--html", tmp_path / "lds.html")
    assert r.exit_code == 2 and "overwritten" in r.output
    r = lds(saved, "--by", "label,label")
    assert r.exit_code == 2 and "twice" in r.output
    r = lds(saved, "--by", "nosuchfield", "--html", tmp_path / "n.html")
    assert r.exit_code == 2 and "nosuchfield" in r.output and not (tmp_path / "n.html").exists()


CHROMIUM = Path(os.environ.get("INFLUCODER_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("INFLUCODER_CHROMEDRIVER", "/usr/bin/chromedriver"))


KINDS = ("chat", "harmful", "reasoning", "safety-refusals")
CONTEXT = {"runs": "runs", "pool": "pool", "queries": "queries", "n_boot": 1000}


@pytest.mark.browser
@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()), reason="no headless Chromium"
)
def test_tables_fit_a_1024_pixel_window(tmp_path):
    """Eight methods with long names and eight groups (the demo has six parts): the cells wrap."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    from influcoder.validation.lds_page import write_lds_page

    groups = [f"{block}/{kind}" for block in ("report", "validation") for kind in KINDS]
    figures = {"lds": -0.512, "low": -0.551, "high": -0.456, "n": 28}
    rows = [
        {
            "method": f"recipe-{k}-preconditioned-inner-product",
            "lds": 0.5,
            "lds_low": 0.4,
            "lds_high": 0.6,
            "lds_subsets": 64,
            "lds_queries": 50,
            "lds_by": {g: figures for g in groups},
        }
        for k in range(8)
    ]
    page = write_lds_page(tmp_path / "lds.html", rows, by="part", context=CONTEXT)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--user-data-dir=" + str(tmp_path / "profile"))
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_window_size(1024, 900)
        driver.get(page.as_uri())
        widths = driver.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth,"
            " ...[...document.querySelectorAll('table')].map(t => t.scrollWidth - t.clientWidth)]"
        )
        image = driver.execute_script("return document.querySelector('img').naturalWidth")
    finally:
        driver.quit()
    page_scroll, page_width, *tables = widths
    assert page_scroll <= page_width, widths
    assert len(tables) == 2 and all(extra <= 0 for extra in tables), widths
    assert image > 0  # the figure next to the page loaded


def test_validate_report_names_the_lds_page(saved):
    report = (saved / "v" / "report.html").read_text()
    runs, pool, heldout = (str(saved / name) for name in ("v/runs", "pool", "heldout"))
    command = f"influcoder lds {runs} {pool} {heldout} -e NAME=ENCODER"
    assert command in report and "--by label --html lds.html" in report
