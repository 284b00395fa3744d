"""`record_usage`: token usage and cost of one LLM call, recorded in the current session."""

from __future__ import annotations

from ._context import get_session
from ._guard import _runtime
from ._guard._tickets import UsageRecord
from .errors import ConfigurationError


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"record_usage: {name} must be a whole number >= 0, got {value!r}")
    return value


def record_usage(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int = 0,
    reasoning_tokens: int = 0,
    *,
    provider: str | None = None,
    session: str | None = None,
    latency_ms: float | None = None,
) -> UsageRecord:
    """Record one LLM call's token usage, priced with genai-prices, in the current session.

    Args:
        model: The model name as the provider reports it (e.g. `gpt-4o`).
        input_tokens: Prompt tokens, including cached ones.
        output_tokens: Completion tokens, including reasoning ones.
        cached_input_tokens: The part of `input_tokens` read from the provider's cache.
        reasoning_tokens: The part of `output_tokens` spent on reasoning.
        provider: The provider id (`openai`, `anthropic`, …) when the model name is ambiguous.
        session: The session to record it in (default: the current one).
        latency_ms: How long the call took, if known.

    Returns:
        What was recorded; `cost_usd` is None for a model genai-prices does not know (an
        unpriced call, never $0).

    Raises:
        ConfigurationError: A count is negative or not a whole number, or the cached or
            reasoning part exceeds its total.
    """
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError("record_usage: model must be a non-empty string")
    counts = {
        "input_tokens": _count("input_tokens", input_tokens),
        "output_tokens": _count("output_tokens", output_tokens),
        "cached_input_tokens": _count("cached_input_tokens", cached_input_tokens),
        "reasoning_tokens": _count("reasoning_tokens", reasoning_tokens),
    }
    if counts["cached_input_tokens"] > counts["input_tokens"]:
        raise ConfigurationError("record_usage: cached_input_tokens is part of input_tokens and cannot exceed it")
    if counts["reasoning_tokens"] > counts["output_tokens"]:
        raise ConfigurationError("record_usage: reasoning_tokens is part of output_tokens and cannot exceed it")
    return _runtime.current().record_usage(
        model.strip(),
        counts["input_tokens"],
        counts["output_tokens"],
        counts["cached_input_tokens"],
        counts["reasoning_tokens"],
        provider=provider,
        session=session or get_session(),
        latency_ms=latency_ms,
    )


def _get(obj: object, name: str) -> object:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def record_response_usage(response: object, *, provider: str = "openai") -> UsageRecord | None:
    """Record the usage of an OpenAI-style chat completion (an SDK object or its dict).

    Cached prompt tokens and reasoning tokens are taken from the usage details when the
    provider reports them. Returns None when the response carries no usage, or when the raw
    `openai` client capture recorded this very object already (a framework handing on the
    client's response).
    """
    from .integrations._raw_usage import recorded  # (the integrations import this module)

    usage = _get(response, "usage")
    if usage is None or recorded(response):
        return None
    return record_usage(
        str(_get(response, "model") or "unknown"),
        _tokens(usage, "prompt_tokens"),
        _tokens(usage, "completion_tokens"),
        _tokens(_get(usage, "prompt_tokens_details"), "cached_tokens"),
        _tokens(_get(usage, "completion_tokens_details"), "reasoning_tokens"),
        provider=provider,
    )


def _tokens(usage: object, name: str) -> int:
    value = _get(usage, name) if usage is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
