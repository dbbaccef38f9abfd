"""The try-it page (web/) in a real browser: headless Chromium from the distribution, driven by Selenium,
against the session's real TorchServe behind a door of its own.

Skipped, saying what to install, where nginx, Chromium or its chromedriver is missing. Screenshots (one
desktop, one phone width) go to runs/web/; docs/web/ holds the committed ones.
"""

from __future__ import annotations

import base64
import re
import shutil
import socket
from pathlib import Path

import pytest
import requests

from clients.errors import ServerError
from clients.rest import RestClient
from ops import door as ops_door
from ops import server as ops_server

pytestmark = pytest.mark.server
CHROMEDRIVER = "/usr/bin/chromedriver"  # the distribution's, matching its Chromium: Selenium never downloads one
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
INSTALL_HINT = "install them from the distribution (Debian/Ubuntu: apt-get install chromium chromium-driver)"
if (missing := ops_door.missing_nginx()) is not None:  # nginx, or its stream module
    pytest.skip(f"browser tests skipped: {missing}", allow_module_level=True)
if CHROMIUM is None or not Path(CHROMEDRIVER).is_file():
    pytest.skip(f"browser tests skipped: Chromium or {CHROMEDRIVER} not found; {INSTALL_HINT}", allow_module_level=True)

from selenium import webdriver  # noqa: E402 - only where a browser can run
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TIMEOUT = 30
STREAM_TIMEOUT = 180  # a loaded machine: the session's TorchServe serves every other test too
SCREENSHOTS = ops_door.ROOT / "runs" / "web"
DESKTOP, PHONE = (1280, 1000), (390, 844)
STEPS = 24


def open_door(server: ops_server.RunningServer, runtime: Path, replica: ops_door.Replica | None = None) -> str:
    """A door on free ports in front of `server` (or of `replica`); returns its URL."""
    port, grpc_port = ops_server.free_ports(2)
    door = ops_door.Door(
        host="127.0.0.1",
        port=port,
        grpc_port=grpc_port,
        replicas=[replica or ops_door.replica(server.endpoints)],
        models=server.models,
        torchserve_key_file=str(server.key_file),
        client_key_file=str(runtime / ops_door.CLIENT_KEY_FILE),
        max_body_bytes=int(ops_server.read_properties(server.workdir / "config.properties")["max_request_size"]),
    )
    ops_door.start(runtime, door)
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def door(server, tmp_path_factory):
    runtime = tmp_path_factory.mktemp("web_door")
    url = open_door(server, runtime)
    try:
        yield url, ops_door.client_key(runtime / ops_door.CLIENT_KEY_FILE), runtime
    finally:
        ops_door.stop(runtime)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def by_id(driver, test_id: str):
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{test_id}"]')


def shown_errors(driver) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="error"]') if e.is_displayed()]


def console_errors(driver, allowed: str | None = None) -> list[str]:
    """The page's console errors since the last call. Chromium logs every 4xx/5xx answer as an error of
    its own; `allowed` (a regex) names the answers a test asked for, which the page shows in place."""
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return [m for m in errors if not (allowed and re.search(allowed, m))]


def broken_images(driver) -> list[str]:
    """The <img>s on screen that show no picture (the browser draws its broken-image icon for those)."""
    return driver.execute_script(
        "return [...document.images]"
        ".filter((im) => im.getClientRects().length > 0 && !(im.complete && im.naturalWidth > 0))"
        ".map((im) => im.outerHTML)"
    )


def wait(driver, condition, timeout: float = TIMEOUT):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))


def open_page(driver, url: str, key: str | None) -> None:
    """The page as `make door`'s link opens it, in a fresh tab state (no key kept from an earlier test)."""
    driver.get(f"{url}/web/index.html")  # same origin: clear what an earlier test kept for the tab
    driver.execute_script("sessionStorage.clear()")
    driver.get(ops_door.page_link(url, key) if key else f"{url}/")
    wait(driver, lambda d: d.execute_script("return document.readyState") == "complete")


def full_page_png(driver) -> bytes:
    """The whole page from its top, however far it scrolls and wherever it is scrolled to."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    return base64.b64decode(shot["data"])


def ask_palindrome(driver, digits: str) -> None:
    box = by_id(driver, "palindrome-input")
    box.clear()
    box.send_keys(digits)
    by_id(driver, "palindrome-submit").click()


# -- the door serves the page ----------------------------------------------------------------------


def test_the_page_is_served_without_a_key_and_only_its_files(door):
    url, _, runtime = door
    page = requests.get(f"{url}/", timeout=TIMEOUT)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    sizes = {}
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css"), ("index.html", "text/html")):
        resp = requests.get(f"{url}/web/{name}", timeout=TIMEOUT)
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith(kind), name
        sizes[name] = len(resp.content)
    print(f"page size: {sum(sizes.values())} bytes ({sizes})")
    assert sum(sizes.values()) == sum(f.stat().st_size for f in ops_door.WEB_ROOT.iterdir())
    for method, path in (("POST", "/"), ("GET", "/web/missing.js"), ("POST", "/web/app.js"), ("GET", "/index.html")):
        assert requests.request(method, f"{url}{path}", timeout=TIMEOUT).status_code == 404, (method, path)
    # A prediction still needs the key.
    assert requests.post(f"{url}/predictions/palindrome", json={"digits": "1232"}, timeout=TIMEOUT).status_code == 401


# -- the panels, in the browser --------------------------------------------------------------------


def test_the_link_keeps_the_key_for_the_tab_and_hides_it(browser, door):
    url, key, _ = door
    open_page(browser, url, key)
    assert browser.current_url == f"{url}/"  # the fragment is gone from the address bar
    assert browser.execute_script("return sessionStorage.getItem('digitlab-key')") == key
    assert not by_id(browser, "key-input").is_displayed()
    wait(browser, lambda d: d.find_element(By.ID, "health").text == "server ready")
    assert console_errors(browser) == []


def test_without_a_key_the_page_asks_for_it_and_a_wrong_one_is_refused(browser, door):
    url, key, _ = door
    open_page(browser, url, None)
    assert by_id(browser, "key-input").is_displayed()
    by_id(browser, "key-input").send_keys("wrong-key-of-sufficient-length")
    by_id(browser, "key-submit").click()
    ask_palindrome(browser, "1232")
    wait(browser, lambda d: shown_errors(d))
    assert "API key" in shown_errors(browser)[0] and by_id(browser, "key-input").is_displayed()
    by_id(browser, "key-input").send_keys(key)
    by_id(browser, "key-submit").click()
    ask_palindrome(browser, "1232")
    wait(browser, lambda d: "→ 1" in by_id(d, "palindrome-answer").text)
    assert shown_errors(browser) == []
    assert console_errors(browser, allowed=r"/predictions/palindrome .*status of 401") == []


def test_the_palindrome_panel_shows_the_answer_and_ten_probabilities(browser, door):
    url, key, _ = door
    open_page(browser, url, key)
    by_id(browser, "palindrome-input").clear()
    by_id(browser, "palindrome-input").send_keys("73456543", Keys.ENTER)  # a form: Enter asks, as the button does
    wait(browser, lambda d: "→" in by_id(d, "palindrome-answer").text)
    assert by_id(browser, "palindrome-answer").text.startswith("73456543 → 7")
    bars = browser.find_elements(By.CSS_SELECTOR, '[data-testid="palindrome-bars"] li')
    assert [b.find_element(By.CLASS_NAME, "label").text for b in bars] == [str(d) for d in range(10)]
    assert "best" in bars[7].get_attribute("class")
    assert console_errors(browser) == []


def test_an_error_clears_the_last_answers_bars(browser, door):
    """Bars left from the previous question beside an error read as the answer to the bad one."""
    url, key, _ = door
    open_page(browser, url, key)
    ask_palindrome(browser, "1232")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid="palindrome-bars"] li')) == 10)
    ask_palindrome(browser, "1234")  # not the start of a palindrome: refused
    wait(browser, lambda d: shown_errors(d))
    assert browser.find_elements(By.CSS_SELECTOR, '[data-testid="palindrome-bars"] li') == []
    assert by_id(browser, "palindrome-answer").text == ""
    assert console_errors(browser, allowed=r"/predictions/palindrome .*status of 400") == []


@pytest.mark.parametrize("digits", ["12", "1234", "12a4"])  # too short, not a palindrome prefix, not digits
def test_a_bad_input_shows_the_servers_own_message(browser, door, digits):
    url, key, _ = door
    with RestClient(url, key, timeout=TIMEOUT) as client, pytest.raises(ServerError) as refused:
        client.predict("palindrome", {"digits": digits})
    open_page(browser, url, key)
    ask_palindrome(browser, digits)
    wait(browser, lambda d: shown_errors(d))
    assert shown_errors(browser) == [refused.value.message]
    assert console_errors(browser, allowed=r"/predictions/palindrome .*status of 400") == []


def test_the_sample_grid_shows_n_images_and_two_clicks_set_the_interpolations_ends(browser, door):
    url, key, _ = door
    open_page(browser, url, key)
    for field, value in (("sample-n", "6"), ("sample-seed", "11")):
        by_id(browser, field).clear()
        by_id(browser, field).send_keys(value)
    by_id(browser, "sample-submit").click()
    images = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="sample-grid"] img'))
    assert len(images) == 6
    assert all(
        browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im) == 28 for im in images
    )
    picks = browser.find_elements(By.CSS_SELECTOR, '[data-testid="sample-grid"] .pick')
    assert [p.text for p in picks] == [f"11:{i}" for i in range(6)]
    picks[2].click()
    picks[5].send_keys(Keys.ENTER)  # the images are buttons: reachable and usable from the keyboard
    ends = browser.execute_script("""
        const f = document.getElementById('interp-form').elements;
        return [f['start-kind'].value, f['start-seed'].value, f['start-index'].value,
                f['end-kind'].value, f['end-seed'].value, f['end-index'].value];""")
    assert ends == ["id", "11", "2", "id", "11", "5"]
    by_id(browser, "interp-steps").clear()
    by_id(browser, "interp-steps").send_keys("5", Keys.ENTER)
    frames = by_id(browser, "interp-frames")
    wait(browser, lambda d: frames.get_attribute("data-state") == "done" or shown_errors(d), STREAM_TIMEOUT)
    assert len(frames.find_elements(By.TAG_NAME, "img")) == 5 and shown_errors(browser) == []
    assert console_errors(browser) == []


def test_the_sample_panel_asks_for_a_digit(browser, door):
    """With a digit, the grid shows the latent ids the server found for it: the same ids as a direct call."""
    url, key, _ = door
    with RestClient(url, key, timeout=TIMEOUT) as client:
        expected = client.predict("sample", {"n": 4, "seed": 5, "digit": 3})
    open_page(browser, url, key)
    for field, value in (("sample-n", "4"), ("sample-seed", "5"), ("sample-digit", "3")):
        by_id(browser, field).clear()
        by_id(browser, field).send_keys(value)
    by_id(browser, "sample-submit").click()
    wait(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid="sample-grid"] .pick')) == 4,
        STREAM_TIMEOUT,
    )
    picks = browser.find_elements(By.CSS_SELECTOR, '[data-testid="sample-grid"] .pick')
    assert [p.text for p in picks] == [f"{im['id']['seed']}:{im['id']['index']}" for im in expected["images"]]
    assert console_errors(browser) == []


def test_the_truncation_slider_asks_for_it_and_picks_carry_it_to_the_interpolation(browser, door):
    """The slider's psi goes with the sample request (the images are the server's for that psi), shows beside
    it, and picking two of them sets the interpolation's ends *and* its slider, so the ends are those images."""
    url, key, _ = door
    with RestClient(url, key, timeout=TIMEOUT) as client:
        expected = [im.png for im in client.sample(3, seed=4, truncation=0.6).images]
    open_page(browser, url, key)
    for field, value in (("sample-n", "3"), ("sample-seed", "4")):
        by_id(browser, field).clear()
        by_id(browser, field).send_keys(value)
    slider = by_id(browser, "sample-truncation")
    browser.execute_script("arguments[0].value = '0.6'; arguments[0].dispatchEvent(new Event('input'));", slider)
    assert by_id(browser, "sample-truncation-value").text == "0.6"
    by_id(browser, "sample-submit").click()
    images = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="sample-grid"] img'))
    shown = [im.get_attribute("src").removeprefix("data:image/png;base64,") for im in images]
    assert shown == expected
    picks = browser.find_elements(By.CSS_SELECTOR, '[data-testid="sample-grid"] .pick')
    picks[0].click()
    picks[2].click()
    assert by_id(browser, "interp-truncation").get_attribute("value") == "0.6"
    assert by_id(browser, "interp-truncation-value").text == "0.6"
    assert console_errors(browser) == []


def test_interpolation_frames_appear_as_they_stream_then_the_gif_downloads(browser, door, tmp_path, record_property):
    url, key, _ = door
    open_page(browser, url, key)
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    for field, value in (("interp-start-digit", "9"), ("interp-end-digit", "3"), ("interp-steps", str(STEPS))):
        by_id(browser, field).clear()
        by_id(browser, field).send_keys(value)
    # Before the first frame the player takes no room and shows no broken-image icon.
    player = by_id(browser, "interp-player")
    assert not player.is_displayed() and player.size["height"] == 0 and broken_images(browser) == []
    by_id(browser, "interp-submit").click()
    frames = by_id(browser, "interp-frames")
    wait(browser, lambda d: frames.get_attribute("data-state") == "done" or shown_errors(d), STREAM_TIMEOUT)
    assert shown_errors(browser) == [] and frames.get_attribute("data-state") == "done"
    assert player.is_displayed() and browser.execute_script("return arguments[0].naturalWidth", player) == 28
    assert broken_images(browser) == []
    captions = [c.text for c in frames.find_elements(By.TAG_NAME, "figcaption")]
    assert len(frames.find_elements(By.TAG_NAME, "img")) == len(captions) == STEPS
    assert (captions[0], captions[-1]) == ("9", "3")  # the classifier's reading of the ends it was asked for
    # Same machine, same clock: the page drew frame 0 before TorchServe had rendered the last frame.
    first_drawn_at, last_generated_at = (
        float(frames.get_attribute(a)) for a in ("data-first-drawn-at", "data-last-generated-at")
    )
    assert first_drawn_at < last_generated_at
    first_ms, last_ms = (float(frames.get_attribute(a)) for a in ("data-first-frame-ms", "data-last-frame-ms"))
    print(f"{STEPS} frames: first drawn after {first_ms:.0f} ms, last after {last_ms:.0f} ms")
    record_property("first_frame_ms", first_ms)
    record_property("last_frame_ms", last_ms)

    by_id(browser, "interp-gif").click()
    gif = tmp_path / "interpolation.gif"
    wait(browser, lambda d: (gif.is_file() and gif.stat().st_size > 0) or shown_errors(d), STREAM_TIMEOUT)
    assert shown_errors(browser) == [] and gif.read_bytes()[:6] == b"GIF89a"
    assert console_errors(browser) == []


def test_screenshots_of_every_panel_at_desktop_and_phone_width(browser, door):
    url, key, _ = door
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, (width, height) in (("desktop", DESKTOP), ("phone", PHONE)):
        browser.set_window_size(width, height)
        open_page(browser, url, key)
        ask_palindrome(browser, "1232")
        by_id(browser, "sample-submit").click()
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="sample-grid"] img'))
        by_id(browser, "interp-steps").clear()
        by_id(browser, "interp-steps").send_keys("12")
        by_id(browser, "interp-submit").click()
        frames = by_id(browser, "interp-frames")
        wait(browser, lambda d: frames.get_attribute("data-state") == "done", STREAM_TIMEOUT)
        # Nothing wider than the window: a phone scrolls down, never sideways.
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width
        (SCREENSHOTS / f"{name}.png").write_bytes(full_page_png(browser))
    browser.set_window_size(*DESKTOP)
    assert console_errors(browser) == []


def test_a_slow_server_is_shown_as_such(browser, server, tmp_path):
    # A listener that never answers: the kernel accepts the door's connections, nothing reads them.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        runtime = tmp_path / "door"
        url = open_door(server, runtime, ops_door.Replica(rest=address, grpc=address, ready=address))
        try:
            open_page(browser, url, ops_door.client_key(runtime / ops_door.CLIENT_KEY_FILE))
            ask_palindrome(browser, "1232")
            wait(browser, lambda d: "still waiting for the server" in by_id(d, "palindrome-answer").text)
            assert by_id(browser, "palindrome-submit").get_attribute("disabled") == "true"
            browser.get("about:blank")  # leave before the door goes: the pending call is dropped, not failed
            assert console_errors(browser, allowed=r"/health .*status of 503") == []
        finally:
            ops_door.stop(runtime)


def test_a_stopped_server_is_shown_as_such(browser, server, tmp_path):
    dead = f"127.0.0.1:{ops_server.free_ports(1)[0]}"  # nothing listens there
    runtime = tmp_path / "door"
    url = open_door(server, runtime, ops_door.Replica(rest=dead, grpc=dead, ready=dead))
    try:
        open_page(browser, url, ops_door.client_key(runtime / ops_door.CLIENT_KEY_FILE))
        wait(browser, lambda d: "not ready" in d.find_element(By.ID, "health").text)
        ask_palindrome(browser, "1232")
        wait(browser, lambda d: shown_errors(d))
        assert "no model server is answering" in shown_errors(browser)[0]
        assert console_errors(browser, allowed=r"(/health|/predictions/palindrome) .*status of 503") == []
    finally:
        ops_door.stop(runtime)
