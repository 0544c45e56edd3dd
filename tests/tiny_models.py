"""Tiny randomly initialised models built in code (no download), saved the way real ones are
published, so the real loading and inference code paths run on them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def clip_tokenizer_files(directory: Path) -> Path:
    """vocab.json + merges.txt of the real CLIP BPE (49,408 tokens) from open_clip's copy."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return directory


def save_tiny_owlvit(directory: Path) -> Path:
    """A 2-layer OWL-ViT with its processor, saved with save_pretrained."""
    from transformers import (CLIPTokenizer, OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor,
                              OwlViTProcessor)

    torch.manual_seed(0)
    config = OwlViTConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        projection_dim=32,
    )
    OwlViTForObjectDetection(config).eval().save_pretrained(directory)
    tokenizer_dir = clip_tokenizer_files(directory / "tokenizer-src")
    tokenizer = CLIPTokenizer(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"),
                              model_max_length=16, pad_token="!")
    processor = OwlViTProcessor(image_processor=OwlViTImageProcessor(size={"height": 32, "width": 32},
                                                                     crop_size={"height": 32, "width": 32}),
                                tokenizer=tokenizer)
    processor.save_pretrained(directory)
    return directory


def save_tiny_open_clip(directory: Path) -> tuple[Path, Path]:
    """(config JSON, checkpoint) of a 1-layer open_clip model named `tiny-clip`."""
    import open_clip

    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip")
    checkpoint = directory / "tiny-clip.pt"
    torch.save(model.state_dict(), checkpoint)
    return config, checkpoint


def save_tiny_causal_lm(directory: Path) -> Path:
    """A 2-layer GPT-2 with a byte-level BPE tokenizer trained here on a few sentences."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(["A realistic photo of a cat and a mug in the garden.",
                                 '{"objects": [{"name": "cat", "box": [10, 20, 30, 40]}]}'],
                                vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=trainer, eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=4096, n_embd=32, n_layer=2, n_head=2,
                                       eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id))
    model.eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
