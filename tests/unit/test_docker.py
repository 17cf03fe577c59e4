"""docker/: the image installs with the script CI runs, the build context leaves host venvs out, the pod template.

No Docker engine runs here; these checks read the files.
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def _instructions(dockerfile: pathlib.Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), " ".join(rest.split())))
    return pairs


def _ignore_rules() -> list[tuple[bool, re.Pattern]]:
    """.dockerignore as (is_exception, regex) rules, in file order."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = "".join(".*" if part == "**" else re.escape(part) if part not in ("*", "?") else
                        ("[^/]*" if part == "*" else "[^/]")
                        for part in re.split(r"(\*\*|\*|\?)", pattern))
        rules.append((negate, re.compile(regex.replace(".*/", "(.*/)?"))))
    return rules


def _excluded(path: str) -> bool:
    """Whether Docker leaves ``path`` (relative to the context root) out: a rule matching it or a parent directory;
    the last matching rule wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for negate, regex in _ignore_rules():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not negate
    return verdict


def test_the_image_installs_with_the_script_ci_runs():
    steps = _instructions(DOCKER / "Dockerfile")
    runs = [args for word, args in steps if word == "RUN"]
    assert "bash scripts/setup.sh" in runs, runs
    # CI: .ci/run -> scripts/test.sh -> scripts/setup.sh, the same install script.
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert 'bash "$ROOT/scripts/setup.sh"' in (ROOT / "scripts" / "test.sh").read_text()
    # setup.sh runs over the copied checkout, from the working directory the COPY filled.
    assert ("COPY", ". /opt/tfos") in steps and ("WORKDIR", "/opt/tfos") in steps
    copy_at = steps.index(("COPY", ". /opt/tfos"))
    assert copy_at < next(i for i, (w, a) in enumerate(steps) if w == "RUN" and a == "bash scripts/setup.sh")


@pytest.mark.parametrize("path", [
    ".venv/bin/python", "examples/mnist/.venv/pyvenv.cfg", "tests/nodefns.pyc", ".git/HEAD", "tfos/__pycache__/cluster.cpython-311.pyc",
    "tfos.egg-info/PKG-INFO", ".pytest_cache/README.md", "tfos-run/chief.log", "spark-warehouse/t/part-0",
])
def test_the_build_context_leaves_out_host_venvs_and_caches(path):
    assert _excluded(path), f"{path} would be copied into the image; add it to .dockerignore"


@pytest.mark.parametrize("path", [
    "pyproject.toml", "README.md", "tfos/cluster.py", "tfos/_node/child.py", "scripts/setup.sh",
    "docker/spark-entrypoint.sh", "docker/discover-gpus.sh", "examples/mnist", "bench/results/kill_resume.md",
])
def test_the_build_context_keeps_what_the_install_and_the_pods_need(path):
    assert not _excluded(path), f".dockerignore leaves {path} out of the image"


def _venv_python() -> str:
    env_lines = " ".join(args for word, args in _instructions(DOCKER / "Dockerfile") if word == "ENV")
    env = dict(re.findall(r"(\w+)=(\S+)", env_lines))
    return env["TFOS_VENV"] + "/bin/python"


def test_pod_template_names_the_entrypoint_and_the_images_python():
    text = (DOCKER / "pod-template.yaml").read_text()
    command = re.search(r'^\s*command:\s*\["([^"]+)"\]\s*$', text, re.M)
    assert command and command.group(1) == "/opt/tfos/docker/spark-entrypoint.sh"
    entrypoint = DOCKER / "spark-entrypoint.sh"
    assert entrypoint.read_text().startswith("#!/usr/bin/env bash") and entrypoint.stat().st_mode & 0o111
    assert re.search(r"name: PYSPARK_PYTHON\s+value: (\S+)", text).group(1) == _venv_python()


def test_pod_template_is_a_pod_spec():
    yaml = pytest.importorskip("yaml", reason="no YAML parser installed (pip install pyyaml to run this check)")
    pod = yaml.safe_load((DOCKER / "pod-template.yaml").read_text())
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["/opt/tfos/docker/spark-entrypoint.sh"]
    assert {"name": "PYSPARK_PYTHON", "value": _venv_python()} in container["env"]
    assert pod["spec"]["shareProcessNamespace"] is True
    assert {v["name"] for v in pod["spec"]["volumes"]} == {m["name"] for m in container["volumeMounts"]}
