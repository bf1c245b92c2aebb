"""The pure parts: model names for the cloud, the SSE decoder and the stream translator."""

from __future__ import annotations

import pytest
from cloud_helpers import chat_request
from resayil_cloud.dialect import StreamTranslator, discovered_models, upstream_model
from resayil_cloud.sse import SseDecoder

from resayil_gateway.domain import Usage


@pytest.mark.parametrize(
    ("name", "ollama", "openai"),
    [
        ("gpt-oss:120b-cloud", "gpt-oss:120b", "gpt-oss:120b-cloud"),
        ("qwen3.5:cloud", "qwen3.5", "qwen3.5:cloud"),
        ("gpt-oss:120b", "gpt-oss:120b", "gpt-oss:120b"),
        ("deepseek-v3.1", "deepseek-v3.1", "deepseek-v3.1"),
        ("my-cloud-model:7b", "my-cloud-model:7b", "my-cloud-model:7b"),
    ],
)
def test_only_the_ollama_dialect_drops_the_cloud_suffix(name, ollama, openai):
    assert upstream_model(name, "ollama") == ollama
    assert upstream_model(name, "openai") == openai


def test_discovery_names_are_deduplicated_after_the_suffix_is_dropped():
    listing = {"data": [{"id": "a:1b-cloud"}, {"id": "a:1b"}, {"id": ""}, {"nope": 1}, "junk"]}
    assert [m.name for m in discovered_models(listing, "ollama")] == ["a:1b"]
    assert [m.name for m in discovered_models(listing, "openai")] == ["a:1b-cloud", "a:1b"]


def test_sse_decoder_joins_events_across_feeds_and_ignores_other_fields():
    decoder = SseDecoder()
    assert decoder.feed(b'event: message\nid: 7\ndata: {"a"') == []
    assert decoder.feed(b":1}\n\n: a comment\n\nretry: 5\ndata:[DONE]\n") == ['{"a":1}']
    assert decoder.feed(b"\n") == ["[DONE]"]


def test_sse_decoder_joins_multi_line_data_and_flushes_an_unterminated_event():
    decoder = SseDecoder()
    assert decoder.feed(b"data: one\r\ndata: two\r\n\r\ndata: last") == ["one\ntwo"]
    assert decoder.close() == ["last"]
    assert decoder.close() == []


def test_stream_translator_keeps_finish_and_usage_for_the_last_delta():
    translator = StreamTranslator(chat_request())
    assert translator.feed({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}) is None
    assert translator.feed({"choices": [{"index": 0, "delta": {"content": "Hi"}}]}).content == "Hi"
    assert translator.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}) is None
    assert translator.feed({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}) is None
    last = translator.finish()
    assert (last.finish_reason, last.usage) == ("length", Usage(prompt_tokens=5, completion_tokens=1))


def test_stream_translator_says_tool_calls_when_the_host_gives_no_finish_reason():
    translator = StreamTranslator(chat_request())
    call = {"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    translator.feed({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    assert translator.finish().finish_reason == "tool_calls"
