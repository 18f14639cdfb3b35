"""Packaging: the wheel's only top-level package is hashkit, editable installs work, CLI entry points run."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_wheel_has_only_the_hashkit_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True,
    )
    wheel = next(tmp_path.glob("hashkit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top_level == {"hashkit"}
    assert "hashkit/methods/dpsh.py" in names and "hashkit/data/cifar10.py" in names
    assert "hashkit/serve/templates/search.html" in names and "hashkit/serve/static/search.js" in names
    assert not any(n.startswith(("methods/", "data/")) for n in names)


def test_a_wheel_installed_alone_runs_the_cli(tmp_path: Path) -> None:
    """Build the wheel, install it (not the editable tree) into a fresh venv, and run the CLI from it: every
    subpackage (commands, backbones, …) and the package data must be inside the wheel."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True, capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("hashkit-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    child_site = next(venv.glob("lib/python*/site-packages"))
    parent_site = subprocess.run(  # torch & co. from the running environment, behind the child's own packages
        [sys.executable, "-c", "import site; print(site.getsitepackages()[0])"], check=True, capture_output=True, text=True
    ).stdout.strip()
    (child_site / "zz_parent.pth").write_text(parent_site + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", str(wheel)],
        check=True, capture_output=True,
    )
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import hashkit; print(hashkit.__file__)"],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    ).stdout.strip()
    assert where.startswith(str(child_site)), where  # the wheel's copy, not the repository
    for command in ("train", "evaluate", "search", "encode", "report", "plot"):
        proc = subprocess.run([str(venv / "bin" / "hashkit"), command, "--help"], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0 and "usage: hashkit" in proc.stdout, (command, proc.stderr[-2000:])
    names = zipfile.ZipFile(wheel).namelist()
    package_dirs = {str(p.parent.relative_to(REPO)) for p in (REPO / "hashkit").rglob("__init__.py")}
    for folder in package_dirs:  # every subpackage of the source tree is in the wheel
        assert f"{folder}/__init__.py" in names, folder
    for source in (REPO / "hashkit").rglob("*.c"):  # compiled-kernel sources are package data
        assert str(source.relative_to(REPO)) in names, source


def test_editable_install_maps_methods_and_data(tmp_path: Path) -> None:
    """``pip install -e .`` into a fresh venv (never the running one) maps methods/ and data/ under hashkit."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    child = venv / "bin" / "python"
    child_site = next(venv.glob("lib/python*/site-packages"))
    # The running environment's packages (setuptools for the build) stay visible behind the child's own.
    parent_site = subprocess.run(
        [sys.executable, "-c", "import site; print(site.getsitepackages()[0])"], check=True, capture_output=True, text=True
    ).stdout.strip()
    (child_site / "zz_parent.pth").write_text(parent_site + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(child), "install", "-q", "--no-deps", "--no-build-isolation",
         "-e", str(REPO)],
        check=True, capture_output=True,
    )
    assert list(child_site.glob("__editable__*hashkit*"))
    # find_spec locates the submodules without executing them.
    code = (
        "import importlib.util as u; "
        "print(u.find_spec('hashkit.methods').origin); print(u.find_spec('hashkit.data').origin); "
        "print(u.find_spec('methods')); print(u.find_spec('data'))"
    )
    out = subprocess.run([str(child), "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path).stdout.split()
    assert out == [str(REPO / "methods" / "__init__.py"), str(REPO / "data" / "__init__.py"), "None", "None"]


@pytest.mark.parametrize("entry", [["hashkit"], [sys.executable, "-m", "hashkit"]])
def test_cli_entry_points_show_help(entry: list[str]) -> None:
    if entry == ["hashkit"]:
        entry = [str(Path(sys.executable).parent / "hashkit")]
    for command in (["--help"], ["train", "--help"], ["evaluate", "--help"]):
        out = subprocess.run(entry + command, check=True, capture_output=True, text=True).stdout
        assert "usage: hashkit" in out
    out = subprocess.run(entry + ["train", "--method", "dpsh", "--help"], check=True, capture_output=True, text=True).stdout
    for flag in ("--method", "--code-length", "--eta", "--gpu", "--seed", "--root", "--num-database", "--image-size"):
        assert flag in out


def test_user_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).parent / "hashkit")
    cases = [
        (["train", "--method", "nosuch", "--root", str(tmp_path)], "unknown method 'nosuch'; valid methods: "),
        (["train", "--method", "dpsh", "--dataset", "nosuch"], "unknown dataset 'nosuch'"),
        (["train", "--method", "dpsh", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "does not exist"),
        (["evaluate", "--checkpoint", str(tmp_path / "none.pt")], "does not exist"),
    ]
    for argv, expected in cases:
        proc = subprocess.run([exe, *argv], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        lines = [l for l in proc.stderr.splitlines() if l.startswith("hashkit: error:")]
        assert len(lines) == 1 and expected in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
