"""The suite's own policy (the root conftest.py), run on small generated suites with pytester:
the --require-real switch, the integration/slow markers, the registry restored between tests,
the random-order seed printed under -q, and deprecated calls from our modules failing."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT_CONFTEST = Path(__file__).resolve().parents[2] / "conftest.py"

INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"

REAL_TEST = """
import pytest

def test_needs_weights():
    pytest.skip("RERANK_TEST_LLM is not set")
"""

UNIT_TESTS = """
import pytest

@pytest.fixture
def smollm2():
    pytest.skip("RERANK_TEST_LLM is not set")

def test_uses_a_real_fixture(smollm2):
    pass

def test_plain_skip_is_a_choice():
    pytest.skip("strategy has no rerank_batch")

def test_missing_extra():
    pytest.importorskip("no_such_module_rerank_plugins")

@pytest.mark.xfail(reason="known", strict=True)
def test_known_failure():
    assert False

def test_passes():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("RERANK_TEST_REQUIRE_REAL", raising=False)
    pytester.makeconftest(ROOT_CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini(INI)
    pytester.makepyfile(test_unit=UNIT_TESTS)
    (pytester.path / "integration").mkdir()
    (pytester.path / "integration" / "test_real.py").write_text(REAL_TEST, encoding="utf-8")
    (pytester.path / "integration_tests").mkdir()
    (pytester.path / "integration_tests" / "test_whole_module.py").write_text(
        'import pytest\npytest.importorskip("faiss_missing_rerank_plugins")\n\ndef test_x():\n    pass\n',
        encoding="utf-8",
    )
    return pytester


def test_without_the_switch_everything_that_cannot_run_skips(suite: pytest.Pytester) -> None:
    result = suite.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=5, xfailed=1)
    result.stdout.fnmatch_lines(["*--require-real: off*"])


@pytest.mark.parametrize("how", ["option", "environment"])
def test_the_switch_fails_real_and_missing_import_skips(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # a module skipped whole is a collection error, which stops a run; carry on to see the rest
    args = ["-p", "no:randomly", "-p", "no:cacheprovider", "-rfE", "--continue-on-collection-errors"]
    if how == "option":
        args.append("--require-real")
    else:
        monkeypatch.setenv("RERANK_TEST_REQUIRE_REAL", "1")
    result = suite.runpytest_inprocess(*args)
    # the real-folder test and the missing import fail, the real fixture errors at setup, the
    # module skipped whole on a missing import is a collection error; a deliberate skip and an
    # xfail are left alone
    result.assert_outcomes(passed=1, failed=2, skipped=1, xfailed=1, errors=2)
    out = result.stdout.str()
    assert "--require-real: on" in out
    real = "a real-model or real-data test skipped, and --require-real is on"
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting integration_tests/test_whole_module.py*",
            "*skipped whole, and --require-real is on*could not import 'faiss_missing_rerank_plugins'*",
            "*ERROR at setup of test_uses_a_real_fixture*",
            f"{real}*RERANK_TEST_LLM is not set",
            "*_ test_needs_weights _*",
            f"{real}*RERANK_TEST_LLM is not set",
            "*_ test_missing_extra _*",
            "a test skipped on a missing import*could not import 'no_such_module_rerank_plugins'*",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_real_tests_are_marked_integration_and_slow(suite: pytest.Pytester) -> None:
    quick = suite.runpytest_inprocess("-p", "no:randomly", "-m", "not slow", "--collect-only", "-q")
    quick.stdout.fnmatch_lines(["test_unit.py::test_plain_skip_is_a_choice", "*4/6 tests collected (2 deselected)*"])
    assert "test_needs_weights" not in quick.stdout.str()
    assert "test_uses_a_real_fixture" not in quick.stdout.str()
    real = suite.runpytest_inprocess("-p", "no:randomly", "-m", "integration", "--collect-only", "-q")
    real.stdout.fnmatch_lines(["*2/6 tests collected (4 deselected)*"])


def test_registry_is_restored_between_tests(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(ROOT_CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        from rerank_plugins import registry
        from rerank_plugins.testing import KeywordReranker

        BUILTIN = registry.available()

        def test_a_registers():
            registry.register("policy-test-name", KeywordReranker)
            assert "policy-test-name" in registry.available()

        def test_b_sees_only_the_builtins():
            assert registry.available() == BUILTIN
        """
    )
    pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_random_order_prints_its_seed_under_quiet(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_randomly")
    pytester.makeconftest(ROOT_CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini(INI)
    pytester.makepyfile("def test_one():\n    pass\n")
    result = pytester.runpytest_inprocess("-q", "-p", "randomly", "--randomly-seed=1234")
    result.stdout.fnmatch_lines(["test order: random, seed 1234 (reproduce: -p randomly --randomly-seed=1234)"])


DEPRECATION_TESTS = '''
import warnings

import pytest
import torch


def deprecated():
    warnings.warn("old API", FutureWarning, stacklevel=2)


class Model(torch.nn.Module):
    def forward(self, x):
        warnings.warn("old keyword", FutureWarning, stacklevel=2)  # points at nn.Module.__call__
        return x


def own(source):
    """A function whose module is the library's, as a deprecated call from our code."""
    scope = {"__name__": "rerank_plugins._policy_probe", "deprecated": deprecated, "Model": Model}
    exec(compile(f"def call():\\n    {source}\\n", "<probe>", "exec"), scope)
    return scope["call"]


def test_our_direct_call_fails():
    own("deprecated()")()


def test_our_call_through_a_module_forward_fails():
    own("Model()(1)")()


def test_a_call_from_elsewhere_only_warns():
    deprecated()
    Model()(1)


def test_pytest_warns_still_sees_ours():
    with pytest.warns(FutureWarning, match="old API"):
        own("deprecated()")()
'''


def test_deprecated_calls_from_our_modules_fail(pytester: pytest.Pytester) -> None:
    import torch  # noqa: F401  (loaded here: an in-process run cannot load numpy's C module again)

    pytester.makeconftest(ROOT_CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini(INI)
    pytester.makepyfile(test_deprecations=DEPRECATION_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider", "-rfE")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "E * FutureWarning: old API (a deprecated call from rerank_plugins._policy_probe*",
            "E * FutureWarning: old keyword (a deprecated call from rerank_plugins._policy_probe*",
            "*test_a_call_from_elsewhere_only_warns*",
            "*FutureWarning: old API",
            "FAILED test_deprecations.py::test_our_direct_call_fails*",
            "FAILED test_deprecations.py::test_our_call_through_a_module_forward_fails*",
        ]
    )
