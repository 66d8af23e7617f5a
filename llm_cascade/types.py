"""Conversations in, responses out: frozen values and their JSON form (no I/O).

The JSON shape is the original's, so its conversation files load unchanged; the
fields `tool_calls`, `name` and `stop_reason` are additive and omitted when absent. A message's
`content` is a string, as there, or a list of parts (text and images) in a user turn.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, cast

from . import untrusted
from .errors import ConversationError
from .text import shorten
from .untrusted import MAX_NESTING

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")
# Levels of objects and arrays allowed in anything user-supplied that is serialised again
# later (a conversation, a config's `extra`): far beyond any real JSON Schema, far below the
# depth at which a recursive walk (json.dumps, a deep merge) raises RecursionError.
# The most a conversation file or stdin may hold: millions of tokens, beyond any context window.
MAX_CONVERSATION_BYTES = 16 << 20
JsonPath = tuple[str | int, ...]


def compact_json(value: Any) -> str:
    """Serialize `value` as compact JSON with sorted keys (the original's argument form)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def too_deep(value: Any, limit: int = MAX_NESTING) -> JsonPath | None:
    """The path to the first dict or list nested more than `limit` levels deep, or None.

    It walks with a stack rather than recursion, so no depth can crash it.
    """
    stack: list[tuple[Any, int, JsonPath]] = [(value, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, Mapping):
            children: Iterable[tuple[str | int, Any]] = node.items()
        elif isinstance(node, list):
            children = enumerate(node)
        else:
            continue
        if depth > limit:
            return path
        stack.extend((child, depth + 1, (*path, key)) for key, child in children)
    return None


def path_text(path: JsonPath, root: str = "", shown: int = 6) -> str:
    """`root.key[0].key` for the first `shown` steps of `path`, then `…`."""
    out = root
    for step in path[:shown]:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out + ("…" if len(path) > shown else "")


def shown(value: Any, limit: int = 40, *, as_json: bool = False) -> str:
    """`value` quoted for an error message (its repr, or JSON) and cut short, so a message
    stays one readable line whatever the user wrote."""
    if too_deep(value, 3) is not None:
        return "[...]" if isinstance(value, list) else "{...}"
    return shorten(json.dumps(value) if as_json else repr(value), limit)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for; `arguments` is a JSON-encoded string."""

    id: str
    name: str
    arguments: str = "{}"
    type: ClassVar[str] = "tool_call"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "tool_call", "id": self.id, "name": self.name, "arguments": self.arguments}

    def parsed_arguments(self) -> Any:
        """The arguments as a JSON value that is safe to print and send on.

        A string that is not JSON, or nests deeper than `MAX_NESTING`, is
        returned as-is; lone surrogates in it become U+FFFD.
        """
        try:
            return untrusted.loads(self.arguments) if self.arguments else {}
        except ValueError:  # NestedTooDeep included
            return self.arguments


# Pieces of a streamed answer: what an adapter's stream parser makes of the text and tool calls
# it reads, and the very objects `Cascade.stream` hands its caller (llm_cascade.events), so a
# chunk is not copied on its way.


@dataclass(frozen=True, slots=True)
class Text:
    """A piece of answer text, as it arrived."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call: `index` names the call; id and name come with its first piece,
    then arguments (JSON text) in pieces that are concatenated."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class TextBlock:
    """A run of answer text."""

    text: str
    type: ClassVar[str] = "text"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


ContentBlock = TextBlock | ToolCall


@dataclass(frozen=True, slots=True)
class TextPart:
    """Text inside a message whose content is a list of parts."""

    text: str
    type: ClassVar[str] = "text"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image in a user turn: inline base64 `data` with its `media_type`, or a `url` the
    vendor fetches. `path` is a local file not read yet: `images.inline` replaces it with its
    data before anything is saved or sent."""

    media_type: str | None = None
    data: str | None = field(default=None, repr=False)
    url: str | None = None
    path: str | None = None
    type: ClassVar[str] = "image"

    @property
    def data_url(self) -> str:
        """The image as one URL: its own, or a `data:` URL of the inline bytes."""
        return self.url or f"data:{self.media_type};base64,{self.data}"

    @property
    def size(self) -> int:
        """Bytes of the inline image (from the base64 length; 0 for a URL)."""
        data = self.data or ""
        return len(data) * 3 // 4 - data[-2:].count("=")

    @property
    def format(self) -> str:
        """`png`, `jpeg`, `gif` or `webp`: the media type's subtype (Bedrock's `format`)."""
        return (self.media_type or "").rpartition("/")[2]

    def to_dict(self) -> dict[str, Any]:
        if self.url is not None:
            return {"type": "image", "url": self.url}
        if self.path is not None:
            return {"type": "image", "path": self.path}
        return {"type": "image", "media_type": self.media_type, "data": self.data}


ContentPart = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. Assistant turns may carry `tool_calls`; tool turns answer one by `tool_call_id`.

    `content` is a string, or (user turns with images) a tuple of text and image parts;
    `text` is the text either way.
    """

    role: Role
    content: str | tuple[ContentPart, ...]
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    name: str | None = None  # tool turns: the function's name (Gemini needs it)

    def __post_init__(self) -> None:
        if isinstance(self.content, list):  # a list given by a caller: keep it immutable
            object.__setattr__(self, "content", tuple(self.content))

    @classmethod
    def system(cls, text: str) -> Message:
        return cls("system", text)

    @classmethod
    def user(cls, text: str | Sequence[ContentPart]) -> Message:
        return cls("user", text if isinstance(text, str) else tuple(text))

    @property
    def text(self) -> str:
        """The message's text: its string content, or its text parts joined by newlines."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> tuple[ImagePart, ...]:
        if isinstance(self.content, str):
            return ()
        return tuple(p for p in self.content if isinstance(p, ImagePart))

    @property
    def parts(self) -> tuple[ContentPart, ...]:
        """The content as parts, in order; a string is one text part (none if empty)."""
        if isinstance(self.content, str):
            return (TextPart(self.content),) if self.content else ()
        return self.content

    @classmethod
    def assistant(cls, text: str, tool_calls: Iterable[ToolCall] = ()) -> Message:
        return cls("assistant", text, tool_calls=tuple(tool_calls))

    @classmethod
    def tool(cls, text: str, tool_call_id: str, name: str | None = None) -> Message:
        return cls("tool", text, tool_call_id=tool_call_id, name=name)

    def to_dict(self) -> dict[str, Any]:
        content = self.content
        out: dict[str, Any] = {
            "role": self.role,
            "content": content if isinstance(content, str) else [p.to_dict() for p in content],
        }
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls
            ]
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """A function the model may call; `parameters` is a JSON Schema object."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


# A schema's name, as OpenAI's `json_schema.name` and Anthropic's tool names allow it.
OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Keys that say nothing about the value: `{"type": "object", "title": ...}` is any object.
_ANNOTATIONS = frozenset({"$schema", "$id", "title", "description", "$comment"})


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """The shape the answer must have: a JSON document (`schema` None), or one that is valid
    under a JSON Schema. `name` is the schema's name for the vendors that want one."""

    schema: Mapping[str, Any] | None = None
    name: str = "answer"

    @property
    def wire_schema(self) -> Mapping[str, Any] | None:
        """The schema to send, or None to ask for JSON mode: for no schema, and for one that
        only says "an object" (which every JSON mode gives); the answer is still checked
        against `schema` locally."""
        if self.schema is None or (
            self.schema.get("type") == "object" and set(self.schema) - _ANNOTATIONS == {"type"}
        ):
            return None
        return self.schema

    @property
    def capability(self) -> str:
        """What an entry must support to be asked: `json` or `schema`."""
        return "json" if self.wire_schema is None else "schema"

    def to_dict(self) -> dict[str, Any]:
        if self.schema is None:
            return {"type": "json"}
        return {"type": "json_schema", "name": self.name, "schema": self.schema}


@dataclass(frozen=True, slots=True)
class Conversation:
    """The messages sent to a model, plus the tools it may call (None: no tools at all) and the
    shape its answer must have (None: free text)."""

    messages: tuple[Message, ...]
    tools: tuple[ToolDefinition, ...] | None = None
    output: OutputFormat | None = None

    def __init__(
        self,
        messages: Iterable[Message],
        tools: Iterable[ToolDefinition] | None = None,
        output: OutputFormat | None = None,
    ) -> None:
        object.__setattr__(self, "messages", tuple(messages))
        object.__setattr__(self, "tools", None if tools is None else tuple(tools))
        object.__setattr__(self, "output", output)

    @classmethod
    def single_user_prompt(cls, text: str, system: str | None = None) -> Conversation:
        msgs = [Message.system(system)] if system else []
        return cls([*msgs, Message.user(text)])

    def with_tools(self, tools: Iterable[ToolDefinition]) -> Conversation:
        return Conversation(self.messages, tools, self.output)

    def with_messages(self, messages: Iterable[Message]) -> Conversation:
        """The same request (tools, output format) with other messages."""
        return Conversation(messages, self.tools, self.output)

    def with_output(self, output: OutputFormat | None) -> Conversation:
        return Conversation(self.messages, self.tools, output)

    @property
    def images(self) -> tuple[ImagePart, ...]:
        """Every image of every message, in order."""
        return tuple(image for m in self.messages for image in m.images)

    def tool_name_for(self, call_id: str | None) -> str | None:
        """The function name of the assistant tool call with this id, if any turn made it."""
        for msg in self.messages:
            for call in msg.tool_calls:
                if call.id == call_id:
                    return call.name
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"messages": [m.to_dict() for m in self.messages]}
        if self.tools is not None:
            out["tools"] = [t.to_dict() for t in self.tools]
        if self.output is not None:
            out["output"] = self.output.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Conversation:
        """Validate a decoded JSON document; errors name the offending path.

        An image given by `path` stays a path (`ImagePart.path`) until `images.inline` reads it.
        """
        return _parse_conversation(data)

    @classmethod
    def from_json(cls, text: str) -> Conversation:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConversationError("", f"not valid JSON ({exc})") from None
        except RecursionError:
            raise ConversationError("", "not valid JSON (nested too deeply)") from None
        return _parse_conversation(data)


@dataclass(frozen=True, slots=True)
class LlmResponse:
    """What the entry that answered returned."""

    content: tuple[ContentBlock, ...]
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    stop_reason: str | None = None

    @property
    def text(self) -> str:
        """All text blocks joined with no separator (the original's `text_only()`)."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    def text_only(self) -> str:
        return self.text

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [b for b in self.content if isinstance(b, ToolCall)]

    def has_content(self) -> bool:
        """True if there is any text or tool call (an empty 2xx is a failure)."""
        return any(isinstance(b, ToolCall) or b.text.strip() for b in self.content)

    def to_dict(self) -> dict[str, Any]:
        """The original's key order: content, input_tokens, output_tokens, model (+stop_reason)."""
        out: dict[str, Any] = {"content": [b.to_dict() for b in self.content]}
        if self.input_tokens is not None:
            out["input_tokens"] = self.input_tokens
        if self.output_tokens is not None:
            out["output_tokens"] = self.output_tokens
        out["model"] = self.model
        if self.stop_reason is not None:
            out["stop_reason"] = self.stop_reason
        return out


# --- parsing -------------------------------------------------------------------------------


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConversationError(where, f"expected an object, got {_jtype(value)}")
    return value


def _str(obj: Mapping[str, Any], key: str, where: str, *, default: str | None = None) -> str:
    value = obj.get(key)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        what = "is missing" if key not in obj else f"must be a string, got {_jtype(value)}"
        raise ConversationError(f"{where}.{key}", what)
    return value


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise ConversationError(f"{where}.{key}", f"must be a string, got {_jtype(value)}")
    return value


def _jtype(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number"
    )


def _parse_call(raw: Any, where: str) -> ToolCall:
    obj = _obj(raw, where)
    fn = obj.get("function")  # also accept OpenAI's nested {"function": {...}} shape
    src_where = f"{where}.function" if fn is not None else where
    src = _obj(fn, src_where) if fn is not None else obj
    args = src.get("arguments", "{}")
    if not isinstance(args, str):
        args = compact_json(args)
    return ToolCall(_str(obj, "id", where, default=""), _str(src, "name", src_where), args)


def _parse_message(raw: Any, where: str) -> Message:
    obj = _obj(raw, where)
    role = obj.get("role")
    if role not in ROLES:
        raise ConversationError(
            f"{where}.role", f"must be one of {', '.join(ROLES)}, got {shown(role, as_json=True)}"
        )
    calls_raw = obj.get("tool_calls")
    calls_raw = [] if calls_raw is None else calls_raw
    if not isinstance(calls_raw, list):
        raise ConversationError(f"{where}.tool_calls", "must be an array")
    calls = tuple(_parse_call(c, f"{where}.tool_calls[{i}]") for i, c in enumerate(calls_raw))
    if isinstance(obj.get("content"), list):
        content: str | tuple[ContentPart, ...] = _parse_parts(obj["content"], role, where)
    else:  # An assistant turn that only calls tools may have null content (OpenAI's own shape).
        content = _str(obj, "content", where, default="" if calls else None)
    return Message(
        role=cast(Role, role),
        content=content,
        tool_call_id=_opt_str(obj, "tool_call_id", where),
        tool_calls=calls,
        name=_opt_str(obj, "name", where),
    )


IMAGE_SOURCES = ("url", "path", "data")


def _parse_parts(raw: list[Any], role: str, where: str) -> tuple[ContentPart, ...]:
    """Content parts: `{"type": "text", "text"}` and, in user turns, `{"type": "image"}` with
    one of `url`, `path` or `data` (+ `media_type`); OpenAI's `image_url` parts are read too."""
    parts: list[ContentPart] = []
    for i, item in enumerate(raw):
        at = f"{where}.content[{i}]"
        part = _obj(item, at)
        kind = part.get("type")
        if kind == "text":
            parts.append(TextPart(_str(part, "text", at)))
            continue
        if kind not in ("image", "image_url"):
            raise ConversationError(
                f"{at}.type", f"must be 'text' or 'image', got {shown(kind, as_json=True)}"
            )
        if role != "user":
            raise ConversationError(at, "images are allowed only in user messages")
        parts.append(_openai_image(part, at) if kind == "image_url" else _parse_image(part, at))
    return tuple(parts)


def _parse_image(part: Mapping[str, Any], where: str) -> ImagePart:
    given = [key for key in IMAGE_SOURCES if part.get(key) is not None]
    if len(given) != 1:
        raise ConversationError(where, "an image needs exactly one of url, path or data")
    value = _str(part, given[0], where)
    if given[0] == "url":
        return image_from_url(value, f"{where}.url")
    if given[0] == "path":
        if not value:
            raise ConversationError(f"{where}.path", "is empty")
        return ImagePart(path=value)
    media_type = _str(part, "media_type", where)
    return inline_image(media_type, value, f"{where}.data")


def _openai_image(part: Mapping[str, Any], where: str) -> ImagePart:
    """OpenAI's `{"type": "image_url", "image_url": {"url": ...}}` (or a bare string)."""
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, Mapping) else value
    if not isinstance(url, str):
        raise ConversationError(f"{where}.image_url", "must hold a url string")
    return image_from_url(url, f"{where}.image_url")


def image_from_url(url: str, where: str) -> ImagePart:
    """An http(s) URL, or a `data:` URL split into its media type and base64 data."""
    if url.startswith("data:"):
        head, comma, data = url.partition(",")
        media_type, _, encoding = head.removeprefix("data:").partition(";")
        if not comma or encoding != "base64":
            raise ConversationError(where, "a data: URL must be data:<type>;base64,<data>")
        return inline_image(media_type, data, where)
    if not url.startswith(("https://", "http://")) or any(c.isspace() for c in url):
        raise ConversationError(where, "must be an http(s) URL or a data: URL")
    return ImagePart(url=url)


def inline_image(media_type: str, data: str, where: str) -> ImagePart:
    """An inline image whose base64 is checked now, so no vendor is sent what cannot decode."""
    if not media_type.startswith("image/"):
        raise ConversationError(where, f"media type {shown(media_type)} is not an image type")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ConversationError(where, "is not valid base64") from None
    return ImagePart(media_type=media_type, data=data)


def _parse_tool(raw: Any, where: str) -> ToolDefinition:
    obj = _obj(raw, where)
    params = obj.get("parameters", {"type": "object"})
    if not isinstance(params, Mapping):
        raise ConversationError(f"{where}.parameters", "must be a JSON Schema object")
    return ToolDefinition(
        _str(obj, "name", where), _str(obj, "description", where, default=""), params
    )


def _parse_output(raw: Any) -> OutputFormat:
    obj = _obj(raw, "$.output")
    kind = obj.get("type")
    if kind == "json":
        return OutputFormat()
    if kind != "json_schema":
        raise ConversationError(
            "$.output.type", f"must be 'json' or 'json_schema', got {shown(kind, as_json=True)}"
        )
    schema = obj.get("schema")
    if not isinstance(schema, Mapping):
        raise ConversationError("$.output.schema", "must be a JSON Schema object")
    name = _str(obj, "name", "$.output", default="answer")
    if not OUTPUT_NAME.match(name):
        raise ConversationError("$.output.name", "must be 1 to 64 letters, digits, '_' or '-'")
    return OutputFormat(schema, name)


def _parse_conversation(data: Any) -> Conversation:
    deep = too_deep(data)
    if deep is not None:
        raise ConversationError(path_text(deep, "$"), f"nested more than {MAX_NESTING} levels deep")
    obj = _obj(data, "$")
    msgs = obj.get("messages")
    if not isinstance(msgs, Sequence) or isinstance(msgs, str):
        raise ConversationError("$.messages", "is missing or not an array")
    tools_raw = obj.get("tools")
    if tools_raw is not None and not isinstance(tools_raw, list):
        raise ConversationError("$.tools", "must be an array")
    messages = [_parse_message(m, f"$.messages[{i}]") for i, m in enumerate(msgs)]
    tools = (
        None
        if tools_raw is None
        else [_parse_tool(t, f"$.tools[{i}]") for i, t in enumerate(tools_raw)]
    )
    output = _parse_output(obj["output"]) if obj.get("output") is not None else None
    conversation = Conversation(messages, tools, output)
    try:  # a "\ud800" escape decodes to text that cannot be saved or sent
        json.dumps(conversation.to_dict(), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ConversationError(
            "$", "holds text that is not valid Unicode (a lone \\uD800-\\uDFFF escape)"
        ) from None
    return conversation
