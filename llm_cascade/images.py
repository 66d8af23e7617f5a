"""Images in a conversation: local files read, checked and inlined, and which entries can take
them.

A file becomes base64 inside the conversation before anything is saved or sent, so a saved
prompt can be retried after the file is gone; each image and all of them together are
size-bounded, and only the formats every vision API takes (PNG, JPEG, GIF, WebP) pass, told
by their bytes, not their names. Whether one entry can take a conversation's images (its
`supports` has `vision`, its vendor fetches URLs, the image is within its vendor's limit) is a
pure function the engine asks before it tries the entry.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from . import files
from .errors import UsageError
from .providers import PROVIDER_TYPES
from .types import Conversation, ImagePart, Message

# The largest image any vendor takes (OpenAI's 20 MB), and all of a conversation's together:
# a saved prompt holding them as base64 stays well inside what `failed` reads back.
MAX_IMAGE_BYTES = 20 << 20
MAX_IMAGES_BYTES = 32 << 20
_WEBP = (b"RIFF", b"WEBP")


def sniff(data: bytes) -> str | None:
    """The media type the bytes are, if a format every vision API takes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == _WEBP[0] and data[8:12] == _WEBP[1]:
        return "image/webp"
    return None


def mib(n: int) -> str:
    """`3.6 MiB`: a size for a message (vendor limits are not round in any unit)."""
    return f"{n / (1 << 20):.1f} MiB"


def image_file(path: Path) -> ImagePart:
    """A local image file as an inline part. Raises UsageError naming the file and the problem."""
    try:
        data = files.read_bounded(path, MAX_IMAGE_BYTES)
    except files.ReadRefused as exc:
        raise UsageError(f"image '{path}': {exc}") from None
    except OSError as exc:
        raise UsageError(f"image '{path}': {exc.strerror or exc}") from None
    media_type = sniff(data)
    if media_type is None:
        raise UsageError(f"image '{path}': not a PNG, JPEG, GIF or WebP image")
    return ImagePart(media_type=media_type, data=base64.b64encode(data).decode("ascii"))


def image_source(value: str, base_dir: Path | None = None) -> ImagePart:
    """`run --attach`'s argument: an http(s) URL, or a file (relative to `base_dir`)."""
    if value.startswith(("https://", "http://")):
        if any(c.isspace() for c in value):
            raise UsageError(f"--attach: {value!r} is not a valid URL")
        return ImagePart(url=value)
    path = Path(value).expanduser()
    return image_file(path if path.is_absolute() or base_dir is None else base_dir / path)


def inline(conversation: Conversation, base_dir: Path | None = None) -> Conversation:
    """`conversation` with every image given by `path` read into the conversation (relative
    paths from `base_dir`, else the working directory). Raises UsageError."""
    if not any(i.path is not None for i in conversation.images):
        return _checked(conversation)
    messages = [
        _inlined(m, base_dir) if any(i.path is not None for i in m.images) else m
        for m in conversation.messages
    ]
    return _checked(Conversation(messages, conversation.tools, conversation.output))


def _inlined(msg: Message, base_dir: Path | None) -> Message:
    parts = tuple(
        image_source(p.path, base_dir) if isinstance(p, ImagePart) and p.path is not None else p
        for p in msg.parts
    )
    return replace(msg, content=parts)


def attach(
    conversation: Conversation, sources: Sequence[str], base_dir: Path | None = None
) -> Conversation:
    """The conversation of a `run`: images given by path read in (relative to `base_dir`, the
    conversation file's folder), then the `--attach` images added to its last user turn."""
    conversation = inline(conversation, base_dir)
    if not sources:
        return conversation
    last = conversation.messages[-1] if conversation.messages else None
    if last is None or last.role != "user":
        raise UsageError(
            "--attach adds images to the prompt: the conversation must end with a user message"
        )
    added = tuple(image_source(s) for s in sources)
    messages = [*conversation.messages[:-1], replace(last, content=(*last.parts, *added))]
    return _checked(Conversation(messages, conversation.tools, conversation.output))


def _checked(conversation: Conversation) -> Conversation:
    images = conversation.images
    total = sum(i.size for i in images)
    if total > MAX_IMAGES_BYTES:
        raise UsageError(
            f"the conversation's images come to {mib(total)}, more than the"
            f" {mib(MAX_IMAGES_BYTES)} allowed in one conversation"
        )
    for image in images:
        if image.size > MAX_IMAGE_BYTES:
            raise UsageError(
                f"an image of {mib(image.size)} is larger than the {mib(MAX_IMAGE_BYTES)} limit"
            )
    return conversation


def unfit(images: Iterable[ImagePart], type_name: str, supports: frozenset[str]) -> str | None:
    """Why an entry of this provider type cannot take these images, or None if it can."""
    images = list(images)
    if not images:
        return None
    if "vision" not in supports:
        return "does not support images (its `supports` has no 'vision')"
    kind = PROVIDER_TYPES[type_name]
    if not kind.image_urls and any(i.url is not None for i in images):
        return f"a {type_name} provider cannot fetch image URLs; attach the file instead"
    biggest = max(i.size for i in images)
    if biggest > kind.max_image_bytes:
        return (
            f"an image of {mib(biggest)} is over the {mib(kind.max_image_bytes)} limit of"
            f" {type_name} providers"
        )
    return None
