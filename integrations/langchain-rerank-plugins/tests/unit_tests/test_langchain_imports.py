import langchain_rerank_plugins

EXPECTED_ALL = [
    "COMPRESSORS",
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
    assert set(EXPECTED_ALL) <= set(langchain_rerank_plugins.__all__)
    for name in langchain_rerank_plugins.__all__:
        assert hasattr(langchain_rerank_plugins, name), name
