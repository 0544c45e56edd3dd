"""Metrics for a batch of images: one detector pass, one embedding pass for every crop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from stages.metrics import formulas
from stages.metrics.formulas import Detection
from stages.metrics.pixels import crop


@dataclass
class ConceptReference:
    id: str
    class_noun: str
    references: np.ndarray  # (N, D) L2-normalised embeddings of the concept's photos
    cutout: np.ndarray | None = None  # (D,) embedding of the cut-out pasted into this image


@dataclass
class ImageToScore:
    image: Image.Image
    concepts: list[ConceptReference]
    text: str  # the background text for TI-CLIP


def describe_models(detector: Any, embedder: Any) -> dict[str, Any]:
    """Exactly which detector and embedder produced the metrics (recorded beside them)."""
    return {"detector": detector.describe(), "embedder": embedder.describe()}


def evaluate(batch: Sequence[ImageToScore], detector: Any, embedder: Any) -> list[dict[str, Any]]:
    """Per image: cp_clip, cp_clip_assigned, identity_mixing, ti_clip and per-concept
    detection and identity. Images are grouped by their query list for the detector."""
    detections: list[list[Detection]] = [[] for _ in batch]
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, item in enumerate(batch):
        groups.setdefault(tuple(sorted({c.class_noun for c in item.concepts})), []).append(index)
    for queries, indices in sorted(groups.items()):
        for index, found in zip(indices, detector.detect([batch[i].image for i in indices], list(queries))):
            detections[index] = found

    paper_boxes = [formulas.top_box_per_label(found) for found in detections]
    assigned_boxes = [formulas.top_boxes_per_concept(found, [c.class_noun for c in item.concepts])
                      for found, item in zip(detections, batch)]
    crops = [crop(item.image, d.box) for item, boxes in zip(batch, paper_boxes) for d in boxes]
    crops += [crop(item.image, d.box) for item, boxes in zip(batch, assigned_boxes) for d in boxes]
    crop_embeddings = embedder.embed_images(crops + [item.image for item in batch])
    image_embeddings = crop_embeddings[len(crops):]
    texts = sorted({item.text for item in batch})
    text_embeddings = dict(zip(texts, embedder.embed_texts(texts)))

    results, cursor = [], 0
    paper_embeddings, cursor = _take(crop_embeddings, cursor, [len(b) for b in paper_boxes])
    assigned_embeddings, cursor = _take(crop_embeddings, cursor, [len(b) for b in assigned_boxes])
    for index, item in enumerate(batch):
        references = [c.references for c in item.concepts]
        nouns = [c.class_noun for c in item.concepts]
        paper = formulas.similarity_matrix(paper_embeddings[index], references)
        similarity = formulas.similarity_matrix(assigned_embeddings[index], references)
        pairs = formulas.assign(similarity, [d.label for d in assigned_boxes[index]], nouns)
        concepts: dict[str, dict[str, Any]] = {c.id: {"detected": False} for c in item.concepts}
        for box_index, concept_index in pairs:
            concept, detection = item.concepts[concept_index], assigned_boxes[index][box_index]
            entry = {"detected": True, "box": [round(v, 1) for v in detection.box],
                     "detection_score": round(detection.score, 4),
                     "identity": round(float(similarity[box_index, concept_index]), 4)}
            if concept.cutout is not None:
                entry["identity_cutout"] = round(float(assigned_embeddings[index][box_index] @ concept.cutout), 4)
            concepts[concept.id] = entry
        mixing = formulas.identity_mixing(similarity, pairs)
        results.append({
            "cp_clip": round(formulas.cp_clip(paper, len(nouns)), 4),
            "cp_clip_assigned": round(formulas.cp_clip_assigned(similarity, pairs, len(nouns)), 4),
            "identity_mixing": None if mixing is None else round(mixing, 4),
            "ti_clip": round(formulas.ti_clip(image_embeddings[index], text_embeddings[item.text]), 4),
            "concepts": concepts,
        })
    return results


def _take(rows: np.ndarray, start: int, counts: list[int]) -> tuple[list[np.ndarray], int]:
    """Split `rows[start:]` into consecutive chunks of `counts` rows."""
    chunks = []
    for count in counts:
        chunks.append(rows[start:start + count])
        start += count
    return chunks, start
