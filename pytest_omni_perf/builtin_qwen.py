"""The Qwen-Image-Edit side of the built-in models: the pieces of a random-weight
``QwenImageEditPlusPipeline`` (diffusers 0.40, ``pipelines/qwenimage/
pipeline_qwenimage_edit_plus.py``), vLLM-Omni's "Qwen-Image-Edit-2509" multi-image edit.

Its text encoder is a vision-language model (Qwen2.5-VL): the input images are shown to it
through a ``Qwen2VLProcessor`` (image processor + tokenizer) as well as encoded by the VAE.
Everything here is made from numbers, with no download: a byte-level tokenizer and tiny
configs. The processor is written as the files of one (``tokenizer*.json``,
``preprocessor_config.json``), not through ``Qwen2VLProcessor.save_pretrained``, because
constructing that class in transformers 5.x wants a video processor, which needs torchvision
(not installable beside CPU torch 2.13 here); engines load it back with
``engines.vl_processor``. Heavy imports happen inside the functions.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pathlib

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
"""Qwen2.5-VL's special tokens the pipeline's prompt template and the processor use."""
PROCESSOR_CLASS = "Qwen2VLProcessor"
"""What model_index.json names for the ``processor`` component, as Qwen-Image-Edit-2509's."""

# Qwen-Image's scheduler/scheduler_config.json (Qwen/Qwen-Image, Qwen-Image-Edit-2509).
SCHEDULER: dict[str, Any] = {
    "base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 8192, "max_shift": 0.9,
    "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.02,
    "time_shift_type": "exponential", "use_dynamic_shifting": True}


def tokenizer() -> Any:
    """A byte-level BPE with no merges (every byte a token, so any text encodes) plus the
    special tokens, each one token, as Qwen2Tokenizer's own vocabulary has them."""
    from tokenizers import AddedToken, pre_tokenizers

    import transformers

    t: Any = transformers
    tokens = sorted(pre_tokenizers.ByteLevel.alphabet()) + list(SPECIAL_TOKENS)
    tok = t.Qwen2Tokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=[],
                           unk_token=None, bos_token=None, eos_token="<|im_end|>",
                           pad_token="<|endoftext|>", model_max_length=32768)
    tok.add_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIAL_TOKENS],
                   special_tokens=True)
    return tok


def text_encoder(tok: Any, sizes: dict[str, Any]) -> Any:
    """A ``Qwen2_5_VLForConditionalGeneration`` of ``sizes`` (``text``/``vision`` config
    fields) whose token ids are ``tok``'s."""
    import transformers

    t: Any = transformers
    ids = {s: tok.convert_tokens_to_ids(s) for s in SPECIAL_TOKENS}
    config = t.Qwen2_5_VLConfig(
        text_config={"vocab_size": len(tok), "bos_token_id": ids["<|endoftext|>"],
                     "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
                     **sizes["text"]},
        vision_config=sizes["vision"], image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"])
    return t.Qwen2_5_VLForConditionalGeneration(config)


def make_pipeline(recipe: Any) -> Any:
    """The pipeline of ``recipe`` (a ``builtin_build.Recipe`` of family ``qwen``), without
    its processor: ``save_processor`` writes that after ``save_pretrained``."""
    import diffusers

    d: Any = diffusers
    tok = tokenizer()
    return getattr(d, recipe.pipeline or "QwenImageEditPlusPipeline")(
        scheduler=d.FlowMatchEulerDiscreteScheduler(**SCHEDULER),
        vae=d.AutoencoderKLQwenImage(**recipe.vae), text_encoder=text_encoder(
            tok, recipe.text_encoder), tokenizer=tok, processor=None,
        transformer=d.QwenImageTransformer2DModel(**recipe.transformer))


def save_processor(folder: pathlib.Path) -> None:
    """Write ``folder/processor`` (the tokenizer and a Qwen2-VL image processor's config) and
    name it in ``model_index.json`` as Qwen-Image-Edit-2509's folder does.

    The image processor is transformers' PIL one (``Qwen2VLImageProcessorPil``), saved
    under the class name the real folder carries (``Qwen2VLImageProcessor``): a
    transformers with torchvision then loads the whole processor (its video processor is
    inferred from that name), and ``engines.vl_processor`` loads it without.
    """
    import transformers

    t: Any = transformers
    where = folder / "processor"
    tokenizer().save_pretrained(where)
    t.Qwen2VLImageProcessorPil().save_pretrained(where)
    config_path = where / "preprocessor_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(image_processor_type="Qwen2VLImageProcessor", processor_class=PROCESSOR_CLASS)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    index["processor"] = ["transformers", PROCESSOR_CLASS]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
