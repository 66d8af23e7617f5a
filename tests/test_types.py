"""Conversations and responses: their JSON form, the original's files, and path-naming errors."""

from __future__ import annotations

import json

import pytest

from llm_cascade.errors import ConversationError
from llm_cascade.types import (
    Conversation,
    LlmResponse,
    Message,
    TextBlock,
    ToolCall,
    ToolDefinition,
)

# Verbatim a conversation file the original tool accepts.
ORIGINAL_FILE = """{
  "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Tokyo?"},
    {"role": "assistant", "content": ""},
    {"role": "tool", "content": "{\\"temp\\": 21}", "tool_call_id": "call_abc"}
  ],
  "tools": [
    {"name": "get_weather", "description": "Current weather",
     "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                    "required": ["location"]}}
  ]
}"""

WEATHER = ToolDefinition(
    "get_weather",
    "Current weather",
    {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
)


def test_conversation_survives_a_json_round_trip():
    conversation = Conversation(
        [
            Message.system("You are terse."),
            Message.user("Weather in Tokyo? ☀ 東京"),
            Message.assistant("", [ToolCall("call_1", "get_weather", '{"location":"Tokyo"}')]),
            Message.tool('{"temp": 21}', "call_1", name="get_weather"),
            Message.assistant("21 degrees."),
        ],
        [WEATHER],
    )
    text = json.dumps(conversation.to_dict(), ensure_ascii=False)
    assert Conversation.from_json(text) == conversation
    assert Conversation.from_json(text).to_dict() == conversation.to_dict()


def test_the_originals_conversation_file_loads_unchanged():
    conversation = Conversation.from_json(ORIGINAL_FILE)
    assert conversation.messages[3] == Message.tool('{"temp": 21}', "call_abc")
    assert conversation.tools == (WEATHER,)
    # Written back, it is the same document: no field added, none lost.
    assert conversation.to_dict() == json.loads(ORIGINAL_FILE)


def test_absent_optional_fields_are_omitted_when_serialized():
    message = Message.user("hi").to_dict()
    assert list(message) == ["role", "content"]
    assert list(Message.tool("r", "call_1").to_dict()) == ["role", "content", "tool_call_id"]
    assert Conversation([Message.user("hi")]).to_dict() == {
        "messages": [{"role": "user", "content": "hi"}]
    }


def test_null_tools_count_as_absent_but_an_empty_list_stays_empty():
    absent = Conversation.from_dict({"messages": [], "tools": None})
    assert absent.tools is None
    assert "tools" not in absent.to_dict()
    empty = Conversation.from_dict({"messages": [], "tools": []})
    assert empty.tools == ()
    assert empty.to_dict() == {"messages": [], "tools": []}


def test_unknown_fields_are_ignored_at_every_level():
    doc = json.loads(ORIGINAL_FILE)
    doc["version"] = 3
    doc["messages"][1]["timestamp"] = "2026-01-01"
    doc["tools"][0]["strict"] = True
    assert Conversation.from_dict(doc) == Conversation.from_json(ORIGINAL_FILE)


def test_tool_calls_round_trip_in_our_shape():
    doc = {
        "messages": [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c1", "name": "get_weather", "arguments": '{"location":"Oslo"}'},
                    {"id": "c2", "name": "get_time", "arguments": "{}"},
                ],
            },
            {"role": "tool", "content": "4 C", "tool_call_id": "c1", "name": "get_weather"},
            {"role": "tool", "content": "noon", "tool_call_id": "c2"},
        ]
    }
    conversation = Conversation.from_dict(doc)
    assert conversation.messages[0].tool_calls == (
        ToolCall("c1", "get_weather", '{"location":"Oslo"}'),
        ToolCall("c2", "get_time", "{}"),
    )
    assert conversation.to_dict() == doc
    assert conversation.tool_name_for("c2") == "get_time"


def test_tool_calls_in_openais_nested_shape_are_read_into_ours():
    doc = {
        "messages": [
            {
                "role": "assistant",
                "content": None,  # OpenAI's own shape for a turn that only calls tools
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Oslo"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": {"q": "x", "a": 1}},
                    },
                ],
            }
        ]
    }
    [message] = Conversation.from_dict(doc).messages
    assert message.content == ""
    assert message.tool_calls == (
        ToolCall("call_1", "get_weather", '{"location": "Oslo"}'),  # a string passes through
        ToolCall("call_2", "lookup", '{"a":1,"q":"x"}'),  # an object becomes compact JSON
    )
    assert message.to_dict()["tool_calls"][1] == {
        "id": "call_2",
        "name": "lookup",
        "arguments": '{"a":1,"q":"x"}',
    }


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ([], "$"),
        ({}, "$.messages"),
        ({"messages": "hi"}, "$.messages"),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "robot", "content": "c"},
                ]
            },
            "$.messages[2].role",
        ),
        ({"messages": [{"role": "User", "content": "a"}]}, "$.messages[0].role"),
        ({"messages": [{"role": "user"}]}, "$.messages[0].content"),
        ({"messages": [{"role": "user", "content": None}]}, "$.messages[0].content"),
        # A list is content parts now: each part must be an object.
        ({"messages": [{"role": "user", "content": ["a"]}]}, "$.messages[0].content[0]"),
        ({"messages": ["hello"]}, "$.messages[0]"),
        (
            {"messages": [{"role": "tool", "content": "r", "tool_call_id": 7}]},
            "$.messages[0].tool_call_id",
        ),
        (
            {"messages": [{"role": "assistant", "content": "", "tool_calls": {"id": "c"}}]},
            "$.messages[0].tool_calls",
        ),
        (
            {"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "c"}]}]},
            "$.messages[0].tool_calls[0].name",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}],
                    }
                ]
            },
            "$.messages[0].tool_calls[0].function.name",
        ),
        ({"messages": [], "tools": {}}, "$.tools"),
        ({"messages": [], "tools": [{"description": "d"}]}, "$.tools[0].name"),
        ({"messages": [], "tools": [{"name": "f", "parameters": "x"}]}, "$.tools[0].parameters"),
    ],
)
def test_errors_name_the_json_path_of_the_problem(doc, path):
    with pytest.raises(ConversationError) as caught:
        Conversation.from_dict(doc)
    assert caught.value.where == path
    assert str(caught.value).startswith(f"{path}: ")


def test_text_that_is_not_json_is_a_conversation_error():
    with pytest.raises(ConversationError, match="not valid JSON"):
        Conversation.from_json('{"messages": [}')


def test_response_keys_come_in_the_originals_order():
    response = LlmResponse(
        (ToolCall("call_1", "get_weather", '{"location":"Tokyo"}'),),
        model="gpt-4o-2024-08-06",
        input_tokens=57,
        output_tokens=18,
    )
    # The original's documented response example, byte for byte.
    assert json.dumps(response.to_dict(), indent=2) == (
        "{\n"
        '  "content": [\n'
        "    {\n"
        '      "type": "tool_call",\n'
        '      "id": "call_1",\n'
        '      "name": "get_weather",\n'
        '      "arguments": "{\\"location\\":\\"Tokyo\\"}"\n'
        "    }\n"
        "  ],\n"
        '  "input_tokens": 57,\n'
        '  "output_tokens": 18,\n'
        '  "model": "gpt-4o-2024-08-06"\n'
        "}"
    )


def test_stop_reason_comes_last_and_only_when_known():
    with_reason = LlmResponse((TextBlock("hi"),), "m", 1, 2, stop_reason="length").to_dict()
    assert list(with_reason) == ["content", "input_tokens", "output_tokens", "model", "stop_reason"]
    assert "stop_reason" not in LlmResponse((TextBlock("hi"),), "m").to_dict()


@pytest.mark.parametrize(
    ("input_tokens", "output_tokens", "keys"),
    [
        (None, None, ["content", "model"]),
        (5, None, ["content", "input_tokens", "model"]),
        (None, 0, ["content", "output_tokens", "model"]),
    ],
)
def test_unknown_token_counts_are_omitted(input_tokens, output_tokens, keys):
    response = LlmResponse((), "m", input_tokens, output_tokens)
    assert list(response.to_dict()) == keys


def test_text_block_keys_are_type_then_text():
    assert list(TextBlock("x").to_dict().items()) == [("type", "text"), ("text", "x")]


def test_text_only_joins_text_blocks_and_skips_tool_calls():
    response = LlmResponse(
        (TextBlock("Hel"), ToolCall("c", "f", "{}"), TextBlock("lo"), TextBlock("")), "m"
    )
    assert response.text_only() == "Hello"
    assert response.tool_calls == [ToolCall("c", "f", "{}")]
    assert LlmResponse((), "m").text_only() == ""


@pytest.mark.parametrize(
    ("content", "has"),
    [
        ((), False),
        ((TextBlock(" \n"),), False),
        ((TextBlock("x"),), True),
        ((ToolCall("c", "f"),), True),
    ],
)
def test_a_response_without_text_or_tool_calls_has_no_content(content, has):
    assert LlmResponse(content, "m").has_content() is has


def nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def test_tool_parameters_nested_too_deeply_are_an_error_naming_the_path():
    parameters = '{"a": ' * 800 + "1" + "}" * 800  # as text, like a file on disk
    text = '{"messages": [{"role": "user", "content": "hi"}],'
    text += f' "tools": [{{"name": "t", "parameters": {parameters}}}]}}'
    with pytest.raises(ConversationError) as caught:
        Conversation.from_json(text)
    assert caught.value.where.startswith("$.tools[0].parameters.a"), caught.value.where
    assert "nested more than 64 levels" in str(caught.value)


def test_tool_call_arguments_nested_too_deeply_are_an_error_naming_the_path():
    call = {"id": "c", "name": "f", "arguments": nested(900)}
    doc = {"messages": [{"role": "assistant", "content": None, "tool_calls": [call]}]}
    with pytest.raises(ConversationError) as caught:
        Conversation.from_dict(doc)
    assert caught.value.where.startswith("$.messages[0].tool_calls[0]"), caught.value.where


def test_sixty_levels_of_tool_parameters_are_still_fine():
    tools = [{"name": "t", "parameters": nested(60, {"type": "object"})}]
    conversation = Conversation.from_dict(
        {"messages": [{"role": "user", "content": "hi"}], "tools": tools}
    )
    assert conversation.tools is not None
    json.dumps(conversation.to_dict())


HOSTILE_JSON: list[object] = [
    None,
    True,
    0,
    -1.5,
    1e308,
    "",
    "\ud800",
    "x" * 10_000,
    [],
    [None, 1, "x"],
    {},
    {"a": [1, {"b": None}]},
    nested(900),
    [[[[[]]]]],
]


def _paths(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Every key and index path inside a JSON value, containers included."""
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*path, i))
    return found


def _replaced(doc: object, path: tuple[object, ...], value: object) -> object:
    if not path:
        return value
    copy = json.loads(json.dumps(doc))
    node = copy
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return copy


FULL_CONVERSATION = {
    "messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u", "name": "n"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "name": "f", "arguments": {"x": 1}},
                {"id": "c2", "function": {"name": "g", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "content": "r", "tool_call_id": "c1", "name": "f"},
    ],
    "tools": [{"name": "f", "description": "d", "parameters": {"type": "object"}}],
}


@pytest.mark.parametrize("path", _paths(FULL_CONVERSATION), ids=str)
def test_any_value_anywhere_parses_or_is_a_conversation_error(path):
    """Property: no JSON document crashes the parser, and whatever it accepts can be saved."""
    for value in HOSTILE_JSON:
        doc = _replaced(FULL_CONVERSATION, path, value)
        try:
            conversation = Conversation.from_dict(doc)
        except ConversationError as exc:
            assert len(str(exc)) < 300 and "\n" not in str(exc), (path, value)
            continue
        json.dumps(conversation.to_dict(), ensure_ascii=False).encode("utf-8")


DEEP_ARGUMENTS = "[" * 985 + "]" * 985


@pytest.mark.parametrize(
    ("arguments", "parsed"),
    [
        ('{"city": "Oslo"}', {"city": "Oslo"}),
        ("", {}),
        ("{broken", "{broken"),  # kept as the model wrote it
        ('{"q": "\\ud800"}', {"q": "\ufffd"}),  # a lone surrogate escape becomes U+FFFD
        ('{"\\udc00": ["\\ud83d\\ude00"]}', {"\ufffd": ["\U0001f600"]}),  # a real pair stays
        ("[" * 64 + "]" * 64, json.loads("[" * 64 + "]" * 64)),
        ("[" * 65 + "]" * 65, "[" * 65 + "]" * 65),  # deeper than we accept: kept as text
        (DEEP_ARGUMENTS, DEEP_ARGUMENTS),
    ],
    ids=["object", "empty", "broken", "surrogate", "surrogate-key", "deep-64", "65", "985"],
)
def test_parsed_arguments_are_always_safe_to_print(arguments, parsed):
    value = ToolCall("c", "f", arguments).parsed_arguments()
    assert value == parsed
    json.dumps(value, indent=2, ensure_ascii=False).encode("utf-8")  # what --json does
