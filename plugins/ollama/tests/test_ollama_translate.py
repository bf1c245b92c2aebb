"""OpenAI ↔ Ollama translation: one test per mapping."""

from __future__ import annotations

import json
import re

import pytest
from resayil_ollama import translate
from resayil_ollama.translate import StreamTranslator, chat_body, chat_result, discovered_models

from resayil_gateway.domain import ChatRequest, Usage
from resayil_gateway.errors import InvalidRequest, UpstreamUnavailable

USER = {"role": "user", "content": "hi"}


def request(*messages: dict, **fields) -> ChatRequest:
    return ChatRequest(model="m", messages=messages or (USER,), **fields)


def body(*messages: dict, **fields) -> dict:
    return chat_body(request(*messages, **fields), "llama3.2:3b", stream=False)


# request ----------------------------------------------------------------------------------------------------


def test_model_and_stream_flag_are_sent():
    built = chat_body(request(), "llama3.2:3b", stream=True)
    assert built["model"] == "llama3.2:3b"
    assert built["stream"] is True


def test_max_tokens_becomes_num_predict():
    assert body(max_tokens=77)["options"]["num_predict"] == 77


def test_no_max_tokens_sends_no_num_predict():
    assert "options" not in body()


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", 0.2), ("top_p", 0.9), ("seed", 7), ("presence_penalty", 0.5), ("frequency_penalty", 0.3)],
)
def test_sampling_parameters_go_inside_options(field, value):
    built = body(**{field: value})
    assert built["options"][field] == value
    assert field not in built


def test_stop_becomes_options_stop_list():
    assert body(stop=("</s>", "END"))["options"]["stop"] == ["</s>", "END"]


def test_num_ctx_from_settings_goes_into_options():
    assert chat_body(request(), "m", stream=False, num_ctx=8192)["options"] == {"num_ctx": 8192}


def test_keep_alive_is_sent_when_configured():
    assert chat_body(request(), "m", stream=False, keep_alive="30m")["keep_alive"] == "30m"
    assert "keep_alive" not in body()


def test_numeric_keep_alive_is_sent_as_seconds():
    assert chat_body(request(), "m", stream=False, keep_alive="-1")["keep_alive"] == -1


def test_tools_are_passed_through():
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    assert body(tools=(tool,))["tools"] == [tool]


def test_tool_choice_none_drops_tools():
    tool = {"type": "function", "function": {"name": "weather"}}
    assert "tools" not in body(tools=(tool,), tool_choice="none")


def test_json_object_response_format_becomes_format_json():
    assert body(response_format={"type": "json_object"})["format"] == "json"


def test_json_schema_response_format_becomes_format_schema():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    built = body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert built["format"] == schema


def test_text_response_format_is_omitted():
    assert "format" not in body(response_format={"type": "text"})


def test_unknown_response_format_is_refused():
    with pytest.raises(InvalidRequest) as caught:
        body(response_format={"type": "xml"})
    assert caught.value.param == "response_format"


def test_reasoning_effort_becomes_think():
    assert chat_body(request(body={"reasoning_effort": "high"}), "m", stream=False)["think"] == "high"
    assert chat_body(request(body={"reasoning_effort": "none"}), "m", stream=False)["think"] is False
    assert "think" not in body()


def test_developer_role_becomes_system():
    built = body({"role": "developer", "content": "be brief"}, USER)
    assert built["messages"][0] == {"role": "system", "content": "be brief"}


def test_system_user_and_assistant_roles_are_kept():
    messages = ({"role": "system", "content": "s"}, USER, {"role": "assistant", "content": "a"})
    assert [m["role"] for m in body(*messages)["messages"]] == ["system", "user", "assistant"]


def test_text_parts_are_joined_into_content():
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    assert body({"role": "user", "content": parts})["messages"][0]["content"] == "first\nsecond"


def test_base64_image_part_becomes_images():
    parts = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    message = body({"role": "user", "content": parts})["messages"][0]
    assert message == {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="]}


def test_image_link_is_refused_with_param_messages():
    parts = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(InvalidRequest) as caught:
        body({"role": "user", "content": parts})
    assert caught.value.param == "messages"
    assert caught.value.status == 400


def test_unsupported_content_part_is_refused():
    with pytest.raises(InvalidRequest):
        body({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]})


def test_assistant_tool_call_arguments_are_parsed_to_object():
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Kuwait"}'}}
    message = body(USER, {"role": "assistant", "content": None, "tool_calls": [call]})["messages"][1]
    assert message == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Kuwait"}}}],
    }


def test_malformed_tool_call_arguments_are_refused():
    call = {"id": "c", "type": "function", "function": {"name": "weather", "arguments": "{not json"}}
    with pytest.raises(InvalidRequest) as caught:
        body({"role": "assistant", "content": None, "tool_calls": [call]})
    assert caught.value.param == "messages"


def test_tool_message_keeps_role_tool_and_gets_tool_name():
    call = {"id": "call_9", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    messages = (
        USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_9", "content": "35°C"},
    )
    assert body(*messages)["messages"][2] == {"role": "tool", "content": "35°C", "tool_name": "weather"}


# non-streamed answer ----------------------------------------------------------------------------------------


def answer(**fields) -> dict:
    data = {"model": "m", "message": {"role": "assistant", "content": "Hello!"}, "done": True}
    data.update(fields)
    return data


def test_usage_comes_from_eval_counts():
    result = chat_result(answer(prompt_eval_count=21, eval_count=37, done_reason="stop"), request())
    assert result.usage == Usage(prompt_tokens=21, completion_tokens=37)
    assert result.content == "Hello!"


def test_missing_counts_are_estimated():
    req = request({"role": "user", "content": "x" * 400})
    result = chat_result(answer(message={"role": "assistant", "content": "y" * 40}), req)
    assert result.usage.prompt_tokens == req.estimated_prompt_tokens()
    assert result.usage.completion_tokens == 10


def test_done_reason_length_becomes_finish_reason_length():
    assert chat_result(answer(done_reason="length"), request()).finish_reason == "length"


@pytest.mark.parametrize("done_reason", ["stop", "load", None])
def test_other_done_reasons_become_stop(done_reason):
    assert chat_result(answer(done_reason=done_reason), request()).finish_reason == "stop"


def test_thinking_becomes_reasoning():
    message = {"role": "assistant", "content": "42", "thinking": "let me see"}
    assert chat_result(answer(message=message), request()).reasoning == "let me see"


def test_tool_calls_get_openai_shape_and_finish_reason_tool_calls():
    message = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "w", "arguments": {"c": "ك"}}}]}
    result = chat_result(answer(message=message, done_reason="stop"), request())
    assert result.finish_reason == "tool_calls"
    assert result.content is None
    (call,) = result.tool_calls or ()
    assert re.fullmatch(r"call_[0-9a-f]{24}", call["id"])
    assert call["type"] == "function"
    assert call["function"]["name"] == "w"
    assert json.loads(call["function"]["arguments"]) == {"c": "ك"}
    assert "index" not in call


def test_error_object_raises_upstream_unavailable():
    with pytest.raises(UpstreamUnavailable):
        chat_result({"error": "model crashed"}, request())


# streamed answer --------------------------------------------------------------------------------------------


def line(content: str = "", done: bool = False, **fields) -> dict:
    return {"model": "m", "message": {"role": "assistant", "content": content}, "done": done, **fields}


def test_stream_translator_yields_content_then_finish_with_usage():
    translator = StreamTranslator(request())
    deltas = [d for item in (line("Hel"), line("lo")) for d in translator.feed(item)]
    assert [d.content for d in deltas] == ["Hel", "lo"]
    assert not translator.done
    (final,) = translator.feed(line(done=True, done_reason="stop", prompt_eval_count=3, eval_count=2))
    assert translator.done
    assert final.finish_reason == "stop"
    assert final.usage == Usage(prompt_tokens=3, completion_tokens=2)
    assert final.content is None


def test_final_line_with_content_yields_content_before_finish():
    deltas = StreamTranslator(request()).feed(line("end", done=True, done_reason="length", eval_count=1))
    assert [(d.content, d.finish_reason) for d in deltas] == [("end", None), (None, "length")]


def test_empty_lines_yield_nothing():
    assert StreamTranslator(request()).feed(line("")) == []


def test_streamed_thinking_becomes_reasoning_delta():
    (delta,) = StreamTranslator(request()).feed({"message": {"role": "assistant", "content": "", "thinking": "hm"}})
    assert delta.reasoning == "hm"
    assert delta.content is None


def test_streamed_tool_calls_carry_index_and_finish_with_tool_calls():
    translator = StreamTranslator(request())
    first = translator.feed({"message": {"tool_calls": [{"function": {"name": "a", "arguments": {}}}]}})
    second = translator.feed({"message": {"tool_calls": [{"function": {"name": "b", "arguments": {"x": 1}}}]}})
    final = translator.feed(line(done=True, done_reason="stop"))
    calls = [call for delta in first + second for call in delta.tool_calls or ()]
    assert [(c["index"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        (0, "a", "{}"),
        (1, "b", '{"x": 1}'),
    ]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert final[-1].finish_reason == "tool_calls"


def test_stream_missing_counts_are_estimated_from_output():
    translator = StreamTranslator(request())
    translator.feed(line("abcdefgh"))
    (final,) = translator.feed(line(done=True))
    assert final.usage is not None
    assert final.usage.completion_tokens == 2


def test_stream_error_line_raises_upstream_unavailable():
    with pytest.raises(UpstreamUnavailable) as caught:
        StreamTranslator(request()).feed({"error": "runner crashed"})
    assert "runner crashed" in caught.value.message


# discovery --------------------------------------------------------------------------------------------------


def tag(name: str, family: str = "llama", **extra) -> dict:
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-05-01T10:00:00.123456789+03:00",
        "size": 1,
        "digest": "d",
        "details": {"family": family, "families": [family], "parameter_size": "3.2B"},
        **extra,
    }


def test_capabilities_field_is_used_with_completion_read_as_chat():
    (model,) = discovered_models({"models": [tag("glm", capabilities=["completion", "tools", "thinking"])]})
    assert model.capabilities == ("chat", "tools", "thinking")


@pytest.mark.parametrize(("name", "family"), [("bge-m3:latest", "bert"), ("nomic-embed-text:latest", "nomic-bert")])
def test_embedding_family_is_detected_without_capabilities(name, family):
    (model,) = discovered_models({"models": [tag(name, family)]})
    assert model.capabilities == ("embedding",)


def test_embed_in_name_is_detected_as_embedding():
    (model,) = discovered_models({"models": [tag("mxbai-embed-large:latest", "mystery")]})
    assert model.capabilities == ("embedding",)


def test_other_models_are_chat():
    (model,) = discovered_models({"models": [tag("llama3.2:3b")]})
    assert model.capabilities == ("chat",)
    assert model.parameter_size == "3.2B"
    assert model.family == "llama"


def test_created_comes_from_modified_at_with_nanoseconds():
    (model,) = discovered_models({"models": [tag("llama3.2:3b")]})
    assert model.created == 1746082800  # 2025-05-01T07:00:00Z


def test_unreadable_modified_at_gives_zero():
    assert translate.timestamp("yesterday") == 0
    assert translate.timestamp(None) == 0


def test_entries_without_a_name_are_skipped():
    assert discovered_models({"models": [{"size": 3}, "junk"]}) == ()
