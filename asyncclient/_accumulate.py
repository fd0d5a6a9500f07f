"""Builds a :class:`Completion` from stream chunks (sans-IO: chunks in, snapshot out).

It is what makes a broken stream lose nothing: at any moment :meth:`snapshot` gives the
response as received so far, per choice index, with the usage of the last chunk that had one.
"""

from __future__ import annotations

from ._models import Completion, CompletionChoice, CompletionChunk, CompletionUsage, Logprobs

__all__ = ["CompletionAccumulator", "chunk_from_completion"]

# Text fragments are joined once a choice holds this many, so that memory for a very long
# stream stays close to the size of its text rather than one str object per chunk.
_COMPACT_AT = 512


class _ChoiceState:
    __slots__ = ("finish_reason", "fragments", "logprobs")

    def __init__(self) -> None:
        self.fragments: list[str] = []
        self.finish_reason: str | None = None
        self.logprobs: Logprobs | None = None

    def add(self, choice: CompletionChoice) -> None:
        fragments = self.fragments
        fragments.append(choice.text)
        if len(fragments) >= _COMPACT_AT:
            self.fragments = ["".join(fragments)]
        if choice.finish_reason is not None:
            self.finish_reason = choice.finish_reason
        if choice.logprobs is not None:
            self._add_logprobs(choice.logprobs)

    def _add_logprobs(self, part: Logprobs) -> None:
        if self.logprobs is None:
            self.logprobs = Logprobs(
                tokens=list(part.tokens),
                token_logprobs=list(part.token_logprobs),
                top_logprobs=list(part.top_logprobs) if part.top_logprobs is not None else None,
                text_offset=list(part.text_offset),
            )
            return
        merged = self.logprobs
        merged.tokens.extend(part.tokens)
        merged.token_logprobs.extend(part.token_logprobs)
        merged.text_offset.extend(part.text_offset)
        if part.top_logprobs is not None:
            if merged.top_logprobs is None:
                merged.top_logprobs = []
            merged.top_logprobs.extend(part.top_logprobs)

    def text(self) -> str:
        if len(self.fragments) > 1:
            self.fragments = ["".join(self.fragments)]
        return self.fragments[0] if self.fragments else ""


class CompletionAccumulator:
    """Collects chunks; :meth:`snapshot` returns the same type as a non-streamed call."""

    __slots__ = ("_choices", "_first", "chunk_count", "usage")

    def __init__(self) -> None:
        self._first: CompletionChunk | None = None
        self._choices: dict[int, _ChoiceState] = {}
        self.usage: CompletionUsage | None = None
        self.chunk_count = 0

    def add(self, chunk: CompletionChunk) -> None:
        if self._first is None:
            self._first = chunk
        self.chunk_count += 1
        choices = self._choices
        for choice in chunk.choices:
            state = choices.get(choice.index)
            if state is None:
                state = choices[choice.index] = _ChoiceState()
            state.add(choice)
        if chunk.usage is not None:
            self.usage = chunk.usage

    def text(self, index: int = 0) -> str:
        """The text received so far for one choice."""
        state = self._choices.get(index)
        return state.text() if state is not None else ""

    def snapshot(self) -> Completion | None:
        """The completion as received so far; ``None`` before the first chunk."""
        first = self._first
        if first is None:
            return None
        choices = [
            CompletionChoice(
                index=index,
                text=state.text(),
                finish_reason=state.finish_reason,
                logprobs=state.logprobs,
            )
            for index, state in sorted(self._choices.items())
        ]
        return Completion(
            id=first.id,
            choices=choices,
            model=first.model,
            object=first.object,
            created=first.created,
            system_fingerprint=first.system_fingerprint,
            usage=self.usage,
        )


def chunk_from_completion(completion: Completion) -> CompletionChunk:
    """A whole response as a single chunk: a server may answer a stream request with JSON."""
    return CompletionChunk(
        id=completion.id,
        model=completion.model,
        object=completion.object,
        choices=completion.choices,
        created=completion.created,
        system_fingerprint=completion.system_fingerprint,
        usage=completion.usage,
    )
