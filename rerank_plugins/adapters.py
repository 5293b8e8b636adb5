"""What the LlamaIndex and LangChain adapters share, without importing either framework.

Each adapter package has one base class per framework (a node postprocessor, a document
compressor). A class per strategy is that base plus the strategy's options model
(:func:`rerank_plugins.registry.options_class`): pydantic merges the fields, so the options are
typed fields of the framework object. This module holds the framework-free half: which fields
are strategy options, their values on an adapter object, a docstring from the strategy's own,
and typed classes made on the fly for strategies registered by other packages.

Example:
    >>> from rerank_plugins.adapters import class_name_for
    >>> class_name_for("cross-encoder", "Rerank")
    'CrossEncoderRerank'
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, create_model

from rerank_plugins import registry
from rerank_plugins.fusion import FusionOptions, FusionSettings, RankedDocument, arank_documents, rank_documents
from rerank_plugins.options import Options
from rerank_plugins.types import Reranker

__all__ = [
    "RELEVANCE_KEY",
    "RERANK_SCORE_KEY",
    "AdapterFields",
    "NamedRerankerFields",
    "StrategyFace",
    "adapter_class",
    "adapter_doc",
    "class_name_for",
    "named_reranker",
    "option_values",
    "optional_reranker",
    "options_base",
    "score_metadata",
]

#: metadata key of the reranker's own score in both adapters' results
RERANK_SCORE_KEY = "rerank_score"
#: metadata key of the normalised relevance in [0, 1] (what ``score_threshold`` judges)
RELEVANCE_KEY = "rerank_relevance"


def score_metadata(doc: RankedDocument) -> dict[str, float]:
    """The scores an adapter adds to a result's metadata: plain floats, JSON-serialisable.

    Example:
        >>> score_metadata(RankedDocument(index=0, score=0.5, rerank_score=2.0, relevance=0.88))
        {'rerank_score': 2.0, 'rerank_relevance': 0.88}
    """
    return {RERANK_SCORE_KEY: float(doc.rerank_score), RELEVANCE_KEY: float(doc.relevance)}


def options_base(cls: type) -> type[Options] | None:
    """The strategy options model among ``cls``'s bases, if any."""
    for base in cls.__mro__[1:]:
        if isinstance(base, type) and issubclass(base, Options) and base is not Options:
            return base
    return None


def option_values(obj: BaseModel, options: type[Options] | None) -> dict[str, Any]:
    """The strategy options set on an adapter object (left-out ones keep the strategy's defaults)."""
    if options is None:
        return {}
    return {name: getattr(obj, name) for name in options.model_fields if name in obj.model_fields_set}


def adapter_doc(strategy: str, face: str) -> str:
    """A class docstring for the ``strategy`` adapter, from the strategy's own summary line."""
    factory = registry.get_factory(strategy)
    summary = (inspect.getdoc(factory) or "").strip().split("\n")[0]
    return f"{face} for the {strategy!r} strategy. {summary}".strip()


def class_name_for(strategy: str, suffix: str) -> str:
    """``"cross-encoder"`` -> ``"CrossEncoder" + suffix``."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", strategy) if part) + suffix


def adapter_class(base: type[BaseModel], strategy: str, suffix: str) -> type[BaseModel]:
    """A typed adapter class for a registered strategy (a plugin's too), made on the fly.

    The class is ``base`` plus the strategy's options model; ``base`` takes the strategy name
    as the class keyword ``strategy`` (as the adapters' ``StrategyRerank`` does).
    """
    options = registry.options_class(strategy)
    bases: tuple[type[BaseModel], ...] = (options, base) if options is not None else (base,)
    return create_model(  # type: ignore[call-overload, no-any-return]
        class_name_for(strategy, suffix),
        __base__=bases,
        __module__=base.__module__,
        __cls_kwargs__={"strategy": strategy},
    )


class AdapterFields(FusionSettings):
    """The fields and the build step every adapter class has, in both frameworks.

    The reranker is built once, when the object is made; its model comes from the shared
    scoring core's process-wide cache, so adapters naming one model share one loaded model.
    Each call goes through :func:`rerank_plugins.fusion.rank_documents` (fusion with the
    retrieval scores the adapter passes, the normalised relevance, ``score_threshold``,
    ``top_n``), so the adapters only convert.
    """

    model: str | None = Field(
        default=None,
        description="Model for the strategy: hub id, local folder or .gguf file (loaded once per "
        "process by the shared scoring core). None for strategies that need no model.",
    )
    # strict: True, "2" and 2.0 are mistakes, not counts
    top_n: int | None = Field(
        default=None, ge=1, strict=True, description="How many results to return, best first; None keeps all."
    )

    score_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        strict=True,
        description="Drop results whose normalised relevance (metadata 'rerank_relevance', in [0, 1]) is below "
        "this, after reranking; top_n applies after. Comparable across queries only for per-document strategies "
        "(pointwise, cross-encoder); for the others it is relative to the call. None keeps everything.",
    )

    _reranker: Reranker = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._reranker = self._build_reranker()

    def _build_reranker(self) -> Reranker:  # pragma: no cover - every adapter class overrides it
        raise NotImplementedError

    @property
    def reranker_instance(self) -> Reranker:
        """The reranker built at construction."""
        return self._reranker

    def _fusion_options(self) -> FusionOptions:
        return FusionOptions.build({"fusion": self.fusion, "fusion_k": self.fusion_k,
                                    "fusion_weight": self.fusion_weight})  # fmt: skip

    def _rank(
        self, query: str, texts: Sequence[str], retrieval_scores: Sequence[float | None] | None
    ) -> list[RankedDocument]:
        """The call's results, best first (see :func:`rerank_plugins.fusion.rank_documents`)."""
        return rank_documents(
            self._reranker, query, texts, top_k=self.top_n, retrieval_scores=retrieval_scores,
            fusion=self._fusion_options(), score_threshold=self.score_threshold,
        )  # fmt: skip

    async def _arank(
        self, query: str, texts: Sequence[str], retrieval_scores: Sequence[float | None] | None
    ) -> list[RankedDocument]:
        """Async :meth:`_rank`."""
        return await arank_documents(
            self._reranker, query, texts, top_k=self.top_n, retrieval_scores=retrieval_scores,
            fusion=self._fusion_options(), score_threshold=self.score_threshold,
        )  # fmt: skip


class NamedRerankerFields(BaseModel):
    """The fields of the generic adapter class: a registry name (with options) or a ready reranker."""

    model_config = ConfigDict(arbitrary_types_allowed=True)  # a ready Reranker is any object

    reranker: str | Reranker = Field(
        description="Registry name of the strategy (see rerank_plugins.registry.available()) "
        "or a ready Reranker instance."
    )
    reranker_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Options for a registry name, untyped (the per-strategy classes have them as typed fields).",
    )

    def _build_reranker(self) -> Reranker:
        return named_reranker(self.reranker, getattr(self, "model", None), self.reranker_kwargs)


class StrategyFace:
    """Mixin for each framework's per-strategy base class: naming, registering and building.

    The framework base sets ``face`` (words for docstrings), ``suffix`` (class-name suffix) and
    ``classes`` (its own ``strategy -> class`` dict); a subclass names its strategy with the class
    keyword ``strategy``. Objects need a ``model`` field.
    """

    strategy: ClassVar[str] = ""
    face: ClassVar[str] = "Adapter"
    suffix: ClassVar[str] = "Rerank"
    classes: ClassVar[dict[str, type]] = {}

    def __init_subclass__(cls, strategy: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if strategy is not None:
            cls.strategy = strategy
            if cls.__doc__ is None:
                cls.__doc__ = adapter_doc(strategy, cls.face)
            cls.classes[strategy] = cls

    def _build_reranker(self) -> Reranker:
        if not self.strategy:
            raise TypeError(f"{type(self).__name__} is abstract: use a subclass or RerankPluginsRerank")
        options = option_values(self, options_base(type(self)))  # type: ignore[arg-type]
        model = getattr(self, "model", None)
        if model is not None:
            options["model"] = model
        return registry.create(self.strategy, **options)

    @classmethod
    def for_strategy(cls, strategy: str) -> type:
        """The class of any registered strategy (a plugin's too), made on first use.

        Example:
            >>> PostprocessorForMine = StrategyRerank.for_strategy("my-plugin")  # doctest: +SKIP
        """
        if strategy not in cls.classes:
            adapter_class(cls, strategy, cls.suffix)  # type: ignore[arg-type]  # registers itself
        return cls.classes[strategy]


def named_reranker(reranker: str | Reranker, model: str | None, options: dict[str, Any]) -> Reranker:
    """A reranker from a registry name and options, or a ready one (then no model or options)."""
    if isinstance(reranker, str):
        return registry.create(reranker, **({**options, "model": model} if model is not None else options))
    if model is not None or options:
        raise ValueError("model and reranker_kwargs apply to a registry name, not a Reranker instance")
    return reranker


def optional_reranker(reranker: str | Reranker | None, options: dict[str, Any]) -> Reranker | None:
    """:func:`named_reranker` without a model, where ``None`` (no reranker) passes too.

    Example:
        >>> type(optional_reranker("identity", {})).__name__, optional_reranker(None, {})
        ('IdentityReranker', None)
    """
    if reranker is None:
        if options:
            raise ValueError("reranker_kwargs apply to a registry name, not to reranker=None")
        return None
    resolved = named_reranker(reranker, None, options)
    if not isinstance(resolved, Reranker):
        raise ValueError(f"reranker must be a registry name, a Reranker or None, got {type(resolved).__name__}")
    return resolved
