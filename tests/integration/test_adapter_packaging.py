"""Packaging: build the three wheels, install each framework package into a fresh venv that holds
the lowest supported torch and transformers (an app's older stack), import it there and run one
rerank; installing the wheels must leave torch and transformers as they were.

Slow (torch alone is a few GB) and online: marked ``slow`` and ``index``, since pip installs
torch, the frameworks and their dependencies from the package index (pip's cache is reused, but
pip still asks the index); ``-m "not index"`` leaves it out offline. CI runs it once. The lowest
versions are the pyproject's lower bounds (scripts/lowest_constraints.py); the package index
has no CPU build of that torch, so the base venv holds a CUDA build. torch, transformers and the
core wheel go into one base venv, hard-linked for each framework.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.index]

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "core": ROOT,
    "llama_index": ROOT / "integrations" / "llama-index-postprocessor-rerank-plugins",
    "langchain": ROOT / "integrations" / "langchain-rerank-plugins",
}


def _lowest() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("lowest_constraints", ROOT / "scripts" / "lowest_constraints.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bounds: dict[str, str] = module.lower_bounds()
    return bounds


LOWEST = _lowest()
# What an app already has; the wheels' installs must not move these.
STACK = {name: LOWEST[name] for name in ("torch", "transformers")}

RUN_LLAMA = """
import sys
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.rerank_plugins import IdentityRerank, PointwiseRerank
from rerank_plugins.testing import tiny_model_dir

nodes = [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=0.5) for i, t in enumerate(DOCS)]
assert [n.node.node_id for n in IdentityRerank(top_n=2).postprocess_nodes(nodes, query_str=QUERY)] == ["n0", "n1"]
out = PointwiseRerank(model=str(tiny_model_dir()), top_n=2).postprocess_nodes(nodes, query_str=QUERY)
assert len(out) == 2 and all(isinstance(n.score, float) for n in out)
assert "langchain_core" not in sys.modules
print("RESULT", json.dumps([n.node.node_id for n in out]))
"""

RUN_LANGCHAIN = """
import sys
from langchain_core.documents import Document
from langchain_rerank_plugins import IdentityRerank, PointwiseRerank
from rerank_plugins.testing import tiny_model_dir

docs = [Document(page_content=t, id=f"d{i}") for i, t in enumerate(DOCS)]
assert [d.id for d in IdentityRerank(top_n=2).compress_documents(docs, QUERY)] == ["d0", "d1"]
out = PointwiseRerank(model=str(tiny_model_dir()), top_n=2).compress_documents(docs, QUERY)
assert len(out) == 2 and all(isinstance(d.metadata["relevance_score"], float) for d in out)
assert "llama_index" not in sys.modules
print("RESULT", json.dumps([d.id for d in out]))
"""

PRELUDE = """
import json
QUERY = "what is the capital of France?"
DOCS = ["Berlin is in Germany.", "Paris is the capital of France.", "The sky is blue."]
"""


def _run(cmd: list[str | Path], timeout: float = 900, **kw: object) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        command = " ".join(map(str, cmd))
        raise AssertionError(f"{command} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return str(proc.stdout)


def _pip_list(python: Path) -> dict[str, str]:
    """``{name: version}`` of what ``python``'s venv holds."""
    listed = json.loads(_run([python, "-m", "pip", "list", "--format=json"]))
    return {p["name"].lower(): p["version"] for p in listed}


def _kept(before: dict[str, str], after: dict[str, str]) -> None:
    """torch, transformers and torch's own CUDA packages are where they were."""
    for name in STACK:
        assert after[name].split("+")[0] == STACK[name], f"{name} moved: {before.get(name)} -> {after[name]}"
    held = {n: v for n, v in before.items() if n in STACK or n.startswith(("nvidia-", "triton"))}
    assert {n: after.get(n) for n in held} == held
    added = {n for n in after.keys() - before.keys() if n.startswith(("nvidia-", "triton"))}
    assert not added, f"the wheels pulled in {sorted(added)}"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    built = {}
    for name, folder in PACKAGES.items():
        before = set(out.iterdir())
        _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, folder])
        (wheel,) = set(out.iterdir()) - before
        built[name] = wheel
    return built


@pytest.fixture(scope="module")
def app_stack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh venv with the lowest supported torch and transformers, as an app has them, and
    what it holds."""
    venv = tmp_path_factory.mktemp("venvs") / "base"
    _run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    # A current pip: older ones (Python 3.11's bundled 23.2) resolve sentence-transformers before
    # transformers and upgrade transformers for sentence-transformers' newest release.
    _run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    _run([python, "-m", "pip", "install", "-q", *(f"{name}=={version}" for name, version in STACK.items())])
    return venv, _pip_list(python)


@pytest.fixture(scope="module")
def core_venv(app_stack: tuple[Path, dict[str, str]], wheels: dict[str, Path]) -> Path:
    """The app's venv plus the core wheel; hard-linked for each framework (one install of torch
    and of the core's dependencies instead of two; pip replaces files, never writes into them)."""
    venv, before = app_stack
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", wheels["core"]])
    _kept(before, _pip_list(python))
    return venv


@pytest.mark.parametrize(
    ("face", "framework", "script", "other"),
    [
        ("llama_index", "llama-index-core", RUN_LLAMA, "langchain-core"),
        ("langchain", "langchain-core", RUN_LANGCHAIN, "llama-index-core"),
    ],
)
def test_wheels_install_and_rerank_in_a_fresh_venv(
    wheels: dict[str, Path], core_venv: Path, face: str, framework: str, script: str, other: str
) -> None:
    start = time.monotonic()
    venv = core_venv.parent / face
    # a venv finds its prefix from pyvenv.cfg beside it, so a copy is a working venv (run via -m)
    shutil.copytree(core_venv, venv, symlinks=True, copy_function=os.link)
    python = venv / "bin" / "python"
    before = _pip_list(python)
    assert {"torch", "transformers", "rerank-plugins"} <= before.keys()
    _run([python, "-m", "pip", "install", "-q", framework, wheels[face]])
    installed = _pip_list(python)
    assert {framework, "rerank-plugins", wheels[face].name.split("-")[0].replace("_", "-")} <= installed.keys()
    assert other not in installed
    _kept(before, installed)
    _run([python, "-m", "pip", "check"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = _run([python, "-c", textwrap.dedent(PRELUDE) + textwrap.dedent(script)], env=env, cwd=venv)
    (line,) = [x for x in out.splitlines() if x.startswith("RESULT ")]
    assert len(json.loads(line[len("RESULT ") :])) == 2
    print(f"{face}: venv install + run took {time.monotonic() - start:.0f} s")
