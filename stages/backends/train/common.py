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

from compiler.keys import item_seed
from stages.backends.train.text import TextEncoders

DATA_MODES = ("dataset", "source")
CAPTIONS = ("short", "detailed", "vlm")  # vlm: written by a VLM captioner (caption: vlm / vlm-openai)
PRIOR_SOURCES = ("generate", "folder", "none")
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
    learning_rate: float = 1e-5  # the paper's; scaled by batch_size when scale_lr (as Custom Diffusion does)
    scale_lr: bool = True
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


def _to_tensor(image: Any, resolution: int):
    """RGB -> [-1, 1] CHW float at `resolution` (shorter side resized, centre-cropped)."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    fitted = ImageOps.fit(image, (resolution, resolution), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(fitted, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)


def _mask_tensor(mask: Any, size: int):
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    fitted = ImageOps.fit(mask, (size, size), Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(fitted, dtype=np.float32) / 255)[None]


def encode(examples: list[Example], vae: Any, resolution: int, device: str, batch: int = 8):
    """The VAE latent distribution (mean, std) of every example, computed once: each step then
    draws its latent sample from it, as the scripts' per-step `latent_dist.sample()` would."""
    import torch

    means, stds = [], []
    with torch.no_grad():
        for start in range(0, len(examples), batch):
            pixels = torch.stack([_to_tensor(e.image, resolution) for e in examples[start:start + batch]])
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


class Trainer:
    """One training of one composition: base components, the method's trainable weights and
    the new token rows, a seeded loop with resumable checkpoints."""

    def __init__(self, method: Method, params: Params, pipeline: Any, run: Run):
        import torch
        from diffusers import DDPMScheduler

        self.method, self.params, self.run = method, params, run
        self.vae, self.unet = pipeline.vae, pipeline.unet
        self.scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
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
        scale = params.batch_size if params.scale_lr else 1
        self.optimizer = torch.optim.AdamW(self._state(), lr=params.learning_rate * scale,
                                           weight_decay=params.adam_weight_decay)
        use_scaler = run.dtype is not None and run.dtype == torch.float16
        self.scaler = torch.amp.GradScaler(run.device.split(":")[0], enabled=use_scaler)

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
        size = params.resolution // 2 ** (len(self.vae.config.block_out_channels) - 1)  # the latents' side
        instance_latents = encode(run.instances, self.vae, params.resolution, run.device)
        prior_latents = encode(run.priors, self.vae, params.resolution, run.device) if run.priors else None
        masks = (torch.stack([_mask_tensor(e.mask, size) for e in run.instances])
                 if params.mask_loss and run.instances[0].mask is not None else None)
        start, losses = self.resume()
        checkpoints = {s: f for s in range(params.checkpoint_every, start + 1, params.checkpoint_every)
                       if (f := self.run.state_dir / "checkpoints" / f"{s:07d}").is_dir()}
        for step in range(start, run.steps):
            losses.append(self._step(step, instance_latents, prior_latents, masks))
            done = step + 1
            if done % params.checkpoint_every == 0 or done == run.steps:
                if params.keep_checkpoints or done == run.steps:
                    checkpoints[done] = self.checkpoint(done)
                self.save_state(done, losses)
            if run.on_step:
                run.on_step(done)
        return Outcome(losses, checkpoints, start)

    def _batch(self, step: int, latents: tuple[Any, Any], examples: list[Example], generator: Any, stream: str):
        import torch

        indices = order(item_seed(self.run.seed, stream), len(examples), step, self.params.batch_size)
        mean, std = latents
        sample = mean[indices] + std[indices] * torch.randn(mean[indices].shape, generator=generator)
        return indices, sample * self.vae.config.scaling_factor, [examples[i].caption for i in indices]

    def _step(self, step: int, instance_latents: Any, prior_latents: Any, masks: Any) -> float:
        import torch

        run, params = self.run, self.params
        generator = torch.Generator().manual_seed(item_seed(run.seed, "step", step))
        indices, latents, captions = self._batch(step, instance_latents, run.instances, generator, "instances")
        if prior_latents is not None:
            _, prior, prior_captions = self._batch(step, prior_latents, run.priors, generator, "priors")
            latents, captions = torch.cat([latents, prior]), captions + prior_captions
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(latents),), generator=generator)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        if self.scheduler.config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        device = run.device
        with torch.autocast(device.split(":")[0], dtype=run.dtype, enabled=run.dtype is not None):
            states, added = self.text.encode(captions, device)
            prediction = self.unet(noisy.to(device), timesteps.to(device), states,
                                   added_cond_kwargs=added).sample.float()
        errors = (prediction - target.to(device)) ** 2
        count = len(indices)
        if masks is not None:
            weight = masks[indices].to(device)
            instance_loss = ((errors[:count] * weight).sum((1, 2, 3)) /
                             (weight.sum((1, 2, 3)) * errors.shape[1]).clamp(min=1e-8)).mean()
        else:
            instance_loss = errors[:count].mean()
        loss = instance_loss
        if prior_latents is not None:
            loss = loss + params.prior.loss_weight * errors[count:].mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self._state(), params.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.text.restore()  # only the new tokens' rows learn; weight decay must not move the others
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at step {step + 1}; lower learning_rate or use fp32/bf16")
        return value
