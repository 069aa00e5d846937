"""The dashboard in a real browser: Debian's chromium driven by selenium.
The worker table shows the run being worked on, a run's page receives its
events live and shows the engine's markup as text, and an action without
the right token is refused.

With ADE_TEST_SCREENSHOTS=DIR the pages are also saved there as PNG."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from adetest import wait_until
from httpkit import (
    HOSTILE_NAME, answering, holding, http_deploy, paced_run, release, running_with_actions,
)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException, NoSuchElementException, StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.sqlite_only("the pages are the same whatever the backend")

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1200,1500", "--no-first-run",
                f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    service = webdriver.chrome.service.Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, name: str) -> None:
    where = os.environ.get("ADE_TEST_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(where) / f"{name}.png"))


def wait_for(driver, what, timeout: float = 60):
    # A page being left for the next one has elements that go stale.
    # Chromium may say so as an inspector error rather than as a stale
    # element: that too means "not yet", and the wait goes on.
    def attempt(d):
        try:
            return what(d)
        except WebDriverException as e:
            if "does not belong to the document" in str(e):
                return False
            raise
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException)).until(attempt)


def log_texts(driver) -> list[str]:
    return [row.text for row in driver.find_elements(By.CSS_SELECTOR, "#log tr")]


def no_alert(driver) -> bool:
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_the_browser_follows_a_running_run_live(deploy, browser, tmp_path):
    # A stats line a second gives the charts their points.
    dep, port = http_deploy(deploy, **{"supervisor.workers": 2, "supervisor.stats_period": 1})
    run, go = paced_run(dep, steps=2, name=HOSTILE_NAME)
    dep.start_worker()
    wait_until(lambda: holding(port, run), 60, "the worker table to show the run")

    browser.get(f"http://127.0.0.1:{port}/")
    link = wait_for(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, f'#workers a[href="/runs/{run}"]'))
    assert run in link.text
    names = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#runs td")]
    assert HOSTILE_NAME in names  # shown as text, not made an image
    assert browser.find_elements(By.CSS_SELECTOR, "#runs img") == []
    if os.environ.get("ADE_TEST_SCREENSHOTS"):
        wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "polyline")) == 2 and
                   "No points" not in browser.page_source or browser.refresh(), 30,
                   "points on the charts")
        screenshot(browser, "dashboard")

    link = browser.find_element(By.CSS_SELECTOR, f'#workers a[href="/runs/{run}"]')
    link.click()
    wait_for(browser, lambda d: f"Run {run}" in d.find_element(By.TAG_NAME, "h1").text)
    assert not any("step 1" in t for t in log_texts(browser))
    # The page is loaded and its script listens: the next event comes live.
    release(go, 1)
    wait_for(browser, lambda d: any("step 1" in t for t in log_texts(d)))
    row = next(t for t in log_texts(browser) if "step 1" in t)
    assert "<script>document.title='owned'</script> &amp;" in row
    assert "owned" not in browser.title and no_alert(browser)
    assert browser.find_element(By.ID, "live").text == "live"

    release(go, 2)
    wait_for(browser, lambda d: d.find_element(By.ID, "live").text == "finished")
    assert any("step 2" in t for t in log_texts(browser))
    screenshot(browser, "run")
    assert dep.wait_run(run)["status"] == "succeeded"


def test_an_action_without_the_right_token_is_refused(deploy, browser, tmp_path):
    token = "token-for-the-browser-test"
    dep, port, run, go = running_with_actions(deploy, tmp_path, token)
    page = f"http://127.0.0.1:{port}/runs/{run}"
    cancel = f'form[action="/runs/{run}/cancel"]'

    def heading(d):
        return d.find_element(By.TAG_NAME, "h1").text

    # No token at all (the form's own check bypassed), then a wrong one.
    browser.get(page)
    browser.execute_script(f"document.querySelector('{cancel}').submit()")
    wait_for(browser, lambda d: heading(d) == "Refused")
    browser.get(page)
    browser.find_element(By.CSS_SELECTOR, f"{cancel} input[name=token]").send_keys("wrong-" + token)
    browser.find_element(By.CSS_SELECTOR, f"{cancel} button").click()
    wait_for(browser, lambda d: heading(d) == "Refused")
    assert "token is wrong" in browser.find_element(By.TAG_NAME, "p").text
    assert dep.rows("SELECT status FROM runs WHERE id = ?", run)[0]["status"] == "running"

    browser.get(page)
    browser.find_element(By.CSS_SELECTOR, f"{cancel} input[name=token]").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, f"{cancel} button").click()
    wait_for(browser, lambda d: heading(d) == f"Run {run}")
    assert dep.wait_run(run, statuses=("cancelled",))["status"] == "cancelled"
    assert answering(port, "/health")[0] == 200
