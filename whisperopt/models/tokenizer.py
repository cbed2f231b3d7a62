"""Build the exact Hugging Face Whisper tokenizer offline from the tiktoken vocabularies in openai-whisper.

The real ``openai/whisper-*`` repositories ship a byte-level BPE tokenizer (vocab.json + merges.txt + tokenizer.json)
whose ids equal openai-whisper's tiktoken ids. We derive vocab and merges from the same tiktoken rank files, add the
special tokens in openai-whisper's order, and save slow and fast tokenizers through transformers so the directory
loads with ``WhisperTokenizer(Fast).from_pretrained`` like a downloaded checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import WhisperoptError

# Special tokens that follow the languages, in openai-whisper's order.
CONTROL_TOKENS = ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]


def whisper_assets() -> Path:
    """Directory of openai-whisper's bundled assets (tiktoken files, english.json)."""
    try:
        import whisper  # noqa: F401  (openai-whisper)
    except ImportError as exc:
        raise WhisperoptError(
            "openai-whisper is needed for the tokenizer vocabularies: pip install --no-deps openai-whisper"
        ) from exc
    return Path(whisper.__file__).parent


def languages(num_languages: int) -> list[str]:
    from whisper.tokenizer import LANGUAGES

    return list(LANGUAGES)[:num_languages]


def special_tokens(num_languages: int) -> list[str]:
    return [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *[f"<|{lang}|>" for lang in languages(num_languages)],
        *CONTROL_TOKENS,
    ]


def timestamp_tokens() -> list[str]:
    return [f"<|{i * 0.02:.2f}|>" for i in range(1501)]


def build_tokenizer(out_dir: Path, english_only: bool, num_languages: int) -> None:
    """Write tokenizer files (slow + fast + normalizer.json) for a Whisper model into ``out_dir``."""
    from transformers import WhisperTokenizer, WhisperTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    assets = whisper_assets()
    tiktoken_file = assets / "assets" / ("gpt2.tiktoken" if english_only else "multilingual.tiktoken")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / ".tokenizer-build"
    work.mkdir(exist_ok=True)

    vocab, merges = TikTokenConverter(vocab_file=str(tiktoken_file)).extract_vocab_merges_from_model(str(tiktoken_file))
    specials = special_tokens(num_languages)
    for tok in specials:
        vocab[tok] = len(vocab)
    (work / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    with open(work / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    shutil.copy(assets / "normalizers" / "english.json", work / "normalizer.json")

    slow = WhisperTokenizer(
        vocab_file=str(work / "vocab.json"),
        merges_file=str(work / "merges.txt"),
        normalizer_file=str(work / "normalizer.json"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=1024,
        additional_special_tokens=specials[1:],
    )
    # Timestamp tokens are ordinary added tokens in the hub tokenizers (decoded unless skipped explicitly).
    slow.add_tokens(timestamp_tokens())
    slow.save_pretrained(str(out_dir))
    fast = WhisperTokenizerFast.from_pretrained(str(out_dir))
    fast.save_pretrained(str(out_dir))
    shutil.rmtree(work, ignore_errors=True)

    expected = len(vocab) + 1501
    if len(fast) != expected:
        raise WhisperoptError(f"tokenizer build produced {len(fast)} tokens, expected {expected}")
