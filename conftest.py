"""Suite-wide test policy, for every tier under tests/ and integrations/*/tests.

- Tests that need real weights or the shared evaluation data are marked ``integration`` (and
  ``slow``): by folder (``integration``/``integration_tests``) or by the fixtures they use.
- ``--require-real`` (or ``RERANK_TEST_REQUIRE_REAL=1``; CI sets it) turns the skips that only a
  broken environment causes into failures: a skipped ``integration`` test (models not
  provisioned, data missing) and a skip from a missing import (an extra that failed to install).
  A green run then means those tests ran.
- The strategy registry is restored after every test, so tests that register names run in any
  order and in parallel.
- ``dtype="auto"`` loads CPU models in float32 (``RERANK_CPU_DTYPE=float32``, also inherited by
  subprocesses), so expected numbers do not depend on whether the machine has AMX or
  AVX512-BF16. Set ``RERANK_CPU_DTYPE=auto`` to run the suite on the machine's own choice;
  tests of bfloat16 itself ask for it explicitly.
- A ``FutureWarning`` or ``DeprecationWarning`` caused by a call from the library's own code
  (``rerank_plugins`` and both adapters) fails the test: a deprecated API we call would break
  on a later release of the package that warns.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import pytest

# pytester: tests/unit/test_suite_policy.py runs this policy on small generated suites.
pytest_plugins = ["pytester"]

REQUIRE_REAL_ENV = "RERANK_TEST_REQUIRE_REAL"

os.environ.setdefault("RERANK_CPU_DTYPE", "float32")

# Fixtures that hand out provisioned weights or the shared data (tests/conftest.py and the
# integration conftests of both adapter packages).
REAL_FIXTURES = frozenset(
    {"smollm2", "smollm2_gguf", "minilm", "quality_llm", "quality_llm_large", "data_dir", "scifact"}
)
INTEGRATION_FOLDERS = frozenset({"integration", "integration_tests"})

# The library's own modules, and frames that only pass a call on (``nn.Module.__call__``,
# decorators, transformers' kwarg-deprecation wrapper): a deprecation warning is ours when the
# first frame past those, from where the warning points, is one of our modules.
OWN_MODULES = re.compile(r"(rerank_plugins|langchain_rerank_plugins|llama_index\.postprocessor\.rerank_plugins)(\.|$)")
FORWARDING_MODULES = re.compile(
    r"(functools|contextlib|torch\.nn\.modules\.module|torch\.utils\._contextlib|"
    r"transformers\.utils\.(generic|deprecation|output_capturing))(\.|$)"
)
DEPRECATIONS = (FutureWarning, DeprecationWarning)

# pytest.importorskip's reason; a skip with it means an installed extra is missing.
_IMPORT_SKIP = re.compile(r"(Skipped: )?could not import ")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-real",
        action="store_true",
        default=_env_flag(REQUIRE_REAL_ENV),
        help=f"fail (instead of skip) a real-model or real-data test that cannot run, and any skip "
        f"from a missing import (default: ${REQUIRE_REAL_ENV})",
    )


def pytest_report_header(config: pytest.Config) -> str:
    state = "on: real-model, real-data and missing-import skips fail" if config.getoption("require_real") else "off"
    return f"rerank-plugins --require-real: {state}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    """Print pytest-randomly's seed even under ``-q`` (its own header line is hidden there)."""
    seed = getattr(config.option, "randomly_seed", None)
    if config.pluginmanager.has_plugin("randomly") and isinstance(seed, int):
        order = "random" if getattr(config.option, "randomly_reorganize", True) else "file"
        terminalreporter.write_line(f"test order: {order}, seed {seed} (reproduce: -p randomly --randomly-seed={seed})")


def is_real(item: pytest.Item) -> bool:
    """Whether ``item`` needs provisioned weights or the shared data."""
    return bool(INTEGRATION_FOLDERS & set(Path(str(item.path)).parts)) or bool(
        REAL_FIXTURES & set(getattr(item, "fixturenames", ()))
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if is_real(item):
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("integration") is not None:
            item.add_marker(pytest.mark.slow)


def _skip_reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport, why: str) -> None:
    reason = _skip_reason(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"{why}, and --require-real is on ({REQUIRE_REAL_ENV}): {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and item.config.getoption("require_real"):
        if item.get_closest_marker("integration") is not None:
            _fail_skip(report, "a real-model or real-data test skipped")
        elif _IMPORT_SKIP.match(_skip_reason(report.longrepr)):
            _fail_skip(report, "a test skipped on a missing import")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    report = yield
    if report.skipped and collector.config.getoption("require_real"):
        reason = _skip_reason(report.longrepr)
        if _IMPORT_SKIP.match(reason) or INTEGRATION_FOLDERS & set(Path(str(collector.path)).parts):
            _fail_skip(report, f"{collector.nodeid} was skipped whole")
    return report


def caller_of(frame: FrameType | None, filename: str, lineno: int) -> str | None:
    """The module that made the call a warning at ``filename:lineno`` points at.

    Walks out from ``frame`` to the frame the warning names, then past forwarding frames.
    """
    while frame is not None and (frame.f_code.co_filename, frame.f_lineno) != (filename, lineno):
        frame = frame.f_back
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if not FORWARDING_MODULES.match(module):
            return module
        frame = frame.f_back
    return None


def _fail_own_deprecations(show: Callable[..., None]) -> Callable[..., None]:
    def showwarning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, DEPRECATIONS):
            caller = caller_of(sys._getframe(1), filename, lineno)
            if caller is not None and OWN_MODULES.match(caller):
                raise category(f"{message} (a deprecated call from {caller}: the suite fails on these)")
        show(message, category, filename, lineno, file, line)

    return showwarning


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    # Inside pytest's own warning capture (a tryfirst wrapper), so warnings not ours are still
    # recorded; pytest.warns and recwarn swap in their own recorder and see every warning.
    previous = warnings.showwarning
    warnings.showwarning = _fail_own_deprecations(previous)
    try:
        return (yield)
    finally:
        warnings.showwarning = previous


@pytest.fixture(autouse=True)
def _restore_registry():  # type: ignore[no-untyped-def]
    """Undo names registered by a test (``registry.register`` is process-global)."""
    from rerank_plugins import registry

    saved = dict(registry._registered)
    yield
    with registry._lock:
        registry._registered.clear()
        registry._registered.update(saved)
