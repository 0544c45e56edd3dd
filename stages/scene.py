"""Scene templates on the canvas: where a foot may rest, how big an object looks there, what
it may not cover.

A recipe's template (`backgrounds.<id>.scene`) is written in fractions of the photo; `on_canvas`
maps it through the same centre crop the composers apply to the photo. Sizes follow a level
pinhole camera: an object whose longer side is `size_cm` long, with its foot at canvas row `y`
on a support `height_cm` above the ground, shows that side `size_cm * (y - horizon) /
(camera_height_cm - height_cm)` pixels long. Shared by the planners (placing), the score stage (checking) and
`g4g scene` (drawing). A template's `light` (`Light`) tells compose where shadows fall.

Contact is judged on the silhouette (`CanvasScene.support_under`, the one check the solver, the
LLM repair and the score stage share): the columns of the cut-out's foot profile (extract's
`foot`, mirrored with the view) whose lowest opaque pixel lies in its bottom band must each
rest on the support, outside its holes. The camera: a level pinhole with the template's
vertical field of view (`fov_deg`) looks down at a foot at row y by atan((y - horizon) /
focal); a view photographed from `elevation_deg` above is placed only where the camera looks
down at least `elevation_deg - CAMERA_SLACK_DEG` (a lying dog seen from above, pasted where
the camera is low, reads as leaping).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

FOOTPRINT = (-0.3, 0.0, 0.3)  # a view without a foot profile touches its support here: offsets x box width
FOOT_BAND = 0.06  # a foot profile's columns whose lowest opaque row is within this share of the box height
#                   of its lowest touch the support (a lying dog: nearly all; a standing one: its paws)
DEFAULT_FOV_DEG = 50.0  # a photo's vertical field of view when its template does not say (a phone, landscape)
CAMERA_SLACK_DEG = 25.0  # a view seen from E degrees above stands where the camera looks down >= E - this
BLOCK_GRID = 8  # a box is probed on an 8 x 8 grid for forbidden regions


def centre_crop(photo_size: Sequence[int], canvas: Sequence[int],
                view: Sequence[float] | None = None) -> tuple[int, int, int, int]:
    """(left, top, width, height) in photo pixels of the part of the photo the canvas shows:
    the largest centred region of the canvas's shape inside `view` ([x, y, w, h] fractions of
    the photo; None: the whole photo)."""
    x, y, w, h = view or (0.0, 0.0, 1.0, 1.0)
    region = (round(x * photo_size[0]), round(y * photo_size[1]),
              max(1, round(w * photo_size[0])), max(1, round(h * photo_size[1])))  # never an empty region
    scale = max(canvas[0] / region[2], canvas[1] / region[3])
    width, height = round(canvas[0] / scale), round(canvas[1] / scale)
    return region[0] + (region[2] - width) // 2, region[1] + (region[3] - height) // 2, width, height


@dataclass(frozen=True)
class Light:
    """A template's light, as the shadows in its photo show it: image quantities, so the same
    on the photo and on the canvas (a crop and a uniform scale of it)."""

    direction_deg: float  # where shadows fall in the image: 0 up (away from the camera), 90 right, 180 down
    length: float  # a shadow's length in the image / the image height of what casts it
    softness: float  # 0 hard sun, 1 overcast

    def shadow_of(self, height: float) -> tuple[float, float]:
        """(dx, dy) in pixels from a foot to the shadow of a point `height` pixels above it."""
        angle = math.radians(self.direction_deg)
        return height * self.length * math.sin(angle), -height * self.length * math.cos(angle)


def light_of(template: dict[str, Any]) -> Light | None:
    """The `light` of a template (or of a compose job, which carries its template's), or None
    when it declares none."""
    light = template.get("light")
    return Light(float(light["direction_deg"]), float(light["length"]), float(light["softness"])) if light else None


@dataclass(frozen=True)
class Support:
    """The ground or a surface, in canvas pixels."""

    name: str
    polygon: np.ndarray  # (n, 2)
    height_cm: float = 0.0
    max_size_cm: float = math.inf
    holes: tuple[np.ndarray, ...] = ()  # regions inside it that hold nothing (a flower bed, a shrub)

    def holds_point(self, point: Sequence[float], tolerance: float = 0.0) -> bool:
        """Whether a point rests on it: inside (or within `tolerance` pixels of) its polygon,
        and not deeper than `tolerance` inside any hole."""
        if not within(point, self.polygon, tolerance):
            return False
        return not any(_inside(point[0], point[1], hole.tolist()) and distance(point, hole) > tolerance
                       for hole in self.holes)


@dataclass(frozen=True)
class Blocker:
    """A forbidden region: nothing whose foot lies above row `front` may cover it."""

    polygon: np.ndarray
    front: float


@dataclass(frozen=True)
class Occluder:
    """Something standing in the scene (a post, a rope, a bench) whose photo pixels hide every
    object whose foot's ground row is above `front`. `matte` (canvas-sized, 0-255) is where it
    is, soft edges kept; None until its mask PNG is given to `on_canvas`."""

    front: float  # canvas row where it meets the ground
    polygon: np.ndarray | None
    mask: str | None  # the mask PNG's source reference
    matte: np.ndarray | None = None
    support: str | None = None  # the surface it holds (a bench's seat): what stands on it is never behind it
    extent: tuple[int, int, int, int] | None = None  # (left, top, right, bottom) of the matte's nonzero pixels
    name: str = ""  # what it is (a post, the bench): previews and LLM prompts name it

    def hides(self, depth: float, support: str | None = None) -> bool:
        """Whether it stands in front of an object whose foot's ground row is `depth`, standing
        on `support`."""
        return depth < self.front and not (self.support and support == self.support)


@dataclass(frozen=True)
class CanvasScene:
    """A scene template in canvas pixels: what the planners place by and the score stage checks."""

    width: int
    height: int
    horizon: float  # canvas row
    camera_height_cm: float
    supports: tuple[Support, ...]  # the ground first
    forbidden: tuple[Blocker, ...]
    size_tolerance: float
    occluders: tuple[Occluder, ...] = ()
    focal: float = 0.0  # the camera's focal length in canvas pixels (0: unknown, no camera check)

    def looks_down(self, row: float) -> float:
        """Degrees the camera looks down at a point at canvas row `row` (negative above the horizon)."""
        return math.degrees(math.atan2(row - self.horizon, self.focal)) if self.focal > 0 else 90.0

    def camera_fits(self, view: Mapping[str, Any] | None, row: float) -> bool:
        """Whether a view (its `elevation_deg`, 0 when level or unsaid) reads right with its foot
        at `row`: the camera there looks down at least its elevation less CAMERA_SLACK_DEG."""
        elevation = float((view or {}).get("elevation_deg", 0.0))
        return elevation <= 0 or self.looks_down(row) >= elevation - CAMERA_SLACK_DEG

    def hidden(self, box: Sequence[float], depth: float, support: str | None = None) -> float:
        """Share of the box (in the canvas) that the occluders in front of a foot at ground row
        `depth` on `support` cover, their soft mattes counted by opacity."""
        left, top = max(0, int(box[0])), max(0, int(box[1]))
        right, bottom = min(self.width, int(box[0] + box[2])), min(self.height, int(box[1] + box[3]))
        if right <= left or bottom <= top:
            return 0.0
        cover = np.zeros((bottom - top, right - left), np.float32)
        for occluder in self.occluders:
            extent = occluder.extent
            if (extent is None or extent[0] >= right or extent[2] <= left or extent[1] >= bottom
                    or extent[3] <= top or not occluder.hides(depth, support)):
                continue  # no matte, elsewhere, or not in front
            cover = np.maximum(cover, occluder.matte[top:bottom, left:right] / np.float32(255))
        return float(cover.mean())

    def supports_for(self, placement: str, size_cm: float) -> list[Support]:
        """Where a concept may stand: `ground` on the ground; `surface` on the surfaces that
        hold it, the ground when none does; `free` nowhere in particular (empty list)."""
        if placement == "free":
            return []
        ground = [self.supports[0]]
        if placement == "ground":
            return ground
        holding = [s for s in self.supports[1:] if s.max_size_cm >= size_cm]
        return holding or ground

    def size_at(self, foot_y: float, support: Support, size_cm: float) -> float:
        """Expected longer side in pixels of an object of `size_cm` standing at row `foot_y`
        on `support`; 0 at or above the horizon."""
        return max(0.0, size_cm * (foot_y - self.horizon) / (self.camera_height_cm - support.height_cm))

    def support_under(self, box: Sequence[float], placement: str, size_cm: float, tolerance: float = 0.0,
                      view: Mapping[str, Any] | None = None) -> Support | None:
        """The first support, among those the concept may use, that the pasted silhouette rests
        on: every point where it touches (`feet`) within `tolerance` pixels of the support and
        not in its holes; None when it floats or stands in a hole."""
        points = feet(box, view)
        for support in self.supports_for(placement, size_cm):
            if all(support.holds_point(point, tolerance) for point in points):
                return support
        return None

    def ground_row(self, foot_y: float, height_cm: float) -> float:
        """The row of the ground point under a foot at `foot_y` on a support `height_cm` high:
        where depth is compared (a cat on a bench seat is as near as the seat's legs)."""
        return self.horizon + (foot_y - self.horizon) * self.camera_height_cm / (self.camera_height_cm - height_cm)

    def box_at(self, foot: Sequence[float], support: Support, size_cm: float, aspect: float,
               factor: float = 1.0) -> list[int]:
        """The whole-pixel box of a cut-out of shape `aspect` (w / h) standing with its foot at
        `foot` on `support`, its longer side the perspective's (times `factor`)."""
        longer = self.size_at(foot[1], support, size_cm) * factor
        w, h = (longer, longer / aspect) if aspect >= 1 else (longer * aspect, longer)
        return [round(foot[0] - w / 2), round(foot[1] - h), max(1, round(w)), max(1, round(h))]

    def holds(self, box: Sequence[float]) -> bool:
        """Whether the box lies inside the canvas."""
        return box[0] >= 0 and box[1] >= 0 and box[0] + box[2] <= self.width and box[1] + box[3] <= self.height

    def height_of(self, support: str) -> float:
        """Height above the ground of the support named `support` (0 for the ground or `free`)."""
        return next((s.height_cm for s in self.supports if s.name == support), 0.0)

    def far_to_near(self, boxes: Sequence[Sequence[float]], supports: Sequence[str]) -> list[int]:
        """Paste order: farthest first (smallest ground row of the foot), so nearer objects cover it."""
        depth = [self.ground_row(b[1] + b[3], self.height_of(name)) for b, name in zip(boxes, supports)]
        return sorted(range(len(boxes)), key=lambda i: (depth[i], i))

    def blocked(self, box: Sequence[float], height_cm: float = 0.0) -> float:
        """Fraction of the box over forbidden regions it stands behind (its ground row above
        their front) when it stands on a support `height_cm` high."""
        depth = self.ground_row(box[1] + box[3], height_cm)
        behind = [b.polygon for b in self.forbidden if depth < b.front]
        if not behind:
            return 0.0
        steps = (np.arange(BLOCK_GRID) + 0.5) / BLOCK_GRID
        xs, ys = np.meshgrid(box[0] + steps * box[2], box[1] + steps * box[3])
        points = np.stack([xs.ravel(), ys.ravel()], axis=1)
        covered = np.zeros(len(points), bool)
        for polygon in behind:
            covered |= contains(polygon, points)
        return float(covered.mean())


def on_canvas(template: dict[str, Any], photo_size: Sequence[int], canvas: Sequence[int],
              masks: Mapping[str, Image.Image] | None = None) -> CanvasScene:
    """The template of a photo of `photo_size` (w, h) mapped onto the canvas (w, h). Given
    `masks` (each occluder mask PNG by its source reference, read and verified by the caller),
    every occluder gets its canvas matte."""
    left, top, crop_w, crop_h = centre_crop(photo_size, canvas, template.get("view"))
    scale = canvas[1] / crop_h

    def points(polygon: Sequence[Sequence[float]]) -> np.ndarray:
        array = np.asarray(polygon, dtype=np.float64) * (photo_size[0], photo_size[1])
        return (array - (left, top)) * scale

    def row(y: float) -> float:
        return (y * photo_size[1] - top) * scale

    supports = [Support("ground", points(template["ground"]), holes=tuple(points(h) for h in template.get("holes", [])))]
    supports += [Support(name, points(s["polygon"]), float(s["height_cm"]), float(s["max_size_cm"]))
                 for name, s in sorted(template.get("surfaces", {}).items())]
    blockers = [Blocker(points(r["polygon"]), row(r.get("front", 1.0))) for r in template.get("forbidden", [])]
    occluders = []
    for entry in template.get("occluders", []):
        polygon = points(entry["polygon"]) if entry.get("polygon") else None
        source = mask_source(entry)
        matte = None
        if masks is not None and (source is None or source in masks):
            matte = occluder_matte(polygon, masks.get(source) if source else None, photo_size,
                                   (left, top, crop_w, crop_h), canvas)
        extent = Image.fromarray(matte).getbbox() if matte is not None else None
        occluders.append(Occluder(row(entry["front"]), polygon, source, matte, entry.get("support") or None, extent,
                                  entry.get("name", "")))
    fov = math.radians(float(template.get("fov_deg") or DEFAULT_FOV_DEG))
    focal = photo_size[1] / 2 / math.tan(fov / 2) * scale  # the photo's full height spans the field of view
    return CanvasScene(int(canvas[0]), int(canvas[1]), row(template["horizon"]), float(template["camera_height_cm"]),
                       tuple(supports), tuple(blockers), float(template.get("size_tolerance", 0.25)),
                       tuple(occluders), focal)


def mask_source(occluder: dict[str, Any]) -> str | None:
    """An occluder's mask PNG reference (the recipe's string, or the build plan's `{source, sha256}`)."""
    mask = occluder.get("mask")
    return mask["source"] if isinstance(mask, dict) else mask


def occluder_matte(polygon: np.ndarray | None, mask: Image.Image | None, photo_size: Sequence[int],
                   crop: Sequence[int], canvas: Sequence[int]) -> np.ndarray:
    """An occluder on the canvas (uint8, 255 = occluder): its mask PNG (scaled to the photo)
    through the canvas's crop of the photo, inside its polygon when it has one."""
    width, height = int(canvas[0]), int(canvas[1])
    if mask is None:
        matte = np.full((height, width), 255, np.uint8)
    else:
        sx, sy = mask.width / photo_size[0], mask.height / photo_size[1]
        box = (crop[0] * sx, crop[1] * sy, (crop[0] + crop[2]) * sx, (crop[1] + crop[3]) * sy)
        matte = np.asarray(mask.convert("L").resize((width, height), Image.Resampling.BILINEAR, box=box))
    if polygon is not None:
        inside = Image.new("L", (width, height), 0)
        ImageDraw.Draw(inside).polygon([tuple(p) for p in polygon.tolist()], fill=255)
        matte = np.minimum(matte, np.asarray(inside))
    return matte


def feet(box: Sequence[float], view: Mapping[str, Any] | None = None) -> list[tuple[float, float]]:
    """Where a cut-out pasted in `box` touches its support: the bottom of each column of its
    view's foot profile (mirrored with the view) whose lowest opaque pixel lies in the bottom
    FOOT_BAND of the box; FOOTPRINT's points on the box's bottom edge for a view without one."""
    profile = (view or {}).get("foot")
    if not profile or all(v is None for v in profile):
        centre, bottom = box[0] + box[2] / 2, box[1] + box[3]
        return [(centre + offset * box[2], bottom) for offset in FOOTPRINT]
    if view.get("mirrored"):
        profile = profile[::-1]
    lowest = max(v for v in profile if v is not None)
    return [(box[0] + (i + 0.5) / len(profile) * box[2], box[1] + v * box[3])
            for i, v in enumerate(profile) if v is not None and v >= lowest - FOOT_BAND]


def contains(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Even-odd rule: which of `points` (m, 2) lie inside `polygon` (n, 2)."""
    x, y = points[:, 0:1], points[:, 1:2]
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.concatenate((x1[1:], x1[:1])), np.concatenate((y1[1:], y1[:1]))  # each edge's other end
    crosses = (y1 > y) != (y2 > y)
    rise = np.where(y2 == y1, 1.0, y2 - y1)  # a level edge never crosses: any divisor will do
    at = x1 + (y - y1) * (x2 - x1) / rise
    return ((crosses & (x < at)).sum(axis=1) % 2) == 1


def distance(point: Sequence[float], polygon: np.ndarray) -> float:
    """Distance in pixels from `point` to the polygon's outline."""
    p = np.asarray(point, dtype=np.float64)
    a, b = polygon, np.roll(polygon, -1, axis=0)
    edge = b - a
    length = np.maximum((edge * edge).sum(axis=1), 1e-12)
    t = np.clip(((p - a) * edge).sum(axis=1) / length, 0, 1)
    nearest = a + t[:, None] * edge
    return float(np.sqrt(((nearest - p) ** 2).sum(axis=1)).min())


def _inside(x: float, y: float, vertices: list[list[float]]) -> bool:
    """`contains` for one point, in plain Python: a few vertices cost less than numpy's calls."""
    inside = False
    for (x1, y1), (x2, y2) in zip(vertices, vertices[1:] + vertices[:1]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def within(point: Sequence[float], polygon: np.ndarray, tolerance: float = 0.0) -> bool:
    """Inside the polygon, or no farther than `tolerance` pixels from it."""
    if _inside(point[0], point[1], polygon.tolist()):
        return True
    return tolerance > 0 and distance(point, polygon) <= tolerance


SAMPLE_BLOCK = 8


def sample_point(polygon: np.ndarray, rng: np.random.Generator, attempts: int = 64) -> tuple[float, float] | None:
    """A point drawn uniformly inside the polygon (rejection sampling in its bounding box, up to
    `attempts` candidates, drawn and tested 8 at a time)."""
    low, high = polygon.min(axis=0), polygon.max(axis=0)
    for _ in range(0, attempts, SAMPLE_BLOCK):
        points = low + rng.random((SAMPLE_BLOCK, 2)) * (high - low)
        inside = np.flatnonzero(contains(polygon, points))
        if inside.size:
            return float(points[inside[0], 0]), float(points[inside[0], 1])
    return None


FOOT_TOLERANCE = 0.015  # a foot may miss its support by this fraction of the canvas height
BLOCK_LIMIT = 0.05  # share of a box that may lie over forbidden regions behind which it stands


def judge(scene: CanvasScene, box: Sequence[float], placement: str, size_cm: float,
          view: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """(check, problem) for each way a placed object (its `view`: foot profile, mirrored,
    elevation) breaks the template: `floating` (its silhouette's feet are off every support
    it may use, or in a hole), `scale` (its size is off the perspective's by more than the
    template's tolerance), `blocked` (it covers a forbidden region it stands behind), `camera`
    (a view seen from above where the camera is low)."""
    problems = []
    tolerance = FOOT_TOLERANCE * scene.height
    support = scene.support_under(box, placement, size_cm, tolerance, view)
    if placement != "free" and support is None:
        allowed = " or ".join(s.name for s in scene.supports_for(placement, size_cm))
        points = feet(box, view)
        off = [(x, y) for x, y in points
               if not any(s.holds_point((x, y), tolerance) for s in scene.supports_for(placement, size_cm))]
        where = f"first at ({off[0][0]:.0f}, {off[0][1]:.0f})" if off else "not all on one support"
        problems.append(("floating", f"{len(off)} of {len(points)} feet off the {allowed} or in a hole ({where})"))
    if support is not None:
        expected = scene.size_at(box[1] + box[3], support, size_cm)
        ratio = max(box[2], box[3]) / expected if expected > 0 else math.inf
        if not 1 / (1 + scene.size_tolerance) <= ratio <= 1 + scene.size_tolerance:
            problems.append(("scale", f"{max(box[2], box[3]):.0f} px where the perspective gives {expected:.0f} px "
                                      f"for {size_cm:g} cm on the {support.name} (x{ratio:.2f}, tolerance "
                                      f"{scene.size_tolerance:g})"))
    covered = scene.blocked(box, support.height_cm if support else 0.0)
    if covered > BLOCK_LIMIT:
        problems.append(("blocked", f"covers a forbidden region for {covered:.0%} of its box"))
    if not scene.camera_fits(view, box[1] + box[3]):
        problems.append(("camera", f"a view seen from {float(view['elevation_deg']):g} degrees above, where the "
                                   f"camera looks down at {scene.looks_down(box[1] + box[3]):.0f} (reads right from "
                                   f"{float(view['elevation_deg']) - CAMERA_SLACK_DEG:g})"))
    return problems


MATTE_CACHE = 16  # canvas scenes with occluder mattes a worker keeps (one per photo and canvas)


def with_occluders(template: dict[str, Any], photo_size: Sequence[int], canvas: Sequence[int],
                   root: Path) -> CanvasScene:
    """`on_canvas` with every occluder's matte, its mask PNG read from `root` and verified
    against the digest the build plan keyed (`{source, sha256}`); kept per template, photo size
    and canvas, as every image on a photo shares them."""
    return _with_occluders(json.dumps([template, list(photo_size), list(canvas), str(root)], sort_keys=True))


@functools.lru_cache(maxsize=MATTE_CACHE)
def _with_occluders(key: str) -> CanvasScene:
    from base import sources
    from stages.runtime.images import load_image

    template, photo_size, canvas, root = json.loads(key)
    masks = {}
    for entry in template.get("occluders", []):
        mask = entry.get("mask")
        if isinstance(mask, dict):
            path = sources.resolve(mask["source"], Path(root))
            masks[mask["source"]] = load_image(path, mask["source"], ("sha256", mask["sha256"]))
    return on_canvas(template, photo_size, canvas, masks)
