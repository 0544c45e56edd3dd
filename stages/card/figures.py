"""The dataset card's figures, drawn without a plotting library: caption-length histograms as
inline SVG, box position and box size heat maps and contact sheets as images.

Pure functions of their numbers, byte-stable (fixed sizes, colours and encoders), so the card
and the DVC image plots change only when the dataset does.
"""

from __future__ import annotations

from collections import Counter
from html import escape

import numpy as np
from PIL import Image

# viridis at ten evenly spaced stops: perceptually uniform, readable in grey and by most
# colour-blind readers; an empty cell is light grey, so "never" differs from "rarely"
VIRIDIS = np.array([(68, 1, 84), (72, 40, 120), (62, 73, 137), (49, 104, 142), (38, 130, 142), (31, 158, 137),
                    (53, 183, 121), (110, 206, 88), (181, 222, 43), (253, 231, 37)], np.float64)
EMPTY = (244, 244, 244)
POSITION_CELLS = 64  # the canvas as a 64x64 grid
SIZE_BINS = 20  # box width and height, each in 5% bins of the canvas side


def colorize(counts: np.ndarray) -> Image.Image:
    """`counts` (rows x columns, >= 0) as an RGB image: viridis scaled to the largest count."""
    top = counts.max()
    scaled = counts / top if top > 0 else counts
    position = scaled * (len(VIRIDIS) - 1)
    low = np.floor(position).astype(int).clip(0, len(VIRIDIS) - 2)
    fraction = (position - low)[..., None]
    rgb = VIRIDIS[low] * (1 - fraction) + VIRIDIS[low + 1] * fraction
    rgb[counts <= 0] = EMPTY
    return Image.fromarray(np.rint(rgb).astype(np.uint8), "RGB")


def position_counts(boxes: list[list[float]]) -> np.ndarray:
    """How many boxes cover each cell of the canvas (boxes as [x, y, w, h], fractions of it)."""
    if not boxes:
        return np.zeros((POSITION_CELLS, POSITION_CELLS), np.int64)
    centres = (np.arange(POSITION_CELLS) + 0.5) / POSITION_CELLS
    x, y, w, h = (column[:, None] for column in np.asarray(boxes, dtype=np.float64).T)
    rows = ((centres >= y) & (centres < y + h)).astype(np.int64)  # box x cell: the box covers the row
    columns = ((centres >= x) & (centres < x + w)).astype(np.int64)
    return rows.T @ columns  # summed over boxes: each box's rows-by-columns block


def size_counts(boxes: list[list[float]]) -> np.ndarray:
    """A 2-D histogram of box width (columns, left to right) by box height (rows, bottom to
    top), both fractions of the canvas side."""
    counts = np.zeros((SIZE_BINS, SIZE_BINS), np.int64)
    for _, _, w, h in boxes:
        column = min(int(w * SIZE_BINS), SIZE_BINS - 1)
        row = min(int(h * SIZE_BINS), SIZE_BINS - 1)
        counts[SIZE_BINS - 1 - row, column] += 1
    return counts


def histogram_svg(values: list[int], title: str, marks: dict[str, float]) -> str:
    """An SVG bar chart of how often each integer in `values` occurs, with dashed vertical lines
    at `marks` (label -> value, e.g. the paper's mean). The labels are escaped here."""
    width, height, left, bottom, top = 420, 180, 34, 30, 24
    counts = Counter(values)
    low = min([*counts, *(int(v) for v in marks.values())], default=0)
    high = max([*counts, *(int(v) + 1 for v in marks.values())], default=1)
    span = high - low + 1
    step = (width - left - 10) / span
    peak = max(counts.values(), default=1)
    scale = (height - bottom - top) / peak
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<text x="{left}" y="14" font-size="12">{escape(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#888"/>',
             f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{peak}</text>']
    for value, count in sorted(counts.items()):
        x, bar = left + (value - low) * step, count * scale
        parts.append(f'<rect x="{x + 1:.1f}" y="{height - bottom - bar:.1f}" width="{max(step - 2, 1):.1f}" '
                     f'height="{bar:.1f}" fill="#3e4989"><title>{value} words: {count}</title></rect>')
    for value in range(low, high + 1, max(1, span // 8)):
        parts.append(f'<text x="{left + (value - low + 0.5) * step:.1f}" y="{height - bottom + 12}" font-size="10" '
                     f'text-anchor="middle">{value}</text>')
    for number, (label, value) in enumerate(marks.items()):
        x = left + (value - low + 0.5) * step
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="#c0392b" '
                     f'stroke-dasharray="{4 if number else 2},3"/>')
        parts.append(f'<text x="{x + 3:.1f}" y="{top + 10 + 12 * number}" font-size="10" fill="#c0392b">'
                     f'{escape(label)} {value:.1f}</text>')
    parts.append(f'<text x="{width - 10}" y="{height - 4}" font-size="10" text-anchor="end">words</text></svg>')
    return "".join(parts)


def contact_sheet(thumbnails: list[Image.Image], columns: int = 6, side: int = 128, gap: int = 4) -> Image.Image:
    """The thumbnails on a white grid, in order, each centred in a `side`-pixel square."""
    rows = max(1, -(-len(thumbnails) // columns))
    sheet = Image.new("RGB", (columns * side + (columns + 1) * gap, rows * side + (rows + 1) * gap), "white")
    for index, image in enumerate(thumbnails):
        image = image.copy()
        image.thumbnail((side, side))
        row, column = divmod(index, columns)
        sheet.paste(image, (gap + column * (side + gap) + (side - image.width) // 2,
                            gap + row * (side + gap) + (side - image.height) // 2))
    return sheet
