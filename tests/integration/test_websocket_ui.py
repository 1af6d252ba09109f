"""The /ui test page in a real browser: headless Chromium driven through chromedriver.

Chromium and chromedriver come from Debian (``chromium``, ``chromium-driver``; scripts/test
installs them). A missing browser fails the test, it never skips: a CI image without it is
broken. A screenshot of the page is saved in the test's tmp dir (and in
``$MAGTEK_BRIDGE_ARTIFACTS`` when that is set).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from bridge.mms import commands
from bridge.transport.simulated import SimulatedBus
from tests.integration.support import find_tool
from tests.integration.wsclient import ws_bridge

pytestmark = pytest.mark.integration

SERIAL = "B54E05A"
ROOT = f"MagTek/Device/DynaFlexII/{SERIAL}"
WAIT_S = 15


def _tool(*names: str, package: str) -> str:
    for name in names:
        found = find_tool(name)
        if found is not None:
            return found
    where = "the CI image is missing it" if os.environ.get("CI") == "true" else (
        "./scripts/test installs it")
    pytest.fail(f"{names[0]} is not installed ({where}): apt-get install {package}")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    chromium = _tool("chromium", "chromium-browser", package="chromium")
    driver = _tool("chromedriver", package="chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--no-proxy-server", "--window-size=1100,900",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    service = Service(executable_path=driver, log_output=str(tmp_path / "chromedriver.log"))
    session = webdriver.Chrome(service=service, options=options)
    session.set_page_load_timeout(WAIT_S)
    try:
        yield session
    finally:
        session.quit()


def _screenshot(browser: WebDriver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    assert browser.save_screenshot(str(path))
    artifacts = os.environ.get("MAGTEK_BRIDGE_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    return path


def _get_serial_through_the_page(browser: WebDriver, page_url: str) -> str:
    """Open the page, connect to the reader, send Get serial number; the response's log line."""
    browser.get(page_url)
    wait = WebDriverWait(browser, WAIT_S)
    wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    Select(browser.find_element(By.ID, "reader")).select_by_value("/" + ROOT)
    browser.find_element(By.ID, "connect").click()
    wait.until(lambda b: b.find_element(By.ID, "state").text.startswith("connected"))
    Select(browser.find_element(By.ID, "command")).select_by_visible_text("Get serial number")
    browser.find_element(By.ID, "send").click()

    def response_line(b: WebDriver) -> str | bool:
        for item in b.find_elements(By.CSS_SELECTOR, "#log li[data-kind='in']"):
            if "response D101" in item.text:
                return str(item.text)
        return False

    return str(wait.until(response_line))


def test_ui_sends_get_serial_and_shows_the_response(broker, browser, tmp_path):
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    with ws_bridge(broker, bus) as app:
        line = _get_serial_through_the_page(browser, f"http://127.0.0.1:{app.websocket.port}/ui")
        shot = _screenshot(browser, tmp_path, "websocket-ui.png")
        assert SERIAL in line  # the serial's hex digits are in the response
        assert commands.get_serial_number() in list(bus.readers[0].host_messages)
        statuses = browser.find_elements(By.CSS_SELECTOR, "#log li[data-kind='status']")
        assert any(f"{ROOT}: connected" in s.text for s in statuses)
        assert shot.stat().st_size > 1000


def test_ui_with_token_auth(broker, browser, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("ui-token-1234567890")
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    auth = {"mode": "token", "token_file": str(token_file)}
    with ws_bridge(broker, bus, auth=auth) as app:
        base = f"http://127.0.0.1:{app.websocket.port}/ui"
        browser.get(base)  # no token: the page itself is refused
        assert "a token is required" in browser.page_source
        line = _get_serial_through_the_page(browser, base + "?token=ui-token-1234567890")
        _screenshot(browser, tmp_path, "websocket-ui-token.png")
        assert SERIAL in line


def test_ui_with_basic_auth(broker, browser, tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text("pa55word")
    bus = SimulatedBus(count=1, serials=[SERIAL], auto_present=None)
    auth = {"mode": "basic", "username": "pos", "password_file": str(password_file)}
    with ws_bridge(broker, bus, auth=auth) as app:
        # The browser keeps the credentials for the origin: /readers, /commands and the
        # WebSocket handshake all carry them.
        line = _get_serial_through_the_page(
            browser, f"http://pos:pa55word@127.0.0.1:{app.websocket.port}/ui")
        assert SERIAL in line
