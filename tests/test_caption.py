"""Template captions: the paper's short caption, spatial details, sandbox and strict variables."""

from __future__ import annotations

import pytest

from stages.backends.caption.template import Backend, Params
from stages.templating import TemplateInvalid
from stages.caption import describe_scene
from tests.conftest import REPO

CONCEPTS = {"cat": {"token": "<cat1>", "class_noun": "cat"}, "dog": {"token": "<dog1>", "class_noun": "dog"},
            "plant": {"token": "<plant1>", "class_noun": "houseplant"}}
LAYOUT = {"canvas": [1024, 1024], "objects": [  # paste order: plant at the bottom
    {"concept": "plant", "box": [700, 400, 300, 500]},
    {"concept": "dog", "box": [600, 600, 250, 250]},
    {"concept": "cat", "box": [50, 600, 200, 200]},
]}


def captioner(templates_dir=REPO / "templates", **templates):
    templates = templates or {"short": "captions/short.j2", "detailed": "captions/detailed.j2"}
    return Backend(Params(), templates_dir=str(templates_dir), templates=templates)


def test_scene_lists_concepts_left_to_right_with_depth_and_size():
    scene = describe_scene(LAYOUT, CONCEPTS, "in the garden", "token_noun")
    assert [c["id"] for c in scene["concepts"]] == ["cat", "dog", "plant"]
    cat, dog, plant = scene["concepts"]
    assert cat["position"] == "left" and plant["position"] == "right"
    assert dog["in_front_of"] == ["<plant1> houseplant"] and plant["behind"] == ["<dog1> dog"]
    assert plant["size"] == "largest" and cat["size"] == "smallest" and dog["size"] == ""


def test_default_templates_give_the_papers_short_caption_and_a_detailed_one():
    captions = captioner().caption(describe_scene(LAYOUT, CONCEPTS, "in the garden", "token"))
    assert captions["short"] == "<cat1> and <dog1> and <plant1> in the garden"
    assert captions["detailed"] == (
        "A photo of <cat1>, <dog1>, <plant1> in the garden. <cat1> is on the left, and is the smallest. "
        "<dog1> is on the right, in front of <plant1>. <plant1> is on the right, partly behind <dog1>, "
        "and is the largest.")


def test_undefined_variable_names_the_template_and_line(tmp_path):
    (tmp_path / "bad.j2").write_text("{{ background }}\n{{ backgruond }}\n")
    with pytest.raises(TemplateInvalid, match=r"bad\.j2, line 2: UndefinedError: 'backgruond' is undefined"):
        captioner(tmp_path, short="bad.j2").caption({"background": "x", "concepts": []})


def test_syntax_error_names_the_template(tmp_path):
    (tmp_path / "broken.j2").write_text("{% for c in concepts %}")
    with pytest.raises(TemplateInvalid, match=r"broken\.j2, line 1"):
        captioner(tmp_path, short="broken.j2")


def test_templates_cannot_reach_python_internals(tmp_path):
    (tmp_path / "evil.j2").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateInvalid, match="SecurityError|UndefinedError"):
        captioner(tmp_path, short="evil.j2").caption({"background": "x", "concepts": []})
