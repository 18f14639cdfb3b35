"""hashkit serve in a real headless browser (Debian's chromium + chromium-driver, driven by Selenium).

An index of real CIFAR-10 images (the checkpoint's dataset database, so labels are known): upload one of
them and see itself first at distance 0; click a result to search by it; press Enter on a result; upload a
text file and see the error line; the runs page shows the table and a curve; the page fits a phone-width
window. Screenshots of every step are saved under the test's temp dir (``screenshots/``).
Skips with the reason when the browser, its driver, Selenium or the CIFAR-10 tar is missing
(scripts/setup.sh installs the browser on CI machines).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_report import write_run  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "chromium-driver")
WAIT_S = 90  # generous: the CI machine may be busy


def find_browser() -> tuple[str, str]:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -r requirements.txt)")
    pytest.importorskip("fastapi", reason="fastapi is not installed (pip install -r requirements.txt)")
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = next((shutil.which(d) for d in DRIVERS if shutil.which(d)), None)
    if browser is None or driver is None:
        pytest.skip("headless browser tests need Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver; scripts/setup.sh does it when it can)")
    return browser, driver


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, cifar_tar: Path, hashkit_cache: Path):
    browser, driver_path = find_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    import hashkit
    from hashkit.checkpoint import save_checkpoint
    from hashkit.index import Index
    from hashkit.model import build_model
    from hashkit.run import build_splits
    from hashkit.serve import serve

    tmp = tmp_path_factory.mktemp("browser")
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", 32, pretrained=True)  # ImageNet features: distinct codes
    config = {"method": "dpsh", "arch": "efficientnet_lite0", "code_length": 32, "image_size": 32,
              "dataset": "cifar10", "root": str(cifar_tar), "seed": 0, "num_query": 20, "num_train": 20,
              "num_database": 60}
    checkpoint = tmp / "model.pt"
    save_checkpoint(checkpoint, {"method": "dpsh", "arch": "efficientnet_lite0", "code_length": 32,
                                 "config": config, "model": model.state_dict(), "method_state": {}})
    hasher = hashkit.load(checkpoint)
    database = build_splits(config).database
    index_dir = tmp / "cifar.index"
    index = Index.create(index_dir, 32, hasher.identity)
    codes = hasher.encode(database, progress=False)
    index.add(codes, ids=[database.item_id(i) for i in range(len(database))])
    runs = tmp / "runs"
    write_run(runs, "dpsh-cifar10-32bits", curves=True)
    write_run(runs, "hashnet-cifar10-32bits", method="hashnet", map_value=0.62, curves=True)

    server = serve(index_dir, checkpoint, runs=runs, port=0, block=False, cache_dir=tmp / "cache")
    assert server.app.state.items.dataset_ready.wait(WAIT_S)

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except Exception as exc:  # noqa: BLE001 - a browser that cannot start is an environment problem
        server.stop()
        pytest.skip(f"chromium could not start: {str(exc).splitlines()[0]}")
    shots = tmp / "screenshots"
    shots.mkdir()
    # a database image whose code no other item shares: it must come back first, at distance 0
    unique = [i for i in range(len(codes)) if (np.abs(codes - codes[i]).sum(axis=1) == 0).sum() == 1]
    assert unique, "every code is shared: the test index is degenerate"
    yield {"server": server, "driver": driver, "shots": shots, "database": database, "query": unique[0], "tmp": tmp}
    driver.quit()
    server.stop()


def wait_state(driver, state: str, searches: int | None = None) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d) -> bool:
        body = d.find_element("tag name", "body")
        if body.get_attribute("data-state") != state:
            return False
        return searches is None or body.get_attribute("data-searches") == str(searches)

    WebDriverWait(driver, WAIT_S).until(ready)


def hits(driver) -> list[dict]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#results .hit')].map(b => ({position: +b.dataset.position,"
        " distance: +b.dataset.distance, rank: +b.dataset.rank, labels: b.querySelector('.labels').textContent,"
        " id: b.dataset.id}))"
    )


def images_loaded(driver, selector: str) -> bool:
    return driver.execute_script(
        f"const imgs = [...document.querySelectorAll({selector!r})];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);"
    )


def test_search_page_in_a_browser(site: dict) -> None:
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver, server, shots = site["driver"], site["server"], site["shots"]
    driver.get(server.url)
    assert "hashkit" in driver.title
    # Before any search: no query card, hence no image without a picture.
    assert not driver.find_element("id", "query").is_displayed()
    assert not any(img.is_displayed() for img in driver.find_elements("css selector", "img"))
    driver.save_screenshot(str(shots / "0-empty.png"))

    # 1. upload an image that is in the index → itself first at distance 0, k results, distances non-decreasing
    query_pos = site["query"]
    query_file = site["database"].item_id(query_pos)
    driver.find_element("id", "image").send_keys(query_file)
    wait_state(driver, "done", searches=1)
    found = hits(driver)
    assert len(found) == 10
    assert found[0]["position"] == query_pos and found[0]["distance"] == 0
    assert [h["distance"] for h in found] == sorted(h["distance"] for h in found)
    assert [h["rank"] for h in found] == list(range(1, 11))
    WebDriverWait(driver, WAIT_S).until(lambda d: images_loaded(d, "#results img") and images_loaded(d, "#query-img"))
    WebDriverWait(driver, WAIT_S).until(lambda d: hits(d)[0]["labels"])
    label = site["database"].labels[query_pos].argmax()
    from hashkit.data.cifar10 import CLASS_NAMES

    assert hits(driver)[0]["labels"] == CLASS_NAMES[label]
    assert len(driver.find_element("id", "query-code").text) == 32
    assert "encode" in driver.find_element("id", "timings").text
    driver.save_screenshot(str(shots / "1-upload.png"))

    # 2. click the third result → a new search by that item
    third = found[2]
    driver.find_elements("css selector", "#results .hit")[2].click()
    wait_state(driver, "done", searches=2)
    assert driver.find_element("id", "query-name").text == third["id"]
    again = hits(driver)
    assert len(again) == 10 and again[0]["distance"] == 0
    assert [h["distance"] for h in again] == sorted(h["distance"] for h in again)
    WebDriverWait(driver, WAIT_S).until(lambda d: images_loaded(d, "#results img"))
    driver.save_screenshot(str(shots / "2-clicked.png"))

    # 3. keyboard: focus a result and press Enter; switch to a radius search from the form
    buttons = driver.find_elements("css selector", "#results .hit")
    buttons[1].send_keys(Keys.ENTER)
    wait_state(driver, "done", searches=3)
    driver.find_element("css selector", "input[name=mode][value=radius]").click()
    radius = driver.find_element("id", "radius")
    radius.clear()
    radius.send_keys("4", Keys.ENTER)
    wait_state(driver, "done", searches=4)
    assert all(h["distance"] <= 4 for h in hits(driver))
    assert "within distance 4" in driver.find_element("id", "status").text

    # 4. a text file → the one-line error; the page keeps working afterwards
    text_file = site["tmp"] / "notes.txt"
    text_file.write_text("not an image\n")
    driver.find_element("id", "image").send_keys(str(text_file))
    wait_state(driver, "error")
    error = driver.find_element("id", "error")
    assert error.is_displayed() and "notes.txt: not an image" in error.text
    driver.save_screenshot(str(shots / "3-error.png"))
    driver.find_element("css selector", "input[name=mode][value=k]").click()
    driver.find_element("id", "image").send_keys(query_file)
    wait_state(driver, "done", searches=5)
    assert not driver.find_element("id", "error").is_displayed()
    assert hits(driver)[0]["position"] == query_pos

    # 5. phone width: nothing sticks out sideways
    driver.set_window_size(390, 844)
    WebDriverWait(driver, WAIT_S).until(lambda d: images_loaded(d, "#results img"))
    overflow = driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    driver.save_screenshot(str(shots / "4-phone.png"))
    driver.set_window_size(1200, 900)


def test_runs_page_in_a_browser(site: dict) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver, server, shots = site["driver"], site["server"], site["shots"]
    driver.get(server.url + "runs")
    table = driver.find_element("id", "report")
    assert "dpsh" in table.text and "hashnet" in table.text and "32 bits" in table.text
    WebDriverWait(driver, WAIT_S).until(lambda d: images_loaded(d, "#curves"))  # the first run is ticked
    first_src = driver.find_element("id", "curves").get_attribute("src")
    boxes = driver.find_elements("css selector", "input[name=run]")
    boxes[1].click()  # tick the second run too: both curves in one figure
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element("id", "curves").get_attribute("src") != first_src and images_loaded(d, "#curves"))
    width = driver.execute_script("return document.getElementById('curves').naturalWidth")
    assert width > 500
    driver.save_screenshot(str(shots / "5-runs.png"))
