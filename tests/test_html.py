"""summary.html, written by `whisperopt report` and rendered by headless Chromium (selenium + chromium-driver): one
row per recipe with the report's own cells, numeric sorting by a header click, the plots loaded, the recommendation,
marks and environment shown, no console error and no request beyond the page itself; hostile text is escaped."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser

import pytest

from whisperopt.cli import main
from whisperopt.report import write_html
from whisperopt.report.columns import BY_KEY, COLUMNS, DEFAULT_COLUMNS, cells

from .test_report import _write_results

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">&amp;"
PEAKS = {"threads": 2, "fp32_gflops": 138.6, "int8_gops": 238.6, "copy_gb_s": 29.2, "method": "test probe"}


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through its WebDriver; missing either is a failure (.ci/run installs both), not a skip."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[test]'")
    binary = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.fail("summary.html is tested in headless Chromium: apt-get install chromium chromium-driver "
                    f"(found browser: {binary}, chromedriver: {driver})")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # an explicit driver path: Selenium Manager never looks for one on the network
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A results directory with every kind of row (incomplete, not comparable, own settings, skipped), reported
    by the CLI; its environment has threads and measured peaks."""
    out = _write_results(tmp_path_factory.mktemp("html") / "results")
    env = json.loads((out / "environment.json").read_text())
    env.update(threads=2, peaks=PEAKS)
    (out / "environment.json").write_text(json.dumps(env))
    status = json.loads((out / "openvino-int8-weights.status.json").read_text())
    status.update(own_settings="beam 5 and temperature fallback", options={"weights": "int8_sym"})
    (out / "openvino-int8-weights.status.json").write_text(json.dumps(status))
    assert main(["report", str(out)]) == 0
    return out, json.loads((out / "summary.json").read_text())


def _open(browser, path):
    browser.get_log("browser")  # drop what an earlier page logged
    browser.get_log("performance")
    browser.get(path.as_uri())
    return browser


def _text(element) -> str:
    return element.get_attribute("textContent")


def _names(browser) -> list[str]:
    return [r.get_attribute("data-v") for r in browser.find_elements("css selector", "#results tbody th")]


class _Links(HTMLParser):
    """Every URL-bearing attribute of a page."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "action", "poster", "srcset", "data")]


def _check_self_contained(browser, page) -> None:
    links = _Links()
    links.feed(page.read_text())
    assert links.urls and all(u.startswith(("data:", "#")) for u in links.urls), \
        [u[:60] for u in links.urls if not u.startswith(("data:", "#"))]
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not errors, errors
    requested = [json.loads(e["message"])["message"]["params"]["request"]["url"] for e in browser.get_log("performance")
                 if json.loads(e["message"])["message"]["method"] == "Network.requestWillBeSent"]
    assert all(u == page.as_uri() or u.startswith("data:") for u in requested), \
        [u[:80] for u in requested if not u.startswith("data:")]


@pytest.mark.slow
def test_summary_html_renders_sorts_and_shows_everything(browser, report):
    out, summary = report
    page = out / "summary.html"
    _open(browser, page)
    rows = browser.find_elements("css selector", "#results tbody tr")
    assert len(rows) == len(summary["recipes"]) == 8
    for tr, row in zip(rows, summary["recipes"]):
        name = tr.find_element("css selector", "th")
        assert name.get_attribute("data-v") == row["recipe"]
        tds = [_text(td) for td in tr.find_elements("css selector", "td")]
        assert len(tds) == len(COLUMNS)
        if row["status"] == "ok":
            assert tds == cells(row), row["recipe"]  # summary.md's cells, every column
        else:
            assert "skipped: needs CUDA" in _text(name) and not any(tds)
    # the default columns are the terminal's; the checkbox shows the others
    header = {th.get_attribute("data-key"): th for th in browser.find_elements("css selector", "#results thead th")}
    assert [k for k, th in header.items() if k and th.is_displayed()] == list(DEFAULT_COLUMNS)
    browser.find_element("id", "all-columns").click()
    assert all(th.is_displayed() for th in header.values())

    # numeric sort (10.00 after 2.50, as numbers), n/a last in both directions
    ok = [r for r in summary["recipes"] if r.get("speedup") is not None]
    by_speed = [r["recipe"] for r in sorted(ok, key=lambda r: r["speedup"])]
    rest = {r["recipe"] for r in summary["recipes"]} - set(by_speed)
    assert rest == {"ct2-int8", "torch-fp16"}  # incomplete: no speed-up; skipped: nothing at all
    header["speedup"].find_element("tag name", "button").click()
    assert header["speedup"].get_attribute("aria-sort") == "ascending"
    assert _names(browser)[:len(by_speed)] == by_speed and set(_names(browser)[len(by_speed):]) == rest
    header["speedup"].find_element("tag name", "button").click()
    assert _names(browser)[:len(by_speed)] == by_speed[::-1] and set(_names(browser)[len(by_speed):]) == rest
    header["eval_s"].find_element("tag name", "button").click()  # an extra column: lowest eval time first
    assert _names(browser)[0] == min((r for r in summary["recipes"] if r.get("eval_s")), key=lambda r: r["eval_s"])[
        "recipe"] == "ct2-int8"  # 30 utterances only: the least time
    browser.find_element("css selector", "#results thead th[data-type=text] button").click()
    assert _names(browser) == sorted(r["recipe"] for r in summary["recipes"])

    # the recommendation, highlighted in the table; the marked rows, labelled
    winner = summary["recommendation"]["recipe"]
    assert winner == "openvino-int8-ptq-genai"
    assert f"recommended: {winner}" in _text(browser.find_element("id", "recommendation"))
    assert [tr.find_element("css selector", "th").get_attribute("data-v")
            for tr in browser.find_elements("css selector", "#results tr.recommended")] == [winner]
    marked = {tr.find_element("css selector", "th").get_attribute("data-v"): tr.get_attribute("class")
              for tr in browser.find_elements("css selector", "#results tbody tr")}
    assert "not-comparable" in marked["sherpa-int8"] and "incomplete" in marked["ct2-int8"]
    assert "own-settings" in marked["openvino-int8-weights"] and "status-skipped" in marked["torch-fp16"]
    cell = {r.get_attribute("data-v"): _text(r) for r in browser.find_elements("css selector", "#results tbody th")}
    assert "‡ not comparable" in cell["sherpa-int8"] and "† incomplete 30/40" in cell["ct2-int8"]
    assert "§ own settings" in cell["openvino-int8-weights"]
    own = next(i for i, r in enumerate(summary["recipes"]) if r["recipe"] == "openvino-int8-weights")
    notes = _text(browser.find_element("id", f"notes-{own}"))
    assert "own settings: beam 5 and temperature fallback" in notes and "weights=int8_sym" in notes

    # the plots are drawn, the environment is there
    images = browser.find_elements("css selector", "#plots img")
    assert len(images) == 3
    for img in images:
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 300
    env = _text(browser.find_element("id", "environment"))
    for text in ("test cpu", "avx2", "threads: 2", "torch 2", "139 fp32 GFLOP/s", "239 int8 GOP/s", "29 GB/s copy"):
        assert text in env, text
    _check_self_contained(browser, page)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Tight layout not applied")  # the long hostile name in the latency plot
def test_hostile_text_is_escaped(browser, report, tmp_path):
    _, summary = report
    summary = json.loads(json.dumps(summary))
    good = dict(summary["recipes"][0], recipe=HOSTILE, own_settings=HOSTILE, options={"x": HOSTILE})
    summary["recipes"] += [good, {"recipe": "broken", "status": "failed", "reason": HOSTILE}]
    summary["environment"]["cpu"]["model"] = HOSTILE
    summary["config"]["model"] = HOSTILE
    page = write_html(summary, tmp_path)
    assert "<script>document" not in page.read_text() and "<img src=x" not in page.read_text()
    _open(browser, page)
    assert browser.title != "pwned" and HOSTILE in browser.title
    assert not browser.find_elements("css selector", "img[src=x]")
    names = browser.find_elements("css selector", "#results tbody th")
    assert names[-2].get_attribute("data-v") == HOSTILE and "§ own settings" in _text(names[-2])
    assert HOSTILE in _text(names[-1]) and HOSTILE in _text(browser.find_element("id", "environment"))
    assert f"x={HOSTILE}" in _text(browser.find_element("id", f"notes-{len(summary['recipes']) - 2}"))
    _check_self_contained(browser, page)


def test_a_run_where_nothing_finished_has_a_page_without_plots(tmp_path):
    summary = {"config": {"model": "m", "dataset": "d", "decode": {"beam_size": 1, "language": "en",
                                                                   "task": "transcribe", "batch_size": 1},
                          "device": "cpu", "threads": 1}, "synthetic": True,
               "recipes": [{"recipe": "torch-fp32", "status": "failed", "reason": "out of memory"}]}
    text = write_html(summary, tmp_path).read_text()
    assert "No plots: no recipe finished." in text and "recommended: none (no recipe finished successfully)" in text
    assert "failed: out of memory" in text and BY_KEY["wer"].header.replace("\n", "<br>") in text


@pytest.mark.slow
def test_long_form_workload_alone_and_beside_the_short_form_one(browser, tmp_path):
    """summary.html of a long-form folder (no sortable table: the script must not fail) and of one holding both
    workloads (the headline's recommendation on top, both sections, the short-form table still sorts)."""
    from .test_report_longform import _write_long, long_record

    long_only = _write_long(tmp_path / "long")
    assert main(["report", str(long_only)]) == 0
    page = long_only / "summary.html"
    _open(browser, page)
    _check_self_contained(browser, page)
    assert browser.title.startswith("Long-form benchmark") and "pwned" not in browser.title
    rows = browser.find_elements("css selector", "#long-0 tbody tr")
    assert len(rows) == 5 and "recommended" in rows[2].get_attribute("class")  # ct2-int8 vad
    assert "ct2-int8 vad" in _text(browser.find_element("id", "recommendation"))

    both = _write_results(tmp_path / "both")
    (both / "longform.json").write_text(json.dumps(long_record()))
    assert main(["report", str(both), "--workload", "long"]) == 0
    page = both / "summary.html"
    _open(browser, page)
    _check_self_contained(browser, page)
    assert "long-form, mini-long" in _text(browser.find_element("id", "recommendation"))
    assert "recommended: openvino-int8-ptq-genai" in _text(browser.find_element("id", "recommendation-short"))
    header = browser.find_element("css selector", "#results thead th[data-type=text] button")
    header.click()
    assert _names(browser) == sorted(_names(browser)) and len(_names(browser)) == 8
