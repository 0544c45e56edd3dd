"""Which activation a set of open_clip weights was trained with.

OpenAI's CLIP (and some LAION/MetaCLIP releases) was trained with QuickGELU, x*sigmoid(1.702x);
open_clip's plain configs (`ViT-B-32`) build standard GELU, and weights loaded into the other
activation still run, only as a subtly different network. The weights are identified from
open_clip's own release table: by pretrained tag, by the tag's hub id, or, for a local file,
by the release hash in the tag's download URL. Weights that cannot be identified use the
recipe's `embedder_activation`, or the model config's when no released weights of that
architecture need QuickGELU.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from base.errors import BackendUnavailable

ACTIVATIONS = ("auto", "quickgelu", "gelu")
_HEX = re.compile(r"[0-9a-f]{8,64}")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tag_for(model: str, weights: str) -> str | None:
    """The open_clip pretrained tag `weights` names for `model`: the tag itself or its hub id."""
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(model)
    if weights.lower().replace("-", "_") in tags:
        return weights.lower().replace("-", "_")
    hub_id = weights.strip("/")
    return next((tag for tag in tags
                 if open_clip.get_pretrained_cfg(model, tag).get("hf_hub", "").strip("/") == hub_id), None)


def cached_checkpoint(model: str, tag: str) -> str | None:
    """The local file a pretrained tag loads from without a download, if there is one (the
    tag's own `file`, or the Hugging Face cache, where open_clip looks for safetensors first)."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    pretrained = open_clip.get_pretrained_cfg(model, tag)
    if pretrained.get("file"):
        return pretrained["file"]
    repo_id, filename = os.path.split(pretrained.get("hf_hub", ""))
    if not repo_id:
        return None
    filename = filename or "open_clip_pytorch_model.bin"
    safe = ["open_clip_model.safetensors"] if filename == "open_clip_pytorch_model.bin" else []
    for name in (*safe, str(Path(filename).with_suffix(".safetensors")), filename):
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str):
            return found
    return None


def _release_hash(url: str) -> str | None:
    """The sha256 (or its prefix) a release URL carries: OpenAI's folder name, open_clip's
    `-xxxxxxxx` file suffix."""
    parts = url.rstrip("/").split("/")
    candidates = [parts[-2]] if len(parts) > 1 else []
    candidates.append(Path(parts[-1]).stem.rsplit("-", 1)[-1])
    return next((c for c in candidates if _HEX.fullmatch(c)), None)


def release_for_file(sha256: str) -> tuple[str, str] | None:
    """(model, tag) of the open_clip release whose published hash matches a file's sha256."""
    import open_clip

    for model, tag in open_clip.list_pretrained():
        release = _release_hash(open_clip.get_pretrained_cfg(model, tag).get("url", ""))
        if release and sha256.startswith(release):
            return model, tag
    return None


def trained_quick_gelu(model: str, weights: str | None, sha256: str | None) -> tuple[bool, str] | None:
    """(QuickGELU?, how the weights were identified), or None for unidentified weights."""
    import open_clip

    if not weights:
        return None
    tag = tag_for(model, weights)
    if tag:
        return bool(open_clip.get_pretrained_cfg(model, tag).get("quick_gelu", False)), f"open_clip tag '{tag}'"
    release = release_for_file(sha256) if sha256 else None
    if release:
        quick = open_clip.get_pretrained_cfg(*release).get("quick_gelu", False)
        return bool(quick), f"sha256 of open_clip release {release[0]} '{release[1]}'"
    return None


def has_quick_gelu_releases(model: str) -> bool:
    """Whether some released weights of this architecture need QuickGELU (e.g. OpenAI's)."""
    import open_clip

    return any(open_clip.get_pretrained_cfg(model, tag).get("quick_gelu", False)
               for tag in open_clip.list_pretrained_tags_by_model(model))


class ActivationError(BackendUnavailable):
    """The activation cannot be chosen safely: ambiguous, or contradicting the weights."""


def choose_quick_gelu(model: str, weights: str | None, sha256: str | None, requested: str,
                      option: str = "backends.score.embedder_activation") -> tuple[bool, str | None]:
    """(Build with QuickGELU?, how the weights were identified or None); raises
    ActivationError rather than guess."""
    import open_clip

    if requested not in ACTIVATIONS:
        raise ActivationError(f"{option}: '{requested}' is not valid; valid: {', '.join(ACTIVATIONS)}")
    config_quick = bool((open_clip.get_model_config(model) or {}).get("quick_gelu", False))
    identified = trained_quick_gelu(model, weights, sha256)
    if identified:
        quick, how = identified
        if requested != "auto" and (requested == "quickgelu") != quick:
            raise ActivationError(
                f"{option}: {requested} contradicts the embedder weights '{weights}' ({how}), which were "
                f"trained with {'QuickGELU' if quick else 'GELU'}; set it to auto")
        return quick, how
    if requested != "auto":
        return requested == "quickgelu", None
    if weights and not config_quick and has_quick_gelu_releases(model):
        raise ActivationError(
            f"{option}: cannot tell which activation the weights '{weights}' were trained with: {model} "
            f"weights from OpenAI (and some LAION releases) need QuickGELU, others GELU. Set {option}: "
            f"quickgelu for OpenAI weights (or use the model name {model}-quickgelu), gelu otherwise")
    return config_quick, None
