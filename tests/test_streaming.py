"""TextStream: whole UTF-8 characters only, stop strings cut cleanly and never shown."""

from danlu.streaming import TextStream


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


def test_invalid_bytes_become_replacement_not_exception():
    text, _ = feed_all(TextStream(), [b"\xff", "好".encode()])
    assert text == "\ufffd好"
