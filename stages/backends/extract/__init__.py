"""Extractors: photo -> soft foreground mask (uint8, 0-255, same size as the photo).

Interface: `Backend(params, threads=...)` with `soft_mask(image: PIL.Image.Image) -> np.ndarray`.
"""
