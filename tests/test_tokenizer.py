"""The offline-built tokenizer must equal openai-whisper's tiktoken tokenizer on every LibriSpeech transcript."""

from __future__ import annotations

import pytest

from whisperopt.models.tokenizer import build_tokenizer

from .conftest import TRANSCRIPTS


def _transcripts() -> list[str]:
    texts = []
    for name in ("test-clean", "test-other", "dev-clean", "dev-other"):
        for line in (TRANSCRIPTS / f"{name}.txt").read_text().splitlines():
            uid, _, text = line.partition(" ")
            if text:
                texts.append(text)
    return texts


@pytest.fixture(scope="module")
def texts():
    texts = _transcripts()
    assert len(texts) > 10000  # the complete official test/dev transcripts
    # as LibriSpeech writes them, in sentence case (what Whisper outputs), and lower case with a leading space
    return texts + [t.capitalize() for t in texts] + [" " + t.lower() + "." for t in texts[:3000]]


@pytest.mark.slow
@pytest.mark.parametrize(
    "english_only,num_languages,vocab",
    [(False, 99, 51865), (True, 99, 51864), (False, 100, 51866)],
    ids=["multilingual", "english-only", "large-v3"],
)
def test_tokenizer_matches_tiktoken(tmp_path, texts, english_only, num_languages, vocab):
    import whisper.tokenizer as wt
    from transformers import WhisperTokenizer, WhisperTokenizerFast

    build_tokenizer(tmp_path, english_only=english_only, num_languages=num_languages)
    fast = WhisperTokenizerFast.from_pretrained(str(tmp_path))
    ref = wt.get_tokenizer(not english_only, num_languages=num_languages)
    assert len(fast) == vocab == ref.encoding.n_vocab

    ours = fast(texts, add_special_tokens=False)["input_ids"]
    theirs = [ref.encode(t) for t in texts]
    mismatches = [t for t, a, b in zip(texts, ours, theirs) if a != b]
    assert not mismatches, f"{len(mismatches)} transcripts tokenised differently, e.g. {mismatches[:2]}"
    decoded = fast.batch_decode(ours)
    assert decoded == [ref.decode(ids) for ids in theirs] == texts

    slow = WhisperTokenizer.from_pretrained(str(tmp_path))
    for t in texts[:200]:
        assert slow.encode(t, add_special_tokens=False) == ref.encode(t)

    # every special token has the id of the real models
    for token, token_id in ref.special_tokens.items():
        assert fast.convert_tokens_to_ids(token) == token_id, token


@pytest.mark.slow
def test_special_token_ids_of_real_models(tmp_path):
    from transformers import WhisperTokenizerFast

    build_tokenizer(tmp_path / "multi", english_only=False, num_languages=99)
    build_tokenizer(tmp_path / "en", english_only=True, num_languages=99)
    build_tokenizer(tmp_path / "v3", english_only=False, num_languages=100)
    multi = WhisperTokenizerFast.from_pretrained(str(tmp_path / "multi"))
    en = WhisperTokenizerFast.from_pretrained(str(tmp_path / "en"))
    v3 = WhisperTokenizerFast.from_pretrained(str(tmp_path / "v3"))
    ids = multi.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>",
                                       "<|transcribe|>", "<|notimestamps|>", "<|0.00|>"])
    assert ids == [50257, 50258, 50259, 50358, 50359, 50363, 50364]
    assert en.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"]) == [50256, 50257, 50362]
    assert v3.convert_tokens_to_ids(["<|yue|>", "<|transcribe|>", "<|notimestamps|>"]) == [50358, 50360, 50364]
    assert "<|yue|>" not in multi.get_vocab()
    # HF-style prefix for a multilingual model
    multi.set_prefix_tokens(language="en", task="transcribe", predict_timestamps=False)
    assert multi.prefix_tokens == [50258, 50259, 50359, 50363]
