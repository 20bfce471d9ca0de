"""infra/Dockerfile (GPU) and infra/Dockerfile.cpu install exactly the project's pinned dependencies.

Parses pyproject.toml and the Dockerfiles (no Docker engine needed): the base image's Ray and Python
versions, every explicitly pinned package, the torch build (CUDA vs CPU) and its index, and that the
project itself is installed from the copied pyproject.toml followed by ``pip check``.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {"gpu": REPO / "infra" / "Dockerfile", "cpu": REPO / "infra" / "Dockerfile.cpu"}


@dataclass(frozen=True)
class Dockerfile:
    base_image: str
    copies: list[tuple[list[str], str]]  # (sources, destination)
    workdirs: list[str]
    pip_installs: list[list[str]]  # argv after "pip install" of each pip call
    runs: list[str]


def parse_dockerfile(text: str) -> Dockerfile:
    """A small parser for the instructions these Dockerfiles use (continuations joined)."""
    joined = re.sub(r"\\\n", " ", text)
    base, copies, workdirs, pip_installs, runs = "", [], [], [], []
    workdir = "/"
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            base = rest.split()[0]
        elif instr == "WORKDIR":
            workdir = rest.strip()
            workdirs.append(workdir)
        elif instr == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            dest = parts[-1]
            if not dest.startswith("/"):
                dest = str(Path(workdir) / dest)
            copies.append((parts[:-1], dest))
        elif instr == "RUN":
            runs.append(rest)
            for cmd in re.split(r"&&|;", rest):
                argv = shlex.split(cmd)
                if argv[:2] == ["pip", "install"] or argv[:4] == ["python", "-m", "pip", "install"]:
                    pip_installs.append(argv[argv.index("install") + 1 :])
    return Dockerfile(base, copies, workdirs, pip_installs, runs)


def project_pins() -> dict[str, Requirement]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps]
    return {canonicalize_name(r.name): r for r in reqs}


def exact_pin(req: Requirement) -> Version:
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator != "==":
        raise ValueError(f"{req} is not an exact '==' pin")
    return Version(specs[0].version)


def requirement_args(argv: list[str]) -> tuple[list[Requirement], list[str], dict[str, str]]:
    """Split pip-install argv into requirements, local paths and options with values."""
    reqs, paths, opts = [], [], {}
    it = iter(argv)
    for arg in it:
        if arg.startswith("-"):
            if arg in ("--index-url", "-i", "--extra-index-url", "-c", "-r", "--constraint"):
                opts[arg] = next(it)
            elif "=" in arg:
                k, v = arg.split("=", 1)
                opts[k] = v
            continue
        if arg.startswith((".", "/")):
            paths.append(arg)
        else:
            reqs.append(Requirement(arg))
    return reqs, paths, opts


@pytest.fixture(params=sorted(DOCKERFILES))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def check_base_image_is_pinned_ray_of_the_project_version(text: str, variant: str) -> None:
    df = parse_dockerfile(text)
    repo, _, tag = df.base_image.partition(":")
    assert repo == "rayproject/ray", df.base_image
    m = re.fullmatch(r"(\d+\.\d+\.\d+)-py(\d)(\d+)-(gpu|cpu|cu\d+)", tag)
    assert m, f"base tag {tag!r} must be <ray version>-py<XY>-<gpu|cpu|cuNNN> (no 'latest')"
    ray_version, py_major, py_minor, flavour = m.groups()
    assert Version(ray_version) == exact_pin(project_pins()["ray"])
    requires_python = SpecifierSet(
        tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    )
    assert Version(f"{py_major}.{py_minor}") in requires_python
    assert (flavour == "cpu") == (variant == "cpu")


def check_torch_is_the_project_pin_as_the_right_build(text: str, variant: str) -> None:
    df = parse_dockerfile(text)
    pinned = exact_pin(project_pins()["torch"])
    torch_installs = [
        (r, opts)
        for argv in df.pip_installs
        for r, opts in [(req, requirement_args(argv)[2]) for req in requirement_args(argv)[0]]
        if canonicalize_name(r.name) == "torch"
    ]
    assert len(torch_installs) == 1, "torch must be installed exactly once, before the project"
    req, opts = torch_installs[0]
    version = exact_pin(req)
    assert Version(version.public) == pinned
    assert version in project_pins()["torch"].specifier  # pip keeps it when installing the project
    local = version.local or ""
    if variant == "gpu":
        assert re.fullmatch(r"cu\d{3}", local), f"GPU image needs a CUDA build of torch, got {version}"
    else:
        assert local == "cpu", f"CPU image needs the CPU build of torch, got {version}"
    index = opts.get("--index-url", "")
    assert index.rstrip("/").endswith(f"/whl/{local}"), f"index {index!r} does not serve +{local} builds"


def check_every_explicit_pin_matches_pyproject(text: str, variant: str) -> None:
    df = parse_dockerfile(text)
    pins = project_pins()
    for argv in df.pip_installs:
        for req in requirement_args(argv)[0]:
            name = canonicalize_name(req.name)
            assert name in pins, f"{req} is installed in the image but is not a project dependency"
            version = exact_pin(req)  # images pin exactly; ranges would drift between builds
            assert Version(version.public) in pins[name].specifier or version in pins[name].specifier, (
                f"{req} does not satisfy pyproject's {pins[name]}"
            )


def check_project_is_installed_from_its_own_pyproject_then_checked(text: str, variant: str) -> None:
    df = parse_dockerfile(text)
    pyproject_dest = next(
        (dest for srcs, dest in df.copies if "pyproject.toml" in srcs), None
    )  # destination folder of the COPY that brings pyproject.toml
    assert pyproject_dest is not None, "pyproject.toml must be copied into the image"
    copied = {s for srcs, _ in df.copies for s in srcs}
    assert {"embedder", "ray_jobs"} <= copied, "both packages must be in the image"
    project_paths = [p for argv in df.pip_installs for p in requirement_args(argv)[1]]
    assert [Path(p) for p in project_paths] == [Path(pyproject_dest)], project_paths
    # Editable installs and --no-deps would bypass the pins.
    project_argv = next(argv for argv in df.pip_installs if requirement_args(argv)[1])
    assert "-e" not in project_argv and "--no-deps" not in project_argv
    assert any(re.search(r"\bpip check\b", run) for run in df.runs), "the image build must run `pip check`"
    # torch comes first, so the project install does not pull the default (other) build.
    order = [i for i, argv in enumerate(df.pip_installs) if any(a.startswith("torch==") for a in argv)]
    assert order and order[0] < df.pip_installs.index(project_argv)


def test_makefile_torch_pin_agrees() -> None:
    makefile = (REPO / "Makefile").read_text()
    found = set(re.findall(r"torch==([0-9][0-9.]*)", makefile))
    assert found == {str(exact_pin(project_pins()["torch"]))}


CHECKS = [
    check_base_image_is_pinned_ray_of_the_project_version,
    check_torch_is_the_project_pin_as_the_right_build,
    check_every_explicit_pin_matches_pyproject,
    check_project_is_installed_from_its_own_pyproject_then_checked,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_dockerfile(check: Any, variant: str) -> None:
    check(DOCKERFILES[variant].read_text(), variant)


DRIFTS = [
    ("2.60.0-py311-gpu", "2.59.0-py311-gpu", check_base_image_is_pinned_ray_of_the_project_version),
    ("2.60.0-py311-gpu", "latest-gpu", check_base_image_is_pinned_ray_of_the_project_version),
    ("torch==2.13.0+cu128", "torch==2.12.0+cu128", check_torch_is_the_project_pin_as_the_right_build),
    ("torch==2.13.0+cu128", "torch==2.13.0+cpu", check_torch_is_the_project_pin_as_the_right_build),
    ("whl/cu128", "whl/cu126", check_torch_is_the_project_pin_as_the_right_build),
    ("torch==2.13.0+cu128", "torch==2.13.0+cu128 numpy==1.26.4", check_every_explicit_pin_matches_pyproject),
    (
        "torch==2.13.0+cu128",
        "torch==2.13.0+cu128 requests==2.32.0",
        check_every_explicit_pin_matches_pyproject,
    ),
    (
        "pip install /home/ray/embedder",
        "pip install --no-deps /home/ray/embedder",
        check_project_is_installed_from_its_own_pyproject_then_checked,
    ),
    (" && pip check", "", check_project_is_installed_from_its_own_pyproject_then_checked),
]


@pytest.mark.parametrize(("old", "new", "check"), DRIFTS, ids=lambda x: x if isinstance(x, str) else "")
def test_checks_catch_drift(old: str, new: str, check: Any) -> None:
    text = DOCKERFILES["gpu"].read_text()
    assert old in text
    with pytest.raises((AssertionError, ValueError)):
        check(text.replace(old, new), "gpu")
