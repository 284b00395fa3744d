"""Raw `openai` and `anthropic` clients: usage recorded with no call to `record`, one `llm.call` per request.

The real clients, against the fake servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("openai")
pytest.importorskip("anthropic")

import anthropic  # noqa: E402
import openai  # noqa: E402

import clearance  # noqa: E402
from clearance._guard._governor import Governor  # noqa: E402
from clearance.integrations._usage_owner import owned  # noqa: E402
from clearance.integrations.anthropic import record as record_message  # noqa: E402
from clearance.integrations.openai import record  # noqa: E402

from ..fake_anthropic import FakeAnthropic  # noqa: E402
from ..fake_openai import FakeOpenAI  # noqa: E402
from ._shared import records  # noqa: E402

MESSAGES: list[Any] = [{"role": "user", "content": "refund A-1"}]
CHAT = ("gpt-4o-mini", 120, 30, 0, 0)  # model, input, output, cached, reasoning
RESPONSES = ("gpt-4o-mini", 200, 40, 50, 10)
CLAUDE = ("claude-sonnet-4-6", 120, 30, 20, 0)  # 100 input + 20 cache reads, 20 of them cached


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic()
    yield server
    server.close()


def usage(gov: Governor, session: str) -> list[tuple[Any, ...]]:
    clearance.flush()
    fields = ("model", "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")
    return [tuple(c[f] for f in fields) for c in records(gov, "llm.call", session)]


def test_openai_chat_completions_plain_streamed_and_raw(configure: Callable[..., Governor], fake_openai: Any) -> None:
    gov = configure()
    with openai.OpenAI(base_url=fake_openai.url, api_key="sk-test", max_retries=0) as client:
        with clearance.session("ses-chat"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            chunks = list(stream)
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
            assert raw.parse() is raw.parse()  # parsed twice, recorded once
            # Without include_usage the API reports no usage: nothing to record, nothing invented.
            list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert len(chunks) == 3 and chunks[-1].usage is not None  # every event passed on
    assert usage(gov, "ses-chat") == [CHAT] * 3
    latencies = [c["latency_ms"] for c in records(gov, "llm.call", "ses-chat")]
    assert all(isinstance(ms, float) and ms >= 0 for ms in latencies)
    assert all(c["priced"] for c in records(gov, "llm.call", "ses-chat"))


def test_openai_responses_api_plain_and_streamed(configure: Callable[..., Governor], fake_openai: Any) -> None:
    gov = configure()
    with openai.OpenAI(base_url=fake_openai.url, api_key="sk-test", max_retries=0) as client:
        with clearance.session("ses-responses"):
            assert client.responses.create(model="gpt-4o-mini", input="hi").output_text == "Done."
            with client.responses.create(model="gpt-4o-mini", input="hi", stream=True) as stream:
                kinds = [event.type for event in stream]
            with client.responses.stream(model="gpt-4o-mini", input="hi") as helper:
                final = helper.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed" and len(kinds) == 8
    assert final.usage is not None and final.usage.input_tokens == 200
    assert usage(gov, "ses-responses") == [RESPONSES] * 3


def test_openai_async_streams_and_a_stream_read_in_another_thread(
    configure: Callable[..., Governor], fake_openai: Any
) -> None:
    """The record goes to the session the request was made in, wherever the stream is read."""
    gov = configure()

    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=fake_openai.url, api_key="sk-test", max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            async with stream:
                assert len([chunk async for chunk in stream]) == 3
            await client.responses.create(model="gpt-4o-mini", input="hi")

    with clearance.session("ses-async"):
        asyncio.run(main())
    with openai.OpenAI(base_url=fake_openai.url, api_key="sk-test", max_retries=0) as client:
        with clearance.session("ses-async"):
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        reader = threading.Thread(target=lambda: list(stream))  # outside the session
        reader.start()
        reader.join(10)
    assert usage(gov, "ses-async") == [CHAT, RESPONSES, CHAT]


def test_anthropic_messages_plain_streamed_and_the_stream_helper(
    configure: Callable[..., Governor], fake_anthropic: Any
) -> None:
    gov = configure()
    with anthropic.Anthropic(base_url=fake_anthropic.url, api_key="sk-ant-test", max_retries=0) as client:
        with clearance.session("ses-claude"):
            client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
            events = list(
                client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES, stream=True)
            )
            with client.messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES) as helper:
                final = helper.get_final_message()
    assert [events[0].type, events[-2].type, events[-1].type] == ["message_start", "message_delta", "message_stop"]
    assert final.content[0].type == "tool_use" and final.usage.output_tokens == 30
    assert usage(gov, "ses-claude") == [CLAUDE] * 3


def test_anthropic_async_and_a_partly_read_stream_records_what_it_saw_when_closed(
    configure: Callable[..., Governor], fake_anthropic: Any
) -> None:
    gov = configure()

    async def main() -> None:
        async with anthropic.AsyncAnthropic(base_url=fake_anthropic.url, api_key="sk-ant-test") as client:
            async with client.messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES) as helper:
                async for _ in helper:
                    pass
            stream = await client.messages.create(
                model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES, stream=True
            )
            async with stream:
                async for event in stream:
                    assert event.type == "message_start"
                    break  # closed here: the input is known, one output token so far

    with clearance.session("ses-claude-async"):
        asyncio.run(main())
    assert usage(gov, "ses-claude-async") == [CLAUDE, ("claude-sonnet-4-6", 120, 1, 20, 0)]


def test_explicit_record_does_not_count_a_captured_response_again(
    configure: Callable[..., Governor], fake_openai: Any, fake_anthropic: Any
) -> None:
    gov = configure()
    with clearance.session("ses-record"):
        with openai.OpenAI(base_url=fake_openai.url, api_key="sk-test", max_retries=0) as client:
            completion = record(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
            record(completion)
            record(client.responses.create(model="gpt-4o-mini", input="hi"))
            record(completion.model_dump())  # a dict is not the captured object: counted
        with anthropic.Anthropic(base_url=fake_anthropic.url, api_key="sk-ant-test") as claude:
            record_message(claude.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES))
    assert usage(gov, "ses-record") == [CHAT, RESPONSES, CHAT, CLAUDE]


def test_requests_a_framework_owns_are_left_to_it(
    configure: Callable[..., Governor], fake_openai: Any, fake_anthropic: Any
) -> None:
    gov = configure()
    with clearance.session("ses-owned"), owned("some-framework"):
        with openai.OpenAI(base_url=fake_openai.url, api_key="sk-test", max_retries=0) as client:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            list(client.responses.create(model="gpt-4o-mini", input="hi", stream=True))
        with anthropic.Anthropic(base_url=fake_anthropic.url, api_key="sk-ant-test") as claude:
            claude.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
    assert usage(gov, "ses-owned") == []


def test_after_shutdown_clients_work_and_nothing_is_recorded(
    configure: Callable[..., Governor], fake_openai: Any
) -> None:
    configure()
    clearance.shutdown()
    with openai.OpenAI(base_url=fake_openai.url, api_key="sk-test", max_retries=0) as client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        assert len(list(stream)) == 3
    assert records(configure(), "llm.call") == []


def test_capture_usage_off_leaves_it_to_the_application(
    configure: Callable[..., Governor], fake_openai: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARANCE_CAPTURE_USAGE", "false")
    gov = configure()
    with clearance.session("ses-off"):
        with openai.OpenAI(base_url=fake_openai.url, api_key="sk-test", max_retries=0) as client:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            record(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert usage(gov, "ses-off") == [CHAT]
