"""The one exception-chain walker (story, guardrails and image providers all use it)."""

from __future__ import annotations

from ncanvas_tui.errors import exception_chain


def _raise_chain() -> BaseException:
    try:
        try:
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except OSError as e:
                raise RuntimeError("connect failed") from e
        except RuntimeError:
            raise ValueError("request failed")
    except ValueError as top:
        return top


def test_the_chain_follows_causes_and_contexts_outermost_first() -> None:
    chain = exception_chain(_raise_chain())
    assert [type(e) for e in chain] == [ValueError, RuntimeError, ConnectionRefusedError]
    assert [type(e) for e in exception_chain(_raise_chain(), context=False)] == [ValueError]  # no cause
    assert exception_chain(None) == []


def test_a_cycle_or_a_long_chain_ends() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert exception_chain(a) == [a, b]
    head = cur = RuntimeError("0")
    for i in range(1, 50):
        nxt = RuntimeError(str(i))
        cur.__cause__ = nxt
        cur = nxt
    assert len(exception_chain(head, limit=20)) == 20
