"""msgspec Structs for the request, the response body, stream chunks and error bodies.

Field names and requiredness follow ``shared/spec/proxy-completions.md`` (sections 2-4) and the
seed document ``PostV2ProxyCompletionsResponseBody``. Response Structs ignore unknown fields, so
a server that adds fields never breaks decoding. Request Structs use ``UNSET`` defaults: a field
the caller did not set is not sent, while an explicit ``None`` is sent as JSON ``null``.

Response Structs are ``gc=False``: they hold only scalars, strings and lists of other response
Structs, so they can never take part in a reference cycle, and skipping GC tracking makes
decoding measurably cheaper for large batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Generic, Literal, Protocol, TypeAlias, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from ._exceptions import DECODE_ERRORS, ResponseDecodeError

__all__ = [
    "UNSET",
    "AgenticRagConfig",
    "Completion",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionRequest",
    "CompletionTokensDetails",
    "CompletionUsage",
    "ContactInfo",
    "Created",
    "ErrorDetail",
    "FinishReason",
    "KnowledgeBase",
    "LazyCompletion",
    "LazyCompletionChoice",
    "Logprobs",
    "OrqCache",
    "OrqExtensions",
    "OrqFallback",
    "OrqPrompt",
    "OrqRetry",
    "OrqThread",
    "PromptTokensDetails",
    "Provider",
    "RerankConfig",
    "RerankModelParameters",
    "ResponseInfo",
    "SearchOptions",
    "StreamOptions",
    "UnsetType",
]

# --------------------------------------------------------------------------------------------
# Response side
# --------------------------------------------------------------------------------------------

FinishReason: TypeAlias = Literal["stop", "length", "content_filter", "tool_calls"]
"""The four finish reasons the spec names. Decoding accepts any other string too (vLLM and
llama.cpp send e.g. ``"abort"``), and ``None`` while a stream is still running."""

Created: TypeAlias = int | float | str
"""``created`` is ``anyOf [string, number]`` in the spec: some gateways send a string."""

TokenCount: TypeAlias = int | float
"""Token counts are ``number`` in the spec; OpenAI-compatible servers send integers."""


class _HasText(Protocol):
    @property
    def text(self) -> str: ...


ChoiceT = TypeVar("ChoiceT", bound=_HasText)


class Logprobs(Struct, kw_only=True, gc=False):
    """OpenAI-shaped log probabilities of a legacy completion choice."""

    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int] = []


class CompletionChoice(Struct, kw_only=True, gc=False):
    """One generated choice. Used for both full responses and stream chunks.

    ``finish_reason`` is ``None`` in every chunk but a choice's last one, which is why the
    field is nullable even though the proxy spec marks it as a required enum (the Orq SDK's
    strict enum is what makes it fail on real streams, spec section 4.1).
    """

    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    logprobs: Logprobs | None = None


class PromptTokensDetails(Struct, kw_only=True, gc=False):
    cached_tokens: int | None = None
    audio_tokens: int | None = None
    cache_creation_tokens: int | None = None  # router spec only; harmless elsewhere


class CompletionTokensDetails(Struct, kw_only=True, gc=False):
    reasoning_tokens: TokenCount | None = None
    accepted_prediction_tokens: TokenCount | None = None
    rejected_prediction_tokens: TokenCount | None = None
    audio_tokens: int | None = None


class CompletionUsage(Struct, kw_only=True, gc=False):
    """Token accounting. Every field is optional in the spec."""

    prompt_tokens: TokenCount | None = None
    completion_tokens: TokenCount | None = None
    total_tokens: TokenCount | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class _CompletionBody(Struct, Generic[ChoiceT], kw_only=True, gc=False):
    """The fields of a response body, whatever the choices hold."""

    id: str
    choices: list[ChoiceT]
    model: str
    object: str
    created: Created | None = None
    system_fingerprint: str | None = None
    usage: CompletionUsage | None = None

    @property
    def text(self) -> str:
        """The first choice's text, or ``""`` when there is no choice."""
        return self.choices[0].text if self.choices else ""


class Completion(_CompletionBody[CompletionChoice], kw_only=True, gc=False):
    """The response body of a non-streamed call (``PostV2ProxyCompletionsResponseBody``)."""


_logprobs_decoder = msgspec.json.Decoder(Logprobs, strict=False)
_NULL = msgspec.Raw(b"null")


class LazyCompletionChoice(Struct, kw_only=True, gc=False):
    """A choice whose logprobs stay undecoded JSON until :meth:`logprobs` is called.

    Logprobs are most of a large body (about 190 bytes per token) and often unused; keeping
    them as ``msgspec.Raw`` skips building thousands of strings, floats and dicts.
    """

    index: int = 0
    text: str = ""
    finish_reason: str | None = None
    raw_logprobs: msgspec.Raw = msgspec.field(default=_NULL, name="logprobs")

    def logprobs(self) -> Logprobs | None:
        """Decode the logprobs now. Each call decodes again: keep the result.

        Raises :class:`~asyncclient.ResponseDecodeError` if they are not OpenAI-shaped.
        """
        raw = self.raw_logprobs
        if raw == _NULL:
            return None
        try:
            return _logprobs_decoder.decode(raw)
        except DECODE_ERRORS as exc:
            raise ResponseDecodeError(f"Invalid logprobs: {exc}", body=bytes(raw)) from exc


class LazyCompletion(_CompletionBody[LazyCompletionChoice], kw_only=True, gc=False):
    """:class:`Completion` with lazily decoded logprobs (see ``create_lazy``)."""


class CompletionChunk(Struct, kw_only=True, gc=False):
    """One streamed event's payload.

    Honest about real streams: ``choices`` may be empty (the final usage-only chunk sent with
    ``stream_options.include_usage``) and ``finish_reason`` is ``None`` until a choice ends.
    """

    id: str
    model: str
    object: str = "text_completion"
    choices: list[CompletionChoice] = []
    created: Created | None = None
    system_fingerprint: str | None = None
    usage: CompletionUsage | None = None

    @property
    def text(self) -> str:
        """The text of the choice with index 0 in this chunk, or ``""``.

        Safe on usage-only chunks, unlike ``chunk.choices[0].text``.
        """
        for choice in self.choices:
            if choice.index == 0:
                return choice.text
        return ""


class ErrorDetail(Struct, kw_only=True, gc=False):
    """The decoded error body: ``{"error": {...}}``, ``{"error": "..."}`` or the flat form."""

    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class _ErrorEnvelope(Struct, kw_only=True, gc=False):
    error: ErrorDetail | str | None = None
    message: str | None = None
    type: str | None = None
    param: str | None = None
    code: str | int | None = None

    def detail(self) -> ErrorDetail | None:
        if isinstance(self.error, ErrorDetail):
            return self.error
        if isinstance(self.error, str):
            return ErrorDetail(message=self.error, type=self.type, code=self.code)
        if self.message is not None or self.code is not None:
            return ErrorDetail(
                message=self.message or "", type=self.type, param=self.param, code=self.code
            )
        return None


class ResponseInfo(Struct, kw_only=True, frozen=True):
    """What the client knows about how a response was obtained (not part of the body).

    ``attempts`` counts every attempt including the successful one; ``retry_waits`` are the
    pauses before each retry; ``elapsed`` is the time in seconds from the first attempt to
    the response (its headers for a stream; the read and decoded body for a plain call).
    Only response headers are kept: never the request's credentials.
    """

    status_code: int
    headers: Mapping[str, str]
    request_id: str | None = None
    attempts: int = 1
    retry_waits: tuple[float, ...] = ()
    elapsed: float = 0.0


# --------------------------------------------------------------------------------------------
# Request side (spec section 2). Constraints are expressed with msgspec.Meta and checked by
# decoding the encoded body once before it is sent (see _decode.validate_request).
# --------------------------------------------------------------------------------------------

Provider: TypeAlias = Literal[
    "cohere",
    "openai",
    "anthropic",
    "huggingface",
    "replicate",
    "google",
    "google-ai",
    "azure",
    "aws",
    "anyscale",
    "perplexity",
    "groq",
    "fal",
    "leonardoai",
    "nvidia",
    "jina",
    "togetherai",
    "elevenlabs",
    "litellm",
    "openailike",
    "cerebras",
    "bytedance",
]

Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
NonNegative = Annotated[float, Meta(ge=0)]
PositiveInt = Annotated[int, Meta(ge=1)]
TopK = Annotated[int, Meta(ge=1, le=100)]
HttpStatus = Annotated[int, Meta(ge=100, le=599)]
# v4 of the spec raised the minimum from 0 to 1 (spec section 0); the newest rule wins.
CacheTtl = Annotated[float, Meta(ge=1, le=259200)]
RetryCount = Annotated[float, Meta(ge=1, le=5)]

Prompt: TypeAlias = str | list[str | int | list[int]]
"""The proxy spec accepts only a string; OpenAI-compatible servers also take lists of
strings, token ids, or token-id lists."""


class _RequestStruct(Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Base for request objects: unset fields are left out of the JSON body."""


class OrqRetry(_RequestStruct):
    """Gateway-side retries (independent of this client's own retry policy)."""

    count: RetryCount | UnsetType = UNSET
    on_codes: list[HttpStatus] | UnsetType = UNSET


class OrqFallback(_RequestStruct):
    model: str


class OrqPrompt(_RequestStruct):
    id: str
    version: Literal["latest"]


class ContactInfo(_RequestStruct):
    """``PublicContact``: the end user, created by Orq on first sight."""

    id: str
    display_name: str | UnsetType = UNSET
    email: str | UnsetType = UNSET
    metadata: list[dict[str, Any]] | UnsetType = UNSET
    logo_url: str | UnsetType = UNSET
    tags: list[str] | UnsetType = UNSET


class OrqThread(_RequestStruct):
    id: str
    tags: list[str] | UnsetType = UNSET


class OrqCache(_RequestStruct):
    type: Literal["exact_match"]
    ttl: CacheTtl | UnsetType = UNSET


class SearchOptions(_RequestStruct):
    include_vectors: bool | UnsetType = UNSET
    include_metadata: bool | UnsetType = UNSET
    include_scores: bool | UnsetType = UNSET


class RerankModelParameters(_RequestStruct):
    threshold: float | UnsetType = UNSET


class RerankConfig(_RequestStruct):
    enabled: bool | UnsetType = UNSET
    provider: Provider | UnsetType = UNSET
    top_k: TopK | UnsetType = UNSET
    model: str | UnsetType = UNSET
    model_db_id: str | UnsetType = UNSET
    model_type: Literal["rerank"] | UnsetType = UNSET
    model_parameters: RerankModelParameters | UnsetType = UNSET


class AgenticRagConfig(_RequestStruct):
    model_db_id: str
    provider: Provider
    integration_id: str | None | UnsetType = UNSET


class KnowledgeBase(_RequestStruct):
    """One knowledge base to search (``orq.knowledge_bases[]``).

    ``filter_by`` follows the spec's grammar: ``{field: {op: value}}``, ``{"and": [...]}`` or
    ``{"or": [...]}``; it is checked by :func:`check_filter_by` before sending.
    """

    knowledge_id: str
    top_k: TopK | UnsetType = UNSET
    threshold: Probability | UnsetType = UNSET
    search_type: Literal["vector_search", "keyword_search", "hybrid_search"] | UnsetType = UNSET
    filter_by: dict[str, Any] | UnsetType = UNSET
    search_options: SearchOptions | UnsetType = UNSET
    rerank_config: RerankConfig | None | UnsetType = UNSET
    agentic_rag_config: AgenticRagConfig | UnsetType = UNSET
    query: str | UnsetType = UNSET


class OrqExtensions(_RequestStruct):
    """The ``orq`` object: routing and observability extensions of the Orq gateway."""

    name: str | UnsetType = UNSET
    retry: OrqRetry | UnsetType = UNSET
    fallbacks: list[OrqFallback] | UnsetType = UNSET
    prompt: OrqPrompt | UnsetType = UNSET
    contact: ContactInfo | UnsetType = UNSET
    thread: OrqThread | UnsetType = UNSET
    inputs: dict[str, Any] | UnsetType = UNSET
    cache: OrqCache | UnsetType = UNSET
    knowledge_bases: list[KnowledgeBase] | UnsetType = UNSET


class StreamOptions(_RequestStruct):
    include_usage: bool | UnsetType = UNSET


class CompletionRequest(_RequestStruct):
    """The request body (``PostV2ProxyCompletionsRequestBody``) plus the OpenAI-compatible
    fields that ``/v2/router/completions``, OpenAI, vLLM and llama.cpp accept.

    Key order follows the spec's model order, so bodies match the Orq SDK's layout.
    """

    model: str
    prompt: Prompt
    echo: bool | None | UnsetType = UNSET
    frequency_penalty: Penalty | None | UnsetType = UNSET
    max_tokens: NonNegative | None | UnsetType = UNSET
    presence_penalty: Penalty | None | UnsetType = UNSET
    seed: float | None | UnsetType = UNSET
    stop: str | list[str] | None | UnsetType = UNSET
    temperature: Temperature | None | UnsetType = UNSET
    top_p: Probability | None | UnsetType = UNSET
    user: str | UnsetType = UNSET
    orq: OrqExtensions | UnsetType = UNSET
    stream: bool | UnsetType = UNSET
    # OpenAI-compatible extensions (not part of the proxy operation, spec section 2.1).
    n: PositiveInt | None | UnsetType = UNSET
    best_of: PositiveInt | None | UnsetType = UNSET
    logprobs: Annotated[int, Meta(ge=0)] | None | UnsetType = UNSET
    suffix: str | None | UnsetType = UNSET
    logit_bias: dict[str, float] | None | UnsetType = UNSET
    stream_options: StreamOptions | None | UnsetType = UNSET


FILTER_OPERATORS: Final = frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "exists"})
_SCALAR = (str, int, float, bool)


def check_filter_by(filter_by: dict[str, Any], path: str) -> str | None:
    """Return a message naming the first violation of the ``filter_by`` grammar, or ``None``.

    ``path`` is the JSON path of ``filter_by`` itself, used in the message.
    """
    for combinator in ("and", "or"):
        if combinator in filter_by:
            if len(filter_by) != 1:
                return f"`{path}` with `{combinator}` must have no other key"
            clauses = filter_by[combinator]
            if not isinstance(clauses, list):
                return f"`{path}.{combinator}` must be a list of field filters"
            for position, clause in enumerate(clauses):
                if not isinstance(clause, dict):
                    return f"`{path}.{combinator}[{position}]` must be an object"
                problem = _check_field_filters(clause, f"{path}.{combinator}[{position}]")
                if problem:
                    return problem
            return None
    return _check_field_filters(filter_by, path)


def _check_field_filters(field_filters: dict[str, Any], path: str) -> str | None:
    for field, operator in field_filters.items():
        where = f"{path}.{field}"
        if not isinstance(operator, dict) or len(operator) != 1:
            return f"`{where}` must be an object with exactly one of {sorted(FILTER_OPERATORS)}"
        ((name, value),) = operator.items()
        if name not in FILTER_OPERATORS:
            return f"`{where}` has unknown operator `{name}`; allowed: {sorted(FILTER_OPERATORS)}"
        if name in ("eq", "ne"):
            ok = isinstance(value, _SCALAR)
            expected = "a string, number or boolean"
        elif name in ("in", "nin"):
            ok = isinstance(value, list) and all(isinstance(v, _SCALAR) for v in value)
            expected = "a list of strings, numbers or booleans"
        elif name == "exists":
            ok = isinstance(value, bool)
            expected = "a boolean"
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            expected = "a number"
        if not ok:
            return f"`{where}.{name}` must be {expected}"
    return None


def to_builtins(value: Any) -> Any:
    """Plain Python data for a request or response object (for logging or ``extra_body``)."""
    return msgspec.to_builtins(value)
