"""CP-CLIP and TI-CLIP as in Gen4Gen (Sec. 3.5, Eq. 1-4), plus an assignment-based variant.

Notation: detections B (one box per class label for the paper's metric), concepts O' with
reference embeddings X_j, C(a, b) the cosine of L2-normalised CLIP embeddings.
  S_ij = mean over x in X_j of C(crop(b_i), x)          (similarity_matrix)
  S_i  = max_j S_ij
  CP-CLIP = sum over b_i in B of S_i / |O'|             (cp_clip; a missing concept adds 0)
  TI-CLIP = C(image, background text)                   (ti_clip)
The max over concepts lets an identity swap score well, and two concepts with one class noun
share one box. CP-CLIP-assigned matches boxes to concepts one to one (Hungarian), each box
only to concepts of the class it was detected as.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from stages.layout import iou


@dataclass(frozen=True)
class Detection:
    label: str  # the class noun the detector was queried with
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels
    score: float


def top_box_per_label(detections: Sequence[Detection]) -> list[Detection]:
    """The paper's B: for several boxes of one label keep the highest-scoring one."""
    best: dict[str, Detection] = {}
    for detection in detections:
        if detection.label not in best or detection.score > best[detection.label].score:
            best[detection.label] = detection
    return [best[label] for label in sorted(best)]


def top_boxes_per_concept(detections: Sequence[Detection], class_nouns: Sequence[str],
                          overlap: float = 0.5) -> list[Detection]:
    """For a label shared by k concepts keep its k best boxes that are not duplicates (IoU
    above `overlap` with a better box of the same label), so each concept can get its own."""
    wanted = {label: class_nouns.count(label) for label in set(class_nouns)}
    kept: list[Detection] = []
    for detection in sorted(detections, key=lambda d: (-d.score, d.label, d.box)):
        same = [k for k in kept if k.label == detection.label]
        if len(same) < wanted.get(detection.label, 0) and all(
                iou(_xywh(k.box), _xywh(detection.box)) <= overlap for k in same):
            kept.append(detection)
    return kept


def _xywh(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    return box[0], box[1], box[2] - box[0], box[3] - box[1]


def similarity_matrix(crops: np.ndarray, references: Sequence[np.ndarray]) -> np.ndarray:
    """S[i, j]: mean cosine between crop i and concept j's reference embeddings (all L2-normalised)."""
    if len(crops) == 0:
        return np.zeros((0, len(references)))
    return np.stack([(crops @ refs.T).mean(axis=1) for refs in references], axis=1)


def cp_clip(similarity: np.ndarray, num_concepts: int) -> float:
    """Eq. 4: sum over detected boxes of their best concept similarity, over |O'|."""
    if similarity.size == 0:
        return 0.0
    return float(similarity.max(axis=1).sum() / num_concepts)


def assign(similarity: np.ndarray, box_labels: Sequence[str], class_nouns: Sequence[str]) -> list[tuple[int, int]]:
    """One-to-one (box, concept) pairs maximising total similarity; a box only goes to a
    concept whose class noun it was detected as."""
    if similarity.size == 0:
        return []
    from scipy.optimize import linear_sum_assignment  # 1 s to import: only where a score is computed

    allowed = np.array([[label == noun for noun in class_nouns] for label in box_labels])
    cost = np.where(allowed, -similarity, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return sorted((int(i), int(j)) for i, j in zip(rows, cols) if allowed[i, j])


def cp_clip_assigned(similarity: np.ndarray, pairs: Sequence[tuple[int, int]], num_concepts: int) -> float:
    """Sum of the assigned pairs' similarities over |O'|: a swap or a shared box no longer pays."""
    return float(sum(similarity[i, j] for i, j in pairs) / num_concepts)


def identity_mixing(similarity: np.ndarray, pairs: Sequence[tuple[int, int]]) -> float | None:
    """Share of assigned boxes that look more like another concept of the composition."""
    if not pairs:
        return None
    return sum(int(np.argmax(similarity[i])) != j for i, j in pairs) / len(pairs)


def ti_clip(image_embedding: np.ndarray, text_embedding: np.ndarray) -> float:
    """TI-CLIP: cosine of the whole image with the background text (an overfitting indicator)."""
    return float(image_embedding @ text_embedding)
