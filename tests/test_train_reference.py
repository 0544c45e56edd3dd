"""Our training step against a port of diffusers' reference scripts, on tiny random models.

Ported from diffusers (main) examples/custom_diffusion/train_custom_diffusion.py
(`CustomDiffusionDataset`, `collate_fn`, the learning-rate rule and the training step) and
examples/dreambooth/train_dreambooth_lora.py (its loss and clipping). The port takes each step's
random choices from our trainer (`Trainer.draw`: samples, views, latent and diffusion noise,
timesteps) and does everything else the scripts' way: preprocessing, prompt prefixes, VAE
encoding, loss, gradient zeroing, clipping, AdamW at their learning rate.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from stages.backends.train import augment, common, custom_diffusion, lora
from stages.backends.train.trained import load_base
from tests.tiny_models import save_tiny_sd15

SIZE = 64


@pytest.fixture(scope="module")
def tiny_sd15(tmp_path_factory):
    return save_tiny_sd15(tmp_path_factory.mktemp("models") / "sd15")


def photos(count: int, caption: str, seed: int) -> list[common.Example]:
    rng = np.random.default_rng(seed)
    return [common.Example(Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)), caption)
            for _ in range(count)]


# --- the port ---------------------------------------------------------------------------------

def reference_lr(learning_rate, gradient_accumulation_steps, train_batch_size, num_processes, with_prior_preservation):
    learning_rate = learning_rate * gradient_accumulation_steps * train_batch_size * num_processes
    if with_prior_preservation:
        learning_rate = learning_rate * 2.0
    return learning_rate


def reference_preprocess(image, scale, resample, size, mask_size, top, left):
    """CustomDiffusionDataset.preprocess, with its two np.random.randint draws given."""
    outer, inner = size, scale
    factor = size // mask_size
    if scale > size:
        outer, inner = scale, size
    assert 0 <= top <= outer - inner and 0 <= left <= outer - inner
    image = image.resize((scale, scale), resample=resample)
    image = np.array(image).astype(np.uint8)
    image = (image / 127.5 - 1.0).astype(np.float32)
    instance_image = np.zeros((size, size, 3), dtype=np.float32)
    mask = np.zeros((size // factor, size // factor))
    if scale > size:
        instance_image = image[top: top + inner, left: left + inner, :]
        mask = np.ones((size // factor, size // factor))
    else:
        instance_image[top: top + inner, left: left + inner, :] = image
        mask[top // factor + 1: (top + scale) // factor - 1, left // factor + 1: (left + scale) // factor - 1] = 1.0
    return instance_image, mask


def reference_instance(image, prompt, view, aug, mask_size):
    """CustomDiffusionDataset.__getitem__'s instance half; `view` supplies the random draws."""
    if view.flip:
        image = transforms.RandomHorizontalFlip(1.0)(image)
    random_scale = view.scale if aug else SIZE
    image, mask = reference_preprocess(image, random_scale, Image.BILINEAR, SIZE, mask_size, view.top, view.left)
    if random_scale < 0.6 * SIZE:
        assert view.prefix in ["a far away ", "very small "]
        prompt = view.prefix + prompt
    elif random_scale > SIZE:
        assert view.prefix in ["zoomed in ", "close up "]
        prompt = view.prefix + prompt
    else:
        assert view.prefix == ""
    if not aug:  # the one deliberate difference (docs/training.md): --noaug still drops a border, we do not
        mask = np.ones_like(mask)
    return torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(mask), prompt


def reference_class_image(image, flip):
    """The script's `image_transforms` of a class image (RandomCrop of an image already at SIZE: all of it)."""
    return transforms.Compose([transforms.RandomHorizontalFlip(1.0 if flip else 0.0),
                               transforms.Resize(SIZE, interpolation=transforms.InterpolationMode.BILINEAR),
                               transforms.RandomCrop(SIZE), transforms.ToTensor(),
                               transforms.Normalize([0.5], [0.5])])(image)


def reference_step(model, optimizer, draw, run, custom, max_grad_norm, prior_loss_weight=1.0):
    """One step of train_custom_diffusion.py (custom) or train_dreambooth_lora.py; returns (loss, grad norm)."""
    with_prior_preservation = bool(draw.priors)
    mask_size = model.vae.encode(torch.randn(1, 3, SIZE, SIZE)).latent_dist.sample().size()[-1]  # as the script
    pixel_values, masks, prompts = [], [], []
    for index, view in zip(draw.instances, draw.views):
        example = run.instances[index]
        pixels, mask, prompt = reference_instance(example.image, example.caption, view, model.params.augment, mask_size)
        pixel_values.append(pixels)
        masks.append(mask)
        prompts.append(prompt)
    for index, flip in zip(draw.priors, draw.prior_flips):  # collate_fn: instances, then class images
        pixel_values.append(reference_class_image(run.priors[index].image, flip))
        masks.append(torch.ones_like(masks[0]))
        prompts.append(run.priors[index].caption)
    tokenizer, text_encoder, unet, vae = model.tokenizer, model.text_encoder, model.unet, model.vae
    input_ids = tokenizer(prompts, truncation=True, padding="max_length", max_length=tokenizer.model_max_length,
                          return_tensors="pt").input_ids
    mask = torch.stack(masks).float().unsqueeze(1)
    dist = vae.encode(torch.stack(pixel_values).float()).latent_dist
    latents = (dist.mean + dist.std * draw.latent_noise) * vae.config.scaling_factor  # = latent_dist.sample()
    noise, timesteps = draw.noise, draw.timesteps.long()
    noisy_latents = model.scheduler.add_noise(latents, noise, timesteps)
    encoder_hidden_states = text_encoder(input_ids)[0]
    model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
    target = noise
    if with_prior_preservation:
        model_pred, model_pred_prior = torch.chunk(model_pred, 2, dim=0)
        target, target_prior = torch.chunk(target, 2, dim=0)
        if custom:
            mask = torch.chunk(mask, 2, dim=0)[0]
            loss = F.mse_loss(model_pred.float(), target.float(), reduction="none")
            loss = ((loss * mask).sum([1, 2, 3]) / mask.sum([1, 2, 3])).mean()
        else:
            loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
        prior_loss = F.mse_loss(model_pred_prior.float(), target_prior.float(), reduction="mean")
        loss = loss + prior_loss_weight * prior_loss
    elif custom:
        loss = F.mse_loss(model_pred.float(), target.float(), reduction="none")
        loss = ((loss * mask).sum([1, 2, 3]) / mask.sum([1, 2, 3])).mean()
    else:
        loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
    loss.backward()
    grads_text_encoder = text_encoder.get_input_embeddings().weight.grad
    index_grads_to_zero = torch.arange(len(tokenizer)) != model.token_ids[0]
    for i in range(1, len(model.token_ids)):
        index_grads_to_zero = index_grads_to_zero & (torch.arange(len(tokenizer)) != model.token_ids[i])
    grads_text_encoder.data[index_grads_to_zero, :] = grads_text_encoder.data[index_grads_to_zero, :].fill_(0)
    params_to_clip = itertools.chain(text_encoder.parameters(), model.trainable)
    norm = torch.nn.utils.clip_grad_norm_(params_to_clip, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad()
    return float(loss), float(norm)


# --- the comparison ---------------------------------------------------------------------------

def build(base, method, priors: bool, state_dir, **options) -> common.Trainer:
    backend = custom_diffusion if isinstance(method, custom_diffusion.Method) else lora
    params = backend.Params(model=str(base), resolution=SIZE, batch_size=2, learning_rate=1e-3, checkpoint_every=100,
                            **options)
    run = common.Run(instances=photos(3, "<cat1> and <mug1> in the garden", 1),
                     priors=photos(2, "a photo of a cat", 2) if priors else [],
                     tokens={"<cat1>": ["cat"], "<mug1>": ["mug"]}, seed=7, steps=6, state_dir=state_dir)
    return common.Trainer(method, params, load_base(str(base), "backends.train.model"), run)


def clipped_norms(monkeypatch) -> list[float]:
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording(parameters, max_norm, *args, **kwargs):
        norms.append(float(clip(parameters, max_norm, *args, **kwargs)))
        return norms[-1]

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    return norms


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


CASES = {
    "cd": (custom_diffusion.Method, False, {}),
    "cd-prior": (custom_diffusion.Method, True, {}),
    "cd-noaug-prior": (custom_diffusion.Method, True, {"augment": False, "hflip": False}),
    "lora-prior": (lambda: lora.Method(4, 4, seed=1), True, {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_our_steps_equal_the_reference_scripts_steps(tiny_sd15, tmp_path, monkeypatch, case):
    method, priors, options = CASES[case]
    custom = case.startswith("cd")
    ours = build(tiny_sd15, method(), priors, tmp_path / "ours", max_grad_norm=0.1, **options)
    model = build(tiny_sd15, method(), priors, tmp_path / "ref", max_grad_norm=0.1, **options)
    params = model.params
    lr = (reference_lr(params.learning_rate, 1, params.batch_size, 1, priors) if custom else params.learning_rate)
    assert ours.optimizer.param_groups[0]["lr"] == pytest.approx(lr, rel=1e-12)
    optimizer = torch.optim.AdamW(itertools.chain(model.text_encoder.get_input_embeddings().parameters(),
                                                  model.trainable),
                                  lr=lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    draws = [ours.draw(step) for step in range(ours.run.steps)]
    if custom and params.augment:  # the draws exercise every branch of the augmentation
        scales = [v.scale for d in draws for v in d.views]
        assert min(scales) < 0.6 * SIZE and max(scales) > SIZE and any(v.flip for d in draws for v in d.views)
    reference = [reference_step(model, optimizer, draw, ours.run, custom, params.max_grad_norm) for draw in draws]

    norms = clipped_norms(monkeypatch)
    losses = ours.fit().losses
    assert losses == pytest.approx([loss for loss, _ in reference], rel=1e-4)
    assert norms == pytest.approx([norm for _, norm in reference], rel=1e-4)
    assert any(n > params.max_grad_norm for n in norms)  # clipping happened, so its norm mattered
    for mine, theirs in zip(ours.trainable, model.trainable):
        assert relative(mine.detach(), theirs.detach()) < 1e-4
    rows = ours.token_ids
    assert relative(ours.embeddings[rows].detach(), model.embeddings[rows].detach()) < 1e-4


def test_augmentation_draws_with_the_scripts_probabilities_and_ranges():
    """2/3 shrink to [side/3, side], 1/3 grow to [1.2, 1.4) side; prefixes by scale; half flipped."""
    generator = torch.Generator().manual_seed(0)
    views = [augment.draw(generator, 512, resize=True, hflip=True) for _ in range(3000)]
    small = [v for v in views if v.scale <= 512]
    assert 0.63 < len(small) / len(views) < 0.69 and 0.47 < np.mean([v.flip for v in views]) < 0.53
    assert min(v.scale for v in small) == 512 // 3 and max(v.scale for v in small) == 512
    assert {v.scale for v in views if v.scale > 512} <= set(range(614, 716))
    for v in views:
        expected = augment.FAR if v.scale < 0.6 * 512 else augment.CLOSE if v.scale > 512 else ("",)
        assert v.prefix in expected
        assert 0 <= v.top <= abs(v.scale - 512) and 0 <= v.left <= abs(v.scale - 512)
    assert {v.prefix for v in views} == {*augment.FAR, *augment.CLOSE, ""}


def test_an_unknown_prediction_type_fails_naming_the_valid_ones(tiny_sd15, tmp_path):
    pipeline = load_base(str(tiny_sd15), "m")
    pipeline.scheduler.register_to_config(prediction_type="sample")
    params = common.Params(model="tiny", resolution=SIZE)
    run = common.Run(instances=photos(1, "<cat1>", 0), priors=[], tokens={"<cat1>": ["cat"]}, seed=0, steps=1,
                     state_dir=tmp_path)
    with pytest.raises(ValueError, match=r"tiny: the scheduler's prediction_type 'sample' .* valid: epsilon, "
                                         r"v_prediction"):
        common.Trainer(custom_diffusion.Method(), params, pipeline, run)


@pytest.mark.parametrize("backend", ["custom_diffusion", "lora"])
def test_images_are_resized_with_the_scripts_filters(backend):
    """A 96x96 image at SIZE: Custom Diffusion's --noaug `image.resize(..., Image.BILINEAR)` and
    class-image transforms (Resize BILINEAR), the LoRA scripts' Resize at their default
    --image_interpolation_mode lanczos, then CenterCrop."""
    image = photos(1, "", 3)[0].image.resize((96, 96), Image.Resampling.NEAREST)
    method = custom_diffusion.Method() if backend == "custom_diffusion" else lora.Method(4, 4, seed=1)
    ours = common.to_tensor(image, SIZE, method.RESAMPLE)
    if backend == "custom_diffusion":
        instance, _ = reference_preprocess(image, SIZE, Image.BILINEAR, SIZE, 8, 0, 0)
        assert torch.allclose(ours, torch.from_numpy(instance).permute(2, 0, 1), atol=1e-6)
        assert torch.allclose(ours, reference_class_image(image, False), atol=1e-6)
    else:
        mode = transforms.InterpolationMode["LANCZOS"]
        theirs = transforms.Compose([transforms.Resize(SIZE, interpolation=mode), transforms.CenterCrop(SIZE),
                                     transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])(image)
        assert torch.allclose(ours, theirs, atol=1e-6)
    assert not torch.allclose(ours, common.to_tensor(image, SIZE, "bicubic"), atol=1e-3)  # the filter matters
