"""VLM recaptioning: token substitution by hand-written replies, a tiny random LLaVA through the
real transformers auto classes, a loopback OpenAI-compatible server, the reply cache and keys."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path

import pytest

from stages.backends.caption.substitute import CLIP_CONTEXT, clip_token_count, recaption
from stages.layout import horizontal_position
from tests.conftest import TINY_RECIPE, build_in_process, write_recipe
from tests.llm_server import ChatServer

LOCAL_LLM = {"G4G_LLM_ENDPOINTS": "http://127.0.0.1", "G4G_LLM_API_KEY_ENV": "G4G_TEST_KEY"}
SCRIPTED_REPLY = "A kitty sits on the grass beside a Mug."


@pytest.fixture(autouse=True)
def local_llm(monkeypatch):
    for variable, value in LOCAL_LLM.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("G4G_TEST_KEY", "local")


def save_tiny_llava(directory: Path, script: str | None = None) -> Path:
    """A 1-layer LLaVA (tiny CLIP vision tower, tiny Llama) with its processor and a chat
    template, saved with save_pretrained. With `script`, the weights are set so that greedy
    decoding writes `script` after any prompt (each token's embedding is one-hot, attention and
    MLP add nothing, and the head maps each token to the next one of the script)."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator([SCRIPTED_REPLY, "USER: ASSISTANT: Describe what you see in this image."],
                                vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>", "<image>", "<pad>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=trainer, eos_token="<|endoftext|>", pad_token="<pad>",
                                        extra_special_tokens={"image_token": "<image>"})
    vocab = len(tokenizer)
    hidden = vocab + vocab % 2 if script else 16  # one-hot embeddings need a dimension per token
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)
    text = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                       eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-1,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    if script:
        chain = tokenizer(script, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert len(set(chain)) == len(chain), "the script must not repeat a token"
        follows = {tokenizer.convert_tokens_to_ids(":"): chain[0], **dict(zip(chain, chain[1:]))}
        language = model.model.language_model
        with torch.no_grad():
            language.embed_tokens.weight.copy_(torch.eye(vocab, hidden))
            for layer in language.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
            head = torch.zeros(vocab, hidden)
            head[tokenizer.eos_token_id] = 1.0
            for token, following in follows.items():
                head[:, token] = 0.0
                head[following, token] = 1.0
            model.lm_head.weight.copy_(head)
    model.save_pretrained(directory)
    chat = ("{% for message in messages %}{{ message['role'].upper() }}: {% for part in message['content'] %}"
            "{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}{% endfor %}\n"
            "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=chat)
    processor.save_pretrained(directory)
    return directory


def small_recipe(caption: dict, num_images: int = 2) -> dict:
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["concepts"]["cat"]["aliases"] = ["kitty", "kitten"]
    for cid in ("cat", "mug"):  # ready cut-outs, no segmentation: what they show does not matter here
        recipe["concepts"][cid].update(cutout=True, images=recipe["concepts"]["plant"]["images"][:1])
    for composition in recipe["compositions"].values():
        composition["num_images"] = num_images
    recipe["backends"] = {"caption": caption}
    return recipe


def remote(url: str, **options) -> dict:
    return {"name": "vlm-openai", "base_url": url, "model": "test-vlm", "max_retries": 0, "timeout": 5.0, **options}


def captions(project: Path) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads((project / "build/captions.json").read_text())["captions"]}


# --- token substitution ---------------------------------------------------------------------

def concept(cid: str, noun: str, name: str, position: str, *aliases: str) -> dict:
    return {"id": cid, "class_noun": noun, "name": name, "position": position, "aliases": list(aliases)}


TWO_CATS = [concept("tom", "cat", "<cat1>", "left", "kitten"), concept("mug", "mug", "<mug1>", "center", "cup"),
            concept("felix", "cat", "<cat2>", "right", "kitten")]


@pytest.mark.parametrize("reply, expected, not_mentioned", [
    ("A cat on the left and a cat on the right, a mug between them.",
     "A <cat1> on the left and a <cat2> on the right, a <mug1> between them.", []),
    ("The right cat is ginger; the left cat sleeps next to a cup.",  # position words decide, not order
     "The right <cat2> is ginger; the left <cat1> sleeps next to a <mug1>.", []),
    ("Two Cats and a MUG on the lawn.", "<cat1> and <cat2> and a <mug1> on the lawn.", []),  # plural, capitals
    ("A kitten naps. Another kitten plays with a mug.",  # alias; no cue: left to right in order of mention
     "A <cat1> naps. Another <cat2> plays with a <mug1>.", []),
    ("A cat is next to a coffee cup on a bench.", "A <cat1> is next to a coffee <mug1> on a bench, with <cat2>.",
     ["felix"]),
    ("A fluffy dog lies on the grass.", "A fluffy dog lies on the grass, with <cat1>, <mug1> and <cat2>.",
     ["tom", "mug", "felix"]),
    ("\x1b[2J\"A cat\u202e and a cat by a mug.\"\n", "[2J\"A <cat1> and a <cat2> by a <mug1>.\"", []),  # controls dropped
    ("The concatenated mugshot", "The concatenated mugshot, with <cat1>, <mug1> and <cat2>.",
     ["tom", "mug", "felix"]),  # never inside another word
])
def test_substitution(reply, expected, not_mentioned):
    result = recaption(reply, TWO_CATS)
    assert result.caption == expected
    assert result.not_mentioned == not_mentioned and not result.cut


TWO_DOGS = [concept("rex", "dog", "<dog1>", "left"), concept("tom", "cat", "<cat1>", "center", "kitten"),
            concept("fido", "dog", "<dog2>", "right")]


@pytest.mark.parametrize("reply, expected, ambiguous", [
    # issue 25: cue windows stop at clause punctuation; the cue right after a mention wins
    ("a dog on the left, a dog on the right and a cat in the center",
     "a <dog1> on the left, a <dog2> on the right and a <cat1> in the center", 0),
    ("On the right is a dog, and on the left another dog", "On the right is a <dog2>, and on the left another <dog1>, with <cat1>.", 0),
    ("A dog sleeps on the right. A dog plays with the kitten.",
     "A <dog2> sleeps on the right. A <dog1> plays with the <cat1>.", 0),  # the other one, by elimination
    ("The left dog sniffs the cat next to the right dog.",
     "The left <dog1> sniffs the <cat1> next to the right <dog2>.", 0),  # "right" is the second dog's
    # a group mention names all of them, also after one was named
    ("A dog on the left sniffs a cat. Both dogs look happy.",
     "A <dog1> on the left sniffs a <cat1>. <dog1> and <dog2> look happy.", 0),
    ("A dog naps on the right; two dogs and a cat share the lawn.",
     "A <dog2> naps on the right; <dog1> and <dog2> and a <cat1> share the lawn.", 0),
    # "right" as an adverb is no side; a position word later in the text claims its dog
    ("A dog sits right next to the cat, and a dog on the left naps.",
     "A <dog2> sits right next to the <cat1>, and a <dog1> on the left naps.", 0),
    ("A dog and a dog play with a cat.", "A <dog1> and a <dog2> play with a <cat1>.", 1),  # no cue: reported
    ("A dog on the left. The dog barks.", "A <dog1> on the left. The <dog2> barks, with <cat1>.", 1),  # "the": maybe the first
    # compounds, width, quotes
    ("A cat sits on a dog-shaped cushion by a hot-dog stand.",
     "A <cat1> sits on a dog-shaped cushion by a hot-dog stand, with <dog1> and <dog2>.", 0),
    ("\uff21 \uff44\uff4f\uff47 on the left, a cat and a dog on the right.",
     "A <dog1> on the left, a <cat1> and a <dog2> on the right.", 0),  # full-width letters folded
    ('A cat beside a "dog" on the right', 'A <cat1> beside a "<dog2>" on the right, with <dog1>.', 0),
    ('"A cat and two dogs."', "A <cat1> and <dog1> and <dog2>.", 0),  # quotes around the whole reply go
])
def test_two_dogs_get_the_tokens_their_clause_says(reply, expected, ambiguous):
    result = recaption(reply, TWO_DOGS)
    assert (result.caption, result.ambiguous) == (expected, ambiguous)


def test_a_side_no_dog_stands_on_names_the_outermost_one():
    from stages.backends.caption.cues import place

    left, centre = concept("a", "dog", "<dog1>", "left"), concept("b", "dog", "<dog2>", "center")
    assert place("right", [left, centre]) is centre and place("left", [left, centre]) is left
    assert place("center", [left, centre]) is centre and place(None, [left, centre]) is None
    assert place("center", [left, concept("c", "dog", "<dog3>", "right")]) is None  # two dogs have no middle one


def test_token_noun_style_and_multiword_nouns():
    concepts = [concept("plant", "potted plant", "<plant1> potted plant", "left"),
                concept("berry", "strawberry", "<berry1> strawberry", "right")]
    result = recaption("Two strawberries lie near a Potted  Plant and a plant.", concepts)
    assert result.caption == "<berry1> strawberry lie near a <plant1> potted plant and a plant."


def test_a_reply_over_clip_context_is_cut_at_a_sentence_and_keeps_every_concept():
    filler = "The lawn is bright green and freshly mown, with tiny white daisies scattered everywhere around. "
    reply = "A cat sits on the lawn. " + filler * 4 + "A mug stands on the right. A cat naps."
    assert clip_token_count(reply) > CLIP_CONTEXT
    result = recaption(reply, TWO_CATS)
    assert result.cut and result.clip_tokens <= CLIP_CONTEXT == 77
    assert clip_token_count(result.caption) == result.clip_tokens
    assert result.caption.startswith("A <cat1> sits on the lawn. The lawn")
    assert result.caption.endswith(", with <mug1> and <cat2>.")  # cut away: added back by the clause
    assert result.not_mentioned == [] and result.added == ["mug", "felix"]


CLIP_SAMPLES = [
    "A <cat1> sits on the lawn beside a <mug1>, with <plant1>.", "Two  dogs\tplay;  it's a dog's life!",
    "&amp;lt;b&amp;gt; caf\u00e9 \u00c3\u00a9 na\u00efve \uff24\uff2f\uff27 \U0001f415\U0001f408 \u732b\u3068\u72ac 3.14159",
    "<start_of_text> an x-ray of 1,000,000 " + "supercalifragilistic" * 9, "",
]


def test_the_clip_tokenizer_gives_open_clips_ids():
    from open_clip.tokenizer import SimpleTokenizer

    from stages.backends.caption.clip_bpe import tokenizer

    reference = SimpleTokenizer()
    for text in CLIP_SAMPLES:
        assert tokenizer().encode(text) == reference.encode(text), text
        assert tokenizer().count(text, 10) == min(len(reference.encode(text)), 11)


def test_counting_tokens_imports_neither_torch_nor_open_clip():
    import subprocess
    import sys

    code = ("import sys; from stages.backends.caption import vlm_openai; from stages.backends.caption.substitute "
            "import recaption; recaption('A cat.', []); print(sorted({'torch', 'open_clip'} & set(sys.modules)))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


@pytest.mark.parametrize("unit", [
    "A dog on the left sniffs a cat on the lawn. ",  # 64 KiB of sentences
    "a dog, a cat and some grass ",  # one 64 KiB sentence: cut word by word
    "dog",  # one 64 KiB word
])
def test_a_64_kib_reply_is_recaptioned_in_under_a_second(unit):
    import time

    reply = (unit * (64 * 1024 // len(unit) + 1))[:64 * 1024]
    recaption("A dog.", TWO_DOGS)  # the vocabulary is read once per process
    began = time.perf_counter()
    result = recaption(reply, TWO_DOGS)
    assert time.perf_counter() - began < 1.0
    assert result.cut and result.clip_tokens == clip_token_count(result.caption) <= CLIP_CONTEXT
    assert {"<dog1>", "<dog2>", "<cat1>"} <= set(re.findall(r"<\w+>", result.caption))


def test_two_cats_are_told_apart_by_the_layout():
    from stages.caption import describe_scene
    from stages.templating import Templates

    layout = {"canvas": [300, 300], "objects": [{"concept": "felix", "box": [200, 100, 80, 80]},
                                                {"concept": "tom", "box": [10, 100, 80, 80]},
                                                {"concept": "mug", "box": [120, 150, 50, 50]}]}
    words = {"tom": {"token": "<cat1>", "class_noun": "cat"}, "felix": {"token": "<cat2>", "class_noun": "cat"},
             "mug": {"token": "<mug1>", "class_noun": "mug"}}
    scene = describe_scene(layout, words, "on the grass", "token")
    instruction = Templates(Path(__file__).parents[1] / "templates").render("prompts/recaption_positions.j2", **scene)
    assert "it shows a cat on the left, a mug in the center, a cat on the right;" in instruction
    concepts = [{**c, "aliases": []} for c in scene["concepts"]]
    assert recaption("A cat sleeps while another cat watches a mug.", concepts).caption == \
        "A <cat1> sleeps while another <cat2> watches a <mug1>."
    assert recaption("The cat in the middle? No: a mug in the middle, the cat on the right.", concepts).caption == \
        "The <cat1> in the middle? No: a <mug1> in the middle, the <cat2> on the right."


# --- local model -----------------------------------------------------------------------------

def test_tiny_llava_runs_batched_and_seeded_through_the_auto_classes(tmp_path):
    from PIL import Image

    from stages.backends.caption import vlm

    model_dir = save_tiny_llava(tmp_path / "tiny-llava")
    prompts = []
    for i, colour in enumerate([(200, 30, 30), (20, 160, 40), (30, 40, 220)]):
        data = tmp_path / f"{i}.png"
        Image.new("RGB", (48 + 8 * i, 40), colour).save(data)
        prompts.append(({"instruction": "Describe what you see in this image.", "image": str(i)}, 100 + i))

    def backend(**options):
        params = vlm.Params(model=str(model_dir), max_tokens=6, **options)
        captioner = vlm.Backend(params, "templates", {"short": "captions/short.j2"}, cache_dir=str(tmp_path / "c"))
        captioner.images.update({str(i): (tmp_path / f"{i}.png").read_bytes() for i in range(3)})
        return captioner

    greedy = backend()
    batched = greedy.complete(prompts)
    assert all(isinstance(reply, str) and reply for reply in batched)
    assert [greedy.complete([prompt])[0] for prompt in prompts] == batched  # padding does not change a reply
    sampled = backend(temperature=1.0)
    first = sampled.complete(prompts)
    assert sampled.complete(prompts[::-1])[::-1] == first  # each image from its own seed, in any batch
    reseeded = [({**prompt}, seed + 1) for prompt, seed in prompts]
    assert sampled.complete(reseeded) != first


def test_local_vlm_builds_end_to_end_with_tokens_substituted(project, tmp_path):
    model_dir = save_tiny_llava(tmp_path / "scripted-llava", script=SCRIPTED_REPLY)
    write_recipe(project, small_recipe({"name": "vlm", "model": str(model_dir), "max_tokens": 16}))
    reports = build_in_process(project)
    caption = reports["caption"]
    assert caption["computed"] == 4 and caption["failed"] == 0
    by_id = captions(project)
    assert by_id["cat_mug-00000"]["vlm"] == "A <cat1> sits on the grass beside a <mug1>."
    assert by_id["cat_mug-00000"]["recaption"]["reply"].strip() == SCRIPTED_REPLY
    assert by_id["cat_mug_plant-00000"]["vlm"] == "A <cat1> sits on the grass beside a <mug1>, with <plant1>."
    assert by_id["cat_mug_plant-00000"]["short"].startswith("<")  # the template captions are still there
    assert caption["recaption"]["concepts_not_mentioned"] == 2 and caption["recaption"]["cut_to_fit_clip"] == 0
    assert caption["caption_words"]["vlm"] == {"captions": 4, "mean_words": 10.0, "over_20_words": 0.0}  # 9, 9, 11, 11
    assert caption["paper_caption_words"] == {"mean_words": 17.7, "over_20_words": 0.3}
    assert reports["pack"]["packed"] > 0


def test_a_missing_model_says_what_to_download(tmp_path):
    from base.errors import BackendUnavailable
    from stages.backends.caption import vlm

    captioner = vlm.Backend(vlm.Params(), "templates", {"short": "captions/short.j2"}, cache_dir=str(tmp_path))
    with pytest.raises(BackendUnavailable, match=r"huggingface-cli download llava-hf/llava-1.5-7b-hf --local-dir "
                                                 r"models/llava-1.5-7b-hf.*set backends\.caption\.model"):
        captioner.complete([({"instruction": "Describe.", "image": "x"}, 0)])
    with pytest.raises(BackendUnavailable, match="cannot load .* as an image-text-to-text model"):
        vlm.Backend(vlm.Params(model=str(tmp_path)), "templates", {}, cache_dir=str(tmp_path))._load()


# --- remote endpoint -------------------------------------------------------------------------

def test_remote_vlm_receives_the_image_and_a_rebuild_asks_nothing(project):
    with ChatServer(lambda prompt, n: (200, "Two kittens and a mug sit in the garden.")) as server:
        write_recipe(project, small_recipe(remote(server.url)))
        reports = build_in_process(project)
        asked = server.requests
        assert asked == 4 and reports["caption"]["computed"] == 4
        text, image = server.prompts[0]
        assert text == {"type": "text", "text": "Describe what you see in this image in detail. The number of words "
                                               "is limited to 30."}
        header, data = image["image_url"]["url"].split(",", 1)
        images = {p.name: p.read_bytes() for p in (project / "build/images").glob("*.jpg")}
        assert header == "data:image/jpeg;base64" and base64.b64decode(data) in images.values()
        by_id = captions(project)
        assert by_id["cat_mug-00000"]["vlm"] == "<cat1> and a <mug1> sit in the garden."
        assert by_id["cat_mug_plant-00000"]["recaption"]["not_mentioned"] == ["plant"]
        recipe = small_recipe(remote(server.url))
        recipe["strategy"] = {"token_style": "token_noun"}  # re-keys every caption, not the requests
        write_recipe(project, recipe)
        reports = build_in_process(project)
        assert reports["caption"]["computed"] == 4 and server.requests == asked  # replies come from the cache
        assert captions(project)["cat_mug-00000"]["vlm"] == "<cat1> cat and a <mug1> mug sit in the garden."


SIDES = {"left": "on the left", "center": "in the center", "right": "on the right"}


def described(entries: list[tuple[str, str]], style: int, names: list[str] | None = None) -> str:
    """A reply naming (noun, side) entries left to right in one of three hard phrasings: commas
    between positions, the position before the noun, one sentence each. `names`: what to write
    for each entry instead of its noun (the expected caption)."""
    phrases = [(name, SIDES[side]) for name, (_, side) in zip(names or [noun for noun, _ in entries], entries)]
    if style == 0:
        return ", ".join(f"a {name} {where}" for name, where in phrases) + "."
    if style == 1:
        nouns = [noun for noun, _ in entries]
        return ", and ".join(f"{where} is {'another' if nouns[i] in nouns[:i] else 'a'} {name}"
                             for i, (name, where) in enumerate(phrases)).capitalize() + "."
    return " ".join(f"A {name} {verb} {where}." for (name, where), verb in zip(phrases, ["sleeps", "sits", "plays"]))


def test_a_two_dog_build_through_a_loopback_server_names_every_dog_right(project):
    """The positions prompt tells the model where each dog is; its replies, in three phrasings,
    give each dog its own token in every image."""
    replies = {}

    def script(prompt, n):
        entries = re.findall(r"a (\w+) (?:on the|in the) (\w+)", prompt[0]["text"].split("it shows")[1])
        reply = described(entries, n % 3)
        replies[reply] = entries, n % 3
        return 200, reply

    recipe = small_recipe({}, num_images=6)
    dog = {"class_noun": "dog", "images": ["pkg:skimage/data/astronaut.png"], "cutout": False, "size": 0.5}
    recipe["concepts"] = {"rex": {**dog, "token": "<dog1>"}, "fido": {**dog, "token": "<dog2>"},
                          "cat": recipe["concepts"]["cat"]}
    recipe["compositions"] = {"dogs": {"concepts": ["rex", "cat", "fido"], "backgrounds": ["grass"], "num_images": 6}}
    with ChatServer(script) as server:
        recipe["backends"] = {"caption": remote(server.url, instruction="prompts/recaption_positions.j2")}
        write_recipe(project, recipe)
        reports = build_in_process(project)
    layouts = {item["id"]: item for item in json.loads((project / "build/layouts.json").read_text())["layouts"]}
    tokens = {"rex": "<dog1>", "fido": "<dog2>", "cat": "<cat1>"}
    for item_id, caption in captions(project).items():
        objects = sorted(layouts[item_id]["objects"], key=lambda o: (o["box"][0] + o["box"][2] / 2, o["concept"]))
        entries, style = replies[caption["recaption"]["reply"]]
        assert caption["vlm"] == described(entries, style, [tokens[o["concept"]] for o in objects]), item_id
        assert "<dog1>" in caption["vlm"] and "<dog2>" in caption["vlm"]
    thirds = [{o["concept"]: horizontal_position(o["box"], 256) for o in layout["objects"]} for layout in layouts.values()]
    assert any(third["rex"] == third["fido"] for third in thirds)  # the prompt told those dogs apart too
    assert reports["caption"]["recaption"]["ambiguous_mentions"] == 0 and reports["caption"]["computed"] == 6


def test_garbage_errors_and_long_replies(project):
    long_reply = "A cat and a mug. " + "The garden behind them is full of tall green plants and flowers. " * 6

    def script(prompt, n):
        if n == 1:
            return 200, "!!! {}"  # garbage: rejected, asked again with the next seed
        if n == 2:
            return 500, "overloaded"  # after retries: the item fails, the build goes on
        return 200, long_reply

    with ChatServer(script) as server:
        recipe = small_recipe(remote(server.url, concurrency=1), num_images=1)
        recipe["compositions"]["cat_mug"]["backgrounds"] = ["grass"]
        write_recipe(project, recipe)
        reports = build_in_process(project)
    caption = reports["caption"]
    assert caption["failed"] == 1 and "[request_failed]" in next(iter(caption["failures"].values()))
    assert caption["recaption"]["rejected_replies"] == {"not_a_caption": 1, "request_failed": 1}
    assert caption["recaption"]["cut_to_fit_clip"] == 1
    kept = next(iter(captions(project).values()))
    assert kept["recaption"]["cut"] and kept["recaption"]["clip_tokens"] <= CLIP_CONTEXT
    assert reports["pack"]["rejected"] >= 1


def test_a_recomputed_image_recaptions_and_the_others_are_reused(project):
    with ChatServer(lambda prompt, n: (200, "A cat and a mug and a houseplant on the ground.")) as server:
        recipe = small_recipe(remote(server.url))
        recipe["compositions"]["cat_mug"]["backgrounds"] = ["grass"]
        write_recipe(project, recipe)
        build_in_process(project)
        asked = server.requests
        recipe["backgrounds"]["grass"]["images"] = ["pkg:skimage/data/gravel.png"]  # cat_mug's pixels change
        write_recipe(project, recipe)
        reports = build_in_process(project)
    assert reports["compose"]["computed"] == 2 and reports["plan"]["computed"] == 0
    assert reports["caption"]["computed"] == 2 and reports["caption"]["reused"] == 2
    assert reports["caption"]["recomputed_because"] == {"image": 2}
    assert server.requests == asked + 2


def test_keys_cover_the_instruction_template_and_aliases_only_for_vlm(project):
    from compiler.compile import compile_recipe

    write_recipe(project, small_recipe(remote("http://127.0.0.1:9/v1")))
    vlm_item = compile_recipe(project, "tiny", [])["caption"]["items"][0]
    assert "prompts/recaption.j2" in vlm_item["parts"]["templates"]
    assert vlm_item["parts"]["concepts"]["cat"]["aliases"] == ["kitty", "kitten"] and "seed" in vlm_item["parts"]
    write_recipe(project, small_recipe({"name": "template"}))
    template_item = compile_recipe(project, "tiny", [])["caption"]["items"][0]
    assert "aliases" not in template_item["parts"]["concepts"]["cat"] and "seed" not in template_item["parts"]
    assert "prompts/recaption.j2" not in template_item["parts"]["templates"]


def item_parts(documents: dict) -> dict:
    return {stage: [item.get("parts") for item in document.get("items", [])] for stage, document in documents.items()}


def test_endpoint_throughput_options_are_in_no_key(project):
    """concurrency, timeout and max_retries change how fast replies come, not what they say."""
    from compiler.compile import compile_recipe

    with ChatServer(lambda prompt, n: (200, "A cat and a mug on the grass.")) as server:
        write_recipe(project, small_recipe(remote(server.url, concurrency=4)))
        build_in_process(project)
        shards = {p.name: p.stat().st_mtime_ns for p in (project / "dataset").glob("*.tar")}
        before = compile_recipe(project, "tiny", [])
        write_recipe(project, small_recipe(remote(server.url, concurrency=2, timeout=7.0, max_retries=1)))
        after = compile_recipe(project, "tiny", [])
        reports = build_in_process(project)
    assert after["caption"]["backend"]["params"]["concurrency"] == 2  # the backend still gets them
    assert item_parts(after) == item_parts(before)
    assert after["pack"]["recipe_key"] == before["pack"]["recipe_key"]
    assert reports["caption"]["computed"] == 0 and reports["caption"]["reused"] == 4
    assert {p.name: p.stat().st_mtime_ns for p in (project / "dataset").glob("*.tar")} == shards  # no shard rewritten
    write_recipe(project, small_recipe(remote(server.url, concurrency=2, temperature=0.5)))
    changed = compile_recipe(project, "tiny", [])
    assert item_parts(changed)["caption"] != item_parts(before)["caption"]  # what the model is asked still counts
    assert item_parts(changed)["plan"] == item_parts(before)["plan"]


def test_an_llm_planners_throughput_options_are_in_no_key(project):
    from compiler.compile import compile_recipe

    def planner(**options):
        recipe = small_recipe({"name": "template"})
        recipe["backends"]["plan"] = {"name": "openai", "base_url": "http://127.0.0.1:9/v1", **options}
        write_recipe(project, recipe)
        return item_parts(compile_recipe(project, "tiny", []))

    assert planner(concurrency=8, timeout=3.0, max_retries=0) == planner() != planner(temperature=0.3)


def test_an_endpoint_the_builder_did_not_approve_is_a_recipe_error(project):
    from base.errors import RecipeError
    from compiler.compile import compile_recipe

    write_recipe(project, small_recipe(remote("https://vlm.example.com/v1")))
    with pytest.raises(RecipeError, match=r"backends\.caption\.base_url.*not an approved LLM endpoint"):
        compile_recipe(project, "tiny", [])
