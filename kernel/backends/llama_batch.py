"""Continuous batching for llama.cpp: many sequences in one context, one decode per step.

A ``Batcher`` owns a llama.cpp context made for ``n_seq`` sequences over one unified KV
cache (a sequence alone may use the whole context, unlike llama-server's slots). Its loop
runs on the Mold's Worker thread, as one job that lasts while sequences run. Each step puts
the next token of every running sequence and a bounded chunk of each new prompt into one
``llama_batch``, decodes once, and samples each sequence that got logits with its own
sampler chain (penalties, grammar, then sampling with its own seed: the high-level API's
order). Sequences join and leave between steps; a cancelled one leaves within one token.

When the KV cache is full, the youngest sequence is preempted: its cells are freed and it
waits, prompt and answer so far, to be evaluated again when there is room. Its sampler
chain is kept, so its answer goes on as if nothing happened; nothing is truncated.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncGenerator, Callable

import llama_cpp
from llama_cpp import _internals

from ..errors import ContextOverflow, InferenceError
from ..mold import Occupancy
from ..schema import Chunk, InferenceOptions, Stats
from ..worker import Worker, _post, _settle, bridged, uncancellable
from .llama_runtime import sampling
from .llama_sampling import common_prefix, sampler_chain
from .llama_sequence import Reader, Sequence


class Batcher:
    """The sequences of one loaded model; ``stream`` is its async face."""

    def __init__(
        self,
        llm: llama_cpp.Llama,
        piece: Callable[[int], bytes],
        worker: Worker,
        n_seq: int,
        n_ctx: int,
        chunk: int = 128,
    ) -> None:
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx, params.n_seq_max, params.kv_unified = n_ctx, n_seq, True
        # llama.cpp's own default (llama-server's too); llama-cpp-python turns it off
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
        params.n_batch = params.n_ubatch = max(chunk, 512)
        self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self._mem = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._vocab = llm._model.vocab
        self._n_vocab = llm.n_vocab()
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx.ctx)
        self.n_batch = int(params.n_batch)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, n_seq)
        self._piece = piece
        self._worker, self.chunk, self.n_seq = worker, chunk, n_seq
        self._free = list(range(n_seq))
        self._waiting: deque[Sequence] = deque()  # new and preempted sequences, oldest first
        self._running: list[Sequence] = []
        # seq ids whose KV cells hold a finished request's tokens, least recent first
        self._cached: OrderedDict[int, list[int]] = OrderedDict()
        self._lock = threading.Lock()  # guards _waiting and _active across threads
        self._active = self._closed = False
        # what ran: steps, and sequences carried by width (tests and /metrics read them)
        self.steps = self.preempted = self.busy_steps = self.busy_carried = 0
        self.widths: Counter[int] = Counter()  # steps by the sequences they carried
        self.hits = self.hit_tokens = 0  # requests that reused a cached prompt, and its tokens
        self.max_unread, self.stall_after = 256, 30.0  # a reader stuck this long is cut
        # set to {} to record each sequence's top-2 logit gaps, by prompt (tests compare
        # batched answers with lone ones up to the first near-tie)
        self.gaps: dict[tuple[int, ...], list[float]] | None = None

    # -- the async face ----------------------------------------------------------------

    async def stream(
        self,
        tokens: list[int],
        options: InferenceOptions,
        grammar: str | None,
        n_ctx: int | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """Generate after ``tokens``; chunks as they come, the last with stats and context.
        Closing the iterator cancels the sequence before its next token."""
        limit = min(self.n_ctx, n_ctx or self.n_ctx)
        if len(tokens) >= limit:
            raise ContextOverflow(len(tokens), limit)
        o, budget = sampling(options, limit - len(tokens))
        if budget <= 0:  # nothing to make (num_predict 0): as the unbatched path answers
            stats = Stats(prompt_eval_count=len(tokens))
            yield Chunk(done=True, done_reason="length", stats=stats, context=list(tokens))
            return
        chain = sampler_chain(self._vocab, self._n_vocab, o, options.seed, grammar)
        cancel, reader = threading.Event(), Reader()
        loop = asyncio.get_running_loop()
        left: asyncio.Future[None] = loop.create_future()  # the sequence is out of the batch

        def finished(done: asyncio.Future[None], error: BaseException | None) -> None:
            _settle(done, None, error)
            _settle(left, None, None)

        submitted = False

        async def work(report: Callable[[Chunk], None]) -> None:
            nonlocal submitted
            done: asyncio.Future[None] = loop.create_future()
            seq = Sequence(
                tokens=list(tokens),
                budget=budget,
                chain=chain,
                emit=report,
                finished=lambda e: _post(loop, finished, done, e),
                cancel=cancel,
                stop=list(options.stop),
                reader=reader,
            )
            self._submit(seq)
            submitted = True
            await done

        try:
            yield Chunk(stats=Stats(prompt_eval_count=len(tokens)))
            async for chunk in bridged(work):
                yield chunk
                reader.taken, reader.last = reader.taken + 1, time.monotonic()
        finally:
            cancel.set()
            # A caller that stops reading holds its slot until the worker has taken the
            # sequence out (within one step), so a slot freed is a sequence freed too;
            # the HTTP layer cancels a leaving client's task more than once.
            if not submitted:
                llama_cpp.llama_sampler_free(chain)
            else:
                await uncancellable(left)

    def _submit(self, seq: Sequence) -> None:
        with self._lock:
            self._waiting.append(seq)
            start, self._active = not self._active, True
        if start:
            self._worker.post(self._run)

    # -- the loop, on the worker thread ------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._admit()
                if not self._running:
                    with self._lock:
                        if not self._waiting:
                            self._active = False
                            return
                    continue
                self._step()
                ok = self._worker.run_pending()  # tokenize, embed... between steps
                if self._closed:  # unloaded meanwhile: close() failed what ran, and the
                    return  # context (and maybe the model) is gone: touch nothing
                if not ok:
                    self._fail_all(InferenceError("the engine is closing"))
                    return
        except BaseException as e:  # never leave a waiting request hanging
            self._fail_all(e)
            with self._lock:
                self._active = False

    def _admit(self) -> None:
        """Move waiting sequences in while there are seq ids and room for their tokens.
        A sequence takes over the cached one sharing its longest prefix, so only its new
        tokens are evaluated (a chat's next turn). One cancelled while waiting just leaves."""
        with self._lock:
            gone = [s for s in self._waiting if s.cancel.is_set()]
            for seq in gone:
                self._waiting.remove(seq)
        for seq in gone:  # it holds no KV cells: a waiting one never has
            llama_cpp.llama_sampler_free(seq.chain)
            seq.finished(None)
        with self._lock:
            while self._waiting and (self._free or self._cached):
                seq = self._waiting[0]
                used = sum(len(s.tokens) + 1 for s in self._running)
                if self._running and used + len(seq.tokens) + 1 > self.n_ctx:
                    break  # it waits for room; alone, any prompt that fits may start
                self._waiting.popleft()
                self._running.append(seq)
                seq.id, seq.fed = self._reuse(seq.tokens)
                if seq.next is None and seq.fed:  # a new prompt found cached, not a resumed one
                    seq.cached = seq.fed
                    self.hits, self.hit_tokens = self.hits + 1, self.hit_tokens + seq.fed

    def _reuse(self, tokens: list[int]) -> tuple[int, int]:
        """A seq id for ``tokens`` and how many of them its KV cells already hold."""
        best, common = -1, 0
        for sid, held in self._cached.items():
            n = common_prefix(held, tokens)
            if n > common:
                best, common = sid, n
        if best >= 0:
            del self._cached[best]
            common = min(common, len(tokens) - 1)  # the last token is evaluated for logits
            llama_cpp.llama_memory_seq_rm(self._mem, best, common, -1)
            return best, common
        if not self._free:  # every id is a cached prompt: the least recent goes
            sid, _ = self._cached.popitem(last=False)
            llama_cpp.llama_memory_seq_rm(self._mem, sid, -1, -1)
            self._free.append(sid)
        return self._free.pop(0), 0

    def _step(self) -> None:
        for seq in [s for s in self._running if s.cancel.is_set()]:
            self._finish(seq, "cancel")
        # The plan first: a failed decode leaves the KV cache as it was, so nothing moves
        # until it succeeds. (seq, tokens fed this step, whether its last one is sampled)
        plan: list[tuple[Sequence, int, bool]] = []
        self._batch.n_tokens = 0
        room = self.n_batch - len(self._running)
        for seq in self._running:
            if seq.fed < len(seq.tokens):  # a prompt: a bounded chunk per step
                n = min(len(seq.tokens) - seq.fed, self.chunk, max(room, 1))
                room -= n
                end = seq.fed + n
                wants = end == len(seq.tokens) and seq.next is None  # resumed: next is known
                for k in range(seq.fed, end):
                    self._add(seq.tokens[k], k, seq.id, wants and k == end - 1)
                plan.append((seq, n, wants))
            elif seq.next is not None:
                self._add(seq.next, seq.fed, seq.id, True)
                plan.append((seq, 1, True))
        if not plan:
            return
        rc = llama_cpp.llama_decode(self._ctx.ctx, self._batch)
        if rc == 1:  # no room in the KV cache: drop a cached prompt, else preempt; retry
            if not self._drop_cached():
                self._preempt()
            return
        if rc != 0:
            raise InferenceError(f"llama_decode failed ({rc})")
        self.steps += 1
        self.widths[len(plan)] += 1
        if len(self._running) + len(self._waiting) >= 4:  # demand for 4 or more
            self.busy_steps += 1
            self.busy_carried += len(plan)
        index = 0
        for seq, n, wants in plan:
            index += n
            if seq.fed == len(seq.tokens) and seq.next is not None:  # a decode step
                seq.tokens.append(seq.next)
                seq.next = None
            seq.fed += n
            if wants:
                if self.gaps is not None:
                    seq.gaps.append(self._gap(index - 1))
                self._sampled(
                    seq, llama_cpp.llama_sampler_sample(seq.chain, self._ctx.ctx, index - 1)
                )

    def _gap(self, index: int) -> float:
        """The gap between the two highest logits at batch ``index``: below ~0.5, another
        batch shape's arithmetic may pick the other token."""
        import numpy as np

        row = llama_cpp.llama_get_logits_ith(self._ctx.ctx, index)
        top = np.partition(np.ctypeslib.as_array(row, shape=(self._n_vocab,)), -2)[-2:]
        return float(top[1] - top[0])

    def _add(self, token: int, pos: int, seq_id: int, logits: bool) -> None:
        b, i = self._batch, self._batch.n_tokens
        b.token[i], b.pos[i], b.n_seq_id[i] = token, pos, 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits
        b.n_tokens = i + 1

    def _sampled(self, seq: Sequence, token: int) -> None:
        now = time.perf_counter_ns()
        seq.first = seq.first or now
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(seq, "stop")
            return
        seq.answer.append(token)
        seq.budget -= 1
        if text := seq.matcher.feed(seq.decoder.decode(self._piece(token))):
            seq.emit(Chunk(text))
            seq.emitted += 1
        if self._stuck(seq):  # its reader stopped reading: what it left waiting is bounded
            self._finish(seq, "cancel")
        elif seq.matcher.stopped:
            self._finish(seq, "stop")
        elif seq.budget <= 0:
            self._finish(seq, "length")
        elif seq.cancel.is_set():
            self._finish(seq, "cancel")
        else:
            seq.next = token

    def _stuck(self, seq: Sequence) -> bool:
        """Whether ``seq``'s reader has left ``max_unread`` chunks unread for ``stall_after``
        seconds: the decode step never waits for a reader, so one that is stuck is cut."""
        unread = seq.emitted - seq.reader.taken
        return unread >= self.max_unread and time.monotonic() - seq.reader.last > self.stall_after

    def _finish(self, seq: Sequence, reason: str) -> None:
        self._release(seq, keep=True)
        if tail := seq.matcher.feed(seq.decoder.decode(b"", final=True)) + seq.matcher.flush():
            seq.emit(Chunk(tail))
        end = time.perf_counter_ns()
        first = seq.first or end
        evaluated = seq.prompt_count - seq.cached
        stats = Stats(evaluated, first - seq.start, len(seq.answer), end - first)
        stats.prompt_cached = seq.cached
        context = seq.tokens[: seq.prompt_count] + seq.answer
        if self.gaps is not None:
            self.gaps[tuple(seq.tokens[: seq.prompt_count])] = seq.gaps
        last = Chunk(done=True, done_reason=reason, stats=stats, context=context)  # type: ignore[arg-type]
        last.stop_sequence = seq.matcher.hit
        seq.emit(last)
        llama_cpp.llama_sampler_free(seq.chain)
        seq.finished(None)

    def _release(self, seq: Sequence, keep: bool = False) -> None:
        """Take ``seq`` out; ``keep`` leaves its KV cells as a cached prompt for the next
        request that starts the same way."""
        self._running.remove(seq)
        if keep and seq.fed:
            with self._lock:
                self._cached[seq.id] = seq.tokens[: seq.fed]
        else:
            llama_cpp.llama_memory_seq_rm(self._mem, seq.id, -1, -1)
            self._free.append(seq.id)
        seq.id = -1

    def occupancy(self, slots: int) -> Occupancy:
        """What runs and what the KV cache holds. Read on the event loop while the worker
        steps: the lists are copied under the lock, so the figures are one moment's."""
        with self._lock:
            running = list(self._running)
            cached = sum(len(held) for held in self._cached.values())
        used = sum(s.fed for s in running)
        widths, hits, hit_tokens = dict(self.widths), self.hits, self.hit_tokens
        return Occupancy(
            slots, len(running), used, cached, self.n_ctx, self.steps, widths, hits, hit_tokens
        )

    def clear_cache(self) -> None:
        """Forget every cached prompt (on the worker thread, between steps)."""
        while self._drop_cached():
            pass

    def _drop_cached(self) -> bool:
        with self._lock:
            if not self._cached:
                return False
            sid, _ = self._cached.popitem(last=False)
            self._free.append(sid)
        llama_cpp.llama_memory_seq_rm(self._mem, sid, -1, -1)
        return True

    def _preempt(self) -> None:
        """Free the youngest sequence's cells; it waits at the head of the queue, and when
        resumed its tokens so far are evaluated again (its sampled ``next`` is kept)."""
        if len(self._running) == 1:
            raise InferenceError("the KV cache cannot hold one sequence of this context")
        seq = self._running[-1]
        self._release(seq)
        seq.fed = 0
        self.preempted += 1
        with self._lock:
            self._waiting.appendleft(seq)

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            pending = [*self._running, *self._waiting]
            self._running, self._waiting = [], deque()
            self._cached.clear()
            self._active = False
        for seq in pending:
            with contextlib.suppress(Exception):
                llama_cpp.llama_sampler_free(seq.chain)
            seq.finished(error)
        if not self._closed:
            llama_cpp.llama_memory_clear(self._mem, False)
        self._free = list(range(self.n_seq))

    def close(self) -> None:
        """Free the context, on the worker thread; a sequence still running fails."""
        if self._closed:
            return
        self._fail_all(InferenceError("the model was unloaded"))
        self._closed = True
        llama_cpp.llama_batch_free(self._batch)
        self._ctx.close()  # type: ignore[no-untyped-call]
