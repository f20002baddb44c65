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
def test_front_page_lists_the_lessons_and_every_link_resolves(tmp_path, browser):
    sys.path.insert(0, str(ROOT / "tools"))
    import nbtool

    subprocess.run([sys.executable, str(ROOT / "tools" / "nbtool.py"), "render", str(tmp_path)], check=True)
    browser.set_window_size(390, 844)  # a phone
    browser.get((tmp_path / "index.html").as_uri())
    assert "LoRA" in browser.title
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), \
        "the front page scrolls sideways on a phone"
    assert browser.find_elements("css selector", "meta[name=viewport]")
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    lessons = browser.find_elements("css selector", "li.lesson")
    assert [li.get_attribute("id") for li in lessons] == [f"lesson-{n[:2]}" for n in notebooks], "lessons out of order"
    for name, li in zip(notebooks, lessons):
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        info = nbtool.lesson_info(name, nb)
        assert li.find_element("css selector", "h2").text == info["title"]
        assert info["teaches"] and info["teaches"][:40] in li.text, f"{name}: what it teaches is missing"
        seconds = nb.metadata["course"]["run_seconds"]
        assert f"Run time: {nbtool._duration(seconds)}" in li.text
        assert "Prerequisites:" in li.text
        hrefs = [a.get_attribute("href") for a in li.find_elements("css selector", ".links a")]
        colab = [h for h in hrefs if h.startswith("https://colab.research.google.com/github/")]
        if nbtool.course_settings()["repository"].startswith(nbtool.PLACEHOLDER_OWNER):
            assert colab == [] and "Colab: not published yet" in li.text  # no link to a repository not there
        else:  # every Colab link names a file of this repository
            targets = [h.split("/blob/", 1)[1].split("/", 1)[1] for h in colab]
            assert f"notebooks/{name}.ipynb" in targets and all((ROOT / t).is_file() for t in targets), targets
            if (ROOT / "solutions" / f"{name}.py").exists():
                assert f"exercises/{name}.ipynb" in targets, f"{name}: no exercise link"
        for prerequisite in li.find_elements("css selector", ".meta a"):
            assert browser.find_elements("id", prerequisite.get_attribute("href").split("#")[1])
    assert "Environment of this build" in browser.page_source
    pages = [a.get_attribute("href") for a in browser.find_elements("css selector", ".links a")
             if a.get_attribute("href").startswith("file://")]
    assert [Path(link).stem for link in pages] == notebooks
    for link in pages:
        page = Path(link.removeprefix("file://"))
        assert page.is_file(), f"broken link {link}"
        browser.get(link)
        expected = _png_outputs(nbformat.read(ROOT / "notebooks" / f"{page.stem}.ipynb", as_version=4))
        shown = browser.execute_script(
            "return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0"
            " && i.src.startsWith('data:image/png')).length")
        assert shown == expected, f"{page.name}: {shown} plots shown, the notebook has {expected}"
        assert expected > 0, f"{page.name} shows no plot: every notebook draws at least one figure"
