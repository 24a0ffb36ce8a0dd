"""The real page in headless Chromium (Debian's chromium and chromium-driver, through Selenium), against the real
server: a rater opens their link, sees the waveform with the inpainted span on yellow and a red playhead that
moves while the clip plays, cannot go on before playing, scores every item with the mouse or the keyboard (one
item at a phone's width), and the database then holds exactly those judgments. No address the browser asked for
and nothing on the page names a system or a clip's file."""

from __future__ import annotations

import json
import shutil
import tempfile
import time

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
YELLOW, WHITE, RED = (255, 225, 77), (255, 255, 255), (224, 0, 0)
N_ITEMS = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_study, server_cls):
    root = tmp_path_factory.mktemp("page")
    url = f"sqlite:///{root / 'study.db'}"
    store, study, _ = make_study(root, items_per_rater=N_ITEMS, anchors_per_rater=1, seconds=1.0, url=url)
    token = store.add_raters(study, 1)[0]
    server = server_cls(url, study.name, root).start()
    yield store, study, token, server
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
                f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path_factory.mktemp('chromium'))}",
                "--window-size=1100,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    driver.set_script_timeout(20)
    yield driver
    driver.quit()


PIXELS = """
const c = document.getElementById('wave'), g = c.getContext('2d'), w = c.width, h = c.height;
const px = (x, y) => Array.from(g.getImageData(Math.round(x), Math.round(y), 1, 1).data.slice(0, 3));
const row = Array.from(g.getImageData(0, 2, w, 1).data);
const red = [];
for (let x = 0; x < w; x++) if (row[4 * x] > 200 && row[4 * x + 1] < 40 && row[4 * x + 2] < 40) red.push(x);
let wave = 0;
const mid = g.getImageData(0, Math.round(h / 2), w, 1).data;
for (let x = 0; x < w; x++) if (mid[4 * x] < 80 && mid[4 * x + 1] < 100 && mid[4 * x + 2] > 80) wave++;
return {w, h, span: px(w * arguments[0], 2), before: px(w * arguments[1], 2), after: px(w * arguments[2], 2),
        red, wave};
"""


def _wait(driver, predicate, timeout=20.0, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate(driver)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _close(a, b, tol=3):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def test_a_rater_plays_and_scores_every_item_and_the_database_holds_exactly_that(setup, browser, system_names):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    store, study, token, server = setup
    rater = store.rater(study, token)
    browser.execute_cdp_cmd("Network.enable", {})  # the performance log below lists every request the page made
    t0 = time.monotonic()
    browser.get(f"{server.url}/r/{token}")
    expected = []
    for k in range(1, N_ITEMS + 1):
        _wait(browser, lambda d: d.find_element(By.ID, "progress").text == f"{k} of {N_ITEMS}", what=f"item {k}")
        item = store.state(study, rater)["item"]
        assert item["number"] == k
        if k == N_ITEMS:  # the last item at a phone's width
            browser.set_window_size(390, 844)
        play, nxt = browser.find_element(By.ID, "play"), browser.find_element(By.ID, "next")
        _wait(browser, lambda d: play.is_enabled(), what="the clip to load")
        s0, s1 = (t / item["seconds"] for t in item["span"])
        before = browser.execute_script(PIXELS, (s0 + s1) / 2, s0 / 2, (1 + s1) / 2)
        assert _close(before["span"], YELLOW) and _close(before["before"], WHITE) and _close(before["after"], WHITE)
        assert before["wave"] > before["w"] // 4, "the waveform is drawn across the canvas"
        assert before["red"] and max(before["red"]) < 0.05 * before["w"], "the playhead starts at 0"
        # scores first: Next stays disabled until the clip was heard
        scores = {"smoothness": 1 + (3 * k) % 10, "match": 1 + (7 * k) % 10}
        if k % 2:  # keyboard: digits score the active criterion (0 = 10)
            browser.find_element(By.TAG_NAME, "body").send_keys(*(str(v % 10) for v in scores.values()))
        else:  # mouse or touch on the labels
            for crit, v in scores.items():
                browser.find_element(By.CSS_SELECTOR, f"input[name={crit}][value='{v}'] + span").click()
        assert not nxt.is_enabled()
        if k % 2:
            browser.find_element(By.TAG_NAME, "body").send_keys(Keys.SPACE)
        else:
            play.click()
        _wait(browser, lambda d: d.execute_script("const a = document.getElementById('audio');"
                                                  "return a.currentTime > 0.3 && !a.paused;"), what="playback")
        during = browser.execute_script(PIXELS, 0.5, 0.0, 1.0)["red"]
        assert during and 0.1 * before["w"] < min(during), "the red line follows playback"
        _wait(browser, lambda d: d.execute_script("return document.getElementById('audio').ended"), what="the end")
        after = browser.execute_script(PIXELS, 0.5, 0.0, 1.0)
        assert after["red"] and min(after["red"]) > 0.9 * after["w"]
        _wait(browser, lambda d: nxt.is_enabled(), what="Next to be enabled")
        if k == N_ITEMS:
            width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            assert width[0] <= width[1], "no sideways scrolling at a phone's width"
            box = browser.find_element(By.CSS_SELECTOR, "input[name=match][value='1'] + span").size
            assert box["height"] >= 44 and box["width"] >= 44, "touch-sized score buttons"
        if k % 2:
            browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ENTER)
        else:
            nxt.click()
        expected += [(k, crit, v) for crit, v in scores.items()]
    _wait(browser, lambda d: d.find_element(By.ID, "done").is_displayed(), what="the thank-you page")
    seconds = time.monotonic() - t0
    got = [(j["item"], j["criterion"], j["score"]) for j in store.judgments(study)]
    assert got == expected
    assert all(j["play_seconds"] >= 0.95 for j in store.judgments(study))
    requested = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requested if m["method"] == "Network.requestWillBeSent"]
    sent = [u for u in urls if u.startswith(server.url)]  # (the audio element also loads each clip's blob: URL)
    assert sum(u.endswith("/audio") for u in sent) == N_ITEMS and sum(u.endswith("/ratings") for u in sent) == N_ITEMS
    page = browser.execute_script("return document.documentElement.outerHTML")
    files = [p.name for p in study.media_dir.iterdir()]
    for secret in [*system_names, *(f"source of {s}" for s in system_names), *files, *(f[:-4] for f in files)]:
        assert secret not in page and not any(secret in u for u in urls), secret
    print(f"browser session: {N_ITEMS} items in {seconds:.1f} s")
