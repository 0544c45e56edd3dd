"""What every training backend shares: its options, the new tokens, and the seeded loop.

The loop is the one of diffusers' Custom Diffusion and DreamBooth scripts (noise prediction
MSE on VAE latents, optional prior-preservation batch), made deterministic and resumable:
every step draws its samples, latent noise, diffusion noise and timesteps from a CPU
generator seeded by (seed, step), so a run resumed from a checkpoint takes exactly the steps
an uninterrupted run takes. A backend (`Method`) decides which UNet weights train and how
they are saved and loaded.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from base.keys import item_seed
from stages.backends.train import augment
from stages.backends.train.text import TextEncoders

DATA_MODES = ("dataset", "source")
CAPTIONS = ("short", "detailed", "vlm")  # vlm: written by a VLM captioner (caption: vlm / vlm-openai)
PRIOR_SOURCES = ("generate", "folder", "none")
PREDICTION_TYPES = ("epsilon", "v_prediction")  # what the scripts train; others fail
PAPER_STEPS = {2: 2000, 3: 2000, 4: 3000, 5: 3000}  # Gen4Gen: by the number of concepts


@dataclass
class Prior:
    """Prior preservation: class images of each class noun, trained beside the instances."""

    source: str = "generate"  # generate (the base model paints them), folder, none
    num_images: int = 70  # per class noun (the paper's 70)
    folder: str = ""  # source: folder -> images in <folder>/<class noun>/
    steps: int = 50  # source: generate -> sampling steps and guidance
    guidance_scale: float = 6.0
    loss_weight: float = 1.0


@dataclass
class Params:
    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # hub id or local diffusers folder
    data: str = "dataset"  # dataset: the composition's packed samples; source: the concepts' own photos
    caption: str = "short"  # the packed caption a training caption starts from: short, detailed or vlm
    mask_loss: bool = False  # weight the loss by the union mask of the concepts (beyond the paper)
    resolution: int = 512
    batch_size: int = 8  # the paper's 8 (plus as many prior images when prior preservation is on)
    learning_rate: float = 1e-5  # the paper's; with scale_lr x batch_size, x2 with prior images (Custom Diffusion)
    scale_lr: bool = True
    augment: bool = False  # Custom Diffusion's random rescale with "far away" / "close up" captions (augment.py)
    hflip: bool = False  # mirror half of the images (instances and prior images)
    steps: int = 0  # 0: the paper's 2,000 for 2-3 concepts, 3,000 for 4-5
    checkpoint_every: int = 500  # resume points (and kept checkpoints)
    keep_checkpoints: bool = False  # also write the weights of every checkpoint (evaluate: checkpoints: all)
    max_grad_norm: float = 1.0
    adam_weight_decay: float = 1e-2
    prior: Prior = field(default_factory=Prior)

    def __post_init__(self) -> None:
        if isinstance(self.prior, dict):
            self.prior = Prior(**self.prior)
        if self.data not in DATA_MODES:
            raise ValueError(f"data '{self.data}'; valid: {', '.join(DATA_MODES)}")
        if self.caption not in CAPTIONS:
            raise ValueError(f"caption '{self.caption}'; valid: {', '.join(CAPTIONS)}")
        if self.prior.source not in PRIOR_SOURCES:
            raise ValueError(f"prior.source '{self.prior.source}'; valid: {', '.join(PRIOR_SOURCES)}")
        if self.prior.source == "folder" and not self.prior.folder:
            raise ValueError("prior.folder: the folder holding <class noun>/ image folders (prior.source: folder)")
        if self.resolution < 64 or self.resolution % 8:
            raise ValueError(f"resolution {self.resolution}: a multiple of 8, at least 64")
        if min(self.batch_size, self.checkpoint_every, self.prior.num_images, self.prior.steps) < 1 or self.steps < 0:
            raise ValueError("batch_size, checkpoint_every, prior.num_images and prior.steps >= 1; steps >= 0")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate {self.learning_rate} must be > 0")


def weights(params: dict[str, Any]) -> list[str]:
    """The base model: its fingerprint joins every training key."""
    return [params["model"]]


class Method(Protocol):
    """What a training backend decides: which UNet weights train and how they are stored."""

    WEIGHTS: str  # the weights file name in the model folder
    SUM_CHANNELS: bool  # the instance loss sums the latent channels per pixel (Custom Diffusion's scripts)
    RESAMPLE: str  # the PIL filter its reference script resizes images with (bilinear, lanczos)

    def prepare(self, unet: Any) -> list[Any]:
        """Make the backend's UNet weights trainable (and only those); return them."""

    def save(self, unet: Any, folder: Path) -> None:
        """Write the trained UNet weights as `folder / WEIGHTS`, readable by diffusers' loaders."""


@dataclass
class Example:
    """One training image (RGB, any size: fitted to the training resolution), its caption, an
    optional mask."""

    image: Any  # PIL RGB
    caption: str
    mask: Any = None  # PIL L, the concepts' union
    origin: str = ""  # the sample key or photo it comes from


@dataclass
class Run:
    """Everything one training needs besides the model."""

    instances: list[Example]
    priors: list[Example]
    tokens: dict[str, list[str]]  # new token -> the words its embedding starts from
    seed: int
    steps: int
    state_dir: Path  # resume points
    device: str = "cpu"
    dtype: Any = None  # autocast dtype (None: fp32)
    gradient_checkpointing: bool = False
    on_step: Callable[[int], None] | None = None


@dataclass
class Outcome:
    losses: list[float]
    checkpoints: dict[int, Path]  # step -> folder with the weights and tokens of that step
    resumed_from: int


def to_tensor(image: Any, resolution: int, resample: str):
    """RGB -> [-1, 1] CHW float at `resolution` (centre-cropped, resized with the PIL filter
    `resample`, the reference script's: a square image gets the script's exact pixels)."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    fitted = ImageOps.fit(image, (resolution, resolution), Image.Resampling[resample.upper()])
    return torch.from_numpy(np.asarray(fitted, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)


def _mask_tensor(mask: Any, size: int):
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    fitted = ImageOps.fit(mask, (size, size), Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(fitted, dtype=np.float32) / 255)[None]


def mirrored(examples: list[Example]) -> list[Example]:
    """The examples and their mirror images: example i flipped is number i + len(examples)."""
    from PIL import Image

    flip = Image.Transpose.FLIP_LEFT_RIGHT
    return examples + [Example(e.image.transpose(flip), e.caption, None if e.mask is None else e.mask.transpose(flip), e.origin)
                       for e in examples]


def encode(examples: list[Example], vae: Any, resolution: int, device: str, resample: str = "bilinear",
           batch: int = 8):
    """The VAE latent distribution (mean, std) of every example, computed once: each step then
    draws its latent sample from it, as the scripts' per-step `latent_dist.sample()` would
    (`resample`: the backend's `Method.RESAMPLE`)."""
    import torch

    means, stds = [], []
    with torch.no_grad():
        for start in range(0, len(examples), batch):
            pixels = torch.stack([to_tensor(e.image, resolution, resample) for e in examples[start:start + batch]])
            dist = vae.encode(pixels.to(device, vae.dtype)).latent_dist
            means.append(dist.mean.float().cpu())
            stds.append(dist.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


def order(seed: int, count: int, step: int, batch: int) -> list[int]:
    """The examples of `step`: a seeded permutation per epoch, read in order."""
    import torch

    picked = []
    for position in range(step * batch, (step + 1) * batch):
        epoch, offset = divmod(position, count)
        permutation = torch.randperm(count, generator=torch.Generator().manual_seed(item_seed(seed, "epoch", epoch)))
        picked.append(int(permutation[offset]))
    return picked


def learning_rate(params: Params, prior: bool) -> float:
    """Custom Diffusion's rule (diffusers' port and the authors' script): with scale_lr, the
    base rate x batch size (one process, no accumulation), x2 when prior images join the batch."""
    if not params.scale_lr:
        return params.learning_rate
    return params.learning_rate * params.batch_size * (2.0 if prior else 1.0)


@dataclass
class Draw:
    """One step's random choices, from CPU generators seeded by (seed, step)."""

    instances: list[int]
    priors: list[int]
    views: list[augment.View]  # per instance: flip, and with `augment` its rescale and caption prefix
    prior_flips: list[bool]
    latent_noise: Any  # the latent sample of each image (instances, then priors) = mean + std * this
    noise: Any
    timesteps: Any


class Trainer:
    """One training of one composition: base components, the method's trainable weights and
    the new token rows, a seeded loop with resumable checkpoints."""

    def __init__(self, method: Method, params: Params, pipeline: Any, run: Run):
        import torch
        from diffusers import DDPMScheduler

        self.method, self.params, self.run = method, params, run
        self.vae, self.unet = pipeline.vae, pipeline.unet
        self.scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
        prediction = self.scheduler.config.prediction_type
        if prediction not in PREDICTION_TYPES:
            raise ValueError(f"{params.model}: the scheduler's prediction_type '{prediction}' (scheduler/"
                             f"scheduler_config.json) cannot be trained; valid: {', '.join(PREDICTION_TYPES)}")
        for module in (self.vae, self.unet, pipeline.text_encoder, getattr(pipeline, "text_encoder_2", None)):
            if module is not None:
                module.requires_grad_(False).to(run.device)
        self.text = TextEncoders(pipeline, run.tokens, params.resolution)
        self.tokenizer, self.text_encoder = self.text.pairs[0]  # the (first) CLIP text encoder
        self.token_ids, self.embeddings = self.text.token_ids[0], self.text.embeddings[0]
        if run.dtype is not None:  # frozen weights in half precision, as diffusers' scripts do
            self.unet.to(dtype=run.dtype)
            if not getattr(self.vae.config, "force_upcast", False):  # SDXL's VAE overflows in fp16
                self.vae.to(dtype=run.dtype)
        self.trainable = method.prepare(self.unet)
        for parameter in self.trainable:  # the trained weights stay fp32 (mixed precision)
            parameter.data = parameter.data.float()
        if run.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            for encoder in self.text.encoders():
                encoder.gradient_checkpointing_enable()
        self.unet.train()
        for encoder in self.text.encoders():
            encoder.train()
        self.optimizer = torch.optim.AdamW(self._state(), lr=learning_rate(params, bool(run.priors)),
                                           weight_decay=params.adam_weight_decay)
        use_scaler = run.dtype is not None and run.dtype == torch.float16
        self.scaler = torch.amp.GradScaler(run.device.split(":")[0], enabled=use_scaler)
        self.latent_side = params.resolution // 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.cached: dict[str, Any] = {}

    def _state(self) -> list[Any]:
        return [*self.trainable, *self.text.embeddings]
    def save_state(self, step: int, losses: list[float]) -> None:
        """A resume point, written atomically: trainable tensors, optimizer, scaler, losses."""
        import torch

        self.run.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.run.state_dir / f"state-{step:07d}.pt"
        partial = path.with_suffix(".partial")
        torch.save({"step": step, "tensors": [t.detach().cpu() for t in self._state()],
                    "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                    "losses": losses}, partial)
        os.replace(partial, path)
        for older in self.run.state_dir.glob("state-*.pt"):
            if older != path:
                older.unlink()

    def resume(self) -> tuple[int, list[float]]:
        """The last resume point's step and losses (0, [] when there is none)."""
        import torch

        states = sorted(self.run.state_dir.glob("state-*.pt"))
        if not states:
            return 0, []
        state = torch.load(states[-1], map_location="cpu", weights_only=True)
        with torch.no_grad():
            for tensor, saved in zip(self._state(), state["tensors"]):
                tensor.copy_(saved)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        return state["step"], list(state["losses"])

    def checkpoint(self, step: int) -> Path:
        """The weights and token embeddings as of `step`, in a folder diffusers' loaders read."""
        folder = self.run.state_dir / "checkpoints" / f"{step:07d}"
        if not folder.is_dir():
            partial = folder.with_name(folder.name + ".partial")
            partial.mkdir(parents=True, exist_ok=True)
            self.method.save(self.unet, partial)
            self.text.save(partial)
            os.replace(partial, folder)
        return folder

    def fit(self) -> Outcome:
        import torch

        run, params = self.run, self.params
        if not params.augment:
            self.cached["instances"] = encode(mirrored(run.instances) if params.hflip else run.instances, self.vae,
                                              params.resolution, run.device, self.method.RESAMPLE)
        if run.priors:
            self.cached["priors"] = encode(mirrored(run.priors) if params.hflip else run.priors, self.vae,
                                           params.resolution, run.device, self.method.RESAMPLE)
        if params.mask_loss and run.instances[0].mask is not None and not params.augment:
            masks = run.instances + (mirrored(run.instances)[len(run.instances):] if params.hflip else [])
            self.cached["masks"] = torch.stack([_mask_tensor(e.mask, self.latent_side) for e in masks])
        start, losses = self.resume()
        kept = range(params.checkpoint_every, start + 1, params.checkpoint_every) if params.keep_checkpoints else ()
        checkpoints = {s: f for s in kept if (f := self.run.state_dir / "checkpoints" / f"{s:07d}").is_dir()}
        for step in range(start, run.steps):
            losses.append(self.step(step))
            done = step + 1
            if params.keep_checkpoints and done % params.checkpoint_every == 0:
                checkpoints[done] = self.checkpoint(done)
            if done % params.checkpoint_every == 0 or done == run.steps:
                self.save_state(done, losses)
            if run.on_step:
                run.on_step(done)
        checkpoints[run.steps] = self.checkpoint(run.steps)  # also when resumed at the last step
        return Outcome(losses, checkpoints, start)

    def draw(self, step: int) -> Draw:
        """The step's examples, views, latent noise, diffusion noise and timesteps."""
        import torch

        run, params = self.run, self.params
        generator = torch.Generator().manual_seed(item_seed(run.seed, "step", step))
        instances = order(item_seed(run.seed, "instances"), len(run.instances), step, params.batch_size)
        priors = order(item_seed(run.seed, "priors"), len(run.priors), step, params.batch_size) if run.priors else []
        shape = (self.vae.config.latent_channels, self.latent_side, self.latent_side)
        latent_noise = torch.cat([torch.randn((len(picked), *shape), generator=generator)
                                  for picked in (instances, priors) if picked])
        noise = torch.randn(latent_noise.shape, generator=generator)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(latent_noise),),
                                  generator=generator)
        views_generator = torch.Generator().manual_seed(item_seed(run.seed, "augment", step))
        views = [augment.draw(views_generator, params.resolution, params.augment, params.hflip) for _ in instances]
        flips = [params.hflip and float(torch.rand((), generator=views_generator, dtype=torch.float64)) < 0.5
                 for _ in priors]
        return Draw(instances, priors, views, flips, latent_noise, noise, timesteps)

    def inputs(self, draw: Draw) -> tuple[Any, list[str], Any]:
        """(latents, captions, instance loss weights or None) of a step."""
        import numpy as np
        import torch

        run, params = self.run, self.params
        examples = [run.instances[i] for i in draw.instances]
        weights = None
        if params.augment:
            pixels = torch.from_numpy(np.stack([augment.pixels(e.image, v, params.resolution)
                                                for e, v in zip(examples, draw.views)])).permute(0, 3, 1, 2)
            with torch.no_grad():
                dist = self.vae.encode(pixels.to(run.device, self.vae.dtype)).latent_dist
            mean, std = dist.mean.float().cpu(), dist.std.float().cpu()
            weights = torch.from_numpy(np.stack([augment.valid(v, params.resolution, self.latent_side)
                                                 for v in draw.views]))[:, None]
            if params.mask_loss and examples[0].mask is not None:
                factor = params.resolution // self.latent_side
                masks = np.stack([augment.concept_mask(e.mask, v, params.resolution) for e, v in zip(examples, draw.views)])
                weights = weights * torch.from_numpy(masks.reshape(len(masks), self.latent_side, factor,
                                                                   self.latent_side, factor).mean((2, 4)))[:, None]
        else:
            rows = [i + len(run.instances) * v.flip for i, v in zip(draw.instances, draw.views)]
            mean, std = (part[rows] for part in self.cached["instances"])
            if "masks" in self.cached:
                weights = self.cached["masks"][rows]
        captions = [v.prefix + e.caption for e, v in zip(examples, draw.views)]
        if draw.priors:
            rows = [i + len(run.priors) * flip for i, flip in zip(draw.priors, draw.prior_flips)]
            mean = torch.cat([mean, self.cached["priors"][0][rows]])
            std = torch.cat([std, self.cached["priors"][1][rows]])
            captions += [run.priors[i].caption for i in draw.priors]
        return (mean + std * draw.latent_noise) * self.vae.config.scaling_factor, captions, weights

    def step(self, step: int) -> float:
        """One optimizer step; its loss."""
        import torch

        run, params, draw = self.run, self.params, self.draw(step)
        latents, captions, weights = self.inputs(draw)
        noisy = self.scheduler.add_noise(latents, draw.noise, draw.timesteps)
        if self.scheduler.config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(latents, draw.noise, draw.timesteps)
        else:
            target = draw.noise
        device = run.device
        with torch.autocast(device.split(":")[0], dtype=run.dtype, enabled=run.dtype is not None):
            states, added = self.text.encode(captions, device)
            prediction = self.unet(noisy.to(device), draw.timesteps.to(device), states,
                                   added_cond_kwargs=added).sample.float()
        errors = (prediction - target.to(device)) ** 2
        loss = self._instance_loss(errors[:len(draw.instances)], weights)
        if draw.priors:
            loss = loss + params.prior.loss_weight * errors[len(draw.instances):].mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        self.text.zero_frozen_grads()  # as the scripts do: the clip norm counts only what learns
        torch.nn.utils.clip_grad_norm_(self._state(), params.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.text.restore()  # weight decay must not move the frozen rows either
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at step {step + 1}; lower learning_rate or use fp32/bf16")
        return value

    def _instance_loss(self, errors: Any, weights: Any) -> Any:
        """Mean squared error, weighted per latent pixel when there are weights; Custom
        Diffusion's scripts sum the channels of each pixel instead of averaging them."""
        import torch

        if weights is None and not self.method.SUM_CHANNELS:
            return errors.mean()
        if weights is None:
            weights = torch.ones((len(errors), 1, *errors.shape[2:]))
        weights = weights.to(errors.device)
        per_pixel = 1 if self.method.SUM_CHANNELS else errors.shape[1]
        return ((errors * weights).sum((1, 2, 3)) / (weights.sum((1, 2, 3)) * per_pixel).clamp(min=1e-8)).mean()
