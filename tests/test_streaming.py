"""TextStream: whole UTF-8 characters only, stop strings cut cleanly and never shown, at a cost linear in the text."""

import codecs

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from danlu import streaming
from danlu.errors import DanluError
from danlu.streaming import MAX_STOP_CHARS, MAX_STOPS_TOTAL_CHARS, TextStream


def feed_all(stream: TextStream, pieces: list[bytes]) -> tuple[str, bool]:
    out, stopped = [], False
    for piece in pieces:
        got = stream.feed(piece)
        out.append(got.text)
        if got.stopped:
            stopped = True
            break
    if not stopped:
        out.append(stream.flush())
    return "".join(out), stopped


def bytewise(text: str) -> list[bytes]:
    return [bytes([b]) for b in text.encode("utf-8")]


def test_chinese_split_across_tokens_never_yields_replacement_char():
    stream = TextStream()
    shown = [stream.feed(b).text for b in bytewise("长城很长")]
    assert all("\ufffd" not in s for s in shown)
    assert "".join(shown) == "长城很长"
    assert shown[0] == "" and shown[2] == "长"  # the first character appears only when whole


def test_stop_string_is_cut_and_not_shown():
    text, stopped = feed_all(TextStream(stop=["\n\nUser:"]), bytewise("你好！\n\nUser: 再见"))
    assert stopped and text == "你好！"


def test_text_that_only_looks_like_a_stop_prefix_is_released():
    text, stopped = feed_all(TextStream(stop=["<|im_end|>"]), bytewise("a<|im_x 中"))
    assert not stopped and text == "a<|im_x 中"


def test_held_back_prefix_is_not_shown_early():
    stream = TextStream(stop=["Human:"])
    assert stream.feed("答案 Hum".encode()).text == "答案 "
    assert stream.feed(b"an:").stopped


def test_earliest_stop_wins():
    text, _ = feed_all(TextStream(stop=["B", "A"]), [b"xxAyyB"])
    assert text == "xx"


def test_the_first_stop_to_complete_wins_however_the_tokens_cut_the_text():
    """`>` completes before `<><` does: the same answer for one token or three (today's code said "" vs "<")."""
    assert feed_all(TextStream(stop=["<><", ">"]), [b"<><"]) == ("<", True)
    assert feed_all(TextStream(stop=["<><", ">"]), [b"<", b">", b"<"]) == ("<", True)
    assert feed_all(TextStream(stop=["bc", "abc"]), [b"xabc"]) == ("x", True), "ending together: the longest is cut"


def test_invalid_bytes_become_replacement_not_exception():
    text, _ = feed_all(TextStream(), [b"\xff", "好".encode()])
    assert text == "\ufffd好"


# ---------------------------------------------------------------- stops: caps, cost, and a property test


def test_a_stop_longer_than_the_cap_is_refused():
    assert MAX_STOP_CHARS == 256 and MAX_STOPS_TOTAL_CHARS == 2048
    TextStream(stop=["x" * MAX_STOP_CHARS])
    with pytest.raises(DanluError, match="stop strings too long"):
        TextStream(stop=["x" * (MAX_STOP_CHARS + 1)])


def test_stops_longer_than_the_total_cap_together_are_refused():
    """A request's stops at the cap, plus the format's own markers, still run; far more is refused."""
    TextStream(stop=["x" * MAX_STOP_CHARS] * (MAX_STOPS_TOTAL_CHARS // MAX_STOP_CHARS) + ["<|im_end|>", "<|endoftext|>"])
    with pytest.raises(DanluError, match="2560 in all"):
        TextStream(stop=["x" * MAX_STOP_CHARS] * (MAX_STOPS_TOTAL_CHARS // MAX_STOP_CHARS + 3))


def test_long_stops_cost_linear_work_in_the_text_fed(monkeypatch):
    """The review's case: two 200,000-character stops over 20,000 one-character tokens (95 s of CPU before).
    The text keeps matching a stop's prefix, so everything is held back, and the other stop fails at every
    character: today's check re-tries every held length per token (8,000 tokens took 10.7 s, growing ~n^2.5)."""
    monkeypatch.setattr(streaming, "MAX_STOP_CHARS", 10**6)
    monkeypatch.setattr(streaming, "MAX_STOPS_TOTAL_CHARS", 10**6)
    stream = TextStream(stop=["ab" * 100_000, "a" * 200_000])
    shown = [stream.feed(b"a").text for _ in range(20_000)]
    assert "".join(shown) == "" and stream.flush() == "a" * 20_000
    assert stream.steps <= 2 * 2 * 20_000  # two stops, at most two steps per character each (amortised)


def reference(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text before the first stop to complete (the longest, when several end at the same character)."""
    for end in range(1, len(text) + 1):
        ending = [s for s in stops if s and text[:end].endswith(s)]
        if ending:
            return text[: end - max(map(len, ending))], True
    return text, False


def held_back(text: str, stops: list[str]) -> int:
    """How much of `text`'s tail could still become a stop."""
    return max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


ALPHABET = "ab<|>\n 中文长城😀🐉é"
texts = st.text(alphabet=ALPHABET, max_size=40)
stops = st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=6), max_size=4)


@st.composite
def cases(draw):
    """A text, stop strings (some cut from the text itself, so they occur), and random byte cuts."""
    text = draw(texts)
    chosen = draw(stops)
    if text and draw(st.booleans()):
        i = draw(st.integers(0, len(text) - 1))
        chosen.append(text[i: i + draw(st.integers(1, 6))])
    data = text.encode("utf-8")
    cuts = sorted(draw(st.sets(st.integers(0, len(data)), max_size=len(data) + 1)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    return text, chosen, pieces


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_random_stops_and_token_cuts_lose_duplicate_and_leak_nothing(case):
    text, stop, pieces = case
    stream, decoder, fed, out = TextStream(stop=list(stop)), codecs.getincrementaldecoder("utf-8")(), "", []
    expected, should_stop = reference(text, stop)
    stopped = False
    for piece in pieces:
        got = stream.feed(piece)
        out.append(got.text)
        assert "\ufffd" not in got.text
        if got.stopped:
            stopped = True
            break
        fed += decoder.decode(piece)
        assert "".join(out) == fed[: len(fed) - held_back(fed, stop)], "shown as soon as it cannot become a stop"
    if not stopped:
        out.append(stream.flush())
    shown = "".join(out)
    assert (shown, stopped) == (expected, should_stop)
    assert not any(s in shown for s in stop), "no stop string leaks"
