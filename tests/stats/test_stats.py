"""`zyda2.py stats`: the run report renders in headless Chromium and shows what the run wrote.

The page is opened with selenium driving Debian's chromium and chromedriver (`make browser`
installs them); every figure it shows is checked against report.json, manifest.json,
dedup/summary.json and dedup/decisions read independently here.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations_with_replacement
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from PIL import Image

import zyda2
from pipelines.release.stats import write_stats
from pipelines.release.stats_data import dedup_overlap, quality_scores, sample_column

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PLOTS = {"flow", "removals", "tokens", "cluster_sizes", "overlap", "scores", "mixtures", "throughput"}
SECTIONS = ["accounting", "dedup", "quality", "mixtures", "throughput"]


@pytest.fixture(scope="module")
def stats_run(local_run, tmp_path_factory) -> tuple[Path, dict]:
    """The session run seen through symlinks, so its report goes to <view>/stats (the default place)
    without adding files to the run other tests compare byte for byte."""
    run, report = local_run
    view = tmp_path_factory.mktemp("stats_view")
    for entry in run.iterdir():
        (view / entry.name).symlink_to(entry)
    assert zyda2.main(["stats", str(view)]) == 0
    return view, report


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through chromedriver; both, and every process under them, end with the module."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("headless Chromium is needed: run `make browser` (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=options)
    started = psutil.Process(service.process.pid)
    ours = [started, *started.children(recursive=True)]
    try:
        yield driver
    finally:
        driver.quit()
        _, alive = psutil.wait_procs(ours, timeout=10)
        for p in alive:  # only processes this fixture started
            p.kill()


def open_page(driver, page: Path) -> list[dict]:
    """Load `page`; return what the browser logged while loading it."""
    driver.get_log("browser")  # drop earlier entries
    driver.get(page.as_uri())
    return driver.get_log("browser")


def lookup(data, path: list[str]):
    for key in path:
        data = data[key]
    return data


def number(text: str) -> float:
    return float(text.replace(",", ""))


def test_page_renders_without_errors_and_shows_every_plot(stats_run, browser):
    run, _ = stats_run
    page = run / "stats" / "report.html"
    log = open_page(browser, page)
    assert [e for e in log if e["level"] == "SEVERE"] == []
    images = browser.execute_script(
        "return [...document.images].map(i => [i.closest('figure').id, i.complete, i.naturalWidth, i.naturalHeight])")
    assert sorted(fig for fig, *_ in images) == sorted(f"plot-{name}" for name in PLOTS)
    for fig, complete, width, height in images:
        png = Image.open(run / "stats" / f"{fig.removeprefix('plot-')}.png")
        assert complete and width > 0 and (width, height) == png.size, fig
    assert {p.stem for p in (run / "stats").glob("*.png")} == PLOTS
    assert browser.execute_script("return [...document.querySelectorAll('section')].map(s => s.id)") == SECTIONS
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0  # self-contained


def test_external_resources_are_blocked_and_reported(stats_run, browser, tmp_path):
    """The console check above can fail: a page referring to anything outside itself logs an error."""
    run, _ = stats_run
    html = (run / "stats" / "report.html").read_text()
    bad = tmp_path / "report.html"
    bad.write_text(html.replace("</body>", '<img src="https://example.invalid/x.png"></body>'))
    log = open_page(browser, bad)
    assert any(e["level"] == "SEVERE" and "Content Security Policy" in e["message"] for e in log), log


def test_numbers_on_the_page_equal_the_run_files(stats_run, browser):
    run, report = stats_run
    manifest = json.loads((run / "manifest.json").read_text())
    open_page(browser, run / "stats" / "report.html")
    cells = browser.execute_script("return [...document.querySelectorAll('[data-report],[data-manifest]')]"
                                   ".map(e => [e.dataset.report || null, e.dataset.manifest || null, e.textContent])")
    shown = {}
    for rep, man, text in cells:
        path = json.loads(rep or man)
        expected = lookup(report if rep else manifest, path)
        assert number(text) == pytest.approx(expected, abs=0.005 if man else 1e-6), (path, text)
        shown[tuple(path)] = number(text)
    for source, r in report["sources"].items():
        for key in ("read", "kept", "quarantined"):
            assert ("sources", source, key) in shown
        for reason in r["removed"]:
            assert ("sources", source, "removed", reason) in shown
        for stage in r["stages"]:
            assert ("sources", source, "stages", stage, "out") in shown
        assert ("sources", source, "stages", "tokenize", "tokens") in shown
    assert all(("totals", k) in shown for k in ("read", "kept", "removed", "quarantined"))
    assert all(("stages", st, "seconds") in shown for st in manifest["stages"])
    for name, mixture in report["details"]["shards"]["mixtures"].items():
        assert all(("details", "shards", "mixtures", name, "shares", c) in shown for c in mixture["shares"])


def decisions_clusters(run: Path) -> dict[str, list[str]]:
    """cluster id -> sources of its documents, straight from dedup/decisions."""
    clusters: dict[str, list[str]] = {}
    for f in sorted((run / "dedup" / "decisions").glob("*.parquet")):
        t = pq.read_table(f, columns=["cluster_id", "source"]).to_pydict()
        for cid, source in zip(t["cluster_id"], t["source"]):
            clusters.setdefault(cid, []).append(source)
    return clusters


def test_overlap_matrix_is_symmetric_and_matches_the_decisions(stats_run, browser):
    run, report = stats_run
    summary = json.loads((run / "dedup" / "summary.json").read_text())["summary"]
    open_page(browser, run / "stats" / "report.html")
    cells = browser.execute_script("return [...document.querySelectorAll('[data-overlap]')]"
                                   ".map(e => [e.dataset.overlap, e.textContent])")
    matrix = {tuple(k.split(",")): number(v) for k, v in cells}
    sources = list(report["sources"])
    assert len(matrix) == len(sources) ** 2
    clusters = decisions_clusters(run)
    for a, b in combinations_with_replacement(sources, 2):
        expected = sum(1 for members in clusters.values() if a in members and b in members)
        assert matrix[a, b] == matrix[b, a] == expected, (a, b)
    for s in sources:
        assert matrix[s, s] == summary["per_source"][s]["clusters"]
    assert sum(matrix[a, b] for a in sources for b in sources if a != b) > 0  # the fixtures do overlap


def test_cluster_size_histogram_totals_the_clusters(stats_run, browser):
    run, _ = stats_run
    summary = json.loads((run / "dedup" / "summary.json").read_text())["summary"]
    open_page(browser, run / "stats" / "report.html")
    cells = browser.execute_script("return [...document.querySelectorAll('[data-size]')]"
                                   ".map(e => [e.dataset.size, e.textContent])")
    histogram = {k: int(number(v)) for k, v in cells}
    clusters = decisions_clusters(run)
    assert sum(histogram.values()) == summary["clusters"] == len(clusters)
    assert histogram == summary["cluster_sizes"]
    assert histogram == {str(k): v for k, v in sorted(Counter(len(m) for m in clusters.values()).items())}


def test_aggregation_in_passes_equals_one_pass(stats_run):
    run, report = stats_run
    sources = list(report["sources"])
    one = dedup_overlap(run, sources)
    many = dedup_overlap(run, sources, rows_per_pass=40)
    assert one.passes == 1 and many.passes > 2
    assert (many.clusters, many.documents, many.sizes, many.combos) == (one.clusters, one.documents, one.sizes,
                                                                        one.combos)
    assert (many.removed_for == one.removed_for).all()
    removed = {s: r["removed"].get("dedup:cross_source_duplicate", 0) for s, r in report["sources"].items()}
    assert dict(zip(sources, one.removed_for.sum(axis=1).tolist())) == removed


def test_score_samples_read_every_kth_file(stats_run):
    run, report = stats_run
    scores = {s.source: s for s in quality_scores(run, list(report["sources"]), sample_docs=10**9)}
    assert scores["zyda"].column == "quality_prob" and scores["fwe"].column == "int_score"
    for source, s in scores.items():
        assert s.read == s.total == report["sources"][source]["kept"]
    fwe = report["sources"]["fwe"]
    assert len(scores["fwe"].before) == fwe["stages"]["quality_filter"]["in"]  # int_score exists before the cut
    assert len(scores["zyda"].before) == 0  # classifier scores are made by the quality stage
    folder = run / "quality_filter" / "zyda"
    files = sorted(folder.glob("*.parquet"))
    values, read, total = sample_column(folder, "quality_prob", sample_docs=total_rows(files) // 3)
    assert read == sum(pq.read_metadata(f).num_rows for f in files[::3]) < total == total_rows(files)
    assert len(values) == read


def total_rows(files: list[Path]) -> int:
    return sum(pq.read_metadata(f).num_rows for f in files)


def test_same_run_gives_byte_identical_report(stats_run, tmp_path):
    run, _ = stats_run
    write_stats(run, tmp_path)
    first = {p.name: p.read_bytes() for p in sorted((run / "stats").iterdir())}
    assert {p.name: p.read_bytes() for p in sorted(tmp_path.iterdir())} == first
    for name in PLOTS:
        assert set(Image.open(run / "stats" / f"{name}.png").info) <= {"dpi"}  # no software or time stamps


def test_not_a_run_is_a_one_line_error(tmp_path, capsys):
    assert zyda2.main(["stats", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no report.json" in err and str(tmp_path) in err
    (tmp_path / "report.json").write_text("{truncated")
    assert zyda2.main(["stats", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid JSON" in err
    assert zyda2.main(["stats", str(tmp_path), "--rows-per-pass", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
