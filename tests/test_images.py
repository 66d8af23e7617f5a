"""Images in conversations: content parts in and out of JSON, files read and checked, each
vendor's shape, `run --attach`, entries without vision skipped, saved prompts that keep them."""

from __future__ import annotations

import base64
import json

import pytest

from llm_cascade import images
from llm_cascade.errors import ConversationError, UsageError
from llm_cascade.providers import get_adapter
from llm_cascade.providers.base import CallOptions
from llm_cascade.simulator import Fail, Reply
from llm_cascade.types import Conversation, ImagePart, Message, OutputFormat, TextPart

from .providers.helpers import provider_table
from .support import HELP_HINT, entry, run_cli, saved_envelopes, saved_files, tiny_png, write_config

PNG = tiny_png()
PNG_B64 = base64.b64encode(PNG).decode()
OPTIONS = CallOptions(model="m", base_url="http://127.0.0.1:9", api_key="k")
NATIVE_SHAPES = ("openai", "anthropic", "gemini", "ollama")


def with_image(image: ImagePart) -> Conversation:
    return Conversation([Message.user([TextPart("What is this?"), image])])


# --- the JSON form -----------------------------------------------------------------------------


def test_a_plain_string_message_stays_a_string_in_and_out():
    doc = {"messages": [{"role": "user", "content": "hi"}]}
    conversation = Conversation.from_dict(doc)
    assert conversation.messages[0] == Message.user("hi")
    assert conversation.to_dict() == doc
    assert conversation.messages[0].parts == (TextPart("hi"),)


def test_parts_load_in_every_form_and_are_saved_in_one():
    doc = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare"},
                    {"type": "image", "url": "https://example.com/a.png"},
                    {"type": "image", "media_type": "image/png", "data": PNG_B64},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                    {"type": "image", "path": "cat.png"},
                    {"type": "text", "text": "and say which is red."},
                ],
            }
        ]
    }
    message = Conversation.from_dict(doc).messages[0]
    assert message.text == "Compare\nand say which is red."
    url, inline, from_openai, path = message.images
    assert url == ImagePart(url="https://example.com/a.png")
    assert inline == from_openai == ImagePart(media_type="image/png", data=PNG_B64)
    assert inline.size == len(PNG)
    assert path == ImagePart(path="cat.png")
    saved = Conversation([message]).to_dict()["messages"][0]["content"]
    assert saved[3] == {"type": "image", "media_type": "image/png", "data": PNG_B64}
    assert (
        Conversation.from_dict({"messages": [{"role": "user", "content": saved}]}).messages[0]
        == message
    )


@pytest.mark.parametrize(
    ("content", "where", "problem"),
    [
        ([{"type": "video", "url": "x"}], "content[0].type", "must be 'text' or 'image'"),
        ([{"type": "image"}], "content[0]", "exactly one of url, path or data"),
        (
            [{"type": "image", "url": "https://a/b.png", "path": "b.png"}],
            "content[0]",
            "exactly one of url, path or data",
        ),
        ([{"type": "image", "url": "ftp://a/b.png"}], "content[0].url", "http(s) URL"),
        (
            [{"type": "image", "media_type": "image/png", "data": "not base64!"}],
            "content[0].data",
            "not valid base64",
        ),
        (
            [{"type": "image", "media_type": "text/html", "data": PNG_B64}],
            "content[0].data",
            "not an image type",
        ),
        (
            [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}],
            "content[0].image_url",
            "data:<type>;base64,<data>",
        ),
        ([{"type": "text"}], "content[0].text", "is missing"),
    ],
)
def test_malformed_parts_name_their_place(content, where, problem):
    with pytest.raises(ConversationError) as caught:
        Conversation.from_dict({"messages": [{"role": "user", "content": content}]})
    assert caught.value.where == f"$.messages[0].{where}"
    assert problem in str(caught.value)


def test_images_belong_to_user_turns_only():
    doc = {
        "messages": [{"role": "assistant", "content": [{"type": "image", "url": "https://a/b"}]}]
    }
    with pytest.raises(ConversationError, match="only in user messages"):
        Conversation.from_dict(doc)


# --- files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "media_type"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 20, "image/jpeg"),
        (b"GIF89a" + b"\0" * 20, "image/gif"),
        (b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 20, "image/webp"),
    ],
)
def test_an_image_file_is_known_by_its_bytes_not_its_name(tmp_path, head, media_type):
    path = tmp_path / "picture.dat"
    path.write_bytes(head)
    assert images.image_file(path) == ImagePart(
        media_type=media_type, data=base64.b64encode(head).decode()
    )


def test_image_files_that_cannot_be_sent_are_usage_errors(tmp_path):
    (tmp_path / "notes.png").write_text("just text")
    huge = tmp_path / "huge.png"
    with huge.open("wb") as f:
        f.write(PNG)
        f.truncate(images.MAX_IMAGE_BYTES + 1)
    problems = {
        "missing.png": "No such file or directory",
        "notes.png": "not a PNG, JPEG, GIF or WebP image",
        "huge.png": "larger than the 20 MiB limit",
        ".": "Is a directory",
    }
    for name, problem in problems.items():
        with pytest.raises(UsageError) as caught:
            images.image_file(tmp_path / name)
        assert problem in str(caught.value), name


def test_paths_are_read_in_from_the_given_folder(tmp_path):
    (tmp_path / "cat.png").write_bytes(PNG)
    conversation = with_image(ImagePart(path="cat.png"))
    inlined = images.inline(conversation, tmp_path)
    assert inlined.images == (ImagePart(media_type="image/png", data=PNG_B64),)
    assert inlined.messages[0].text == "What is this?"


@pytest.mark.parametrize(
    ("ptype", "image", "supports", "problem"),
    [
        ("openai", ImagePart(url="https://a/b.png"), {"tools"}, "no 'vision'"),
        ("gemini", ImagePart(url="https://a/b.png"), {"vision"}, "cannot fetch image URLs"),
        ("ollama", ImagePart(url="https://a/b.png"), {"vision"}, "cannot fetch image URLs"),
        (
            "anthropic",
            ImagePart(media_type="image/png", data="A" * (8 << 20)),
            {"vision"},
            "an image of 6.0 MiB is over the 5.0 MiB",
        ),
        ("openai", ImagePart(url="https://a/b.png"), {"vision"}, None),
        ("anthropic", ImagePart(url="https://a/b.png"), {"vision"}, None),
    ],
)
def test_which_entries_can_take_an_image(ptype, image, supports, problem):
    why = images.unfit([image], ptype, frozenset(supports))
    assert why is None if problem is None else problem in why


# --- each vendor's shape -------------------------------------------------------------------------


def test_each_vendor_gets_the_image_in_its_own_shape():
    inline = with_image(ImagePart(media_type="image/png", data=PNG_B64))
    bodies = {t: get_adapter(t).build_request(inline, OPTIONS).body for t in NATIVE_SHAPES}
    data_url = f"data:image/png;base64,{PNG_B64}"
    assert bodies["openai"]["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": data_url}},
    ]
    assert bodies["anthropic"]["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
    ]
    assert bodies["gemini"]["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": PNG_B64}},
    ]
    assert bodies["ollama"]["messages"][0] == {
        "role": "user",
        "content": "What is this?",
        "images": [PNG_B64],
    }


def test_an_image_url_goes_to_the_vendors_that_fetch_one():
    by_url = with_image(ImagePart(url="https://example.com/cat.png"))
    openai = get_adapter("openai").build_request(by_url, OPTIONS).body
    anthropic = get_adapter("anthropic").build_request(by_url, OPTIONS).body
    assert openai["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/cat.png"},
    }
    assert anthropic["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.png"},
    }


def test_a_text_only_parts_list_is_sent_as_plain_text():
    conversation = Conversation([Message.user([TextPart("a"), TextPart("b")])])
    body = get_adapter("openai").build_request(conversation, OPTIONS).body
    assert body["messages"][0]["content"] == "a\nb"


# --- the command line ----------------------------------------------------------------------------


def _config(tmp_path, sim, *types):
    providers = {t: provider_table(sim, t) for t in types}
    return write_config(
        tmp_path, sim, {"x": [entry(t, f"{t}-model") for t in types]}, providers=providers
    )


@pytest.mark.parametrize("ptype", ["openai", "anthropic", "gemini"])
def test_attach_sends_the_file_to_each_vendor_which_takes_it(tmp_path, sim, ptype):
    (tmp_path / "cat.png").write_bytes(PNG)
    sim.script(f"{ptype}-model", Reply("A red pixel."))
    cfg = _config(tmp_path, sim, ptype)

    done = run_cli(
        "run", "-C", "x", "-c", str(cfg), "-p", "What is this?", "-a", "cat.png", cwd=tmp_path
    )

    assert (done.returncode, done.stdout) == (0, "A red pixel.\n"), done.stderr
    assert PNG_B64 in json.dumps(sim.requests[0].body)  # and the simulator checked its shape


def test_an_entry_without_vision_is_skipped_without_a_request(tmp_path, sim):
    (tmp_path / "cat.png").write_bytes(PNG)
    cfg = _config(tmp_path, sim, "ollama", "openai")  # Ollama's default supports: no vision

    done = run_cli(
        "run", "-C", "x", "-c", str(cfg), "-p", "hi", "-a", str(tmp_path / "cat.png"), "--explain"
    )

    assert done.returncode == 0, done.stderr
    assert [r.vendor for r in sim.requests] == ["openai"]
    assert (
        "ollama/ollama-model  skipped, cannot serve this request: does not support images"
        in done.stderr
    )


def test_vision_declared_per_entry_lets_it_take_images(tmp_path, sim):
    (tmp_path / "cat.png").write_bytes(PNG)
    providers = {"ollama": provider_table(sim, "ollama")}
    llava = entry("ollama", "llava", supports=["vision", "stream"])
    cfg = write_config(tmp_path, sim, {"x": [llava]}, providers=providers)

    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "-a", str(tmp_path / "cat.png"))

    assert done.returncode == 0, done.stderr
    assert sim.requests[0].body["messages"][0]["images"] == [PNG_B64]


def test_a_cascade_that_cannot_take_images_is_a_usage_error_before_anything_is_sent(tmp_path, sim):
    (tmp_path / "cat.png").write_bytes(PNG)
    cfg = _config(tmp_path, sim, "ollama")

    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "-a", str(tmp_path / "cat.png"))

    assert done.returncode == 2
    assert HELP_HINT.fullmatch(done.stderr.splitlines()[1])
    assert "nothing was sent: no entry supports images" in done.stderr
    assert sim.requests == []
    assert saved_files(tmp_path / "failed") == []


def test_an_image_over_one_vendors_limit_skips_only_that_vendor(tmp_path, sim):
    big = tmp_path / "big.png"
    big.write_bytes(PNG + b"\0" * (6 << 20))  # over Anthropic's 5 MB, under OpenAI's 20 MB
    cfg = _config(tmp_path, sim, "anthropic", "openai")

    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "-a", str(big), "--json")

    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)["attempts"][0]
    assert (first["outcome"], first["rule"]) == ("skipped", "capability")
    assert "over the 5.0 MiB limit of anthropic providers" in first["detail"]
    assert [r.vendor for r in sim.requests] == ["openai"]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("missing.png", None, "No such file or directory"),
        ("notes.txt", b"not an image", "not a PNG, JPEG, GIF or WebP image"),
    ],
)
def test_a_bad_attachment_is_one_line_and_exit_2_with_nothing_sent(
    tmp_path, sim, name, content, problem
):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    cfg = _config(tmp_path, sim, "openai")

    done = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "hi", "-a", str(tmp_path / name))

    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == f"Error: image '{tmp_path / name}': {problem}"
    assert sim.requests == []


def test_a_saved_prompt_keeps_its_image_and_is_retried_after_the_file_is_gone(tmp_path, sim):
    picture = tmp_path / "cat.png"
    picture.write_bytes(PNG)
    sim.script("openai-model", Fail(503, "busy"))
    cfg = _config(tmp_path, sim, "openai")

    failed = run_cli("run", "-C", "x", "-c", str(cfg), "-p", "What is this?", "-a", str(picture))
    assert failed.returncode == 1
    picture.unlink()
    [saved] = saved_files(tmp_path / "failed")
    content = json.loads(saved.read_text())["conversation"]["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "media_type": "image/png", "data": PNG_B64},
    ]
    shown = run_cli("failed", "show", saved.stem, "-c", str(cfg))
    assert "user [1 image(s)]: What is this?" in shown.stdout

    sim.reset()
    sim.script("openai-model", Reply("A red pixel."))
    run_cli("reset", "--all", "-c", str(cfg))  # the 503 cooled the entry down
    retried = run_cli("failed", "retry", "--all", "-c", str(cfg))

    assert retried.returncode == 0, retried.stderr
    assert "A red pixel." in retried.stdout
    assert PNG_B64 in json.dumps(sim.requests[0].body)


def test_a_conversation_file_reads_its_image_paths_from_its_own_folder(tmp_path, sim):
    folder = tmp_path / "chats"
    folder.mkdir()
    (folder / "cat.png").write_bytes(PNG)
    doc = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "image", "path": "cat.png"}],
            }
        ]
    }
    (folder / "chat.json").write_text(json.dumps(doc))
    cfg = _config(tmp_path, sim, "anthropic")

    done = run_cli("run", "-C", "x", "-c", str(cfg), "-f", str(folder / "chat.json"))

    assert done.returncode == 0, done.stderr
    sent = sim.requests[0].body["messages"][0]["content"][1]
    assert sent["source"]["data"] == PNG_B64


def test_attach_needs_the_conversation_to_end_with_a_user_turn(tmp_path, sim):
    (tmp_path / "cat.png").write_bytes(PNG)
    doc = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    (tmp_path / "chat.json").write_text(json.dumps(doc))
    cfg = _config(tmp_path, sim, "openai")

    done = run_cli(
        "run",
        "-C",
        "x",
        "-c",
        str(cfg),
        "-f",
        str(tmp_path / "chat.json"),
        "-a",
        "cat.png",
        cwd=tmp_path,
    )

    assert done.returncode == 2
    assert "must end with a user message" in done.stderr
    assert sim.requests == []


def test_attach_is_repeatable_and_takes_urls(tmp_path, sim):
    (tmp_path / "cat.png").write_bytes(PNG)
    cfg = _config(tmp_path, sim, "openai")

    done = run_cli(
        "run",
        "-C",
        "x",
        "-c",
        str(cfg),
        "-p",
        "two",
        "-a",
        "cat.png",
        "--attach",
        "https://example.com/dog.jpg",
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    parts = sim.requests[0].body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]
    assert parts[2]["image_url"]["url"] == "https://example.com/dog.jpg"


def test_failed_retry_through_a_cascade_without_vision_skips_that_prompt_and_goes_on(tmp_path, sim):
    picture = tmp_path / "cat.png"
    picture.write_bytes(PNG)
    providers = {"openai": provider_table(sim, "openai"), "ollama": provider_table(sim, "ollama")}
    cascades = {"x": [entry("openai", "openai-model")], "text": [entry("ollama", "llama")]}
    cfg = write_config(tmp_path, sim, cascades, providers=providers)
    sim.script("openai-model", Fail(503, "busy"))
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "a", "-a", str(picture)).returncode == 1
    assert run_cli("run", "-C", "x", "-c", str(cfg), "-p", "b").returncode == 1
    sim.reset()

    done = run_cli("failed", "retry", "--all", "-C", "text", "-c", str(cfg))

    assert done.returncode == 1, done.stderr  # one prompt still failing
    assert "nothing was sent: no entry supports images" in done.stdout + done.stderr
    assert [r.body["messages"][0]["content"] for r in sim.requests] == ["b"]  # the other went
    left = saved_envelopes(tmp_path / "failed")
    assert [p["conversation"]["messages"][0]["content"][0]["text"] for p in left] == ["a"]


def test_attaching_an_image_keeps_the_conversations_output_format(tmp_path):
    picture = tmp_path / "p.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 8)
    asked = Conversation([Message.user("what?")], output=OutputFormat())
    attached = images.attach(asked, [str(picture)])
    assert attached.output == OutputFormat() and len(attached.images) == 1
