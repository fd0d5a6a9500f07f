"""Builds a :class:`Completion` from stream chunks (sans-IO: chunks in, snapshot out).

It is what makes a broken stream lose nothing: at any moment :meth:`snapshot` gives the
response as received so far, per choice index, with the usage of the last chunk that had one.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._models import Completion, CompletionChoice, CompletionChunk, CompletionUsage, Logprobs

__all__ = ["CompletionAccumulator", "chunk_from_completion"]

# Every _BLOCK fragments of a choice are joined into one block, and blocks are joined only
# when the text is read: memory stays close to the text's size instead of one str object per
# chunk, and the copying stays linear (re-joining everything every N chunks is quadratic).
_BLOCK = 512
_FOLD_BATCH = 128
_FOLD_AT_ONCE = 16


class _ChoiceState:
    __slots__ = ("blocks", "finish_reason", "fragments", "logprobs")

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.fragments: list[str] = []
        self.finish_reason: str | None = None
        self.logprobs: Logprobs | None = None

    def add(self, choice: CompletionChoice) -> None:
        self.fragments.append(choice.text)
        if choice.finish_reason is not None:
            self.finish_reason = choice.finish_reason
        if choice.logprobs is not None:
            self._add_logprobs(choice.logprobs)

    def _add_logprobs(self, part: Logprobs) -> None:
        if self.logprobs is None:
            self.logprobs = _copy_logprobs(part)
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
        if self.fragments:
            self.blocks.append("".join(self.fragments))
            self.fragments.clear()
        if len(self.blocks) > 1:
            self.blocks[:] = ["".join(self.blocks)]
        return self.blocks[0] if self.blocks else ""


# Stands for "no choice seen yet in this batch"; never written to (no index matches None).
_NO_STATE = _ChoiceState()


class CompletionAccumulator:
    """Collects chunks; :meth:`snapshot` returns the same type as a non-streamed call."""

    __slots__ = ("_choices", "_first", "_folded_count", "_incoming", "_usage")

    def __init__(self) -> None:
        self._first: CompletionChunk | None = None
        self._choices: dict[int, _ChoiceState] = {}
        self._usage: CompletionUsage | None = None
        self._folded_count = 0
        # Chunks are only listed as they arrive and folded into the per-choice text in
        # batches: on a live stream (one chunk per network read) a list append is all a chunk
        # costs on the hot path, and the fold loop runs once per batch instead of once per
        # chunk.
        self._incoming: list[CompletionChunk] = []

    def add(self, chunk: CompletionChunk) -> None:
        incoming = self._incoming
        incoming.append(chunk)
        if len(incoming) >= _FOLD_BATCH:
            self._fold()

    def add_many(self, chunks: Sequence[CompletionChunk]) -> None:
        """Add the chunks of one network read at once."""
        if len(chunks) < _FOLD_AT_ONCE:
            incoming = self._incoming
            incoming.extend(chunks)
            if len(incoming) >= _FOLD_BATCH:
                self._fold()
            return
        # A large read is folded right away, while its chunks are still in the CPU caches.
        self._fold()
        self._fold_chunks(chunks)

    @property
    def chunk_count(self) -> int:
        return self._folded_count + len(self._incoming)

    @property
    def usage(self) -> CompletionUsage | None:
        """The usage of the last chunk that carried one."""
        self._fold()
        return self._usage

    def _fold(self) -> None:
        if self._incoming:
            self._fold_chunks(self._incoming)
            self._incoming.clear()

    def _fold_chunks(self, chunks: Sequence[CompletionChunk]) -> None:
        if self._first is None:
            self._first = chunks[0]
        self._folded_count += len(chunks)
        # Nearly every chunk carries one choice, the same as the chunk before: its state and
        # fragment list stay in locals instead of being looked up (or a method called) per
        # chunk, and unpacking the one choice is cheaper than iterating over the list
        # (11 ns of 45 per chunk).
        last_index: int | None = None
        state = _NO_STATE
        append = state.fragments.append
        usage = None
        for chunk in chunks:
            try:
                (choice,) = chunk.choices
            except ValueError:
                # No choice (a usage-only chunk) or several (n > 1): one by one. (The state
                # kept at hand stays valid: a choice's state object is never replaced.)
                for other in chunk.choices:
                    self._state(other.index).add(other)
            else:
                if choice.index != last_index:
                    last_index = choice.index
                    state = self._state(last_index)
                    append = state.fragments.append
                append(choice.text)
                if choice.finish_reason is not None:
                    state.finish_reason = choice.finish_reason
                if choice.logprobs is not None:
                    state._add_logprobs(choice.logprobs)
            if chunk.usage is not None:
                usage = chunk.usage
        if usage is not None:
            self._usage = usage
        for each in self._choices.values():
            if len(each.fragments) >= _BLOCK:
                each.blocks.append("".join(each.fragments))
                each.fragments.clear()

    def _state(self, index: int) -> _ChoiceState:
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = _ChoiceState()
        return state

    def text(self, index: int = 0) -> str:
        """The text received so far for one choice."""
        self._fold()
        state = self._choices.get(index)
        return state.text() if state is not None else ""

    def snapshot(self) -> Completion | None:
        """The completion as received so far; ``None`` before the first chunk."""
        self._fold()
        first = self._first
        if first is None:
            return None
        choices = [
            CompletionChoice(
                index=index,
                text=state.text(),
                finish_reason=state.finish_reason,
                # A copy: later chunks extend the accumulator's lists in place, and a
                # snapshot handed out earlier must not change under its holder.
                logprobs=_copy_logprobs(state.logprobs) if state.logprobs is not None else None,
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
            usage=self._usage,
        )


def _copy_logprobs(logprobs: Logprobs) -> Logprobs:
    top = logprobs.top_logprobs
    return Logprobs(
        tokens=list(logprobs.tokens),
        token_logprobs=list(logprobs.token_logprobs),
        top_logprobs=list(top) if top is not None else None,
        text_offset=list(logprobs.text_offset),
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
