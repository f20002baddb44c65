"""Run the notebooks' Colab setup cell as Colab runs it, with no network but the package registry: a fake
``google.colab`` module, and git told to fetch ``https://github.com/`` from a local folder holding a repository
made of this checkout's files (git's own ``url.<base>.insteadOf``, so the cell's code is the published one).

    python tools/colab_stack.py install PYTHON   into the venv of PYTHON, which holds Colab's stack
                                                 (requirements/colab.txt): the setup cell's dry run, printed, and
                                                 refused when it would change a package colab.txt pins; then the
                                                 real run; then course-lib made editable, so tests see the checkout

Used by the Makefile's Colab-stack tier and by tests/test_colab_stack.py and tests/test_colab_install.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import nbtool  # noqa: E402

COLAB_PINS = ROOT / "requirements" / "colab.txt"
FAKE_REPOSITORY = "colab-ci/lora-qlora-course"  # what a student would type in the form field


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_pins(path: Path = COLAB_PINS) -> dict[str, str]:
    """{canonical name: version} of requirements/colab.txt."""
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            pins[canonical(name)] = version
    return pins


def checkout_files() -> list[str]:
    """The checkout's files as git sees them, committed or not (ignored ones left out)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split("\0")
    return [rel for rel in listed if rel and (ROOT / rel).is_file()]


def fake_github(root: Path, repository: str = FAKE_REPOSITORY, files: dict[str, str] | None = None,
                branch: str = "main") -> dict[str, str]:
    """A git repository at ``root/github/<repository>`` (branch ``branch``) holding ``files`` ({path: text}) or,
    by default, this checkout's files; returns the environment variables under which git fetches
    ``https://github.com/...`` from ``root/github/`` (so a name not there is "not found", as on GitHub)."""
    repo = root / "github" / repository
    repo.mkdir(parents=True)
    if files is None:
        for rel in checkout_files():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    else:
        for rel, text in files.items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_text(text)
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "-c", "init.defaultBranch=" + branch]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the course"]):
        subprocess.run(git + args, cwd=repo, check=True, capture_output=True)
    return git_redirect(f"file://{root / 'github'}/")


def git_redirect(base: str) -> dict[str, str]:
    """Environment variables that make git fetch ``https://github.com/X`` from ``base + X``."""
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{base}.insteadOf",
            "GIT_CONFIG_VALUE_0": "https://github.com/", "GIT_CONFIG_NOSYSTEM": "1"}


def run_cell(python: str, root: Path, env: dict[str, str], *, repository: str = FAKE_REPOSITORY,
             branch: str = "main", on_colab: bool = True, before: str = "",
             timeout: int = 1200) -> subprocess.CompletedProcess:
    """The setup cell with ``REPOSITORY``/``BRANCH`` typed into its form, run by ``python`` in a fresh process
    (under a fake ``google.colab`` when ``on_colab``), after the code ``before`` (e.g. imports a session has made)."""
    fake = root / "fake-colab" / "google" / "colab"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "__init__.py").write_text("")
    (fake.parent / "__init__.py").write_text("")
    cell = nbtool.colab_setup_source({"repository": FAKE_REPOSITORY, "branch": "main"})
    for field, value in (("REPOSITORY", repository), ("BRANCH", branch)):  # as Colab writes what is typed in a form
        cell = re.sub(rf'^{field} = ".*?"', lambda m, f=field, v=value: f"{f} = {json.dumps(v)}", cell, count=1,
                      flags=re.M)
    script = root / "setup_cell.py"
    script.write_text(("import google.colab\n" if on_colab else "") + before + "\n" + cell)
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "COURSE_SETUP_DRY_RUN")}
    return subprocess.run([python, str(script)], capture_output=True, text=True, cwd=root, timeout=timeout,
                          env=clean | {"PYTHONPATH": str(root / "fake-colab"), "TMPDIR": str(root)} | env)


def planned(output: str) -> dict[str, str]:
    """{canonical name: version} of the cell's "pip would install: ..." / "Installed: ..." line."""
    line = next(ln for ln in output.splitlines() if ln.startswith(("pip would install: ", "Installed: ")))
    items = line.split(": ", 1)[1].split(", ") if line.split(": ", 1)[1] else []
    return {canonical(item.rsplit(" ", 1)[0]): item.rsplit(" ", 1)[1] for item in items}


def changes_to_colab(plan: dict[str, str], pins: dict[str, str] | None = None) -> list[str]:
    """What ``plan`` would change of the packages Colab has (requirements/colab.txt)."""
    pins = colab_pins() if pins is None else pins
    return [f"{name} {pins[name]} -> {version}" for name, version in plan.items() if pins.get(name, version) != version]


def cmd_install(python: str, constraints: str | None) -> None:
    python = os.path.abspath(python)  # the cell runs in a temporary folder (not resolved: a venv's python is a link)
    with tempfile.TemporaryDirectory(prefix="colab-stack-") as tmp:
        root = Path(tmp)
        env = fake_github(root)
        dry = run_cell(python, root, env | {"COURSE_SETUP_DRY_RUN": "1"})
        print(dry.stdout, dry.stderr[-3000:], sep="", end="")
        if dry.returncode:
            sys.exit("the setup cell's dry run failed on Colab's stack")
        changes = changes_to_colab(planned(dry.stdout))
        if changes:
            sys.exit(f"on Colab's stack the setup cell would change {changes}: requirements/colab.txt (Colab's "
                     "versions) and pyproject.toml's ranges disagree")
        print("On Colab's stack the setup cell changes none of requirements/colab.txt's packages.")
        real = run_cell(python, root, env | ({"PIP_CONSTRAINT": os.path.abspath(constraints)} if constraints else {}))
        print(real.stdout, real.stderr[-3000:], sep="", end="")
        if real.returncode:
            sys.exit("the setup cell failed on Colab's stack")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], check=True)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["install"])
    parser.add_argument("python", help="the python of the venv that holds Colab's stack")
    parser.add_argument("--constraints", help="pip constraints for the real run (CI: colab.txt over ci.txt)")
    args = parser.parse_args(argv)
    cmd_install(args.python, args.constraints)


if __name__ == "__main__":
    main()
