"""The dashboard in a real browser: headless Debian Chromium (selenium + chromedriver) against a real
uvicorn server and a real Engine executing runs. Nothing is downloaded at test time."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from psycopg import sql
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

import pgflow
from pgflow import Delay, Retry, Run, WaitFor, workflow
from pgflow.dashboard import create_app

pytestmark = [pytest.mark.postgres, pytest.mark.process, pytest.mark.slow]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parent.parent
ARTEFACT = ROOT / "build" / "test-artefacts" / "dashboard-run.png"
DOCS_IMAGE = ROOT / "docs" / "images" / "dashboard-run.png"
RELEASE = threading.Event()  # lets the "slow" workflow's step finish when a test says so

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        f"{CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install chromium chromium-driver "
        "(.ci/run installs them)",
        allow_module_level=True,
    )


# -- workflows the browser watches -----------------------------------------------------------------------


def work(seconds: float, label: str) -> dict[str, Any]:
    time.sleep(seconds)
    return {"step": label, "ok": True}


def explode() -> None:
    raise ValueError("the parcel service said no")


CHARGE_ATTEMPTS = itertools.count(1)


def flaky_charge(amount: int) -> dict[str, Any]:
    """Fails on its first attempt (a gateway timeout), succeeds on the retry."""
    if next(CHARGE_ATTEMPTS) == 1:
        raise ConnectionError("payment gateway timed out")
    time.sleep(0.35)
    return {"charged": amount}


def wait_for_release() -> str:
    RELEASE.wait(30)
    return "released"


@workflow("b-failing")
def b_failing(ctx: pgflow.Context[Any]) -> Any:
    yield Run("prepare", work, 0.05, "prepare")
    yield Run("ship", explode)


@workflow("b-waiting")
def b_waiting(ctx: pgflow.Context[Any]) -> Any:
    yield Run("prepare", work, 0.05, "prepare")
    answer = yield WaitFor("approval", event="approved", timeout="1h")
    yield Run("finish", work, 0.05, "finish")
    return {"answer": answer}


@workflow("b-sleeper")
def b_sleeper(ctx: pgflow.Context[Any]) -> Any:
    yield Delay("sleep", "1h")


@workflow("b-slow")
def b_slow(ctx: pgflow.Context[Any]) -> Any:
    return (yield Run("long-job", wait_for_release))


@workflow("ship-order")
def ship_order(ctx: pgflow.Context[Any]) -> Any:
    """The run in the documentation's screenshot: durations of every size, a retried step, a wait."""
    yield Run("load-order", work, 0.25, "load-order")
    yield Run("charge-card", flaky_charge, 1042, retry=Retry(max_attempts=3, initial="0.3s"))
    yield Run("reserve-stock", work, 0.6, "reserve-stock")
    yield Run("print-label", work, 0.15, "print-label")
    pickup = yield WaitFor("await-pickup", event="picked-up", timeout="2 days")
    yield Run("notify-customer", work, 0.1, "notify-customer")
    return {"shipped": True, "pickup": pickup}


FLOWS = (b_failing, b_waiting, b_sleeper, b_slow, ship_order)


# -- the servers and the browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(pg_server_dsn: str) -> Iterator[pgflow.Engine]:
    schema = f"dash_{uuid.uuid4().hex[:10]}"
    with pgflow.Engine(pg_server_dsn, schema=schema, workflows=FLOWS, concurrency=4) as eng:
        yield eng
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _serve(app: Any) -> Iterator[str]:
    """A real uvicorn server on a free port, in a thread; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def base(engine: pgflow.Engine) -> Iterator[str]:
    yield from _serve(create_app(engine))


@pytest.fixture(scope="module")
def read_only_base(engine: pgflow.Engine) -> Iterator[str]:
    yield from _serve(create_app(engine, read_only=True))


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="pgflow-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1280,900", "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors (CSP included)
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(driver: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = 10) -> Any:
    """Wait for ``condition``; an element replaced by the live refresh meanwhile is looked up again."""
    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    )
    return wait.until(condition)


def css(driver: WebDriver, selector: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, selector)


def attribute(driver: WebDriver, selector: str, name: str) -> str | None:
    """An attribute read in one script call (the live refresh may replace the element at any time)."""
    script = "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1]);"
    found: str | None = driver.execute_script(script, selector, name)
    return found


def step_status(step_id: str) -> Callable[[WebDriver], str | None]:
    return lambda d: attribute(d, f'[data-step-id="{step_id}"]', "data-step-status")


def run_status(d: WebDriver) -> str | None:
    return attribute(d, '[data-live-part="top"]', "data-status")


def mark_page(driver: WebDriver) -> None:
    """Tag this page: the tag survives everything but a reload."""
    driver.execute_script("window.__pgflowMark = 'same page'")


def same_page(driver: WebDriver) -> bool:
    return driver.execute_script("return window.__pgflowMark") == "same page"


def settled(engine: pgflow.Engine, run_id: str, until: tuple[str, ...] = ("paused",)) -> pgflow.WorkflowRun:
    return engine.wait_for_run(run_id, until=until, timeout="20s")


@contextlib.contextmanager
def window_down_to(driver: WebDriver, selector: str) -> Iterator[None]:
    """Make the window tall enough to show the page down to ``selector`` (the screenshot's crop)."""
    size = driver.get_window_size()
    chrome = size["height"] - driver.execute_script("return window.innerHeight")
    bottom = driver.execute_script(
        f"return document.querySelector('{selector}').getBoundingClientRect().bottom"
    )
    driver.set_window_size(size["width"], int(bottom) + 10 + chrome)
    try:
        yield
    finally:
        driver.set_window_size(size["width"], size["height"])


# -- the tests -------------------------------------------------------------------------------------------


def test_runs_page_filters_and_opens_a_failed_run(
    driver: WebDriver, base: str, engine: pgflow.Engine
) -> None:
    """Filter the runs page by status, open the failed run, and read its traceback."""
    failed = engine.start_workflow("b-failing")
    waiting = engine.start_workflow("b-waiting")
    settled(engine, failed.id, ("failed",))
    settled(engine, waiting.id)
    driver.get(f"{base}/runs")
    assert css(driver, f'tr[data-run-id="{waiting.id}"]')
    Select(css(driver, "#filter-status")).select_by_value("failed")
    css(driver, "#filter-submit").click()
    until(driver, lambda d: "status=failed" in d.current_url)
    rows = driver.find_elements(By.CSS_SELECTOR, "tr.run-row")
    assert rows and {r.get_attribute("data-status") for r in rows} == {"failed"}
    assert not driver.find_elements(By.CSS_SELECTOR, f'tr[data-run-id="{waiting.id}"]')
    css(driver, f'tr[data-run-id="{failed.id}"] a').click()
    traceback = until(driver, lambda d: css(d, "#traceback"))
    assert traceback.is_displayed()
    assert "Traceback (most recent call last)" in traceback.text
    assert "ValueError: the parcel service said no" in traceback.text
    assert "ValueError" in css(driver, "#run-error").text and step_status("ship")(driver) == "failed"


def test_trigger_an_event_and_watch_the_step_complete(
    driver: WebDriver, base: str, engine: pgflow.Engine
) -> None:
    """Send the awaited event from the form: the waiting step completes on the page, without a reload."""
    run = engine.start_workflow("b-waiting")
    settled(engine, run.id)
    driver.get(f"{base}/runs/{run.id}")
    assert step_status("approval")(driver) == "waiting" and run_status(driver) == "paused"
    mark_page(driver)
    assert css(driver, "#event-name").get_attribute("value") == "approved"  # what the run waits for
    css(driver, "#event-data").send_keys('{"ok": true, "by": "ada"}')
    css(driver, "#event-submit").click()
    until(driver, lambda d: step_status("approval")(d) == "completed")
    until(driver, lambda d: run_status(d) == "completed")
    assert same_page(driver), "the page was reloaded"
    assert "Event delivered" in css(driver, "#flash").text
    assert css(driver, "#event-data").get_attribute("value") == ""
    until(driver, lambda d: '"by": "ada"' in css(d, "#run-output").text)


def test_the_run_page_follows_the_run_within_two_seconds(
    driver: WebDriver, base: str, engine: pgflow.Engine
) -> None:
    """A change made elsewhere (a step finishing in the worker) shows within 2 s, without a reload."""
    RELEASE.clear()
    run = engine.start_workflow("b-slow")
    driver.get(f"{base}/runs/{run.id}")
    until(driver, lambda d: run_status(d) == "running")
    mark_page(driver)
    RELEASE.set()
    settled(engine, run.id, ("completed",))
    changed = time.monotonic()
    until(driver, lambda d: run_status(d) == "completed", timeout=5)
    assert time.monotonic() - changed < 2.0 and same_page(driver)
    assert step_status("long-job")(driver) == "completed"


def test_cancel_asks_for_confirmation(driver: WebDriver, base: str, engine: pgflow.Engine) -> None:
    """Cancel asks first: dismissed, nothing happens; accepted, the run is cancelled on the page."""
    run = engine.start_workflow("b-sleeper")
    settled(engine, run.id)
    driver.get(f"{base}/runs/{run.id}")
    mark_page(driver)
    css(driver, 'button[data-action="cancel"]').click()
    alert = until(driver, lambda d: d.switch_to.alert)
    assert "Cancel this run?" in alert.text
    alert.dismiss()
    time.sleep(0.3)
    assert engine.get_run(run.id).status == "paused"
    css(driver, 'button[data-action="cancel"]').click()
    until(driver, lambda d: d.switch_to.alert).accept()
    until(driver, lambda d: run_status(d) == "cancelled")
    assert engine.get_run(run.id).status == "cancelled" and same_page(driver)
    assert not driver.find_elements(By.CSS_SELECTOR, 'button[data-action="cancel"]')


def test_read_only_instance_shows_no_actions(
    driver: WebDriver, read_only_base: str, engine: pgflow.Engine
) -> None:
    """The read-only dashboard shows the run but no action, no event form, no POST form at all."""
    run = engine.start_workflow("b-waiting")
    settled(engine, run.id)
    driver.get(f"{read_only_base}/runs/{run.id}")
    assert step_status("approval")(driver) == "waiting"
    assert driver.find_elements(By.CSS_SELECTOR, "form[method=post], button, #event-name") == []
    assert css(driver, ".badge.readonly").text == "read-only"
    driver.get(f"{read_only_base}/runs")
    assert driver.find_elements(By.CSS_SELECTOR, f'tr[data-run-id="{run.id}"]')


def test_screenshot_of_a_run_page(driver: WebDriver, base: str, engine: pgflow.Engine) -> None:
    """A run page with finished, retried and waiting steps and a mailbox is saved as a screenshot."""
    # kept in build/test-artefacts/; PGFLOW_UPDATE_SCREENSHOTS=1 also refreshes docs/images/
    run = engine.start_workflow("ship-order", {"order_id": 1042, "items": 3}, resource_id="customer-42")
    settled(engine, run.id)
    engine.trigger_event(run.id, "address-changed", {"street": "12 Quai des Orfèvres"})
    driver.get(f"{base}/runs/{run.id}")
    until(driver, lambda d: step_status("await-pickup")(d) == "waiting")
    try:
        until(driver, lambda d: "address-changed" in css(d, "#mailbox").text, timeout=3)
    except TimeoutException:  # pragma: no cover - the event was delivered before the page loaded
        pytest.fail("the mailbox does not show the delivered event")
    time.sleep(1.2)  # let the waiting step's bar grow a little (the page refreshes itself meanwhile)
    ARTEFACT.parent.mkdir(parents=True, exist_ok=True)
    with window_down_to(driver, "#mailbox"):
        assert driver.save_screenshot(str(ARTEFACT))
    assert 20_000 < ARTEFACT.stat().st_size < 600_000
    if os.environ.get("PGFLOW_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTEFACT, DOCS_IMAGE)


def test_pages_raise_no_console_error(driver: WebDriver, base: str, engine: pgflow.Engine) -> None:
    """The pages load and refresh without a console error: no CSP violation, no script error, no 404."""
    run = engine.start_workflow("b-waiting")
    settled(engine, run.id)
    driver.get_log("browser")  # forget what earlier tests logged
    for path in ("/runs", f"/runs/{run.id}", "/workflows"):
        driver.get(base + path)
        time.sleep(0.2)
    driver.get(f"{base}/runs/{run.id}")
    time.sleep(1.5)  # at least one live refresh
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
