"""Shared fixtures: tiny in-process models (no download) and the provisioned real models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROVISION_HINT = (
    'run: eval "$(python3 ../shared/models/provision.py --exports smollm2 minilm qwen qwen15)" '
    "(see README, Tests)"
)


def env_path(var: str) -> Path:
    """The provisioned model path in ``var``, or skip the test saying how to provision it.

    The skip is a failure under ``--require-real`` (the root conftest.py), as CI runs.
    """
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"{var} is not set; {PROVISION_HINT}")
    path = Path(value)
    if not path.exists():
        pytest.fail(f"{var}={value} does not exist; {PROVISION_HINT}")
    return path


@pytest.fixture(scope="session")
def requires_faiss() -> None:
    """Skip when faiss (the ``[faiss]`` extra) is missing; a failure under ``--require-real``."""
    pytest.importorskip("faiss")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from rerank_plugins.testing import tiny_model_dir

    return tiny_model_dir()


@pytest.fixture(scope="session")
def tiny_core(tiny_model: Path):
    from rerank_plugins.scoring import get_core

    return get_core(tiny_model)


@pytest.fixture(scope="session")
def tiny_cross_encoder() -> Path:
    from rerank_plugins.testing import tiny_cross_encoder_dir

    return tiny_cross_encoder_dir()


@pytest.fixture(scope="session")
def smollm2() -> Path:
    return env_path("RERANK_TEST_LLM")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return env_path("RERANK_TEST_GGUF")


@pytest.fixture(scope="session")
def quality_llm() -> Path:
    return env_path("RERANK_QUALITY_LLM")


@pytest.fixture(scope="session")
def quality_llm_large() -> Path:
    return env_path("RERANK_QUALITY_LLM_LARGE")


@pytest.fixture(scope="session")
def minilm() -> Path:
    return env_path("RERANK_EMBED_MODEL")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared evaluation data (../shared/data next to the repo, or $RERANK_DATA_DIR)."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    path = Path(os.environ.get("RERANK_DATA_DIR", default))
    if not path.exists():
        pytest.skip(f"shared data not found at {path}; set RERANK_DATA_DIR")
    return path
