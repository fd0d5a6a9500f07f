"""Tier 1: the response models, the error body and the request encoder, without any I/O.

Field names, requiredness and constraints come from the spec (shared/spec/proxy-completions.md,
sections 2-4) and the seed document of ``PostV2ProxyCompletionsResponseBody``.
"""

from typing import Any

import msgspec
import pytest

import asyncclient
from asyncclient import (
    UNSET,
    AgenticRagConfig,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionTokensDetails,
    CompletionUsage,
    ContactInfo,
    KnowledgeBase,
    OrqCache,
    OrqExtensions,
    OrqFallback,
    OrqPrompt,
    OrqRetry,
    OrqThread,
    PromptTokensDetails,
    RequestValidationError,
    RerankConfig,
    RerankModelParameters,
    ResponseDecodeError,
    SearchOptions,
)
from asyncclient._decode import decode_chunk, decode_completion, decode_error, encode_request

MODEL = "openai/gpt-3.5-turbo-instruct"

FULL_BODY: dict[str, Any] = {
    "id": "cmpl-1",
    "choices": [{"index": 0, "text": "Hi there", "finish_reason": "stop", "logprobs": None}],
    "created": 1700000000,
    "model": MODEL,
    "system_fingerprint": "fp_1",
    "object": "text_completion",
    "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
}


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


def body_without(field: str) -> dict[str, Any]:
    return {key: value for key, value in FULL_BODY.items() if key != field}


def request_json(**params: Any) -> Any:
    return msgspec.json.decode(encode_request({"model": MODEL, "prompt": "Say hi", **params}))


def validation_error(**params: Any) -> RequestValidationError:
    with pytest.raises(RequestValidationError) as caught:
        encode_request({"model": MODEL, "prompt": "Say hi", **params})
    return caught.value


# -- response body ---------------------------------------------------------------------------


def test_full_body_decodes_every_seed_field() -> None:
    completion = decode_completion(encode(FULL_BODY))
    assert completion.id == "cmpl-1"
    assert completion.choices == [CompletionChoice(index=0, text="Hi there", finish_reason="stop")]
    assert completion.created == 1700000000
    assert completion.model == MODEL
    assert completion.system_fingerprint == "fp_1"
    assert completion.object == "text_completion"
    assert completion.usage == CompletionUsage(prompt_tokens=2, completion_tokens=3, total_tokens=5)
    assert completion.text == "Hi there"


@pytest.mark.parametrize("field", ["id", "choices", "model", "object"])
def test_missing_required_field_names_its_path(field: str) -> None:
    with pytest.raises(ResponseDecodeError) as caught:
        decode_completion(encode(body_without(field)))
    assert caught.value.path == f"$.{field}"
    assert f"`{field}`" in str(caught.value)


@pytest.mark.parametrize("field", ["created", "system_fingerprint", "usage"])
def test_optional_field_may_be_missing(field: str) -> None:
    completion = decode_completion(encode(body_without(field)))
    assert getattr(completion, field) is None


def test_wrong_type_inside_a_choice_names_its_path() -> None:
    body = {**FULL_BODY, "choices": [{"index": "zero", "text": "x"}]}
    with pytest.raises(ResponseDecodeError) as caught:
        decode_completion(encode(body))
    assert caught.value.path == "$.choices[0].index"
    assert caught.value.body == encode(body)


@pytest.mark.parametrize("created", [1700000000, 1700000000.5, "1700000000"])
def test_created_may_be_int_float_or_string(created: int | float | str) -> None:
    completion = decode_completion(encode({**FULL_BODY, "created": created}))
    assert completion.created == created
    assert type(completion.created) is type(created)


def test_usage_with_every_detail_field() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "total_tokens": 30,
        "prompt_tokens_details": {
            "cached_tokens": 1,
            "audio_tokens": 2,
            "cache_creation_tokens": 3,
        },
        "completion_tokens_details": {
            "reasoning_tokens": 4,
            "accepted_prediction_tokens": 5,
            "rejected_prediction_tokens": 6,
            "audio_tokens": 7,
        },
    }
    completion = decode_completion(encode({**FULL_BODY, "usage": usage}))
    assert completion.usage == CompletionUsage(
        prompt_tokens=10,
        completion_tokens=20,
        total_tokens=30,
        prompt_tokens_details=PromptTokensDetails(
            cached_tokens=1, audio_tokens=2, cache_creation_tokens=3
        ),
        completion_tokens_details=CompletionTokensDetails(
            reasoning_tokens=4,
            accepted_prediction_tokens=5,
            rejected_prediction_tokens=6,
            audio_tokens=7,
        ),
    )


def test_usage_details_may_be_null_or_partly_null() -> None:
    usage = {
        "prompt_tokens_details": None,
        "completion_tokens_details": {"reasoning_tokens": None},
    }
    completion = decode_completion(encode({**FULL_BODY, "usage": usage}))
    assert completion.usage == CompletionUsage(
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=None)
    )


def test_token_counts_sent_as_floats_decode() -> None:
    usage = {
        "prompt_tokens": 12.0,
        "completion_tokens": 3.0,
        "total_tokens": 15.0,
        "prompt_tokens_details": {"cached_tokens": 12.0, "audio_tokens": 0.0},
        "completion_tokens_details": {"reasoning_tokens": 1.0, "audio_tokens": 2.0},
    }
    body = {**FULL_BODY, "usage": usage, "choices": [{"index": 0.0, "text": "x"}]}
    completion = decode_completion(encode(body))
    assert completion.choices[0].index == 0
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 12
    assert completion.usage.total_tokens == 15
    assert completion.usage.prompt_tokens_details == PromptTokensDetails(
        cached_tokens=12, audio_tokens=0
    )
    assert completion.usage.completion_tokens_details == CompletionTokensDetails(
        reasoning_tokens=1, audio_tokens=2
    )


def test_logprobs_shape() -> None:
    logprobs = {
        "tokens": ["Hi", " there"],
        "token_logprobs": [-0.1, None],
        "top_logprobs": [{"Hi": -0.1, "Hello": -2.0}, None],
        "text_offset": [0, 2],
    }
    body = {**FULL_BODY, "choices": [{"index": 0, "text": "Hi there", "logprobs": logprobs}]}
    choice = decode_completion(encode(body)).choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.tokens == ["Hi", " there"]
    assert choice.logprobs.token_logprobs == [-0.1, None]
    assert choice.logprobs.top_logprobs == [{"Hi": -0.1, "Hello": -2.0}, None]
    assert choice.logprobs.text_offset == [0, 2]


def test_unknown_fields_are_ignored_everywhere() -> None:
    body = {
        **FULL_BODY,
        "provider": "openai",
        "choices": [{"index": 0, "text": "x", "finish_reason": "stop", "extra": [1, 2]}],
        "usage": {"prompt_tokens": 1, "cost": {"usd": 0.1}, "prompt_tokens_details": {"n": 1}},
    }
    completion = decode_completion(encode(body))
    assert completion.text == "x"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 1


@pytest.mark.parametrize(
    "finish_reason", ["stop", "length", "content_filter", "tool_calls", "abort", "eos", None]
)
def test_any_finish_reason_string_is_accepted(finish_reason: str | None) -> None:
    body = {**FULL_BODY, "choices": [{"index": 0, "text": "x", "finish_reason": finish_reason}]}
    assert decode_completion(encode(body)).choices[0].finish_reason == finish_reason


def test_empty_choices_gives_empty_text() -> None:
    assert decode_completion(encode({**FULL_BODY, "choices": []})).text == ""


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"<html><body>Bad gateway</body></html>", b'{"id": "x"', b"[]"]
)
def test_non_completion_bodies_raise_response_decode_error(raw: bytes) -> None:
    with pytest.raises(ResponseDecodeError) as caught:
        decode_completion(raw)
    assert caught.value.body == raw


# -- stream chunks ---------------------------------------------------------------------------


def test_chunk_with_null_finish_reason_decodes() -> None:
    data = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "text": "Hi", "finish_reason": None, "logprobs": None}],
    }
    chunk = decode_chunk(encode(data))
    assert chunk.choices[0].finish_reason is None
    assert chunk.text == "Hi"


def test_usage_only_chunk_with_empty_choices_decodes() -> None:
    data = {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": MODEL,
        "choices": [],
        "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
    }
    chunk = decode_chunk(encode(data))
    assert chunk.choices == []
    assert chunk.text == ""
    assert chunk.usage == CompletionUsage(prompt_tokens=2, completion_tokens=3, total_tokens=5)


def test_chunk_text_is_that_of_choice_zero() -> None:
    chunk = CompletionChunk(
        id="c",
        model=MODEL,
        choices=[CompletionChoice(index=1, text="one"), CompletionChoice(index=0, text="zero")],
    )
    assert chunk.text == "zero"
    assert CompletionChunk(id="c", model=MODEL, choices=[CompletionChoice(index=1)]).text == ""


# -- error bodies ----------------------------------------------------------------------------


def test_error_body_nested_object() -> None:
    body = {"error": {"message": "bad model", "type": "invalid_request_error", "param": "model"}}
    detail = decode_error(encode({**body, "code": None}))
    assert detail is not None
    assert detail.message == "bad model"
    assert detail.type == "invalid_request_error"
    assert detail.param == "model"


@pytest.mark.parametrize("code", [429, "rate_limited"])
def test_error_body_nested_object_code_int_or_string(code: int | str) -> None:
    detail = decode_error(encode({"error": {"message": "slow down", "code": code}}))
    assert detail is not None
    assert detail.code == code


def test_error_body_string_form() -> None:
    detail = decode_error(b'{"error": "bad"}')
    assert detail is not None
    assert detail.message == "bad"


def test_error_body_flat_form() -> None:
    detail = decode_error(b'{"message": "rate limited", "code": 429, "type": "rate_limit_error"}')
    assert detail is not None
    assert detail.message == "rate limited"
    assert detail.code == 429
    assert detail.type == "rate_limit_error"


@pytest.mark.parametrize("raw", [b"", b"<html>502</html>", b"{}", b"[1]", b'"text"', b"{"])
def test_non_error_bodies_decode_to_none(raw: bytes) -> None:
    assert decode_error(raw) is None


# -- Orq SDK names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "target"),
    [
        ("PostV2ProxyCompletionsResponseBody", Completion),
        ("PostV2ProxyCompletionsChoices", CompletionChoice),
        ("PostV2ProxyCompletionsUsage", CompletionUsage),
        ("PostV2ProxyCompletionsPromptTokensDetails", PromptTokensDetails),
        ("PostV2ProxyCompletionsCompletionTokensDetails", CompletionTokensDetails),
        ("PostV2ProxyCompletionsData", CompletionChunk),
        ("PostV2ProxyCompletionsProxyChoices", CompletionChoice),
        ("PostV2ProxyCompletionsProxyUsage", CompletionUsage),
        ("PostV2ProxyCompletionsProxyPromptTokensDetails", PromptTokensDetails),
        ("PostV2ProxyCompletionsProxyCompletionTokensDetails", CompletionTokensDetails),
        ("PostV2ProxyCompletionsRequestBody", CompletionRequest),
        ("PostV2ProxyCompletionsOrq", OrqExtensions),
        ("PostV2ProxyCompletionsRetry", OrqRetry),
        ("PostV2ProxyCompletionsFallbacks", OrqFallback),
        ("PostV2ProxyCompletionsPrompt", OrqPrompt),
        ("PostV2ProxyCompletionsThread", OrqThread),
        ("PostV2ProxyCompletionsCache", OrqCache),
        ("PostV2ProxyCompletionsKnowledgeBases", KnowledgeBase),
        ("PostV2ProxyCompletionsSearchOptions", SearchOptions),
        ("PostV2ProxyCompletionsRerankConfig", RerankConfig),
        ("PostV2ProxyCompletionsModelParameters", RerankModelParameters),
        ("PostV2ProxyCompletionsAgenticRagConfig", AgenticRagConfig),
        ("PublicContact", ContactInfo),
    ],
)
def test_orq_sdk_aliases_are_the_same_classes(alias: str, target: type) -> None:
    assert getattr(asyncclient, alias) is target
    assert alias in asyncclient.__all__


# -- request encoding ------------------------------------------------------------------------


def test_minimal_call_sends_only_model_and_prompt() -> None:
    assert encode_request({"model": MODEL, "prompt": "Say hi"}) == (
        b'{"model":"openai/gpt-3.5-turbo-instruct","prompt":"Say hi"}'
    )


def test_the_sdk_minimal_body_from_the_spec_round_trips_byte_for_byte() -> None:
    sdk_body = (
        b'{"model":"openai/gpt-3.5-turbo-instruct","prompt":"Say hi","echo":false,'
        b'"frequency_penalty":0.0,"max_tokens":16.0,"presence_penalty":0.0,"temperature":1.0,'
        b'"top_p":1.0,"stream":false}'
    )
    assert encode_request(msgspec.json.decode(sdk_body)) == sdk_body


def test_explicit_none_is_sent_as_null() -> None:
    body = request_json(temperature=None, stop=None, echo=None, seed=None)
    assert body == {
        "model": MODEL,
        "prompt": "Say hi",
        "temperature": None,
        "stop": None,
        "echo": None,
        "seed": None,
    }


def test_unset_fields_are_not_sent() -> None:
    body = request_json(temperature=UNSET, max_tokens=5)
    assert body == {"model": MODEL, "prompt": "Say hi", "max_tokens": 5}


def test_request_struct_leaves_unset_fields_out() -> None:
    request = CompletionRequest(model=MODEL, prompt="Say hi", top_p=None)
    assert msgspec.json.encode(request) == (
        b'{"model":"openai/gpt-3.5-turbo-instruct","prompt":"Say hi","top_p":null}'
    )


@pytest.mark.parametrize("stop", ["\n", ["\n", "END"]])
def test_stop_string_or_list(stop: str | list[str]) -> None:
    assert request_json(stop=stop)["stop"] == stop


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("presence_penalty", -2.01, "-2 to 2"),
        ("presence_penalty", 2.5, "-2 to 2"),
        ("frequency_penalty", -3, "-2 to 2"),
        ("frequency_penalty", 2.01, "-2 to 2"),
        ("temperature", -0.1, "0 to 2"),
        ("temperature", 2.1, "0 to 2"),
        ("top_p", -0.5, "0 to 1"),
        ("top_p", 1.01, "0 to 1"),
    ],
)
def test_top_level_range_violations(field: str, value: float, allowed: str) -> None:
    error = validation_error(**{field: value})
    assert error.field == f"$.{field}"
    assert allowed in str(error)
    assert f"$.{field}" in str(error)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("presence_penalty", -2),
        ("presence_penalty", 2),
        ("frequency_penalty", 0),
        ("temperature", 0),
        ("temperature", 2),
        ("top_p", 0),
        ("top_p", 1),
    ],
)
def test_range_bounds_are_inclusive(field: str, value: float) -> None:
    assert request_json(**{field: value})[field] == value


@pytest.mark.parametrize(
    ("orq", "path", "allowed"),
    [
        ({"cache": {"type": "exact_match", "ttl": 0}}, "$.orq.cache.ttl", "1 to 259200"),
        ({"cache": {"type": "exact_match", "ttl": 259201}}, "$.orq.cache.ttl", "1 to 259200"),
        ({"retry": {"count": 0}}, "$.orq.retry.count", "1 to 5"),
        ({"retry": {"count": 6}}, "$.orq.retry.count", "1 to 5"),
        ({"retry": {"on_codes": [99]}}, "$.orq.retry.on_codes[0]", "100 to 599"),
        (
            {"knowledge_bases": [{"knowledge_id": "kb", "top_k": 0}]},
            "$.orq.knowledge_bases[0].top_k",
            "1 to 100",
        ),
        (
            {"knowledge_bases": [{"knowledge_id": "a"}, {"knowledge_id": "b", "top_k": 101}]},
            "$.orq.knowledge_bases[1].top_k",
            "1 to 100",
        ),
        (
            {"knowledge_bases": [{"knowledge_id": "kb", "threshold": 1.5}]},
            "$.orq.knowledge_bases[0].threshold",
            "0 to 1",
        ),
        (
            {"knowledge_bases": [{"knowledge_id": "kb", "search_type": "fuzzy_search"}]},
            "$.orq.knowledge_bases[0].search_type",
            "'hybrid_search', 'keyword_search', 'vector_search'",
        ),
        (
            {"knowledge_bases": [{"knowledge_id": "kb", "rerank_config": {"top_k": 101}}]},
            "$.orq.knowledge_bases[0].rerank_config.top_k",
            "1 to 100",
        ),
        ({"prompt": {"id": "prompt_1", "version": "v2"}}, "$.orq.prompt.version", "'latest'"),
        ({"cache": {"type": "semantic"}}, "$.orq.cache.type", "'exact_match'"),
    ],
)
def test_orq_constraint_violations(orq: dict[str, Any], path: str, allowed: str) -> None:
    error = validation_error(orq=orq)
    assert error.field == path
    assert allowed in str(error)
    assert path in str(error)


@pytest.mark.parametrize(
    ("orq", "path"),
    [
        ({"fallbacks": [{"model": "openai/gpt-4o-mini"}, {}]}, "$.orq.fallbacks[1].model"),
        ({"prompt": {"version": "latest"}}, "$.orq.prompt.id"),
        ({"prompt": {"id": "prompt_1"}}, "$.orq.prompt.version"),
        ({"contact": {"email": "a@b.c"}}, "$.orq.contact.id"),
        ({"thread": {"tags": ["x"]}}, "$.orq.thread.id"),
        ({"cache": {"ttl": 60}}, "$.orq.cache.type"),
        ({"knowledge_bases": [{"top_k": 3}]}, "$.orq.knowledge_bases[0].knowledge_id"),
        (
            {
                "knowledge_bases": [
                    {"knowledge_id": "kb", "agentic_rag_config": {"model_db_id": "m"}}
                ]
            },
            "$.orq.knowledge_bases[0].agentic_rag_config.provider",
        ),
        (
            {
                "knowledge_bases": [
                    {"knowledge_id": "kb", "agentic_rag_config": {"provider": "groq"}}
                ]
            },
            "$.orq.knowledge_bases[0].agentic_rag_config.model_db_id",
        ),
    ],
)
def test_required_nested_fields(orq: dict[str, Any], path: str) -> None:
    error = validation_error(orq=orq)
    assert error.field == path
    assert f"`{path.rpartition('.')[2]}`" in str(error)


@pytest.mark.parametrize("field", ["model", "prompt"])
def test_required_top_level_fields(field: str) -> None:
    params = {"model": MODEL, "prompt": "Say hi"}
    del params[field]
    with pytest.raises(RequestValidationError) as caught:
        encode_request(params)
    assert caught.value.field == f"$.{field}"


def test_unknown_orq_field_is_refused() -> None:
    error = validation_error(orq={"nmae": "typo"})
    assert "nmae" in str(error)


def test_agentic_rag_provider_must_be_known() -> None:
    error = validation_error(
        orq={
            "knowledge_bases": [
                {"knowledge_id": "kb", "agentic_rag_config": {"model_db_id": "m", "provider": "x"}}
            ]
        }
    )
    assert error.field == "$.orq.knowledge_bases[0].agentic_rag_config.provider"
    assert "'cohere'" in str(error)
    assert "'bytedance'" in str(error)


def test_validation_error_is_a_value_error() -> None:
    assert isinstance(validation_error(temperature=5), ValueError)


FULL_ORQ: dict[str, Any] = {
    "name": "trace-name",
    "retry": {"count": 3, "on_codes": [429, 500, 502, 503, 504]},
    "fallbacks": [{"model": "openai/gpt-4o-mini"}],
    "prompt": {"id": "prompt_01ARZ3NDEKTSV4RRFFQ69G5FAV", "version": "latest"},
    "contact": {
        "id": "contact_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "display_name": "Jane Doe",
        "email": "jane@example.com",
        "metadata": [{"plan": "pro"}, {"seats": 3}],
        "logo_url": "https://example.com/jane.png",
        "tags": ["vip", "beta"],
    },
    "thread": {"id": "thread_01ARZ3NDEKTSV4RRFFQ69G5FAV", "tags": ["support"]},
    "inputs": {"firstName": "Jane", "count": 2, "nested": {"a": [1, None]}},
    "cache": {"type": "exact_match", "ttl": 1800},
    "knowledge_bases": [
        {
            "knowledge_id": "kb_1",
            "top_k": 5,
            "threshold": 0.5,
            "search_type": "hybrid_search",
            "filter_by": {"and": [{"lang": {"eq": "en"}}, {"year": {"gte": 2020}}]},
            "search_options": {
                "include_vectors": False,
                "include_metadata": True,
                "include_scores": True,
            },
            "rerank_config": {
                "enabled": True,
                "provider": "cohere",
                "top_k": 10,
                "model": "rerank-v3.5",
                "model_db_id": "db_1",
                "model_type": "rerank",
                "model_parameters": {"threshold": 0.2},
            },
            "agentic_rag_config": {
                "model_db_id": "db_2",
                "provider": "openai",
                "integration_id": None,
            },
            "query": "refund policy",
        },
        {"knowledge_id": "kb_2", "rerank_config": None},
    ],
}

FULL_ORQ_STRUCT = OrqExtensions(
    name="trace-name",
    retry=OrqRetry(count=3, on_codes=[429, 500, 502, 503, 504]),
    fallbacks=[OrqFallback(model="openai/gpt-4o-mini")],
    prompt=OrqPrompt(id="prompt_01ARZ3NDEKTSV4RRFFQ69G5FAV", version="latest"),
    contact=ContactInfo(
        id="contact_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        display_name="Jane Doe",
        email="jane@example.com",
        metadata=[{"plan": "pro"}, {"seats": 3}],
        logo_url="https://example.com/jane.png",
        tags=["vip", "beta"],
    ),
    thread=OrqThread(id="thread_01ARZ3NDEKTSV4RRFFQ69G5FAV", tags=["support"]),
    inputs={"firstName": "Jane", "count": 2, "nested": {"a": [1, None]}},
    cache=OrqCache(type="exact_match", ttl=1800),
    knowledge_bases=[
        KnowledgeBase(
            knowledge_id="kb_1",
            top_k=5,
            threshold=0.5,
            search_type="hybrid_search",
            filter_by={"and": [{"lang": {"eq": "en"}}, {"year": {"gte": 2020}}]},
            search_options=SearchOptions(
                include_vectors=False, include_metadata=True, include_scores=True
            ),
            rerank_config=RerankConfig(
                enabled=True,
                provider="cohere",
                top_k=10,
                model="rerank-v3.5",
                model_db_id="db_1",
                model_type="rerank",
                model_parameters=RerankModelParameters(threshold=0.2),
            ),
            agentic_rag_config=AgenticRagConfig(
                model_db_id="db_2", provider="openai", integration_id=None
            ),
            query="refund policy",
        ),
        KnowledgeBase(knowledge_id="kb_2", rerank_config=None),
    ],
)


def test_full_orq_object_round_trips_from_dicts() -> None:
    body = request_json(orq=FULL_ORQ)
    assert body == {"model": MODEL, "prompt": "Say hi", "orq": FULL_ORQ}


def test_full_orq_object_round_trips_from_structs() -> None:
    assert request_json(orq=FULL_ORQ_STRUCT) == {
        "model": MODEL,
        "prompt": "Say hi",
        "orq": FULL_ORQ,
    }


def test_full_orq_decodes_back_into_the_same_structs() -> None:
    raw = encode_request({"model": MODEL, "prompt": "Say hi", "orq": FULL_ORQ})
    request = msgspec.json.decode(raw, type=CompletionRequest)
    assert request.orq == FULL_ORQ_STRUCT


def test_fallback_example_from_the_spec() -> None:
    body = request_json(orq={"fallbacks": [{"model": "openai/gpt-4o-mini"}]})
    assert body["orq"] == {"fallbacks": [{"model": "openai/gpt-4o-mini"}]}
    struct_body = request_json(
        orq=OrqExtensions(fallbacks=[OrqFallback(model="openai/gpt-4o-mini")])
    )
    assert struct_body == body


def test_whole_request_struct_encodes() -> None:
    request = CompletionRequest(
        model=MODEL, prompt="Say hi", max_tokens=5, orq=OrqExtensions(name="x")
    )
    assert encode_request(msgspec.to_builtins(request)) == (
        b'{"model":"openai/gpt-3.5-turbo-instruct","prompt":"Say hi","max_tokens":5,'
        b'"orq":{"name":"x"}}'
    )


# -- filter_by grammar -----------------------------------------------------------------------


def with_filter(filter_by: Any) -> dict[str, Any]:
    return {"knowledge_bases": [{"knowledge_id": "kb", "filter_by": filter_by}]}


FILTER_PATH = "$.orq.knowledge_bases[0].filter_by"


@pytest.mark.parametrize(
    "filter_by",
    [
        {"lang": {"eq": "en"}},
        {"lang": {"eq": "en"}, "year": {"gt": 2020}},
        {"lang": {"ne": 3}},
        {"draft": {"eq": False}},
        {"year": {"gt": 2020}},
        {"year": {"gte": 2020.5}},
        {"year": {"lt": 2030}},
        {"year": {"lte": 2030}},
        {"lang": {"in": ["en", "nl", 1, True]}},
        {"lang": {"nin": []}},
        {"author": {"exists": True}},
        {"and": [{"lang": {"eq": "en"}}, {"year": {"gte": 2020}}]},
        {"or": [{"lang": {"eq": "en"}}, {"lang": {"eq": "nl"}, "year": {"lt": 2000}}]},
        {"and": []},
    ],
)
def test_filter_by_accepted(filter_by: dict[str, Any]) -> None:
    body = request_json(orq=with_filter(filter_by))
    assert body["orq"]["knowledge_bases"][0]["filter_by"] == filter_by


@pytest.mark.parametrize(
    ("filter_by", "where"),
    [
        ({"lang": {"eq": "en", "ne": "nl"}}, f"{FILTER_PATH}.lang"),
        ({"lang": {}}, f"{FILTER_PATH}.lang"),
        ({"lang": "en"}, f"{FILTER_PATH}.lang"),
        ({"lang": {"like": "en%"}}, f"{FILTER_PATH}.lang"),
        ({"year": {"gt": "2020"}}, f"{FILTER_PATH}.year.gt"),
        ({"year": {"lte": True}}, f"{FILTER_PATH}.year.lte"),
        ({"lang": {"in": "en"}}, f"{FILTER_PATH}.lang.in"),
        ({"lang": {"nin": [["en"]]}}, f"{FILTER_PATH}.lang.nin"),
        ({"lang": {"eq": ["en"]}}, f"{FILTER_PATH}.lang.eq"),
        ({"author": {"exists": "yes"}}, f"{FILTER_PATH}.author.exists"),
        ({"and": {"lang": {"eq": "en"}}}, f"{FILTER_PATH}.and"),
        ({"or": "lang"}, f"{FILTER_PATH}.or"),
        ({"and": ["lang"]}, f"{FILTER_PATH}.and[0]"),
        ({"or": [{"lang": {"eq": "en"}}, {"year": {"gt": "x"}}]}, f"{FILTER_PATH}.or[1].year.gt"),
        ({"and": [], "lang": {"eq": "en"}}, FILTER_PATH),
    ],
)
def test_filter_by_rejected(filter_by: dict[str, Any], where: str) -> None:
    error = validation_error(orq=with_filter(filter_by))
    assert error.field == FILTER_PATH
    assert f"`{where}" in str(error)


def test_unknown_filter_operator_lists_the_allowed_ones() -> None:
    message = str(validation_error(orq=with_filter({"lang": {"like": "en%"}})))
    assert "like" in message
    for operator in ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "exists"):
        assert f"'{operator}'" in message


def test_filter_by_in_a_later_knowledge_base_names_that_index() -> None:
    orq = {
        "knowledge_bases": [
            {"knowledge_id": "a", "filter_by": {"x": {"eq": 1}}},
            {"knowledge_id": "b", "filter_by": {"x": {"gt": "1"}}},
        ]
    }
    assert validation_error(orq=orq).field == "$.orq.knowledge_bases[1].filter_by"


# -- extra_body and encoding failures --------------------------------------------------------


def test_extra_body_is_merged_last() -> None:
    raw = encode_request(
        {"model": MODEL, "prompt": "Say hi", "max_tokens": 5},
        {"max_tokens": 7, "top_k": 40, "repetition_penalty": 1.1},
    )
    assert msgspec.json.decode(raw) == {
        "model": MODEL,
        "prompt": "Say hi",
        "max_tokens": 7,
        "top_k": 40,
        "repetition_penalty": 1.1,
    }


def test_extra_body_bypasses_validation_on_purpose() -> None:
    # extra_body is the escape hatch for server-specific fields; it is not checked.
    raw = encode_request({"model": MODEL, "prompt": "Say hi"}, {"temperature": 9})
    assert msgspec.json.decode(raw)["temperature"] == 9


def test_unencodable_value_raises_request_validation_error() -> None:
    with pytest.raises(RequestValidationError):
        encode_request({"model": MODEL, "prompt": "Say hi", "user": object()})


def test_unencodable_extra_body_raises_request_validation_error() -> None:
    with pytest.raises(RequestValidationError):
        encode_request({"model": MODEL, "prompt": "Say hi"}, {"blob": object()})


def test_unencodable_inside_orq_inputs_raises_request_validation_error() -> None:
    with pytest.raises(RequestValidationError):
        encode_request({"model": MODEL, "prompt": "Say hi", "orq": {"inputs": {"x": object()}}})


def test_errors_pickle_with_their_attributes() -> None:
    import pickle

    from multidict import CIMultiDict, CIMultiDictProxy

    from asyncclient import ErrorDetail, RateLimitError, StreamTimeoutError

    headers = CIMultiDictProxy(CIMultiDict({"x-request-id": "r1", "retry-after": "2"}))
    error = RateLimitError(
        "slow down",
        status_code=429,
        headers=headers,
        body=b"{}",
        error=ErrorDetail(message="slow down"),
        request_id="r1",
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is RateLimitError
    assert (copy.status_code, copy.request_id, copy.body, str(copy)) == (
        429,
        "r1",
        b"{}",
        "slow down",
    )
    assert copy.headers["retry-after"] == "2"
    assert copy.error == ErrorDetail(message="slow down")
    timeout = pickle.loads(pickle.dumps(StreamTimeoutError("late", phase="idle")))
    assert timeout.phase == "idle"
    assert timeout.partial is None
