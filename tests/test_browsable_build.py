"""The HTML build in a real headless browser: the index loads, every link resolves, every notebook page shows its
plots. Renders the committed executed notebooks (what `make course` renders after executing them).
Needs Debian's chromium and chromium-driver (.ci/run installs them); skipped elsewhere unless CI is set."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]

missing = [tool for tool in ("chromium", "chromedriver") if shutil.which(tool) is None]
if missing and not os.environ.get("CI"):
    pytest.skip(f"needs {missing} (apt-get install chromium chromium-driver)", allow_module_level=True)


def _png_outputs(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)


@pytest.fixture(scope="module")
def browser():
    assert not missing, f"CI must install {missing}: apt-get install -y chromium chromium-driver"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


@pytest.mark.slow
@pytest.mark.browser
def test_index_links_and_plots(tmp_path, browser):
    subprocess.run([sys.executable, str(ROOT / "tools" / "nbtool.py"), "render", str(tmp_path)], check=True)
    browser.get((tmp_path / "index.html").as_uri())
    assert "LoRA" in browser.title
    links = [a.get_attribute("href") for a in browser.find_elements("css selector", "a")]
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    assert [Path(link).stem for link in links] == notebooks
    assert "Environment" in browser.page_source and "run time" in browser.page_source
    for link in links:
        page = Path(link.removeprefix("file://"))
        assert page.is_file(), f"broken link {link}"
        browser.get(link)
        expected = _png_outputs(nbformat.read(ROOT / "notebooks" / f"{page.stem}.ipynb", as_version=4))
        shown = browser.execute_script(
            "return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0"
            " && i.src.startsWith('data:image/png')).length")
        assert shown == expected, f"{page.name}: {shown} plots shown, the notebook has {expected}"
        assert expected > 0, f"{page.name} shows no plot: every notebook draws at least one figure"
