"""The notebooks as a student sees them: JupyterLab (the `lab` extra) in headless Chromium, every cell run with
live widgets (no COURSE_STATIC_WIDGETS), then checked the way a student would look at them.

Checks: no error output; no stray text repr of a widget or of an explorer's return value; every explorer shows
its controls, and moving one control redraws its output; a quiz "Check" button gives the grader's feedback.
Screenshots of each explorer and of one answered quiz land in build/screenshots/ (docs/img/ keeps copies for the
instructor guide).

What runs in full, and why (time budget: about 5 minutes of the CI run on a 2-core CPU):
- In full, live: the notebooks with an explorer, 01, 03, 04 and 05. 01 and 04 also show tqdm.auto's progress
  bars, which become widgets live (checked): the one other live-only output in the series.
- Only their setup and quiz cells (a notebook generated from the committed one): 02, 06, 07, 08. Apart from the
  final quiz, their live-only outputs are the same tqdm.auto bars (02's LoRA training, 06's and 07's Trainer
  runs; 08 trains in accelerate subprocesses). 06 alone trains for minutes (213 s under `make course`), and
  running 02, 07 and 08 in full would repeat the static CI run (nbval) for about 2 minutes more and find
  nothing new (02 was run in full while this test was written: 46 s, passed).

Needs Debian's chromium and chromium-driver (.ci/run installs them) and JupyterLab (`pip install -e ".[lab]"`,
which `make install` does); skipped elsewhere unless CI is set.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from course_lib import quiz

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "build" / "screenshots"
FULL = ("01", "03", "04", "05")
QUIZ_ONLY = ("02", "06", "07", "08")
PROGRESS_BARS = ("01", "04")  # notebooks whose tqdm.auto bars must render as widgets

# notebook -> (the call in the notebook, the control labels it must show, the control to move and its new value)
EXPLORERS = {
    "01": ("widgets.rank_explorer(", ["rank k"], ("rank k", "slider")),
    "03": ("widgets.lora_calculator(", ["shape", "r", "targets"], ("shape", "llama-2-13b")),
    "04": ("widgets.quantization_explorer(", ["kind", "blocksize", "double quantization"], ("kind", "int4")),
    "05": ("widgets.memory_planner(", ["shape", "method", "batch_size", "seq_len", "gpu"], ("method", "lora")),
}
# a text repr of a widget, e.g. "[VBox(children=(HTML(value='<b>Q1...", printed where the widget should be
WIDGET_REPR = re.compile(r"\b[A-Z]\w*\((children|value|description|options|layout|index)=")

missing = [tool for tool in ("chromium", "chromedriver") if shutil.which(tool) is None]
try:
    import jupyterlab  # noqa: F401
except ImportError:
    missing.append("jupyterlab")
if missing and not os.environ.get("CI"):
    pytest.skip(f"needs {missing} (apt-get install chromium chromium-driver; pip install -e '.[lab]')",
                allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quiz_only(src: Path, dest: Path) -> None:
    """The notebook's own setup (colab-setup) cells and its last code cell, the quiz: nothing else runs."""
    nb = nbformat.read(src, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "quiz.show(" in code[-1].source, f"{src.name}: the last code cell is not the quiz"
    nb.cells = [c for c in code if "colab-setup" in c.metadata.get("tags", [])] + [code[-1]]
    for cell in nb.cells:
        cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, dest)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a copy of the notebooks (its autosave never touches the repository), and Chromium."""
    assert not missing, f"CI must install {missing}: apt-get install -y chromium chromium-driver; pip install -e '.[lab]'"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    work = tmp_path_factory.mktemp("live")
    for nb in FULL:
        shutil.copy(next((ROOT / "notebooks").glob(f"{nb}_*.ipynb")), work)
    for nb in QUIZ_ONLY:
        src = next((ROOT / "notebooks").glob(f"{nb}_*.ipynb"))
        _quiz_only(src, work / f"{src.stem}_quiz.ipynb")
    env = {k: v for k, v in os.environ.items() if k != "COURSE_STATIC_WIDGETS"}  # live widgets: the point
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR", "JUPYTER_RUNTIME_DIR"):
        env[name] = str(work / ".jupyter" / name.lower())  # no state from the user's own Jupyter
    news = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')  # no "get notified about Jupyter news?" box over the screenshots
    port, token = _free_port(), os.urandom(12).hex()
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands and read cell models
         "--LabApp.extension_manager=readonly", "--LabApp.news_url=",  # offline: no PyPI or news requests
         "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate"],
        env=env, stdout=(work / "lab.log").open("w"), stderr=subprocess.STDOUT)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    # without the background-networking flags Chromium's own connections are refused on a closed network
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={work / 'chromium'}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, (work / "lab.log").read_text()[-3000:]
                time.sleep(0.5)
        yield Lab(driver, f"http://127.0.0.1:{port}", token, work)
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)


class Lab:
    def __init__(self, driver, url, token, work):
        self.driver, self.url, self.token, self.work = driver, url, token, work

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, what, condition, timeout):
        deadline = time.time() + timeout
        while not (value := condition()):
            assert time.time() < deadline, f"timed out after {timeout} s waiting for {what}"
            time.sleep(0.5)
        return value

    def run_all(self, name: str, timeout: float = 600):
        """Open notebook `name` in a fresh workspace, restart nothing, run every cell, wait until all ran."""
        self.driver.get(f"{self.url}/lab/workspaces/{Path(name).stem}/tree/{name}?token={self.token}&reset")
        self.wait(f"{name} to open with a connected kernel", lambda: self.js(
            "const w = window.jupyterapp && jupyterapp.shell.currentWidget;"
            "const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
            "return !!(k && k.connectionStatus === 'connected' && k.status === 'idle' && w.content.widgets.length)"), 120)
        self.js("jupyterapp.commands.execute('notebook:run-all-cells')")
        pending = ("const w = jupyterapp.shell.currentWidget;"
                   "return w.content.widgets.filter(c => c.model.type === 'code' && c.model.sharedModel.source.trim()"
                   " && (c.model.executionCount === null || c.promptNode.textContent.includes('*'))).length")
        busy = "return jupyterapp.shell.currentWidget.sessionContext.session.kernel.status !== 'idle'"
        # done: every code cell has run and the kernel is idle twice in a row (a cell that fails stops run-all,
        # so time out rather than wait forever, and report the error output below)
        deadline = time.time() + timeout
        quiet = 0
        while quiet < 2:
            quiet = quiet + 1 if not self.js(busy) and not self.js(pending) else 0
            if self.errors() and not self.js(busy):
                break  # run-all stops at an error: _check_page reports it
            running = self.js("return jupyterapp.shell.currentWidget.content.widgets.findIndex("
                              "c => c.model.type === 'code' && c.promptNode.textContent.includes('*'))")
            assert time.time() < deadline, f"{name}: not done after {timeout} s; cell {running} is running"
            time.sleep(1)

    def outputs(self):
        """(cell index, source, outputs as nbformat JSON) of every code cell, from JupyterLab's own models."""
        return self.js("return jupyterapp.shell.currentWidget.content.widgets.map((c, i) => c.model.type === 'code'"
                       " ? [i, c.model.sharedModel.source, c.model.outputs.toJSON()] : null).filter(x => x)")

    def errors(self):
        return [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, _, outs in self.outputs()
                for o in outs if o["output_type"] == "error"]

    def cell(self, index):
        return self.js("const c = jupyterapp.shell.currentWidget.content.widgets[arguments[0]];"
                       "c.node.scrollIntoView(); return c.node", index)


def _check_page(lab: Lab, name: str):
    """No error output, nothing run-all skipped, no text repr where a widget belongs, every widget rendered."""
    assert not lab.errors(), f"{name}: error output: {lab.errors()}"
    outputs = lab.outputs()
    not_run = [i for i, src, _ in outputs if src.strip() and not lab.js(
        "return jupyterapp.shell.currentWidget.content.widgets[arguments[0]].model.executionCount", i)]
    assert not not_run, f"{name}: cells {not_run} did not run"
    for i, _, outs in outputs:
        for out in outs:
            data = out.get("data", {})
            text = "".join(out.get("text", "")) + "".join(data.get("text/plain", ""))
            if "application/vnd.jupyter.widget-view+json" not in data:
                assert not WIDGET_REPR.search(text), f"{name} cell {i}: a widget printed as text: {text[:200]}"
    page = lab.js("return document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook').innerText")
    for broken in ("Loading widget", "Error displaying widget", "Model not found", "Traceback (most recent call"):
        assert broken not in page, f"{name}: the page shows {broken!r}"


def _controls(lab: Lab, cell) -> dict:
    """Label -> control element of each ipywidgets control in a cell's output."""
    found = {}
    for box in cell.find_elements("css selector", ".widget-inline-hbox, .widget-checkbox"):
        labels = box.find_elements("css selector", ".widget-label")
        text = " ".join(label.text for label in labels if label.text.strip()) or box.text
        found.setdefault(text.strip(), box)
    return found


def _explorer_output(cell) -> str:
    """What an explorer shows under its controls (figures as their data URLs, printed text as text)."""
    (out,) = cell.find_elements("css selector", ".widget-interact > .widget-output")
    return out.get_attribute("innerHTML")


def _check_explorer(lab: Lab, nb: str):
    call, labels, (label, value) = EXPLORERS[nb]
    (index,) = [i for i, src, _ in lab.outputs() if call in src]
    cell = lab.cell(index)
    controls = lab.wait(f"{nb}'s explorer controls {labels}", lambda: (c := _controls(lab, cell)) and
                        all(k in c for k in labels) and c, 60)
    before = lab.wait(f"{nb}'s explorer output", lambda: "jp-OutputArea-output" in _explorer_output(cell) and
                      _explorer_output(cell), 60)
    time.sleep(1)  # a figure may still be arriving
    before = _explorer_output(cell)
    SHOTS.mkdir(parents=True, exist_ok=True)
    lab.js("arguments[0].scrollIntoView()", cell)  # again: the figures arrived since, and a shot stops at the window
    cell.screenshot(str(SHOTS / f"{nb}_{call.split('.')[1].rstrip('(')}.png"))
    control = controls[label]
    if value == "slider":
        from selenium.webdriver.common.keys import Keys

        handle = control.find_element("css selector", ".noUi-handle")
        handle.click()
        handle.send_keys(Keys.ARROW_RIGHT)
    else:
        from selenium.webdriver.support.ui import Select

        Select(control.find_element("css selector", "select")).select_by_visible_text(value)
    after = lab.wait(f"{nb}'s explorer to redraw after moving {label!r}", lambda: (
        (html := _explorer_output(cell)) != before and html.count("<img") == before.count("<img")
        and "jp-OutputArea-output" in html and html), 60)
    shown = cell.find_element("css selector", ".widget-interact > .widget-output").text
    assert "✗" not in shown, f"{nb}: moving {label!r} gave an error message: {shown}"
    # the views print and draw; a text/plain result under the figure is the view's return value printed as repr
    stray = cell.find_elements("css selector", ".widget-output [data-mime-type='text/plain']")
    assert not stray, f"{nb}: the explorer prints a return value: {stray[0].text[:200]}"
    assert after != before


def _check_quiz(lab: Lab, nb: str, screenshot: bool = False):
    (index,) = [i for i, src, _ in lab.outputs() if f'quiz.show("{nb}")' in src]
    cell = lab.cell(index)
    questions = quiz.questions(nb)
    boxes = lab.wait(f"quiz {nb}'s questions", lambda: len(b := cell.find_elements(
        "css selector", ".widget-vbox > .widget-vbox")) == len(questions) and b, 60)
    for q_index, choice in ((0, questions[0].answer), (1, (questions[1].answer + 1) % len(questions[1].options))):
        box = boxes[q_index]
        box.find_elements("css selector", ".widget-radio-box input")[choice].click()
        box.find_element("xpath", ".//button[normalize-space()='Check']").click()
        expected = " ".join(quiz.grade(nb, q_index, choice)[1].split())
        got = lab.wait(f"quiz {nb} Q{q_index + 1}'s feedback", lambda box=box: " ".join(
            box.find_elements("css selector", ".widget-html")[-1].text.split()), 30)
        assert got == expected, f"quiz {nb} Q{q_index + 1}: feedback {got!r}, the grader says {expected!r}"
    if screenshot:
        lab.js("arguments[0].scrollIntoView()", boxes[0])
        boxes[0].screenshot(str(SHOTS / f"{nb}_quiz.png"))


@pytest.mark.parametrize("nb", FULL)
def test_notebook_live(lab, nb):
    name = next(lab.work.glob(f"{nb}_*.ipynb")).name
    lab.run_all(name)
    _check_page(lab, name)
    if nb in PROGRESS_BARS:
        assert lab.js("return document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .widget-hprogress')"
                      ".length"), f"{name}: tqdm's progress bars did not render as widgets"
    if nb in EXPLORERS:
        _check_explorer(lab, nb)
        _check_page(lab, name)  # the redraw added no error either
    _check_quiz(lab, nb, screenshot=nb == "03")
    lab.js("return jupyterapp.shell.currentWidget.sessionContext.shutdown()")  # free the CPU for the next one


@pytest.mark.parametrize("nb", QUIZ_ONLY)
def test_quiz_live(lab, nb):
    name = next(lab.work.glob(f"{nb}_*_quiz.ipynb")).name
    lab.run_all(name, timeout=120)
    _check_page(lab, name)
    _check_quiz(lab, nb)
