"""Local diffusers pipelines: txt2img, img2img and inpainting over ONE set of weights.

The text-to-image pipeline is loaded once; img2img and inpainting pipelines are derived from it
with `from_pipe`, which shares every component (no second copy of the weights in memory).
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from tools.errors import BackendError, Cancelled, InvalidInput, ModelNotFound
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
    if local.exists():
        check_model_folder(local)
    _quiet_loading()
    if not local.exists():
        _require_hub(model)
    kwargs = {"dtype": dtype}
    try:
        try:
            pipe = diffusers.AutoPipelineForText2Image.from_pretrained(
                source, safety_checker=None, requires_safety_checker=False, **kwargs)
        except TypeError:  # a pipeline class without a safety checker argument
            pipe = diffusers.AutoPipelineForText2Image.from_pretrained(source, **kwargs)
    except Exception as exc:  # noqa: BLE001  (a local folder: whatever broke, say it is the folder)
        if not local.exists():
            if isinstance(exc, (OSError, ValueError)):
                raise _hub_error(model, exc) from None
            raise
        raise ModelNotFound(
            f"The model folder '{local}' could not be loaded ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}).",
            _RESAVE_HINT) from None
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


_RESAVE_HINT = ("The folder is damaged or incomplete: re-save it with save_pretrained() or re-download it "
                "(e.g. huggingface-cli download MODEL --local-dir FOLDER).")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".onnx", ".gguf")


def check_model_folder(folder: Path) -> None:
    """Check a local diffusers folder before loading it, and name what is broken: an unreadable
    `model_index.json`, an index listing no components, a listed subfolder that is missing, a model
    subfolder without weights, and an empty, truncated or garbled `.safetensors` file. Raises
    ModelNotFound with the path and the hint to re-save or re-download the folder."""
    import json

    index_path = folder / "model_index.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelNotFound(f"The model index '{index_path}' is not readable JSON ({exc}).", _RESAVE_HINT) from None
    if not isinstance(index, dict):
        raise ModelNotFound(f"The model index '{index_path}' is not a JSON object.", _RESAVE_HINT)
    components = {name: spec for name, spec in index.items()
                  if not name.startswith("_") and isinstance(spec, list) and len(spec) == 2
                  and spec[0] is not None and spec[1] is not None}
    if not components:
        raise ModelNotFound(f"The model index '{index_path}' lists no components (no unet, vae, text encoder, ...), "
                            "so there are no weights to load.", _RESAVE_HINT)
    weighted = 0
    for name in sorted(components):
        sub = folder / name
        if not sub.is_dir():
            raise ModelNotFound(f"The model folder '{folder}' has no '{name}/' subfolder, which model_index.json "
                                f"lists ({components[name][1]}).", _RESAVE_HINT)
        if not (sub / "config.json").is_file():
            continue  # a scheduler, tokenizer or feature extractor: configuration only
        weights = [f for f in sorted(sub.iterdir()) if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES)]
        if not weights:
            raise ModelNotFound(f"The model subfolder '{sub}' has no weights file (.safetensors or .bin).",
                                _RESAVE_HINT)
        weighted += 1
        for f in weights:
            _check_weights_file(f)
    if not weighted:
        raise ModelNotFound(f"The model folder '{folder}' has no weights: no listed component has a config.json "
                            "and a weights file.", _RESAVE_HINT)


def _check_weights_file(path: Path) -> None:
    """An empty file, or a `.safetensors` file whose header is garbage or whose data is cut short."""
    import json
    import struct

    size = path.stat().st_size
    if size == 0:
        raise ModelNotFound(f"The weights file '{path}' is empty (0 bytes).", _RESAVE_HINT)
    if not path.name.endswith(".safetensors"):
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n < 2 or 8 + n > size:
                raise ValueError(f"the header claims {n} bytes but the file has {size}")
            header = json.loads(fh.read(n).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        ends = [t.get("data_offsets", [0, 0])[1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    except (OSError, ValueError, UnicodeDecodeError, struct.error, TypeError, IndexError, AttributeError) as exc:
        raise ModelNotFound(f"The weights file '{path}' has a garbled safetensors header ({exc}).", _RESAVE_HINT) from None
    need = 8 + n + max(ends, default=0)
    if need > size:
        raise ModelNotFound(f"The weights file '{path}' is truncated: {size} bytes of the {need} its header "
                            "describes.", _RESAVE_HINT)


def _hub_error(model: str, exc: Exception) -> ModelNotFound:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    where = "is not a local folder and could not be fetched from the hub" + (" (HF_HUB_OFFLINE=1)" if offline else "")
    return ModelNotFound(
        f"Model '{model}' {where}: {(str(exc).splitlines() or [''])[0][:160]}",
        "Pass --model PATH to a diffusers folder (or set IMAGENT_MODEL); with network access, check the hub id.",
    )


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


def compile_available() -> bool:
    """Whether torch.compile can run here (PyTorch 2 with dynamo support for this Python)."""
    try:
        import torch
        import torch._dynamo

        return hasattr(torch, "compile") and torch._dynamo.is_dynamo_supported()
    except Exception:  # noqa: BLE001
        return False


def _adapter_has_weights(pipe, adapter: str) -> bool:
    """Whether loading placed any weight: peft creates an adapter's up-projections (lora_B) as
    zeros and only logs the keys it could not match, so an all-zero adapter loaded nothing."""
    found = False
    for component in ("unet", "transformer", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, component, None)
        if module is None or not hasattr(module, "named_parameters"):
            continue
        for name, param in module.named_parameters():
            if f"lora_B.{adapter}." in name:
                found = True
                if param.detach().abs().max().item() > 0:
                    return True
    return not found  # an adapter type without lora_B layers: nothing to judge by


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

    def __init__(self, model: str, device: str = "cpu", dtype=None, pipe=None, *,
                 lora_dirs=(), control_models: dict[str, str] | None = None):
        """`pipe` may be passed in (tests, benchmarks); otherwise it is loaded on first use.
        `lora_dirs`: folders where a LoRA named NAME is NAME.safetensors; `control_models`: the
        ControlNet to use per control kind when a condition names none (the demo model ships one
        for `layout`)."""
        self.model = model
        self.device = device
        self.dtype = dtype
        self.lora_dirs = tuple(lora_dirs)
        self.control_models = dict(control_models or {})
        self._pipes: dict[str, object] = {}
        self._lock = threading.Lock()
        self._loras: dict[tuple, str] = {}        # (folder, file) -> adapter name in the UNet
        self._controlnets: dict[str, object] = {}  # source -> ControlNetModel
        self._ip: tuple | None = None              # (pipeline, weights source) holding an IP-Adapter
        self._fused: tuple | None = None           # (adapter names, weights) merged into the UNet now
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
        width, height = (req.init_image.size if req.init_image is not None else
                         (req.width or self.native_size()[0], req.height or self.native_size()[1]))
        pipe = self._control_pipeline(req.mode, req.controls) if req.controls else self.pipeline(req.mode)
        control_kwargs = self._control_kwargs(req, (width, height)) if req.controls else {}
        self._set_loras(req.loras, fuse=req.lora_fuse)
        self._set_speed(pipe, req)
        self._set_ip_adapter(pipe, req.ip_adapter)
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
                    out = self._refined(pipe, call, req, seed, i, total, progress, cancel) if req.refiner \
                        else pipe(**call)
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

    # -- IP-Adapter ------------------------------------------------------------------------------
    def _set_ip_adapter(self, pipe, ip) -> None:
        """Load the requested IP-Adapter into this call's pipeline (unloading another or an unused
        one first: a loaded adapter would want a reference image on every call)."""
        source = ip.model if ip is not None else None
        if self._ip is not None and (ip is None or self._ip != (pipe, source)):
            self._ip[0].unload_ip_adapter()
            self._ip = None
        if ip is None:
            return
        if source is None:
            raise InvalidInput("No IP-Adapter weights are set.",
                               "Name them with --ip-adapter-model FILE_OR_FOLDER (or ORG/NAME:SUBFOLDER/FILE).")
        if self._ip is None:
            from tools.adapters import resolve_ip_adapter

            if not hasattr(pipe, "load_ip_adapter"):
                raise InvalidInput(f"The model '{self.model}' ({type(pipe).__name__}) takes no IP-Adapter.",
                                   "Drop --ip-adapter, or use a Stable Diffusion / SDXL model.")
            folder, subfolder, weight_name = resolve_ip_adapter(source)
            try:
                pipe.load_ip_adapter(folder, subfolder=subfolder, weight_name=weight_name)
            except Exception as exc:  # noqa: BLE001
                try:
                    pipe.unload_ip_adapter()
                except Exception:  # noqa: BLE001
                    pass
                text = (str(exc).splitlines() or [""])[0][:200]
                kind = InvalidInput if Path(folder).exists() else ModelNotFound
                raise kind(f"The IP-Adapter '{source}' could not be loaded for '{self.model}' "
                           f"({type(exc).__name__}: {text}).",
                           "Use IP-Adapter weights made for this base model, with its image_encoder/ folder.") from None
            self._ip = (pipe, source)
        pipe.set_ip_adapter_scale(ip.scale)

    # -- SDXL refiner ----------------------------------------------------------------------------
    def _refined(self, pipe, call, req, seed, index, total, progress, cancel):
        """Base to `refiner_switch` of the steps (latents), then the refiner from there."""
        import torch

        refiner = self._refiner(req.refiner)
        latents = pipe(**dict(call, denoising_end=req.refiner_switch, output_type="latent")).images
        if cancel is not None and cancel.is_set():
            raise Cancelled("Generation cancelled.")
        return refiner(prompt=req.prompt, negative_prompt=req.negative_prompt or None, image=latents,
                       num_inference_steps=req.steps, denoising_start=req.refiner_switch, guidance_scale=req.cfg,
                       generator=torch.Generator("cpu").manual_seed(seed),
                       callback_on_step_end=self._callback(index, req.count, total, progress, cancel,
                                                           offset=int(req.steps * req.refiner_switch)))

    def _refiner(self, source: str):
        import diffusers

        base = self.pipeline("txt2img")
        if not type(base).__name__.startswith("StableDiffusionXL"):
            raise InvalidInput(f"A refiner needs an SDXL base model; '{self.model}' is {type(base).__name__}.",
                               "Drop --refiner, or use an SDXL model (e.g. stabilityai/stable-diffusion-xl-base-1.0).")
        with self._lock:
            if source in self._pipes:
                return self._pipes[source]
        local = Path(source).expanduser()
        if local.exists():
            if not (local / "model_index.json").is_file():
                raise ModelNotFound(f"The refiner '{local}' is a folder but not a diffusers model (no model_index.json).",
                                    "Point --refiner at a folder saved with save_pretrained(), or a hub id.")
            check_model_folder(local)
        else:
            _require_hub(source)
        try:  # the refiner shares the base's second text encoder and VAE, as SDXL's guide does
            refiner = diffusers.AutoPipelineForImage2Image.from_pretrained(
                str(local) if local.exists() else source, text_encoder_2=base.text_encoder_2, vae=base.vae,
                dtype=self.dtype)
        except Exception as exc:  # noqa: BLE001
            raise ModelNotFound(f"The refiner '{source}' could not be loaded ({type(exc).__name__}: "
                                f"{(str(exc).splitlines() or [''])[0][:200]}).", _RESAVE_HINT) from None
        if not type(refiner).__name__.startswith("StableDiffusionXL"):
            raise InvalidInput(f"The refiner '{source}' is a {type(refiner).__name__}, not an SDXL model.",
                               "Use an SDXL refiner (e.g. stabilityai/stable-diffusion-xl-refiner-1.0).")
        refiner.to(self.device)
        refiner.set_progress_bar_config(disable=True)
        with self._lock:
            self._pipes[source] = refiner
        return refiner

    # -- speed and memory ------------------------------------------------------------------------
    def _set_speed(self, pipe, req) -> None:
        """Attention, VAE tiling/slicing for this call (each pipeline keeps its own setting, so
        each is set every call); compile once per process, on first request."""
        sliced = req.attention == "sliced"
        if sliced and req.ip_adapter is not None:
            raise InvalidInput("Sliced attention cannot be combined with an IP-Adapter (both replace the "
                               "attention layers).", "Drop --attention sliced, or the --ip-adapter.")
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None) or pipe  # shared by from_pipe
        if sliced != getattr(denoiser, "_imagent_sliced", False):  # only on a change: it resets the processors
            pipe.enable_attention_slicing() if sliced else pipe.disable_attention_slicing()  # SDPA again
            denoiser._imagent_sliced = sliced
        vae = getattr(pipe, "vae", None)
        if vae is not None and hasattr(vae, "enable_tiling"):
            vae.enable_tiling() if req.vae_tiling else vae.disable_tiling()
            vae.enable_slicing() if req.vae_slicing else vae.disable_slicing()
        if req.compile:
            self._compile(pipe)

    def _compile(self, pipe) -> None:
        unet = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        if unet is None or getattr(unet, "_imagent_compiled", False):
            return
        if not compile_available():
            raise InvalidInput("torch.compile is not available here (this PyTorch or Python cannot compile).",
                               "Drop --compile, or install a PyTorch 2.x that supports this Python.")
        with self._lock:
            unet.compile()          # in place: every pipeline sharing this UNet uses the compiled one
            unet._imagent_compiled = True

    # -- LoRA ------------------------------------------------------------------------------------
    def _set_loras(self, loras, fuse: bool = False) -> None:
        """Activate exactly these adapters at their weights for the next call (loading each once;
        every pipeline derived with from_pipe shares the UNet, so one setting serves all modes).
        `fuse` merges them into the weights (`fuse_lora`); the merge stays while later calls fuse the
        same adapters at the same weights and is undone (`unfuse_lora`) before anything else."""
        pipe = self.pipeline("txt2img")
        if self._fused is not None:
            wanted = self._fused_key(loras) if fuse and loras else None
            if wanted == self._fused:
                return
            pipe.unfuse_lora()
            self._fused = None
        if not loras:
            if self._loras:
                pipe.disable_lora()
            return
        from tools.adapters import resolve_lora

        names = []
        with self._lock:
            for lora in loras:
                where = resolve_lora(lora.source, self.lora_dirs)
                if where not in self._loras:
                    self._loras[where] = self._load_lora(pipe, lora, where, f"lora{len(self._loras)}")
                names.append(self._loras[where])
        pipe.enable_lora()
        pipe.set_adapters(names, [lora.weight for lora in loras])
        if fuse:
            pipe.fuse_lora(components=["unet"], lora_scale=1.0, adapter_names=names)
            self._fused = self._fused_key(loras)

    def _fused_key(self, loras) -> tuple:
        from tools.adapters import resolve_lora

        return tuple((resolve_lora(x.source, self.lora_dirs), x.weight) for x in loras)

    def _load_lora(self, pipe, lora, where, adapter: str) -> str:
        folder, weight_name = where
        if not hasattr(pipe, "load_lora_weights"):
            raise InvalidInput(f"The model '{self.model}' ({type(pipe).__name__}) does not take LoRA adapters.",
                               "Drop --lora, or use a Stable Diffusion / SDXL / FLUX model.")
        kwargs = {"weight_name": weight_name} if weight_name else {}
        try:
            pipe.load_lora_weights(folder, adapter_name=adapter, **kwargs)
        except Exception as exc:  # noqa: BLE001  (diffusers/peft raise many types for a bad file)
            try:
                pipe.delete_adapters(adapter)  # a half-loaded adapter must not stay in the UNet
            except Exception:  # noqa: BLE001
                pass
            text = (str(exc).splitlines() or [""])[0][:200]
            if "size mismatch" in str(exc) or "shape" in str(exc).lower():
                raise InvalidInput(f"The LoRA '{lora.name}' does not fit the model '{self.model}': its layers have "
                                   f"other sizes ({text}).",
                                   "It was trained for another base model: use a LoRA made for this one.") from None
            if weight_name is None and not Path(folder).exists():
                raise ModelNotFound(f"The LoRA '{lora.source}' is not a local file and could not be fetched ({text}).",
                                    "Pass the path of a .safetensors file, or connect to the network.") from None
            raise InvalidInput(f"The LoRA '{lora.name}' could not be loaded ({type(exc).__name__}: {text}).",
                               "Check that the file is a LoRA .safetensors (diffusers or kohya/A1111 format) "
                               "and not damaged.") from None
        if not _adapter_has_weights(pipe, adapter):
            pipe.delete_adapters(adapter)
            raise InvalidInput(f"The LoRA '{lora.name}' matches no layer of the model '{self.model}': none of its "
                               "weights could be placed, so it would change nothing.",
                               "It was made for another kind of model (or its layer names are not ones diffusers "
                               "converts): use a LoRA made for this base model.")
        return adapter

    # -- ControlNet ------------------------------------------------------------------------------
    def _controlnet(self, source: str):
        import diffusers

        with self._lock:
            if source in self._controlnets:
                return self._controlnets[source]
        local = Path(source).expanduser()
        if local.exists() and not (local / "config.json").is_file():
            raise ModelNotFound(f"The ControlNet folder '{local}' has no config.json.",
                                "Point --control-model at a folder saved with ControlNetModel.save_pretrained().")
        if not local.exists():
            _require_hub(source)
        try:
            net = diffusers.ControlNetModel.from_pretrained(str(local) if local.exists() else source,
                                                            torch_dtype=self.dtype)
        except Exception as exc:  # noqa: BLE001
            raise ModelNotFound(f"The ControlNet '{source}' could not be loaded ({type(exc).__name__}: "
                                f"{(str(exc).splitlines() or [''])[0][:200]}).", _RESAVE_HINT) from None
        unet = self.pipeline("txt2img").unet
        if (tuple(net.config.block_out_channels) != tuple(unet.config.block_out_channels)
                or net.config.cross_attention_dim != unet.config.cross_attention_dim):
            raise InvalidInput(f"The ControlNet '{source}' was made for another base model than '{self.model}' "
                               f"(blocks {tuple(net.config.block_out_channels)}, text width "
                               f"{net.config.cross_attention_dim}; the model has "
                               f"{tuple(unet.config.block_out_channels)}, {unet.config.cross_attention_dim}).",
                               "Use a ControlNet trained for this model (e.g. an SD 1.5 one for SD 1.5).")
        net.to(self.device)
        with self._lock:
            self._controlnets[source] = net
        return net

    def control_model_for(self, control) -> str:
        source = control.model or self.control_models.get(control.kind)
        if source is None and self.model == DEMO_MODEL:
            from tools.adapters import DEMO_CONTROLNETS
            from tools.demo import weights_path

            if control.kind in DEMO_CONTROLNETS:
                source = str(weights_path() / DEMO_CONTROLNETS[control.kind])
        if source is None:
            raise InvalidInput(f"No ControlNet is set for the control kind '{control.kind}'.",
                               f"Name one with --control-model {control.kind}=PATH_OR_ID.")
        return source

    def _control_pipeline(self, mode: str, controls):
        import diffusers

        nets = [self._controlnet(self.control_model_for(c)) for c in controls]
        base = self.pipeline("txt2img")
        if not hasattr(base, "unet"):
            raise InvalidInput(f"The model '{self.model}' does not take ControlNet conditions.",
                               "Use a Stable Diffusion or SDXL model for --control.")
        controlnet = nets[0] if len(nets) == 1 else diffusers.MultiControlNetModel(nets)
        cls = {"txt2img": diffusers.AutoPipelineForText2Image,
               "img2img": diffusers.AutoPipelineForImage2Image}[mode]
        try:
            pipe = cls.from_pipe(base, controlnet=controlnet)
        except Exception as exc:  # noqa: BLE001
            raise InvalidInput(f"This model has no ControlNet pipeline ({type(exc).__name__}: {exc}).",
                               "Use a Stable Diffusion or SDXL model for --control.") from None
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @staticmethod
    def _control_kwargs(req, size) -> dict:
        from tools.adapters import condition_image

        images = [condition_image(c, size) for c in req.controls]
        one = len(images) == 1
        key = "image" if req.mode == "txt2img" else "control_image"
        return {key: images[0] if one else images,
                "controlnet_conditioning_scale": req.controls[0].scale if one else [c.scale for c in req.controls],
                "control_guidance_start": req.controls[0].start if one else [c.start for c in req.controls],
                "control_guidance_end": req.controls[0].end if one else [c.end for c in req.controls]}

    def has_control(self, kind: str) -> bool:
        """Whether a ControlNet is set (or shipped, for the demo model) for conditions of `kind`."""
        from tools.adapters import Control

        try:
            source = self.control_model_for(Control(kind, None))
        except InvalidInput:
            return False
        return not Path(source).is_absolute() or Path(source).exists()

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

        source = self.control_model_for(Control("layout", None))
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
