"""asyncclient: a fast, streaming-aware async client for the Orq gateway's legacy
text-completions endpoint (``POST /v2/proxy/completions``) and every OpenAI-compatible
``/completions`` endpoint.

    async with AsyncClient(api_key="...") as client:
        completion = await client.completions.create(model="openai/gpt-3.5-turbo-instruct",
                                                     prompt="Say hi")
        async with client.completions.stream(model=..., prompt=...) as stream:
            async for text in stream.text_deltas():
                print(text, end="")
"""

from ._accumulate import CompletionAccumulator
from ._batch import BatchInput, BatchItem, BatchJob, BatchLimiter, BatchResult, BatchSource
from ._client import (
    DEFAULT_BASE_URL,
    DEFAULT_PATH,
    NOT_GIVEN,
    AsyncClient,
    CompletionParams,
    Completions,
    CompletionWithInfo,
    CreateArgs,
    NotGiven,
    RequestOptions,
    StreamContext,
)
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClientError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ConnectTimeoutError,
    HeadersTimeoutError,
    IncompleteStreamError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ReadTimeoutError,
    RequestValidationError,
    ResponseDecodeError,
    ResponseTooLargeError,
    ServerStreamError,
    StreamDecodeError,
    StreamError,
    StreamTimeoutError,
    TotalTimeoutError,
    UnprocessableEntityError,
)
from ._models import (
    UNSET,
    AgenticRagConfig,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionTokensDetails,
    CompletionUsage,
    ContactInfo,
    Created,
    ErrorDetail,
    FinishReason,
    KnowledgeBase,
    LazyCompletion,
    LazyCompletionChoice,
    Logprobs,
    OrqCache,
    OrqExtensions,
    OrqFallback,
    OrqPrompt,
    OrqRetry,
    OrqThread,
    PromptTokensDetails,
    Provider,
    RerankConfig,
    RerankModelParameters,
    ResponseInfo,
    SearchOptions,
    StreamOptions,
    UnsetType,
)
from ._retry import NO_RETRIES, AttemptLog, RetryPolicy
from ._sse import ServerSentEvent, SSEDecoder
from ._streaming import CompletionStream, StreamRestart
from ._transport import ClientClosedError, Timeout, WrongEventLoopError
from ._version import __version__

# The names the Orq SDK (orq-ai-sdk 3.12.0-rc) gives the same shapes, so its users find them.
PostV2ProxyCompletionsResponseBody = Completion
PostV2ProxyCompletionsChoices = CompletionChoice
PostV2ProxyCompletionsUsage = CompletionUsage
PostV2ProxyCompletionsPromptTokensDetails = PromptTokensDetails
PostV2ProxyCompletionsCompletionTokensDetails = CompletionTokensDetails
PostV2ProxyCompletionsFinishReason = FinishReason
PostV2ProxyCompletionsData = CompletionChunk
PostV2ProxyCompletionsProxyChoices = CompletionChoice
PostV2ProxyCompletionsProxyUsage = CompletionUsage
PostV2ProxyCompletionsProxyPromptTokensDetails = PromptTokensDetails
PostV2ProxyCompletionsProxyCompletionTokensDetails = CompletionTokensDetails
PostV2ProxyCompletionsProxyFinishReason = FinishReason
PostV2ProxyCompletionsCreated = Created
PostV2ProxyCompletionsRequestBody = CompletionRequest
PostV2ProxyCompletionsOrq = OrqExtensions
PostV2ProxyCompletionsRetry = OrqRetry
PostV2ProxyCompletionsFallbacks = OrqFallback
PostV2ProxyCompletionsPrompt = OrqPrompt
PostV2ProxyCompletionsThread = OrqThread
PostV2ProxyCompletionsCache = OrqCache
PostV2ProxyCompletionsKnowledgeBases = KnowledgeBase
PostV2ProxyCompletionsSearchOptions = SearchOptions
PostV2ProxyCompletionsRerankConfig = RerankConfig
PostV2ProxyCompletionsModelParameters = RerankModelParameters
PostV2ProxyCompletionsAgenticRagConfig = AgenticRagConfig
PublicContact = ContactInfo

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_PATH",
    "NOT_GIVEN",
    "NO_RETRIES",
    "UNSET",
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AgenticRagConfig",
    "AsyncClient",
    "AsyncClientError",
    "AttemptLog",
    "AuthenticationError",
    "BadRequestError",
    "BatchInput",
    "BatchItem",
    "BatchJob",
    "BatchLimiter",
    "BatchResult",
    "BatchSource",
    "ClientClosedError",
    "Completion",
    "CompletionAccumulator",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionParams",
    "CompletionRequest",
    "CompletionStream",
    "CompletionTokensDetails",
    "CompletionUsage",
    "CompletionWithInfo",
    "Completions",
    "ConflictError",
    "ConnectTimeoutError",
    "ContactInfo",
    "CreateArgs",
    "Created",
    "ErrorDetail",
    "FinishReason",
    "HeadersTimeoutError",
    "IncompleteStreamError",
    "InternalServerError",
    "KnowledgeBase",
    "LazyCompletion",
    "LazyCompletionChoice",
    "Logprobs",
    "NotFoundError",
    "NotGiven",
    "OrqCache",
    "OrqExtensions",
    "OrqFallback",
    "OrqPrompt",
    "OrqRetry",
    "OrqThread",
    "PermissionDeniedError",
    "PostV2ProxyCompletionsAgenticRagConfig",
    "PostV2ProxyCompletionsCache",
    "PostV2ProxyCompletionsChoices",
    "PostV2ProxyCompletionsCompletionTokensDetails",
    "PostV2ProxyCompletionsCreated",
    "PostV2ProxyCompletionsData",
    "PostV2ProxyCompletionsFallbacks",
    "PostV2ProxyCompletionsFinishReason",
    "PostV2ProxyCompletionsKnowledgeBases",
    "PostV2ProxyCompletionsModelParameters",
    "PostV2ProxyCompletionsOrq",
    "PostV2ProxyCompletionsPrompt",
    "PostV2ProxyCompletionsPromptTokensDetails",
    "PostV2ProxyCompletionsProxyChoices",
    "PostV2ProxyCompletionsProxyCompletionTokensDetails",
    "PostV2ProxyCompletionsProxyFinishReason",
    "PostV2ProxyCompletionsProxyPromptTokensDetails",
    "PostV2ProxyCompletionsProxyUsage",
    "PostV2ProxyCompletionsRequestBody",
    "PostV2ProxyCompletionsRerankConfig",
    "PostV2ProxyCompletionsResponseBody",
    "PostV2ProxyCompletionsRetry",
    "PostV2ProxyCompletionsSearchOptions",
    "PostV2ProxyCompletionsThread",
    "PostV2ProxyCompletionsUsage",
    "PromptTokensDetails",
    "Provider",
    "PublicContact",
    "RateLimitError",
    "ReadTimeoutError",
    "RequestOptions",
    "RequestValidationError",
    "RerankConfig",
    "RerankModelParameters",
    "ResponseDecodeError",
    "ResponseInfo",
    "ResponseTooLargeError",
    "RetryPolicy",
    "SSEDecoder",
    "SearchOptions",
    "ServerSentEvent",
    "ServerStreamError",
    "StreamContext",
    "StreamDecodeError",
    "StreamError",
    "StreamOptions",
    "StreamRestart",
    "StreamTimeoutError",
    "Timeout",
    "TotalTimeoutError",
    "UnprocessableEntityError",
    "UnsetType",
    "WrongEventLoopError",
    "__version__",
]
