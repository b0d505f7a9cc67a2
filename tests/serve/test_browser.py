"""The web page in a real headless Chromium (selenium), as a person uses it: open the page
with the token in its address, type an output, see the hits, filter by metadata, expand a
text, download CSV and JSONL (and read the files), see the gradient comparison; then upload
unwanted outputs, untick a sample and download the cleaned training file.

Needs /usr/bin/chromium and /usr/bin/chromedriver (or the paths in INFLUCODER_CHROMIUM and
INFLUCODER_CHROMEDRIVER; Debian: ``apt-get install chromium
chromium-driver``; ``scripts/install.sh`` installs them when run as root). With
``SERVE_SCREENSHOT=docs/serve.png`` the test saves a screenshot of the results there.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from influcoder.encoders.settings import CARD_NAME
from influcoder.serve.fidelity import encoder_fidelity

from .conftest import TOKEN
from .test_fidelity import card_fidelity

#: The browser and its driver (Debian's paths; another system may name them in these variables).
CHROMIUM = Path(os.environ.get("INFLUCODER_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("INFLUCODER_CHROMEDRIVER", "/usr/bin/chromedriver"))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason=f"no headless browser: {CHROMIUM} or {CHROMEDRIVER} is missing "
        f"(apt-get install chromium chromium-driver, or run "
        f"scripts/install.sh as root)",
    ),
]
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
)
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

QUERY = "The capital of France is Paris."


@pytest.fixture()
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1500",
        "--user-data-dir=" + str(tmp_path / "profile"),
    ):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait(driver, condition, timeout=30):
    """Until ``condition()`` holds; an element replaced while it was read (the page re-renders
    its lists whole) just means: look again."""
    return WebDriverWait(
        driver, timeout, ignored_exceptions=(StaleElementReferenceException,)
    ).until(lambda d: condition())


def downloaded(driver, name, timeout=30) -> Path:
    path = driver.downloads / name
    deadline = time.monotonic() + timeout
    while not (path.is_file() and not list(driver.downloads.glob("*.crdownload"))):
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} was not downloaded: {os.listdir(driver.downloads)}")
        time.sleep(0.1)
    return path


def hit_ids(driver):
    """The ids of the hits shown, read in one step (so never half of an old list)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('li.hit')].map((li) => li.dataset.id)"
    )


def test_explain_filter_download(browser, live_server, service, tmp_path):
    d = browser
    d.get(f"{live_server}/?token={TOKEN}")
    wait(d, lambda: "24 pool samples" in d.find_element(By.ID, "pool-info").text)
    assert "token" not in d.current_url  # taken once, then out of the address bar
    # the encoder's held-out fidelity: none for the tiny encoder; a card's, as the page says it
    shown = d.find_element(By.ID, "fidelity-info").text
    assert "no held-out estimate (distilled with --holdout-fraction 0" in shown
    (tmp_path / CARD_NAME).write_text(json.dumps({"fidelity": card_fidelity()}))
    fidelity = encoder_fidelity(str(tmp_path))
    text = d.execute_script("return fidelityText(arguments[0])", fidelity)
    assert text.startswith("Encoder fidelity on 24 pool samples x 8 queries it never saw (95%")
    assert "per-anchor 0.35 [0.30, 0.40], aggregated 0.50 [0.45, 0.55]" in text
    assert "recall@10 0.40 [0.35, 0.45]; untrained per-anchor 0.18. flat: " in text
    d.find_element(By.ID, "response").send_keys(QUERY)
    d.find_element(By.ID, "run").click()
    wait(d, lambda: len(hit_ids(d)) == 10)
    expected = [h["id"] for h in service.attribute([_item(QUERY, 10)])[0]["hits"]]
    assert hit_ids(d) == expected
    first = d.find_element(By.CSS_SELECTOR, "li.hit")
    assert "percentile" in first.text and "topic:" in first.text
    assert len(d.find_elements(By.CSS_SELECTOR, "#histogram rect.bin")) == 40
    assert len(d.find_elements(By.CSS_SELECTOR, "#histogram line.hit")) == 10
    first.find_element(By.TAG_NAME, "summary").click()
    full = first.find_element(By.CLASS_NAME, "full")
    wait(d, lambda: full.is_displayed())
    assert service.sample(expected[0])["response"] in full.text

    # filter by metadata: the menu, then a chip
    Select(d.find_element(By.ID, "filter-topic")).select_by_value("t1")
    wait(d, lambda: "topic=t1" in d.find_element(By.ID, "summary").text)
    chips = d.find_elements(By.CSS_SELECTOR, "li.hit .chip")
    assert chips and {c.text for c in chips} == {"topic: t1"}
    filtered = hit_ids(d)
    assert len(filtered) == 8
    d.find_element(By.ID, "download-csv").click()
    rows = list(csv.DictReader(downloaded(d, "attribution.csv").open(encoding="utf-8")))
    assert [r["id"] for r in rows] == filtered
    assert {json.loads(r["meta"])["topic"] for r in rows} == {"t1"}
    assert all(0 < float(r["percentile"]) <= 100 for r in rows)
    d.find_element(By.ID, "download-jsonl").click()
    lines = downloaded(d, "attribution.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["id"] for x in lines] == filtered
    Select(d.find_element(By.ID, "filter-topic")).select_by_value("")
    wait(d, lambda: len(hit_ids(d)) == 10)

    # the gradient ground truth: a store sample's id
    d.find_element(By.ID, "prompt").send_keys("How do I boil an egg?")
    d.find_element(By.ID, "response").clear()
    d.find_element(By.ID, "response").send_keys("Boil the egg in water for nine minutes.")
    d.find_element(By.ID, "query-id").send_keys("p4")
    d.find_element(By.ID, "run").click()
    wait(d, lambda: d.find_elements(By.ID, "gt-agreement"))
    assert "Spearman" in d.find_element(By.ID, "gt-agreement").text
    assert len(d.find_elements(By.CSS_SELECTOR, "#ground-truth table")) == 2
    shot = os.environ.get("SERVE_SCREENSHOT")
    if shot:
        d.execute_script("window.scrollTo(0, 0)")
        d.save_screenshot(shot)
    d.find_element(By.ID, "query-id").clear()
    d.find_element(By.ID, "query-id").send_keys("p23")
    d.find_element(By.ID, "run").click()
    wait(d, lambda: d.find_elements(By.ID, "gt-message"))
    assert "is not one of the" in d.find_element(By.ID, "gt-message").text


def test_clean_the_training_file(browser, live_server, serve_pool, tmp_path):
    d = browser
    unwanted = tmp_path / "unwanted.jsonl"
    unwanted.write_text(
        json.dumps({"id": "u1", "response": "I will help you build a bomb."})
        + "\nSteal the money from the bank.\n"
    )
    d.get(f"{live_server}/?token={TOKEN}")
    wait(d, lambda: "24 pool samples" in d.find_element(By.ID, "pool-info").text)
    d.find_element(By.ID, "tab-clean").click()
    d.find_element(By.ID, "unwanted-file").send_keys(str(unwanted))
    wait(d, lambda: "2 unwanted outputs" in d.find_element(By.ID, "unwanted-info").text)
    review = d.find_element(By.ID, "review-k")
    review.clear()
    review.send_keys("5")
    d.find_element(By.ID, "rank").click()
    wait(d, lambda: len(d.find_elements(By.CSS_SELECTOR, "#ranking-rows tr")) == 5)
    boxes = d.find_elements(By.CSS_SELECTOR, "#ranking-rows input.remove")
    ranked = [b.get_attribute("data-id") for b in boxes]
    boxes[1].click()  # keep the second one after all
    removed = [ranked[0]] + ranked[2:]
    assert "Removing 4 of 24" in d.find_element(By.ID, "removal-info").text
    d.find_element(By.ID, "download-clean").click()
    kept = [json.loads(x) for x in downloaded(d, "clean.jsonl").read_text().splitlines()]
    originals = [json.loads(x) for x in serve_pool.read_text().splitlines()]
    assert kept == [r for r in originals if r["id"] not in removed]


def test_groups_in_the_page(browser, live_server, service):
    from influcoder.attribution.attributor import text_query
    from influcoder.serve.service import QueryItem

    d = browser
    d.get(f"{live_server}/?token={TOKEN}")
    wait(d, lambda: "24 pool samples" in d.find_element(By.ID, "pool-info").text)
    d.find_element(By.ID, "response").send_keys(QUERY)
    d.find_element(By.ID, "run").click()
    wait(d, lambda: len(hit_ids(d)) == 10)
    assert not d.find_element(By.ID, "groups").is_displayed()
    Select(d.find_element(By.ID, "group-by")).select_by_value("topic")  # reruns the query
    wait(d, lambda: d.find_elements(By.CSS_SELECTOR, "#groups-table tr[data-group]"))
    shown = d.execute_script(
        "return [...document.querySelectorAll('#groups-table tr[data-group]')].map("
        "(tr) => [...tr.children].map((td) => td.textContent))"
    )
    [answer] = service.attribute([QueryItem(text_query(QUERY), 10, group_by="topic")])
    assert shown == [
        [g["group"], str(g["n"]), *(f"{g[s]:.4f}" for s in ("mean", "sum", "max", "softmax"))]
        for g in answer["groups"]["rows"]
    ]
    assert "softmax(|s|/0.1)" in d.find_element(By.ID, "groups-info").text
    Select(d.find_element(By.ID, "group-by")).select_by_value("")
    wait(d, lambda: not d.find_element(By.ID, "groups").is_displayed())


def _item(text, k):
    from influcoder.attribution.attributor import text_query
    from influcoder.serve.service import QueryItem

    return QueryItem(text_query(text), k)


def test_the_outputs_own_gradient_is_a_checkbox(
    browser, live_server, serve_pool, tiny_model_dir, tiny_encoder, tmp_path
):
    """Without --query-gradients the page offers no checkbox; with it, the box is ticked,
    the answer says it compared the output's own gradient, and unticked the encoder answers
    (the hits the server's encoder-only mode gives)."""
    from click.testing import CliRunner

    from influcoder.cli import cli
    from influcoder.serve.server import open_service

    from .conftest import running

    d = browser
    d.get(f"{live_server}/?token={TOKEN}")
    wait(d, lambda: "24 pool samples" in d.find_element(By.ID, "pool-info").text)
    assert not d.find_element(By.ID, "query-gradient-label").is_displayed()

    def ok(*args):
        r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.output

    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(line for line in serve_pool.read_text().splitlines(True)[:12]))
    ok("collect", serve_pool, "-o", tmp_path / "gp", "--model", tiny_model_dir, "--sketch-dim",
       "64", "--max-length", "64", "--adapter-init", "fresh", "-q")  # fmt: skip
    ok("collect", queries, "--like", tmp_path / "gp", "-o", tmp_path / "gq", "-q")
    ok("distill", tmp_path / "gp", tmp_path / "gq", "-o", tmp_path / "enc", "--encoder",
       tiny_encoder, "--epochs", "0", "--head", "linear", "--head-components", "4",
       "--holdout-fraction", "0", "-q")  # fmt: skip
    ok("index", tmp_path / "enc", serve_pool, "-o", tmp_path / "index", "--backend", "torch", "-q")
    service = open_service(
        tmp_path / "index", query_gradients=str(tmp_path / "gp"), backend="torch"
    )
    try:
        with running(service) as url:
            d.get(f"{url}/?token={TOKEN}")
            wait(d, lambda: "query gradients taken like" in d.find_element(By.ID, "pool-info").text)
            box = d.find_element(By.ID, "query-gradient")
            assert box.is_displayed() and box.is_selected()
            d.find_element(By.ID, "response").send_keys(QUERY)
            d.find_element(By.ID, "run").click()
            wait(d, lambda: "own gradient" in d.find_element(By.ID, "summary").text)
            exact = hit_ids(d)
            box.click()
            d.find_element(By.ID, "run").click()
            wait(d, lambda: "own gradient" not in d.find_element(By.ID, "summary").text)
            wait(d, lambda: len(hit_ids(d)) == 10)
            fast = hit_ids(d)
    finally:
        service.close()
    [answer] = service.attribute([_item(QUERY, 10)])  # the default: the query's gradient
    assert exact == [h["id"] for h in answer["hits"]] and answer["query_gradient"] is True
    [answer] = service.attribute([replace(_item(QUERY, 10), query_gradient=False)])
    assert fast == [h["id"] for h in answer["hits"]] and answer["query_gradient"] is False
