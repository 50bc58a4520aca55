"""Local diffusers pipelines: txt2img, img2img and inpainting over ONE set of weights.

The text-to-image pipeline is loaded once; img2img and inpainting pipelines are derived from it
with `from_pipe`, which shares every component (no second copy of the weights in memory).
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from tools.errors import BackendError, Cancelled, ModelNotFound
from tools.generate import GenerateRequest, GenerateResult, ProgressFn, check_request
from tools.prompt_encoding import pipeline_prompt_kwargs
from tools.schedulers import make_scheduler, name_of

DEMO_MODEL = "demo"  # the demo-world pipeline shipped inside the package (tools.demo)


def load_pipeline(model: str, device: str, dtype):
    """Load a text-to-image pipeline from a local diffusers folder or a hub id."""
    import diffusers

    if model == DEMO_MODEL:
        from tools import demo

        model = str(demo.pipeline_path())
    local = Path(model).expanduser()
    source = str(local) if local.exists() else model
    if local.exists() and not (local / "model_index.json").is_file():
        raise ModelNotFound(f"'{model}' is a folder but not a diffusers model (no model_index.json).",
                            "Point --model at a folder saved with save_pretrained(), or a hub id.")
    _quiet_loading()
    if not local.exists():
        _require_hub(model)
    kwargs = {"dtype": dtype}
    try:
        pipe = diffusers.AutoPipelineForText2Image.from_pretrained(
            source, safety_checker=None, requires_safety_checker=False, **kwargs)
    except TypeError:
        pipe = diffusers.AutoPipelineForText2Image.from_pretrained(source, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        where = "is not a local folder and could not be fetched from the hub" + (" (HF_HUB_OFFLINE=1)" if offline else "")
        raise ModelNotFound(
            f"Model '{model}' {where}: {str(exc).splitlines()[0][:160]}",
            "Pass --model PATH to a diffusers folder (or set IMAGENT_MODEL); with network access, check the hub id.",
        ) from None
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _require_hub(model: str) -> None:
    """Fail fast (instead of minutes of retries) when a hub id is neither cached nor reachable."""
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import snapshot_download

        snapshot_download(model, local_files_only=True, allow_patterns=["model_index.json"])
        return  # cached: from_pretrained can load it offline
    except Exception:
        pass
    hint = ("Pass --model PATH to a local diffusers folder (or set IMAGENT_MODEL), "
            "or connect to the network to download it.")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelNotFound(f"Model '{model}' is not a local folder and not in the Hugging Face cache "
                            "(HF_HUB_OFFLINE=1).", hint)
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        raise ModelNotFound(f"Model '{model}' is not a local folder or cached, and {host} cannot be reached "
                            "(offline?).", hint) from None


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


def _quiet_loading():
    from tools.loading import quiet_loading

    quiet_loading()


class DiffusersBackend:
    name = "diffusers"
    capabilities = frozenset({"txt2img", "img2img", "inpaint", "compose"})

    def __init__(self, model: str, device: str = "cpu", dtype=None, pipe=None):
        """`pipe` may be passed in (tests, benchmarks); otherwise it is loaded on first use."""
        self.model = model
        self.device = device
        self.dtype = dtype
        self._pipes: dict[str, object] = {}
        self._lock = threading.Lock()
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
        import torch

        req = check_request(request)
        pipe = self.pipeline(req.mode)
        width, height = (req.init_image.size if req.init_image is not None else
                         (req.width or self.native_size()[0], req.height or self.native_size()[1]))
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
                    out = pipe(**call)
                except Cancelled:
                    raise
                except (RuntimeError, ValueError) as exc:
                    if "out of memory" in str(exc).lower():
                        raise BackendError("The model ran out of memory.",
                                           "Try a smaller --size, fewer images, or --device cpu.") from None
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

    def compose(self, plan, locate, base_image=None, *, cancel: threading.Event | None = None):
        """Layout-guided generation and local edits (tools.compose) on this model's pipelines."""
        from tools.compose import compose

        txt = self.pipeline("txt2img")
        img2img = self.pipeline("img2img")
        try:
            return compose(txt, img2img, plan, locate, base_image=base_image, cancel=cancel)
        except Cancelled:
            raise
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"Layout-guided generation failed: {exc}") from exc

    @staticmethod
    def _callback(index, count, total, progress, cancel):
        def on_step_end(pipe, step, timestep, kwargs):
            if cancel is not None and cancel.is_set():
                pipe._interrupt = True
            if progress is not None:
                progress(index * total + min(step + 1, total), count * total)
            return kwargs
        return on_step_end
