"""Packaging: build the three wheels, install each framework package into a fresh venv that holds
only its framework core, torch and the rerank-plugins core, import it there and run one rerank.

Slow (a few hundred MB of dependencies) and online: marked ``slow`` and ``index``, since pip
installs torch, the frameworks and their dependencies from the package index (pip's cache is
reused, but pip still asks the index); ``-m "not index"`` leaves it out offline. CI runs it once.
torch is installed first, from the pinned CPU build (``torch==2.13.0``), so the wheels'
``torch`` requirement is already met and pip never pulls a CUDA build. torch and the core
wheel go into one base venv, copied for each framework.
"""

from __future__ import annotations

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
TORCH = "torch==2.13.0"

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


def _pip_list(python: Path) -> set[str]:
    return {p["name"].lower() for p in json.loads(_run([python, "-m", "pip", "list", "--format=json"]))}


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
def core_venv(tmp_path_factory: pytest.TempPathFactory, wheels: dict[str, Path]) -> Path:
    """A venv with torch and the core wheel only; copied for each framework (one install of
    torch and of the core's dependencies instead of two)."""
    venv = tmp_path_factory.mktemp("venvs") / "base"
    _run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", TORCH])
    _run([python, "-m", "pip", "install", "-q", wheels["core"]])
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
    shutil.copytree(core_venv, venv, symlinks=True)
    python = venv / "bin" / "python"
    assert {"torch", "rerank-plugins"} <= _pip_list(python)
    _run([python, "-m", "pip", "install", "-q", framework, wheels[face]])
    installed = _pip_list(python)
    assert {framework, "rerank-plugins", wheels[face].name.split("-")[0].replace("_", "-")} <= installed
    assert other not in installed
    assert "nvidia-cudnn-cu12" not in installed and "nvidia-cudnn-cu13" not in installed
    _run([python, "-m", "pip", "check"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = _run([python, "-c", textwrap.dedent(PRELUDE) + textwrap.dedent(script)], env=env, cwd=venv)
    (line,) = [x for x in out.splitlines() if x.startswith("RESULT ")]
    assert len(json.loads(line[len("RESULT ") :])) == 2
    print(f"{face}: venv install + run took {time.monotonic() - start:.0f} s")
