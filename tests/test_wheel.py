"""The package as users get it: ``python -m build`` makes an sdist and a wheel holding every
file OmniQ reads at run time, and the wheel, installed (not editable) into a fresh
virtualenv, runs ``omniq demo``.

The build runs on a copy of the files git tracks, so what it packs is what a release from
this commit would pack, and the checkout gets no ``build/`` or ``*.egg-info``. It runs
without build isolation (the dev extra brings ``build`` and the setuptools pyproject.toml
asks for), and the virtualenv sees the system's site-packages for OmniQ's dependencies
and installs the wheel alone, so the test needs no network.
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from omniq import __version__
from tests.conftest import REPO_ROOT

# The subprocesses get the machine's environment without what would change which omniq
# they import or how it is configured: PYTHONPATH (the checkout), OMNIQ_* settings, and
# coverage's start-up hook (the installed copy lives in a directory gone before coverage
# combines its data).
_DROPPED = {"PYTHONPATH", "COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"}
CLEAN_ENV = {
    k: v for k, v in os.environ.items() if k not in _DROPPED and not k.startswith("OMNIQ_")
}


def run(*args: str | Path, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


def tracked(*paths: str) -> list[str]:
    listed = run("git", "ls-files", "-z", "--", *paths, cwd=REPO_ROOT).stdout
    return sorted(name for name in listed.split("\0") if name)


def package_files() -> list[str]:
    return tracked("omniq")


def data_files() -> list[str]:
    """Every file under omniq/ that is not a module: SQL, Lua, templates, py.typed..."""
    return [name for name in package_files() if not name.endswith(".py")]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist and a wheel built by ``python -m build`` (the wheel from the sdist, as the
    frontend does by default), in the directory returned."""
    root = tmp_path_factory.mktemp("build")
    source, out = root / "source", root / "dist"
    for name in tracked():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source, cwd=root)
    return out


def only(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {directory}, found {found}"
    return found[0]


def test_the_package_has_data_files_to_check() -> None:
    # The other tests assert over this list: an empty one (git not seeing the package)
    # would make them pass without checking anything.
    names = data_files()
    assert "omniq/py.typed" in names
    assert any(n.endswith(".sql") for n in names)
    assert any(n.endswith(".lua") for n in names)
    assert any(n.startswith("omniq/dashboard/templates/") for n in names)
    assert any(n.startswith("omniq/dashboard/static/") for n in names)


def test_the_wheel_holds_exactly_the_package_files(dist: Path) -> None:
    with zipfile.ZipFile(only(dist, f"omniq-{__version__}-py3-none-any.whl")) as wheel:
        names = wheel.namelist()
    packed = {n for n in names if not n.startswith(f"omniq-{__version__}.dist-info/")}
    expected = set(package_files())
    # Every module (a directory without __init__.py would be left out) and every data
    # file, and nothing git does not track (a stray file picked up by a glob).
    assert sorted(expected - packed) == []
    assert sorted(packed - expected) == []


def test_the_sdist_holds_the_package_files_and_documents(dist: Path) -> None:
    prefix = f"omniq-{__version__}/"
    with tarfile.open(only(dist, f"omniq-{__version__}.tar.gz")) as sdist:
        packed = {n.removeprefix(prefix) for n in sdist.getnames()}
    documents = ["pyproject.toml", "README.md", "CHANGELOG.md", "MANIFEST.in"]
    examples = tracked("examples")  # the README links them
    assert examples
    expected = [*package_files(), *documents, *examples]
    assert [n for n in expected if n not in packed] == []


def test_the_wheel_metadata_carries_the_source_version(dist: Path) -> None:
    with zipfile.ZipFile(only(dist, "*.whl")) as wheel:
        text = wheel.read(f"omniq-{__version__}.dist-info/METADATA").decode()
        entry_points = wheel.read(f"omniq-{__version__}.dist-info/entry_points.txt").decode()
    metadata = email.parser.Parser().parsestr(text)
    assert metadata["Version"] == __version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.11"
    classifiers = metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert "Framework :: AsyncIO" in classifiers
    assert "omniq = omniq.cli:main" in entry_points


def test_the_changelog_has_an_entry_for_this_version() -> None:
    # A release bumps omniq.__version__ and says what changed under that heading.
    headings = (REPO_ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines()
    assert any(line.startswith(f"## [{__version__}]") for line in headings)


def test_the_installed_wheel_runs_the_demo(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # --system-site-packages: OmniQ's dependencies come from the system, so only the wheel
    # is installed (no network). The system's pip installs it into the venv, whose
    # site-packages come before the system's (and its editable omniq) on sys.path.
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv, cwd=tmp_path)
    python, omniq = venv / "bin" / "python", venv / "bin" / "omniq"
    wheel = only(dist, "*.whl")
    pip = ("-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index")
    # --ignore-installed: the system's omniq (an editable checkout) is not this venv's.
    run(python, *pip, "--no-deps", "--ignore-installed", wheel, cwd=tmp_path)

    work = tmp_path / "work"  # outside the checkout, so nothing imports from it
    work.mkdir()
    probe = (
        "import json, sys; from importlib import resources; import omniq;"
        "root = resources.files('omniq');"
        "print(json.dumps({'file': omniq.__file__, 'version': omniq.__version__,"
        "'missing': [p for p in sys.argv[1:] if not root.joinpath(p).is_file()]}))"
    )
    relative = [name.removeprefix("omniq/") for name in data_files()]
    seen = json.loads(run(python, "-c", probe, *relative, cwd=work).stdout)
    assert Path(seen["file"]).resolve().is_relative_to(venv.resolve()), seen["file"]
    assert seen["version"] == __version__
    assert seen["missing"] == []

    assert run(omniq, "--version", cwd=work).stdout.strip() == f"omniq {__version__}"

    demo = run(omniq, "demo", cwd=work, timeout=90)
    assert "summary:" in demo.stdout
    assert "complete" in demo.stdout and "failed" in demo.stdout
    assert (work / ".omniq" / "omniq.db").exists()
