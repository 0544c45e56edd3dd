"""CP-CLIP / TI-CLIP arithmetic against hand-computed values, with fixed boxes and vectors."""

from __future__ import annotations

import numpy as np
import pytest

from stages.metrics.formulas import (
    Detection,
    assign,
    cp_clip,
    cp_clip_assigned,
    identity_mixing,
    similarity_matrix,
    ti_clip,
    top_box_per_label,
    top_boxes_per_concept,
)


def unit(*values):
    v = np.array(values, dtype=float)
    return v / np.linalg.norm(v)


CAT, DOG, PLANT = unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)


def test_similarity_is_the_mean_over_reference_photos():
    crops = np.stack([CAT])
    references = [np.stack([CAT, unit(1, 1, 0)]), np.stack([DOG])]
    similarity = similarity_matrix(crops, references)
    assert similarity[0, 0] == pytest.approx((1 + 2 ** -0.5) / 2)
    assert similarity[0, 1] == pytest.approx(0.0)


def test_missing_concept_counts_as_zero():
    similarity = similarity_matrix(np.stack([CAT, DOG]), [CAT[None], DOG[None], PLANT[None]])
    assert cp_clip(similarity, num_concepts=3) == pytest.approx(2 / 3)
    assert cp_clip(np.zeros((0, 3)), 3) == 0.0


def test_extra_objects_are_not_penalised_by_the_papers_metric():
    similarity = similarity_matrix(np.stack([CAT, DOG]), [CAT[None], DOG[None]])
    assert cp_clip(similarity, 2) == pytest.approx(1.0)


def test_two_boxes_of_one_label_keep_the_highest_scoring():
    detections = [Detection("cat", (0, 0, 10, 10), 0.3), Detection("cat", (50, 50, 60, 60), 0.9),
                  Detection("dog", (0, 0, 5, 5), 0.2)]
    kept = top_box_per_label(detections)
    assert [(d.label, d.score) for d in kept] == [("cat", 0.9), ("dog", 0.2)]


def test_identity_swap_fools_cp_clip_but_not_the_assigned_variant():
    # The box detected as "dog" looks exactly like the cat concept, and the "cat" box like the cat too.
    box_labels = ["cat", "dog"]
    crops = np.stack([CAT, CAT])
    similarity = similarity_matrix(crops, [CAT[None], DOG[None]])
    assert cp_clip(similarity, 2) == pytest.approx(1.0)  # rewarded: both boxes max out on "cat"
    pairs = assign(similarity, box_labels, ["cat", "dog"])
    assert pairs == [(0, 0), (1, 1)]
    assert cp_clip_assigned(similarity, pairs, 2) == pytest.approx(0.5)
    assert identity_mixing(similarity, pairs) == pytest.approx(0.5)


def test_two_concepts_with_one_class_noun_get_separate_boxes():
    detections = [Detection("cat", (0, 0, 10, 10), 0.9), Detection("cat", (1, 1, 11, 11), 0.8),  # duplicate
                  Detection("cat", (50, 50, 70, 70), 0.7)]
    nouns = ["cat", "cat"]
    assert top_box_per_label(detections) == [detections[0]]  # the paper: one shared query, one box
    boxes = top_boxes_per_concept(detections, nouns)
    assert boxes == [detections[0], detections[2]]
    tabby, ginger = unit(1, 0.1, 0), unit(0.1, 1, 0)
    similarity = similarity_matrix(np.stack([ginger, tabby]), [tabby[None], ginger[None]])
    pairs = assign(similarity, [b.label for b in boxes], nouns)
    assert pairs == [(0, 1), (1, 0)]  # Hungarian gives each cat its own box
    assert cp_clip_assigned(similarity, pairs, 2) == pytest.approx(1.0)
    assert identity_mixing(similarity, pairs) == 0.0


def test_paper_metric_with_one_box_for_two_same_class_concepts_scores_at_most_half():
    tabby, ginger = unit(1, 0, 0), unit(0, 1, 0)
    similarity = similarity_matrix(np.stack([tabby]), [tabby[None], ginger[None]])
    assert cp_clip(similarity, 2) == pytest.approx(0.5)


def test_ti_clip_is_the_cosine_of_image_and_text():
    assert ti_clip(unit(1, 1, 0), unit(1, 0, 0)) == pytest.approx(2 ** -0.5)


def test_no_detection_gives_no_pairs_and_no_mixing_rate():
    assert assign(np.zeros((0, 2)), [], ["cat", "dog"]) == []
    assert identity_mixing(np.zeros((0, 2)), []) is None
