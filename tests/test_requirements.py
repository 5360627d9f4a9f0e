"""The pins `make` installs agree with what the package declares: every runtime pin of requirements.txt is inside
its install_requires range (setup.cfg), every dev pin of requirements-dev.txt inside the `dev` extra, and test or
lint tools stay out of the runtime set."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement
from setuptools.config.setupcfg import read_configuration

from tests.support.runs import ROOT

DEV_ONLY = {"pytest", "ruff", "nbclient", "nbformat", "ipykernel"}


def _pins(path: Path) -> dict[str, str]:
    """{name: pinned version} of a requirements file (`-r` includes and comments skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{path.name}: {line} is not pinned"
            out[req.name.lower()] = spec.version
    return out


def _declared(reqs: list[str]) -> dict[str, Requirement]:
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def test_pins_match_the_declared_dependencies() -> None:
    options = read_configuration(str(ROOT / "setup.cfg"))["options"]
    for pins, declared in ((_pins(ROOT / "requirements.txt"), _declared(options["install_requires"])),
                           (_pins(ROOT / "requirements-dev.txt"), _declared(options["extras_require"]["dev"]))):
        assert set(pins) == set(declared), set(pins) ^ set(declared)
        for name, version in pins.items():
            assert declared[name].specifier.contains(version), (name, version, str(declared[name].specifier))
    assert not DEV_ONLY & set(_pins(ROOT / "requirements.txt"))
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text().splitlines()  # dev = runtime + tools
    assert _pins(ROOT / "requirements.txt")["torch"] == "2.13.0"  # the CPU build (an unpinned torch pulls CUDA)
