"""Local diffusers pipelines: txt2img, img2img and inpainting over ONE set of weights.

The text-to-image pipeline is loaded once; img2img and inpainting pipelines are derived from it
with `from_pipe`, which shares every component (no second copy of the weights in memory). What a
call adds (LoRAs, ControlNets, an IP-Adapter, an SDXL refiner, speed options) is kept and set by
the small classes of `tools.diffusers_adapters`; loading and model-folder checks live in
`tools.diffusers_loading`.
"""
from __future__ import annotations

import threading
import time

from tools.diffusers_adapters import ControlNets, IPAdapterSlot, Loras, Refiners, set_speed
from tools.diffusers_loading import load_pipeline
from tools.errors import BackendError, Cancelled
from tools.generate import GenerateRequest, GenerateResult, ProgressFn, check_request
from tools.prompt_encoding import pipeline_prompt_kwargs
from tools.schedulers import make_scheduler, name_of


def keep_unmasked(generated, init, mask):
    """Pixels outside the mask exactly as given (black = keep), as A1111 pastes them back: an
    inpainting model's VAE round trip would otherwise shift the whole image a little."""
    from PIL import Image

    if generated.size != init.size:
        generated = generated.resize(init.size, Image.LANCZOS)
    return Image.composite(generated.convert("RGB"), init.convert("RGB"), mask.convert("L").point(
        lambda v: 255 if v >= 128 else 0))


def _plain_unet(pipe) -> bool:
    """True for a 4-channel text-to-image UNet (not a 9-channel inpainting one)."""
    unet = getattr(pipe, "unet", None)
    return unet is not None and getattr(unet.config, "in_channels", 4) == 4


class DiffusersBackend:
    name = "diffusers"
    capabilities = frozenset({"txt2img", "img2img", "inpaint", "compose"})

    def __init__(self, model: str, device: str = "cpu", dtype=None, pipe=None, *,
                 lora_dirs=(), control_models: dict[str, str] | None = None):
        """`pipe` may be passed in (tests, benchmarks); otherwise it is loaded on first use.
        `lora_dirs`: folders where a LoRA named NAME is NAME.safetensors; `control_models`: the
        ControlNet to use per control kind when a condition names none (the demo model ships one
        for `layout`)."""
        self.model = model
        self.device = device
        self.dtype = dtype
        self._pipes: dict[str, object] = {}
        self._lock = threading.Lock()
        self.loras = Loras(model, lora_dirs)
        self.controlnets = ControlNets(model, device, dtype, control_models)
        self.ip_adapter = IPAdapterSlot(model)
        self.refiners = Refiners(model, device, dtype)
        if pipe is not None:
            self._pipes["txt2img"] = pipe
        self.load_seconds = 0.0

    def pipeline(self, mode: str = "txt2img"):
        with self._lock:
            if "txt2img" not in self._pipes:
                t0 = time.perf_counter()
                self._pipes["txt2img"] = load_pipeline(self.model, self.device, self.dtype)
                self.load_seconds = time.perf_counter() - t0
            if mode not in self._pipes:
                import diffusers

                base = self._pipes["txt2img"]
                cls = {"img2img": diffusers.AutoPipelineForImage2Image,
                       "inpaint": diffusers.AutoPipelineForInpainting}[mode]
                self._pipes[mode] = cls.from_pipe(base)
                self._pipes[mode].set_progress_bar_config(disable=True)
            return self._pipes[mode]

    def native_size(self) -> tuple[int, int]:
        pipe = self.pipeline()
        side = pipe.unet.config.sample_size * pipe.vae_scale_factor
        return side, side

    def generate(self, request: GenerateRequest, *, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> GenerateResult:
        req = check_request(request)
        self.controlnets.check(req.controls)  # what can be told without a model, before one loads
        self.loras.check(req.loras)
        import torch

        width, height = (req.init_image.size if req.init_image is not None else
                         (req.width or self.native_size()[0], req.height or self.native_size()[1]))
        pipe = (self.controlnets.pipeline(self.pipeline("txt2img"), req.mode, req.controls) if req.controls
                else self.pipeline(req.mode))
        control_kwargs = ControlNets.call_kwargs(req, (width, height)) if req.controls else {}
        self.loras.apply(self.pipeline("txt2img"), req.loras, fuse=req.lora_fuse)
        set_speed(pipe, req)
        self.ip_adapter.apply(pipe, req.ip_adapter)
        base_scheduler = pipe.scheduler
        if req.scheduler:
            pipe.scheduler = make_scheduler(req.scheduler, base_scheduler.config)
        scheduler = name_of(pipe.scheduler)
        prompt_kwargs, warnings = pipeline_prompt_kwargs(pipe, req.prompt, req.negative_prompt)
        total = req.steps if req.mode == "txt2img" else max(1, int(req.steps * req.strength))
        images, seeds = [], []
        t0 = time.perf_counter()
        try:
            for i in range(req.count):
                seed = req.seed + i
                call = dict(prompt_kwargs, num_inference_steps=req.steps, guidance_scale=req.cfg,
                            generator=torch.Generator("cpu").manual_seed(seed),
                            callback_on_step_end=self._callback(i, req.count, total, progress, cancel))
                call.update(control_kwargs)
                if req.ip_adapter is not None:
                    call.update(ip_adapter_image=req.ip_adapter.image)
                if req.mode == "txt2img":
                    call.update(width=width, height=height)
                else:
                    call.update(image=req.init_image, strength=req.strength)
                if req.mode == "inpaint":
                    call.update(mask_image=req.mask, width=width, height=height)
                    if _plain_unet(pipe):
                        # a text-to-image UNet draws where it likes and the blend outside the mask
                        # drops it: work on the masked area alone, scaled to the model's size, and
                        # paste it back (A1111's "inpaint only masked"); pixels outside stay as given
                        call.update(padding_mask_crop=max(2, round(min(width, height) / 16)))
                try:
                    if req.refiner:
                        out = self.refiners.run(self.pipeline("txt2img"), pipe, call, req, seed, cancel=cancel,
                                                callback=lambda offset, i=i: self._callback(
                                                    i, req.count, total, progress, cancel, offset=offset))
                    else:
                        out = pipe(**call)
                except Cancelled:
                    raise
                except (RuntimeError, ValueError) as exc:
                    if "out of memory" in str(exc).lower():
                        raise BackendError("The model ran out of memory.",
                                           "Try a smaller size, fewer images, or the cpu device.") from None
                    raise BackendError(f"Generation failed: {exc}") from exc
                if cancel is not None and cancel.is_set():
                    raise Cancelled("Generation cancelled.")
                image = out.images[0]
                if req.mode == "inpaint":
                    image = keep_unmasked(image, req.init_image, req.mask)
                images.append(image)
                seeds.append(seed)
        finally:
            pipe.scheduler = base_scheduler
        return GenerateResult(images=images, seeds=seeds, model=self.model, backend=self.name,
                              width=width, height=height, scheduler=scheduler,
                              timings={"generate_s": time.perf_counter() - t0, "load_s": self.load_seconds},
                              warnings=warnings)

    def has_control(self, kind: str) -> bool:
        """Whether a ControlNet is set (or shipped, for the demo model) for conditions of `kind`."""
        return self.controlnets.has(kind)

    def compose(self, plan, locate, base_image=None, *, cancel: threading.Event | None = None):
        """Layout-guided generation and local edits (tools.compose) on this model's pipelines."""
        from tools.compose import compose

        if plan.layout_control is not None and not plan.use_base:
            return self._compose_by_control(plan, cancel)
        txt = self.pipeline("txt2img")
        img2img = self.pipeline("img2img")
        try:
            return compose(txt, img2img, plan, locate, base_image=base_image, cancel=cancel)
        except Cancelled:
            raise
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"Layout-guided generation failed: {exc}") from exc

    def _compose_by_control(self, plan, cancel):
        """A fresh layout drawn by the layout ControlNet: one generation from the whole prompt,
        conditioned on the plan's boxes in their objects' colours."""
        from tools.adapters import Control, control_palette
        from tools.compose import ComposeResult, layout_boxes, layout_condition

        source = self.controlnets.model_for(Control("layout", None))
        condition = layout_condition(plan, control_palette(source))
        req = GenerateRequest(prompt=plan.finish_prompt, negative_prompt=plan.negative_prompt, steps=plan.steps,
                              cfg=plan.cfg, width=plan.width, height=plan.height, seed=plan.seed,
                              controls=(Control("layout", condition, scale=plan.layout_control),))
        image = self.generate(req, cancel=cancel).images[0]
        placed = [{"label": label, "from": "control", "box": [round(v, 1) for v in (x0, y0, x1, y1)]}
                  for x0, y0, x1, y1, label in layout_boxes(plan)]
        return ComposeResult(image=image, placed=placed, images_generated=1)

    @staticmethod
    def _callback(index, count, total, progress, cancel, offset: int = 0):
        def on_step_end(pipe, step, timestep, kwargs):
            if cancel is not None and cancel.is_set():
                pipe._interrupt = True
            if progress is not None:
                progress(index * total + min(offset + step + 1, total), count * total)
            return kwargs
        return on_step_end
