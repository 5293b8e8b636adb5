from llama_index.postprocessor import rerank_plugins

EXPECTED_ALL = [
    "POSTPROCESSORS",
    "AttentionRerank",
    "CrossEncoderRerank",
    "IdentityRerank",
    "ListwiseRerank",
    "PairwiseRerank",
    "PointwiseRerank",
    "RerankPluginsRerank",
    "StrategyRerank",
]


def test_all_imports() -> None:
    # other modules of this package (retrievers) may add names: these must stay
    assert set(EXPECTED_ALL) <= set(rerank_plugins.__all__)
    for name in rerank_plugins.__all__:
        assert hasattr(rerank_plugins, name), name


def test_namespace_parents_have_no_init() -> None:
    import llama_index
    import llama_index.postprocessor

    assert getattr(llama_index, "__file__", None) is None
    assert getattr(llama_index.postprocessor, "__file__", None) is None
