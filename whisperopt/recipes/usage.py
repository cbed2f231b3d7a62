"""How to run an exported artifact with its engine's own API, without whisperopt (the model card's example).

Each snippet continues a preamble that defines ``root`` (the exported directory: tokenizer, processor and config
files), ``artifact`` (``root``'s artifact folder) and ``audio`` (16 kHz mono float32 samples, one utterance of at
most 30 s), and prints the transcript, decoding greedily as the benchmark did. ``tests/test_export.py`` runs the
snippets of the recipes it exports.
"""

from __future__ import annotations

from .base import Recipe

PREAMBLE = '''import soundfile as sf

root = {root!r}  # the exported directory
artifact = f"{{root}}/{artifact}"
audio, rate = sf.read("audio.flac", dtype="float32")  # 16 kHz mono, at most 30 s (resample other audio first)
'''

_GENERATE = '''features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features{cast}
ids = model.generate(features, num_beams=1, do_sample=False{language})
print(processor.batch_decode(ids, skip_special_tokens=True)[0].strip())
'''


def _torch(recipe: Recipe, manifest: dict, lang: str) -> str:
    dtype = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[getattr(recipe, "dtype", "fp32")]
    quantization = getattr(recipe, "quantization", None)
    head = ("import torch\n" + ("from torchao.quantization import Int8WeightOnlyConfig, quantize_\n"
                               if quantization == "int8-weight-only" else "")
            + "from transformers import WhisperForConditionalGeneration, WhisperProcessor\n\n"
            "processor = WhisperProcessor.from_pretrained(root)\n")
    weights = getattr(recipe, "weights_file", "")
    if quantization == "int8-dynamic":
        body = ("model = WhisperForConditionalGeneration.from_pretrained(root).eval()  # the layout the int8 state "
                "fills\nmodel = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)\n"
                f'model.load_state_dict(torch.load(f"{{artifact}}/{weights}", weights_only=True), strict=False)\n')
    elif quantization == "int8-weight-only":
        body = ("model = WhisperForConditionalGeneration.from_pretrained(root).eval()\n"
                "quantize_(model, Int8WeightOnlyConfig())\n"
                "# weights_only=True: data only (torchao registers its Int8Tensor as a safe global on import)\n"
                f'model.load_state_dict(torch.load(f"{{artifact}}/{weights}", weights_only=True), strict=False, '
                "assign=True)\n")
    else:
        body = f"model = WhisperForConditionalGeneration.from_pretrained(artifact, dtype=torch.{dtype}).eval()\n"
    cast = f".to(torch.{dtype})" if dtype != "float32" else ""
    return head + body + _GENERATE.format(cast=cast, language=lang).replace(
        "\nids = ", "\nwith torch.inference_mode():\n    ids = ", 1)


def _hf_loop(module: str, cls: str, load_args: str, lang: str) -> str:
    """An Optimum model class: transformers' processor and ``generate`` around the engine's sessions."""
    return (f"from {module} import {cls}\nfrom transformers import WhisperProcessor\n\n"
            f"processor = WhisperProcessor.from_pretrained(root)\nmodel = {cls}.from_pretrained(artifact{load_args})\n"
            + _GENERATE.format(cast="", language=lang))


def native_usage(recipe: Recipe, manifest: dict, artifact: str = "artifact", language: str | None = None) -> str | None:
    """Python that loads the exported artifact with the engine's own API and transcribes ``audio`` (after
    ``PREAMBLE``); ``language``: the code to force (multilingual checkpoints), None for English-only ones. None for
    an engine without a snippet here."""
    engine = recipe.engine
    hf_lang = f', language="{language}", task="transcribe"' if language else ""
    if engine == "torch":
        return _torch(recipe, manifest, hf_lang)
    if engine == "ctranslate2":
        lang = f', language="{language}"' if language else ""
        return ("from faster_whisper import WhisperModel\n\n"
                f'model = WhisperModel(artifact, device="cpu", compute_type="{getattr(recipe, "compute_type", "default")}")\n'
                "segments, info = model.transcribe(audio, beam_size=1, temperature=0.0, condition_on_previous_text=False,"
                f"\n                                  without_timestamps=True, vad_filter=False{lang})\n"
                'print("".join(segment.text for segment in segments).strip())\n')
    if engine == "onnxruntime":
        return _hf_loop("optimum.onnxruntime", "ORTModelForSpeechSeq2Seq", ", use_cache=True, use_merged=True",
                        hf_lang)
    if engine == "openvino" and getattr(recipe, "genai", False):
        lang = f', language="<|{language}|>", task="transcribe"' if language else ""
        return ("import openvino_genai\n\n"
                'pipe = openvino_genai.WhisperPipeline(artifact, "CPU", INFERENCE_PRECISION_HINT="f32")\n'
                f"print(pipe.generate(audio.tolist(){lang}).texts[0].strip())\n")
    if engine == "openvino":
        return _hf_loop("optimum.intel", "OVModelForSpeechSeq2Seq",
                        ', ov_config={"INFERENCE_PRECISION_HINT": "f32"}', hf_lang)
    if engine == "sherpa-onnx":
        return ("import sherpa_onnx\n\n"
                "recognizer = sherpa_onnx.OfflineRecognizer.from_whisper(\n"
                f'    encoder=f"{{artifact}}/{manifest.get("encoder", "encoder.onnx")}", '
                f'decoder=f"{{artifact}}/{manifest.get("decoder", "decoder.onnx")}",\n'
                f'    tokens=f"{{artifact}}/{manifest.get("tokens", "tokens.txt")}", language="{language or "en"}", '
                'task="transcribe")\n'
                "stream = recognizer.create_stream()\nstream.accept_waveform(16000, audio)\n"
                "recognizer.decode_stream(stream)\nprint(stream.result.text.strip())\n")
    if engine == "whispercpp":
        lang = f', language="{language}"' if language else ""
        return ("from pywhispercpp.model import Model\n\n"
                f'model = Model(f"{{artifact}}/{manifest.get("ggml_file", "ggml-model.bin")}"{lang})\n'
                'print(" ".join(segment.text for segment in model.transcribe(audio)).strip())\n')
    if engine == "openai-whisper":
        lang = f', language="{language}"' if language else ""
        return ("import whisper\n\n"
                'model = whisper.load_model(f"{artifact}/model.pt")\n'
                f"print(model.transcribe(audio, temperature=0.0, condition_on_previous_text=False, fp16=False{lang})"
                '["text"].strip())\n')
    if engine == "onnxruntime-genai":
        prompt = f"<|startoftranscript|><|{language}|><|transcribe|><|notimestamps|>" if language \
            else "<|startoftranscript|><|notimestamps|>"
        return ("import onnxruntime_genai as og\n\n"
                "model = og.Model(artifact)\nprocessor = model.create_multimodal_processor()\n"
                'sf.write("audio.wav", audio, 16000)  # genai reads audio files\n'
                f'inputs = processor(["{prompt}"], audios=og.Audios.open("audio.wav"))\n'
                "params = og.GeneratorParams(model)\n"
                "params.set_search_options(do_sample=False, num_beams=1, max_length=448)\n"
                "generator = og.Generator(model, params)\ngenerator.set_inputs(inputs)\n"
                "while not generator.is_done():\n    generator.generate_next_token()\n"
                "print(processor.decode(generator.get_sequence(0)).strip())\n")
    return None
