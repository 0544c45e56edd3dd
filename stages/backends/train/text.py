"""The text side of a training: the new tokens in every tokenizer / text encoder pair of the
base model (one pair for Stable Diffusion 1.x/2.x, two for SDXL), the conditioning the UNet
reads, and the token files diffusers' `load_textual_inversion` reads back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SDXL_KEYS = ("clip_l", "clip_g")  # the usual names of SDXL embeddings' two halves
TOKEN_FILE = "token-{}.safetensors"  # the n-th new token's embedding


def add_tokens(tokenizer: Any, text_encoder: Any, tokens: dict[str, list[str]]) -> list[int]:
    """Add the new tokens to the tokenizer, each embedding initialised to the mean embedding of
    its words (the concept's class noun); returns their ids."""
    import torch

    for token in tokens:
        if token in tokenizer.get_vocab():
            raise ValueError(f"token '{token}' is already in the tokenizer's vocabulary, so it would not be a new "
                             f"word; choose a new one, e.g. '<{token.strip('<>')}1>'")
    tokenizer.add_tokens(list(tokens))
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    table = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for token_id, words in zip(ids, tokens.values()):
            word_ids = tokenizer(" ".join(words), add_special_tokens=False).input_ids
            table[token_id] = table[word_ids].mean(0)
    return ids


class TextEncoders:
    """Every tokenizer / encoder pair of `pipeline`, with `tokens` added and only their rows
    trainable (`restore` puts the other rows back after an optimizer step)."""

    def __init__(self, pipeline: Any, tokens: dict[str, list[str]], resolution: int):
        import torch

        self.pairs = [(pipeline.tokenizer, pipeline.text_encoder)]
        if getattr(pipeline, "text_encoder_2", None) is not None:
            self.pairs.append((pipeline.tokenizer_2, pipeline.text_encoder_2))
        self.tokens, self.resolution = list(tokens), resolution
        self.token_ids = [add_tokens(tokenizer, encoder, tokens) for tokenizer, encoder in self.pairs]
        self.embeddings = [encoder.get_input_embeddings().weight for _, encoder in self.pairs]
        self.frozen = []
        for table, ids in zip(self.embeddings, self.token_ids):
            frozen = torch.ones(len(table), dtype=torch.bool, device=table.device)
            frozen[ids] = False
            self.frozen.append((frozen, table.detach().clone()))
            table.requires_grad_(True)

    @property
    def sdxl(self) -> bool:
        return len(self.pairs) == 2

    def encoders(self) -> list[Any]:
        return [encoder for _, encoder in self.pairs]

    def zero_frozen_grads(self) -> None:
        """Zero the gradients of every row but the new tokens' (before clipping, as the scripts do)."""
        for table, (frozen, _) in zip(self.embeddings, self.frozen):
            if table.grad is not None:
                table.grad[frozen] = 0

    def overflowing(self, captions: list[str]) -> list[str]:
        """The captions longer than a text encoder reads (CLIP: 77 tokens): their ends are cut."""
        return [caption for caption in captions
                if any(len(tokenizer(caption).input_ids) > tokenizer.model_max_length for tokenizer, _ in self.pairs)]

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for table, (frozen, original) in zip(self.embeddings, self.frozen):
                table[frozen] = original[frozen]

    def encode(self, captions: list[str], device: str) -> tuple[Any, dict[str, Any] | None]:
        """(the UNet's encoder_hidden_states, its added_cond_kwargs) for `captions`."""
        import torch

        ids = [tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids.to(device) for tokenizer, _ in self.pairs]
        if not self.sdxl:
            return self.pairs[0][1](ids[0])[0], None
        # SDXL: both encoders' penultimate hidden states side by side, the second one's pooled
        # projection, and the size conditioning of an uncropped square image.
        first = self.pairs[0][1](ids[0], output_hidden_states=True)
        second = self.pairs[1][1](ids[1], output_hidden_states=True)
        states = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        side = self.resolution
        time_ids = torch.tensor([[side, side, 0, 0, side, side]], device=device).repeat(len(captions), 1)
        return states, {"text_embeds": second[0], "time_ids": time_ids}

    def save(self, folder: Path) -> dict[str, str]:
        """One safetensors file per token: `{token: vector}` (SD 1.x), `{clip_l, clip_g}` (SDXL)."""
        from safetensors.torch import save_file

        files = {}
        for number, token in enumerate(self.tokens):
            rows = [table[ids[number]].detach().float().cpu().clone()
                    for table, ids in zip(self.embeddings, self.token_ids)]
            name = TOKEN_FILE.format(number)
            save_file(dict(zip(SDXL_KEYS, rows)) if self.sdxl else {token: rows[0]}, str(folder / name))
            files[token] = name
        return files


def load_tokens(pipeline: Any, folder: Path, token_files: dict[str, str]) -> None:
    """Add trained tokens to a pipeline with diffusers' `load_textual_inversion`."""
    from safetensors.torch import load_file

    tokens = list(token_files)
    paths = [str(folder / token_files[token]) for token in tokens]
    if getattr(pipeline, "text_encoder_2", None) is None:
        pipeline.load_textual_inversion(paths, token=tokens)
        return
    for key, tokenizer, encoder in zip(SDXL_KEYS, (pipeline.tokenizer, pipeline.tokenizer_2),
                                       (pipeline.text_encoder, pipeline.text_encoder_2)):
        vectors = [load_file(path)[key] for path in paths]
        pipeline.load_textual_inversion(vectors, token=tokens, tokenizer=tokenizer, text_encoder=encoder)
