"""The recipe schema: Hydra/OmegaConf structured configs, so a typo or a wrong type fails at
compose time with the file and key path. Backend options are checked against the chosen
backend's own `Params` dataclass (see `stages.backends`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

MIN_CONCEPTS_PER_IMAGE = 2
MAX_CONCEPTS_PER_IMAGE = 5
MAX_IMAGES = 1_000_000  # per composition and in the whole recipe (the paper's dataset: about 10,000)
MAX_RESOLUTION = 4096  # canvas side in pixels (SDXL works at 1024)
MAX_SHARD_SIZE = 100_000  # samples per shard
MAX_SIZE = 1000.0  # a concept's relative size
MAX_SIZE_CM = 100_000.0  # real sizes and heights in scene templates (1 km)
MIN_CAMERA_HEIGHT_CM = 1.0  # the camera above the ground and above every surface: sizes divide by the gap
MIN_VIEW_SIDE = 0.05  # a scene view's width and height, fractions of the photo (the canvas is cropped from it)
MAX_SHADOW_LENGTH = 10.0  # a cast shadow's length / its caster's height (sun about 6 degrees up)
DATASET_KINDS = ("extract", "plan", "compose", "caption", "score")  # the stages that make the dataset
STAGE_KINDS = (*DATASET_KINDS, "train", "evaluate")
TOKEN_STYLES = ("token", "token_noun")
PLACEMENTS = ("ground", "surface", "free")
IMAGE_FORMATS = ("jpg", "png", "webp")


@dataclass
class ConceptView:
    """What the recipe says of one photo of a concept (a view), by the photo's file stem."""

    elevation_deg: float = 0.0  # how far above the object the camera was: 0 at its level, 90 straight
    #                             above; a view seen from above goes only where the scene's camera looks
    #                             down nearly as much (stages/scene.py, CAMERA_SLACK_DEG)


@dataclass
class Concept:
    """A personal concept: a few photos of one object and the token that names it."""

    class_noun: str = MISSING  # "cat": the detector query and the noun in captions
    token: str = MISSING  # "<cat1>": the personal token trained later
    images: List[str] = MISSING  # paths, globs or pkg:PACKAGE/PATH references
    cutout: bool = False  # the images are already cut out (RGBA with alpha)
    size: float = 1.0  # relative real-world size; the largest object of a scene is 1.0
    size_cm: float = 0.0  # real extent of its longer side as photographed (needed on backgrounds with a scene)
    placement: str = "ground"  # ground: stands on the ground; surface: on a bench or table that holds it,
    #                            else the ground; free: hangs or floats (no support)
    aliases: List[str] = field(default_factory=list)  # other words a VLM may call it ("kitten"); see caption: vlm
    license: str = ""  # its photos' licence (a Hugging Face id, or unsplash, pexels, ...): the card's licence
    mirror: bool = False  # each image may show a view mirrored left-right (an animal: yes; a mug's logo: no)
    credit: str = ""  # who took the photos and under which licence: the dataset card credits it
    views: Dict[str, ConceptView] = field(default_factory=dict)  # by photo file stem ("dog_06"): its camera


@dataclass
class Surface:
    """Something other than the ground that objects stand on: a bench seat, a table top."""

    polygon: List[Any] = MISSING  # where a foot may rest: [[x, y], ...] in the photo, 0-1
    height_cm: float = MISSING  # its height above the ground
    max_size_cm: float = MISSING  # the largest object it holds (a concept's size_cm)


@dataclass
class Region:
    """A region nothing behind it may cover (a tree trunk, a window)."""

    polygon: List[Any] = MISSING  # [[x, y], ...] in the photo, 0-1
    front: float = 1.0  # objects whose foot is below this row (nearer the camera) may cover it


@dataclass
class Occluder:
    """Something standing in the scene that hides what is behind it (a post, a rope, a trunk, a
    bench, a flower bed): its photo pixels are drawn back over objects whose foot is behind `front`."""

    front: float = MISSING  # the row (0-1) where it meets the ground: objects whose foot is above it are behind it
    polygon: Optional[List[Any]] = None  # [[x, y], ...] in the photo, 0-1
    mask: Optional[str] = None  # a grey PNG painted over the photo (any size: scaled to the photo), 255 = occluder;
    #                             with a polygon, only the mask's part inside the polygon
    name: str = ""  # what it is (the preview labels it)
    support: str = ""  # the surface it holds (a bench holds its seat): nothing standing on it is behind it


@dataclass
class Light:
    """The scene's light, as the shadows in its photo show it (a post's, a tree's, a person's)."""

    direction_deg: float = MISSING  # where shadows fall in the photo: 0 up (away from the camera), 90 right,
    #                                 180 down (toward the camera: a light behind the scene), 270 left
    length: float = MISSING  # a shadow's length in the photo / the height in the photo of what casts it
    softness: float = 0.5  # 0 hard sun (crisp, dark shadows) to 1 overcast (faint, blurred)


@dataclass
class Scene:
    """A scene template: where things can stand in a background photo and how big they look.

    Coordinates are fractions of the photo's width and height (0, 0 = top left). Sizes follow
    a level camera: an object of size_cm whose foot is at row y looks
    size_cm * (y - horizon) / (camera_height_cm - support height) photo heights tall.
    """

    horizon: float = MISSING  # the row of the horizon (eye level), 0-1
    camera_height_cm: float = MISSING  # the camera's height above the ground
    ground: List[Any] = MISSING  # polygon of the walkable ground: [[x, y], ...]
    holes: List[Any] = field(default_factory=list)  # polygons inside the ground that hold nothing (a flower bed)
    fov_deg: Optional[float] = None  # the photo's vertical field of view (none: 50, a phone held level):
    #                                  how far the camera looks down at each row (views seen from above)
    surfaces: Dict[str, Surface] = field(default_factory=dict)
    forbidden: List[Region] = field(default_factory=list)
    occluders: List[Occluder] = field(default_factory=list)  # what hides objects standing behind it
    size_tolerance: float = 0.25  # kept sizes lie within x(1 + t) or /(1 + t) of the expected size
    view: Optional[List[float]] = None  # [x, y, w, h]: the part of the photo the canvas shows (its centre
    #                                     crop to the canvas shape); none: the whole photo
    light: Optional[Light] = None  # grounded objects cast shadows along it; none: contact shadows only


@dataclass
class Background:
    """A scene: the phrase captions use and real photos to paint it with."""

    phrase: str = MISSING  # "in the garden"
    images: List[str] = field(default_factory=list)  # none: painted from the phrase (compose: sdxl-inpaint)
    scene: Optional[Scene] = None  # where objects stand, at what size; one camera view for all its photos
    credit: str = ""  # who took the photos and under which licence: the dataset card credits it
    license: str = ""  # its photos' licence (a Hugging Face id, or unsplash, pexels, ...): the card's licence


@dataclass
class Composition:
    """A set of 2-5 concepts shown together, with the backgrounds allowed for it."""

    concepts: List[str] = MISSING
    backgrounds: List[str] = MISSING
    num_images: int = MISSING
    seed: int = 0
    token: str = ""  # the global composition token (strategy.global_token); "" gives "<id>"
    eval_prompts: List[str] = field(default_factory=list)  # Jinja; none: templates/prompts/evaluate.j2


@dataclass
class Strategy:
    """How captions are written: Jinja templates (relative to templates/) and token style."""

    short_caption: str = "captions/short.j2"
    detailed_caption: str = "captions/detailed.j2"
    token_style: str = "token"  # token: "<cat1>"; token_noun: "<cat1> cat"
    # Training captions (the train stage), rendered from each sample's scene; the paper's
    # three prompting strategies, each switchable for ablations:
    train_caption: str = "captions/train.j2"
    global_token: bool = False  # (a) the composition's own token in every training caption
    repeat_tokens: bool = False  # (b) each concept token stated twice
    background_prompt: bool = False  # (c) the background phrase always stated


def _backend(name: str) -> Any:
    return field(default_factory=lambda: {"name": name})


@dataclass
class Backends:
    """One backend per stage, by registry key, with that backend's options beside `name`."""

    extract: Dict[str, Any] = _backend("u2netp")
    plan: Dict[str, Any] = _backend("solver")
    compose: Dict[str, Any] = _backend("paste")
    caption: Dict[str, Any] = _backend("template")
    score: Dict[str, Any] = _backend("geometric")
    train: Dict[str, Any] = _backend("none")  # custom-diffusion or lora: one model per composition
    evaluate: Dict[str, Any] = _backend("none")  # clip: the paper's CP-CLIP / TI-CLIP protocol


@dataclass
class Output:
    """Canvas and dataset format."""

    resolution: int = 1024  # square canvas side in pixels
    image_format: str = "jpg"  # jpg, png (lossless) or webp
    jpeg_quality: int = 95  # also the WebP quality
    shard_size: int = 100  # samples per WebDataset shard
    license: str = "unknown"  # the dataset card's Hugging Face license id (mit, cc-by-4.0, other, ...); unknown:
    #                           the licence the concepts' and backgrounds' photos share (their `license`)
    card_html: bool = True  # pack writes dataset/card.html (samples, keep rates, heat maps; `g4g card`)


@dataclass
class Recipe:
    name: str = MISSING
    seed: int = 0
    concepts: Dict[str, Concept] = field(default_factory=dict)
    backgrounds: Dict[str, Background] = field(default_factory=dict)
    compositions: Dict[str, Composition] = field(default_factory=dict)
    strategy: Strategy = field(default_factory=Strategy)
    backends: Backends = field(default_factory=Backends)
    output: Output = field(default_factory=Output)
