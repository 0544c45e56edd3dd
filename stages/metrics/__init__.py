"""The paper's metrics (CP-CLIP, TI-CLIP) and variants that fix their blind spots.

`formulas` is pure arithmetic on detections and embeddings (no models, no files);
`models` loads the detector (OWL-ViT) and the image/text embedder (open_clip);
`evaluate` ties them together for a batch of images. No stage plumbing lives here, so the
score stage and a later evaluate stage share one implementation.
"""
