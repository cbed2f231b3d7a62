"""Property-based tests of the SRT/VTT writers: any segment list (times at 0, hours, fractional ms, unordered or
overlapping; text with unicode, line breaks, '-->', markup or nothing) renders to files a strict parser reads back
with the right cue count, monotonic indices and times, no empty cue and no blank line inside a cue."""

from __future__ import annotations

import html
import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from whisperopt.transcribe.result import Segment, TranscriptResult
from whisperopt.transcribe.writers import render, write_outputs

SETTINGS = settings(max_examples=200, deadline=None)
SRT_TIME = re.compile(r"(\d{2,}):([0-5]\d):([0-5]\d),(\d{3}) --> (\d{2,}):([0-5]\d):([0-5]\d),(\d{3})")
VTT_TIME = re.compile(r"(\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3}) --> (\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3})")

seconds = st.one_of(
    st.just(0.0),
    st.floats(-1.0, 100 * 3600.0, allow_nan=False, allow_infinity=False),  # up to 100 hours; a few below 0
    st.integers(0, 10 * 3600 * 1000).map(lambda ms: ms / 1000),  # whole milliseconds
    st.integers(0, 10 * 3600 * 1000).map(lambda ms: (ms + 0.5) / 1000),  # half milliseconds: rounding ties
)
texts = st.one_of(
    st.text(max_size=40),  # any unicode, line and paragraph separators included
    st.sampled_from(["", " ", "\n", " Hello world.", "a --> b", "--->", "-- >", "x\n\ny", "one\r\n\r\ntwo",
                     "\u2028\u2029", "<i>&amp;</i> < & >", "1\n00:00:01,000 --> 00:00:02,000", "\u00e9\u6f22\U0001f600"]),
)
segment_lists = st.lists(st.builds(Segment, start=seconds, end=seconds, text=texts), max_size=15)


def _seconds(h, m, s, ms) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def _text_lines(lines: list[str]) -> list[str]:
    assert lines, "a cue without text"
    for line in lines:
        assert line.strip(), "a blank line inside a cue splits it"
        assert len(line.splitlines()) == 1 and "\r" not in line, "a line break other than \\n"
        assert "-->" not in line, "an arrow in cue text reads as a timing line"
    return lines


def parse_srt(text: str) -> list[tuple[int, float, float, str]]:
    """A strict SRT reader: blocks separated by one blank line; index, timing line, one or more text lines."""
    if not text:
        return []
    assert text.endswith("\n\n") and "\n\n\n" not in text
    cues = []
    for block in text[:-2].split("\n\n"):
        index, timing, *lines = block.split("\n")
        assert index.isascii() and index.isdigit(), f"not a cue index: {index!r}"
        m = SRT_TIME.fullmatch(timing)
        assert m, f"not an SRT timing line: {timing!r}"
        cues.append((int(index), _seconds(*m.groups()[:4]), _seconds(*m.groups()[4:]), "\n".join(_text_lines(lines))))
    return cues


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    """A strict WebVTT reader: the header, then blocks of a timing line and text lines; entities decoded."""
    assert text.startswith("WEBVTT\n\n")
    body = text[len("WEBVTT\n\n"):]
    if not body:
        return []
    assert body.endswith("\n\n") and "\n\n\n" not in body
    cues = []
    for block in body[:-2].split("\n\n"):
        timing, *lines = block.split("\n")
        m = VTT_TIME.fullmatch(timing)
        assert m, f"not a VTT timing line: {timing!r}"
        for line in lines:
            assert "<" not in line and not re.search(r"&(?!(amp|lt);)", line), f"unescaped markup: {line!r}"
        text = html.unescape("\n".join(_text_lines(lines)))
        cues.append((_seconds(*m.groups()[:4]), _seconds(*m.groups()[4:]), text))
    return cues


def _words(text: str) -> list[str]:
    """What a reader should see of a segment's text: its words, arrows shortened."""
    return re.sub(r"-{2,}>", "->", " ".join(text.split())).split()


def _check_times(cues: list[tuple[float, float]]) -> None:
    last = 0.0
    for start, end in cues:
        assert start >= last, "a cue starts before the previous one ends"
        assert end > start, "a cue of zero or negative duration"
        last = end


@SETTINGS
@given(segment_lists)
@example([Segment(0.0015, 0.0025, "tie"), Segment(0.0025, 0.0035, "tie")])  # rounding ties on both ends
@example([Segment(5.0, 6.0, "a"), Segment(4.0, 4.5, "b"), Segment(7.0, 7.0, "c")])  # backwards, zero length
@example([Segment(0.0, 1.0, "--->"), Segment(1.0, 2.0, "x\n\ny"), Segment(2.0, 3.0, "a < b & c")])
def test_srt_and_vtt_parse_back(segments):
    result = TranscriptResult(segments)
    shown = [s for s in segments if s.text.strip()]
    srt, vtt = parse_srt(render(result, "srt")), parse_vtt(render(result, "vtt"))
    assert len(srt) == len(vtt) == len(shown)
    assert [c[0] for c in srt] == list(range(1, len(shown) + 1))
    _check_times([(a, b) for _, a, b, _ in srt])
    assert [(a, b) for _, a, b, _ in srt] == [(a, b) for a, b, _ in vtt]
    for seg, (_, start, _, srt_text), (_, _, vtt_text) in zip(shown, srt, vtt):
        assert start >= seg.start - 0.0005 - 1e-9  # never earlier than the segment (but for rounding)
        assert _words(srt_text) == _words(vtt_text) == _words(seg.text)
    txt = render(result, "txt").splitlines()
    tsv = render(result, "tsv").splitlines()[1:]
    assert len(txt) == len(tsv) == len(shown) and all(len(row.split("\t")) == 3 for row in tsv)
    assert [_words(line) for line in txt] == [_words(s.text) for s in shown]


@st.composite
def ordered_segments(draw):
    """Segments as a decoder emits them: in order, not overlapping, each at least 1 ms long."""
    t, out = draw(st.floats(0, 3600, allow_nan=False)), []
    for text in draw(st.lists(st.text(min_size=1, max_size=10).filter(str.strip), max_size=12)):
        t += draw(st.one_of(st.just(0.0), st.floats(0, 600, allow_nan=False)))  # gap
        length = draw(st.one_of(st.just(0.001), st.floats(0.001, 30, allow_nan=False)))
        out.append(Segment(t, t + length, text))
        t += length
    return out


@SETTINGS
@given(ordered_segments())
@example([Segment(0.0015, 0.0025, "a"), Segment(0.0025, 0.0035, "b"), Segment(0.0035, 0.0045, "c")])
@example([Segment(3599.9995, 3600.0005, "hour"), Segment(3600.0005, 362439.9999, "long")])
def test_ordered_times_round_trip_within_1ms(segments):
    srt = parse_srt(render(TranscriptResult(segments), "srt"))
    vtt = parse_vtt(render(TranscriptResult(segments), "vtt"))
    assert len(srt) == len(vtt) == len(segments)
    for seg, (_, a, b, _), (va, vb, _) in zip(segments, srt, vtt):
        assert abs(a - seg.start) <= 0.001 and abs(b - seg.end) <= 0.001, (seg, a, b)
        assert (a, b) == (va, vb)
    _check_times([(a, b) for _, a, b, _ in srt])


@settings(max_examples=25, deadline=None)
@given(segment_lists)
def test_written_files_equal_the_rendering(tmp_path_factory, segments):
    out = tmp_path_factory.mktemp("w")
    result = TranscriptResult(segments)
    write_outputs(result, "a", out, ["srt", "vtt"])
    assert (out / "a.srt").read_bytes().decode("utf-8") == render(result, "srt")  # bytes: no newline translation
    assert (out / "a.vtt").read_bytes().decode("utf-8") == render(result, "vtt")
    assert sorted(p.name for p in out.iterdir()) == ["a.srt", "a.vtt"]  # no temporary files left
