"""A real run seen in a real browser: `cpr ui` over the store of one `cpr submit +experiment=debug` run,
its pages opened in Debian's headless Chromium through Selenium, and the run's CPR report (report/report.html, an
artifact of the run) opened from a downloaded copy. The CPR metrics and every plot must render; screenshots land in
artifacts/screenshots/ at the repository root.

Nothing is downloaded: Selenium gets the driver (/usr/bin/chromedriver) and the browser (/usr/bin/chromium) by path
and SE_OFFLINE=true keeps Selenium Manager from fetching anything. `make browser` installs both packages; run with
`make test-browser` (`pytest -m browser`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.report.build import _RUN_FIGURES, ARTIFACT_DIR, HTML_NAME
from tests.cli.test_ui import free_port
from tests.conftest import CPR, stop_process_group

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1500)]  # the run (1-2 min) and the UI's start (≈70 s) too

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
WINDOW = (1600, 1000)
UI_START_S = 300.0
"""The MLflow UI takes ≈70 s to start on 2 busy cores."""
RENDER_S = 120.0
"""A page of the single-page app: its scripts, then its REST calls to the server."""

CPR_METRICS = ("cpr/psi", "cpr/ratio", "cpr/eta", "cpr/gamma/energy_kwh", "energy/total_kwh", "power/total_w")
"""CPR's own metrics that a debug run logs (the marginal-return rule and its Γ; telemetry's energy and power)."""
FIGURES = {stem: title for stem, _, title, _ in _RUN_FIGURES}
"""The report's figures: file stem -> section title."""
CONDITIONAL = {"forecast"}
"""Drawn only when the run's saturating fit succeeded; a debug run publishes blueprints, so it has all the others."""


# -- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(debug_run: dict) -> dict:
    """The debug run with its experiment and metric names; CPR's metrics and the report are known to be in the store
    (so a failure below is the browser's, not the run's)."""
    client = debug_run["client"]
    info = client.get_run(debug_run["run_id"])
    metrics = set(info.data.metrics)
    assert not set(CPR_METRICS) - metrics, f"the run did not log {sorted(set(CPR_METRICS) - metrics)}"
    report = {Path(a.path).name for a in client.list_artifacts(debug_run["run_id"], ARTIFACT_DIR)}
    figures = [stem for stem in FIGURES if f"{stem}.png" in report]
    assert HTML_NAME in report and set(FIGURES) - CONDITIONAL <= set(figures), f"report artifacts: {sorted(report)}"
    return {**debug_run, "experiment_id": info.info.experiment_id, "metrics": metrics, "figures": figures}


@pytest.fixture(scope="module")
def ui(run: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`cpr ui` over the run's store on a free loopback port, until the module's tests are done; its base URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("ui") / "ui.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [CPR, "ui", "--tracking-uri", run["uri"], "--host", "127.0.0.1", "--port", str(port)],
            cwd=run["work"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the server's workers end with it
        )
        try:
            base = f"http://127.0.0.1:{port}"
            end = time.monotonic() + UI_START_S
            while not _answers(f"{base}/health"):
                assert server.poll() is None, f"`cpr ui` exited {server.returncode}: {log_path.read_text()[-3000:]}"
                assert time.monotonic() < end, f"`cpr ui` did not answer in {UI_START_S:.0f} s: {log_path}"
                time.sleep(1)
            yield base
        finally:
            stop_process_group(server)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium through Debian's chromedriver, its network events logged (`goog:loggingPrefs`)."""
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "Chromium or its driver is not installed: run `make browser`"
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(tmp_path_factory.mktemp("chromedriver") / "driver.log")
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # Selenium Manager: never a download, whatever is missing
        driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_window_size(*WINDOW)
        yield driver
    finally:
        driver.quit()


# -- helpers -------------------------------------------------------------------------------------------------------
def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def _shown(text: str, name: str) -> bool:
    """`name` as a whole token of the page's text (cpr/psi is not shown by cpr/psi_at_budget alone)."""
    return re.search(rf"(?<![\w/.]){re.escape(name)}(?![\w/.])", text) is not None


def _wait_until(driver: Any, missing: Callable[[Any], list[str]], timeout: float = RENDER_S) -> list[str]:
    """Poll `missing(driver)` (what has not rendered yet) until it is empty or `timeout` runs out; what is still
    missing then."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    left: list[str] = []

    def done(d: Any) -> bool:
        left[:] = missing(d)
        return not left

    wait = WebDriverWait(driver, timeout, poll_frequency=0.5, ignored_exceptions=(StaleElementReferenceException,))
    with contextlib.suppress(TimeoutException):
        wait.until(done)
    return left


def _text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _close_assistant(driver: Any) -> None:
    """MLflow 3's assistant panel covers a third of the window: closed if it is open (it stays closed)."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
        if button.is_displayed():
            button.click()
            return


def _screenshot(driver: Any, name: str, *, full_page: bool = False) -> Path:
    """The window (or the whole page, through the DevTools protocol) as artifacts/screenshots/NAME.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    if full_page:
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path.write_bytes(base64.b64decode(shot["data"]))
    else:
        assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    print(f"screenshot: {path}")
    return path


def _requested_urls(driver: Any) -> list[str]:
    """Every URL the browser requested since the previous call (its DevTools performance log, drained)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


REPORT_JS = """
const [heading, figures] = arguments;
if (document.readyState !== 'complete') return ['the document (' + document.readyState + ')'];
const missing = [];
const h1 = document.querySelector('h1');
if (!h1 || h1.textContent !== heading) missing.push('the heading "' + heading + '"');
const images = new Map(Array.from(document.images, i => [i.alt, i]));
const sections = Array.from(document.querySelectorAll('h2'), h => h.textContent);
for (const [stem, title] of figures) {
  const img = images.get(stem);
  if (!img) missing.push(stem + ': no <img>');
  else if (!(img.complete && img.naturalWidth > 0)) missing.push(stem + ': its <img> did not load');
  else if (img.getBoundingClientRect().width <= 0) missing.push(stem + ': its <img> has no width on the page');
  if (!sections.includes(title)) missing.push(stem + ': no section "' + title + '"');
}
for (const alt of images.keys())
  if (!figures.some(([stem]) => stem === alt)) missing.push(alt + ": an <img> that is none of the run's figures");
return missing;
"""
"""What of the report page has not rendered: its heading, each figure's <img> (loaded, with a width) and section."""


def _report_missing(driver: Any, run: dict) -> list[str]:
    figures = [[stem, FIGURES[stem]] for stem in run["figures"]]
    return driver.execute_script(REPORT_JS, f"cpr report: {run['job_id']}", figures)


def _run_page(ui: str, run: dict, tab: str = "") -> str:
    """The run's page in the MLflow UI (a single-page app: its routes are URL fragments), at `tab`."""
    return f"{ui}/#/experiments/{run['experiment_id']}/runs/{run['run_id']}" + (f"/{tab}" if tab else "")


# -- the MLflow UI -------------------------------------------------------------------------------------------------
LINKS_JS = "return Array.from(document.querySelectorAll('a'), a => a.textContent.trim())"
CHARTS_JS = """
const cards = Array.from(document.querySelectorAll('[data-testid="experiment-view-compare-runs-card"]'));
const drawn = card => Array.from(card.querySelectorAll('.js-plotly-plot path.js-line'))
  .some(line => (line.getAttribute('d') || '').length > 20);
return arguments[0].filter(name => !cards.some(card => card.innerText.includes('(' + name + ')') && drawn(card)));
"""
"""The metrics among arguments[0] with no chart card whose legend names them and whose plot has a drawn line."""
TREE_JS = """return Array.from(document.querySelectorAll('[data-testid="artifact-tree-node"]'),
    n => n.textContent.trim())"""


def test_the_run_page_lists_the_cpr_metrics(browser: Any, ui: str, run: dict) -> None:
    """The Overview tab: the run's name and its metrics table, each CPR metric a row (a link to its chart)."""
    browser.get(_run_page(ui, run))

    def missing(d: Any) -> list[str]:
        links = set(d.execute_script(LINKS_JS))
        return [n for n in CPR_METRICS if n not in links] + ([] if _shown(_text(d), run["job_id"]) else [run["job_id"]])

    left = _wait_until(browser, missing)
    _close_assistant(browser)
    browser.execute_script(
        "const a = Array.from(document.querySelectorAll('a')).find(a => a.textContent.trim() === arguments[0]);"
        "if (a) a.scrollIntoView({block: 'center'});",
        "cpr/psi",
    )
    _screenshot(browser, "mlflow_run.png")
    assert not left, f"the run's page did not show {left}; it shows:\n{_text(browser)[:3000]}"


def test_the_model_metrics_tab_draws_the_cpr_charts(browser: Any, ui: str, run: dict) -> None:
    """The Model metrics tab: its first section (cpr/…) charts Ψ, the window ratio and η, each a drawn line."""
    browser.get(_run_page(ui, run, "model-metrics"))
    charts = ["cpr/psi", "cpr/ratio", "cpr/eta"]
    left = _wait_until(browser, lambda d: d.execute_script(CHARTS_JS, charts))
    _close_assistant(browser)
    _screenshot(browser, "mlflow_metrics.png")
    assert not left, f"the model-metrics tab drew no chart of {left}; it shows:\n{_text(browser)[:3000]}"


def test_the_artifacts_view_shows_the_report(browser: Any, ui: str, run: dict) -> None:
    """The Artifacts tab at report/report.html: the report's files in the tree, the page itself in MLflow's HTML
    preview (an iframe) with every figure loaded."""
    from selenium.webdriver.common.by import By

    browser.get(_run_page(ui, run, f"artifacts/{ARTIFACT_DIR}/{HTML_NAME}"))
    files = [ARTIFACT_DIR, HTML_NAME, *(f"{stem}.png" for stem in run["figures"])]

    def missing(d: Any) -> list[str]:
        tree = set(d.execute_script(TREE_JS))
        left = [f"{f} in the artifact tree" for f in files if f not in tree]
        frames = d.find_elements(By.CSS_SELECTOR, "iframe.mlflow-html-iframe")
        if not frames:
            return [*left, "the report's preview (iframe.mlflow-html-iframe)"]
        d.switch_to.frame(frames[0])
        try:
            return left + [f"in the preview: {m}" for m in _report_missing(d, run)]
        finally:
            d.switch_to.default_content()

    left = _wait_until(browser, missing)
    _close_assistant(browser)
    frames = browser.find_elements(By.CSS_SELECTOR, "iframe.mlflow-html-iframe")
    if frames:  # the preview scrolled to its first figure, for the screenshot
        browser.switch_to.frame(frames[0])
        browser.execute_script("document.querySelector('figure')?.previousElementSibling?.scrollIntoView(true)")
        browser.switch_to.default_content()
    _screenshot(browser, "mlflow_artifacts.png")
    assert not left, f"the artifacts view did not show {left}; it shows:\n{_text(browser)[:3000]}"


# -- the report page -----------------------------------------------------------------------------------------------
RESOURCES_JS = "return performance.getEntriesByType('resource').map(e => e.name)"
LOCAL = ("data:", "file:")


def test_the_report_draws_every_plot_offline(browser: Any, run: dict, tmp_path: Path) -> None:
    """report/report.html downloaded from the run and opened from disk: every figure drawn from its embedded PNG,
    its section there, and not one request beyond the file and its data: URIs."""
    local = Path(run["client"].download_artifacts(run["run_id"], ARTIFACT_DIR, str(tmp_path))) / HTML_NAME
    _requested_urls(browser)  # drained: what the MLflow UI's pages requested is not the report's
    browser.get(local.as_uri())
    left = _wait_until(browser, lambda d: _report_missing(d, run))
    _screenshot(browser, "report.png", full_page=True)
    assert not left, f"the report did not render: {left}"
    assert "stopped at step" in _text(browser), f"no decision on the report: {_text(browser)[:2000]}"
    fetched = [u for u in browser.execute_script(RESOURCES_JS) if not u.startswith(LOCAL)]
    assert not fetched, f"the report fetched {fetched}"
    requested = [u for u in _requested_urls(browser) if not u.startswith(LOCAL)]
    assert not requested, f"the report requested {requested}"
