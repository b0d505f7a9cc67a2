"""Screenshots of ``influcoder serve`` for the docs: docs/serve.png (explaining an output) and
docs/serve-clean.png (cleaning the training file).

A real index (the bundled MiniLM encoder over the 897 ChatterBot samples of the demo data,
with their category as metadata) is served by ``influcoder serve`` on a free loopback port
and driven in headless Chromium (/usr/bin/chromium, /usr/bin/chromedriver; selenium).

    OMP_NUM_THREADS=1 python scripts/serve_screenshot.py [--work runs/screenshot]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Tell me a joke about computers."
RESPONSE = "Why did the computer go to the doctor? Because it had a virus!"
UNWANTED = [
    "You are stupid and nobody likes you.",
    "I hate you, go away.",
    "That is a dumb question, figure it out yourself.",
]


def build(index: Path) -> None:
    from influcoder.attribution.build import build_index
    from influcoder.workflows.datasets import load_chatterbot

    rows = load_chatterbot()
    pool = index.parent / "chatterbot.jsonl"
    pool.write_text(
        "".join(
            json.dumps({k: r[k] for k in ("id", "prompt", "response", "category")}) + "\n"
            for r in rows
        )
    )
    build_index(pool, index, "all-minilm-l6-v2", progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="serve-shot-")).resolve()
    index = work / "index"
    if not (index / "index.json").is_file():
        work.mkdir(parents=True, exist_ok=True)
        build(index)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "influcoder.cli", "serve", str(index), "--port", str(port)]
    )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--window-size=1280,1150",
            f"--user-data-dir={work / 'profile'}",
        ):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        wait = WebDriverWait(driver, 120)
        try:
            for _ in range(600):
                try:
                    driver.get(f"http://127.0.0.1:{port}/")
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    time.sleep(0.5)
            wait.until(lambda d: "pool samples" in d.find_element(By.ID, "pool-info").text)
            driver.find_element(By.ID, "prompt").send_keys(PROMPT)
            driver.find_element(By.ID, "response").send_keys(RESPONSE)
            driver.find_element(By.ID, "k").clear()
            driver.find_element(By.ID, "k").send_keys("6")
            driver.find_element(By.ID, "run").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "li.hit")) == 6)
            driver.find_elements(By.CSS_SELECTOR, "li.hit summary")[0].click()
            driver.save_screenshot(str(Path(args.out) / "serve.png"))

            unwanted = work / "unwanted.jsonl"
            unwanted.write_text(
                "".join(
                    json.dumps({"id": f"u{i}", "response": t}) + "\n"
                    for i, t in enumerate(UNWANTED)
                )
            )
            driver.find_element(By.ID, "tab-clean").click()
            driver.find_element(By.ID, "unwanted-file").send_keys(str(unwanted))
            wait.until(lambda d: d.find_element(By.ID, "rank").is_enabled())
            driver.find_element(By.ID, "review-k").clear()
            driver.find_element(By.ID, "review-k").send_keys("12")
            driver.find_element(By.ID, "rank").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ranking-rows tr")) == 12)
            boxes = driver.find_elements(By.CSS_SELECTOR, "#ranking-rows input.remove")
            for box in boxes[6:]:
                box.click()
            driver.save_screenshot(str(Path(args.out) / "serve-clean.png"))
        finally:
            driver.quit()
    finally:
        server.terminate()
        server.wait(30)
    print(f"wrote {args.out}/serve.png and {args.out}/serve-clean.png")


if __name__ == "__main__":
    main()
