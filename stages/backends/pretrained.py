"""Loading pretrained diffusers pipelines (hub id or local folder) with errors that say what
to download and which recipe key to set, for every backend that runs a diffusion model."""

from __future__ import annotations

from typing import Any

from stages.metrics.models import ModelMissing, require_local_when_offline


def load_pipeline(pipeline_class: Any, source: str, option: str, dtype: Any, **components: Any) -> Any:
    """`pipeline_class.from_pretrained(source)`; ModelMissing (a BackendUnavailable) when the
    weights are not here, naming the download command and the recipe key `option`."""
    require_local_when_offline(source, option)
    try:
        return pipeline_class.from_pretrained(source, torch_dtype=dtype, **components)
    except (OSError, ValueError) as error:
        raise ModelMissing(f"{option}: cannot load '{source}' ({error}); give a diffusers folder or hub id") from None
