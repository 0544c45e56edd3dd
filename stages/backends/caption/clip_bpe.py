"""CLIP's byte-pair tokenizer (OpenAI CLIP's, as open_clip ships it), read from open_clip's
bundled vocabulary file without importing open_clip or torch: a captioner that only talks to
a server counts caption tokens with it alone. Same ids as `open_clip.tokenizer.SimpleTokenizer`
(tested); `chunk_counts` tokenises a text once, with the offset where each piece ends.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
from pathlib import Path
from typing import Iterator

import ftfy
import regex

VOCABULARY = "bpe_simple_vocab_16e6.txt.gz"  # in open_clip's package folder
MERGES = 49152 - 256 - 2  # merges CLIP uses, after the header line
SPECIAL = ("<start_of_text>", "<end_of_text>")
PIECE = regex.compile("|".join(SPECIAL) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                      regex.IGNORECASE)


def _vocabulary_file() -> Path:
    spec = importlib.util.find_spec("open_clip")  # finds the package without running it
    path = Path(next(iter(spec.submodule_search_locations or []), "")) / VOCABULARY if spec else None
    if path is None or not path.is_file():
        raise RuntimeError(f"CLIP's BPE vocabulary ({VOCABULARY}, shipped with open_clip_torch) is not installed: "
                           "pip install open_clip_torch")
    return path


def _byte_symbols() -> dict[int, str]:
    """CLIP's reversible map from UTF-8 bytes to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def clean(text: str) -> str:
    """open_clip's `lower` cleaning: ftfy, HTML entities twice, whitespace collapsed, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class ClipBpe:
    def __init__(self, path: Path):
        lines = gzip.open(path).read().decode("utf-8").split("\n")[1:MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        self.bytes = _byte_symbols()
        symbols = list(self.bytes.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + list(SPECIAL)
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.ranks = {merge: i for i, merge in enumerate(merges)}
        self.longest = max(len(token.removesuffix("</w>")) for token in vocab)  # symbols in the longest token

    @functools.lru_cache(maxsize=65536)
    def _word(self, piece: str) -> tuple[int, ...]:
        """The ids of one pre-token (CLIP's merge loop, most frequent pair first)."""
        if piece in SPECIAL:
            return (self.ids[piece],)
        word = [*piece[:-1], piece[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:])}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, MERGES))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return tuple(self.ids[token] for token in word)

    def encode(self, text: str) -> list[int]:
        """Token ids, without the start and end tokens (open_clip's `SimpleTokenizer.encode`)."""
        return [i for piece in self._pieces(clean(text)) for i in self._word(piece)]

    def count(self, text: str, limit: int) -> int:
        """len(encode(text)), or `limit + 1` as soon as it is known to exceed `limit` (a long
        word is not merged: it holds at least len / longest tokens)."""
        total = 0
        for piece in self._pieces(clean(text)):
            total += len(self._word(piece)) if len(piece) <= (limit + 1) * self.longest else limit + 1
            if total > limit:
                return limit + 1
        return total

    def chunk_counts(self, text: str, limit: int) -> Iterator[tuple[int, int]]:
        """(offset where a whitespace-separated chunk of `text` ends, tokens up to there), chunk
        by chunk, until the running count exceeds `limit`: a text is tokenised once, and a
        prefix ending at whitespace has the count of its last chunk (no piece spans a space)."""
        total = 0
        for chunk in regex.finditer(r"\S+", text):
            total += self.count(chunk.group(), limit)
            yield chunk.end(), total
            if total > limit:
                return

    def _pieces(self, cleaned: str) -> Iterator[str]:
        for piece in PIECE.findall(cleaned):
            yield "".join(self.bytes[b] for b in piece.encode("utf-8"))


@functools.lru_cache(maxsize=1)
def tokenizer() -> ClipBpe:
    return ClipBpe(_vocabulary_file())
