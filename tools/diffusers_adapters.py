"""What a diffusers pipeline carries besides its weights, one small class per concern, each
kept by `tools.diffusers_backend.DiffusersBackend` and set for every call:

- `Loras`: LoRA adapters loaded once, set (or fused) per call at their weights;
- `ControlNets`: ControlNet models by source, checked against the base model, and the control
  pipeline and call arguments for a request's conditions;
- `IPAdapterSlot`: the IP-Adapter loaded into the pipeline a call uses (one at a time);
- `Refiners`: SDXL refiners sharing the base's second text encoder and VAE;
- `set_speed`: attention slicing, VAE tiling/slicing and torch.compile for a call.
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path

from tools.diffusers_loading import _RESAVE_HINT, DEMO_MODEL, _require_hub, check_model_folder
from tools.errors import Cancelled, InvalidInput, ModelNotFound


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


# -- LoRA ----------------------------------------------------------------------------------------
class Loras:
    """LoRA adapters of one UNet: each file loaded once under its own adapter name; a call sets
    exactly its adapters at their weights (every pipeline made with from_pipe shares the UNet, so
    one setting serves all modes)."""

    def __init__(self, model: str, dirs=()):
        self.model = model
        self.dirs = tuple(dirs)
        self.loaded: dict[tuple, str] = {}   # (folder, file) -> adapter name in the UNet
        self.fused: tuple | None = None      # ((folder, file), weight) pairs merged into the weights now
        self._lock = threading.Lock()

    def apply(self, pipe, loras, fuse: bool = False) -> None:
        """Set these adapters (none: disable all). `fuse` merges them into the weights
        (`fuse_lora`); the merge stays while later calls fuse the same adapters at the same
        weights and is undone (`unfuse_lora`) before anything else."""
        if self.fused is not None:
            if fuse and loras and self._key(loras) == self.fused:
                return
            pipe.unfuse_lora()
            self.fused = None
        if not loras:
            if self.loaded:
                pipe.disable_lora()
            return
        from tools.adapters import resolve_lora

        names = []
        with self._lock:
            for lora in loras:
                where = resolve_lora(lora.source, self.dirs)
                if where not in self.loaded:
                    self.loaded[where] = self._load(pipe, lora, where, f"lora{len(self.loaded)}")
                names.append(self.loaded[where])
        pipe.enable_lora()
        pipe.set_adapters(names, [lora.weight for lora in loras])
        if fuse:
            pipe.fuse_lora(components=["unet"], lora_scale=1.0, adapter_names=names)
            self.fused = self._key(loras)

    def check(self, loras) -> None:
        """ModelNotFound for a LoRA that is nowhere to be found: said before any model loads."""
        from tools.adapters import resolve_lora

        for lora in loras:
            resolve_lora(lora.source, self.dirs)

    def _key(self, loras) -> tuple:
        from tools.adapters import resolve_lora

        return tuple((resolve_lora(x.source, self.dirs), x.weight) for x in loras)

    def _load(self, pipe, lora, where, adapter: str) -> str:
        folder, weight_name = where
        if not hasattr(pipe, "load_lora_weights"):
            raise InvalidInput(f"The model '{self.model}' ({type(pipe).__name__}) does not take LoRA adapters.",
                               "Drop the LoRAs, or use a Stable Diffusion / SDXL / FLUX model.", param="lora")
        kwargs = {"weight_name": weight_name} if weight_name else {}
        shipped = _is_shipped_lora(folder)
        try:
            mixed = None if shipped else mixed_layout_state_dict(folder, weight_name)
            with warnings.catch_warnings():
                if shipped:  # see _is_shipped_lora: peft would name the 56 modules it leaves at zero (4-8 KB)
                    warnings.filterwarnings("ignore", message=_PEFT_INCONSISTENCY, category=RuntimeWarning)
                if mixed is not None:
                    pipe.load_lora_weights(mixed, adapter_name=adapter)
                else:
                    pipe.load_lora_weights(folder, adapter_name=adapter, **kwargs)
        except Exception as exc:  # noqa: BLE001  (diffusers/peft raise many types for a bad file)
            try:
                pipe.delete_adapters(adapter)  # a half-loaded adapter must not stay in the UNet
            except Exception:  # noqa: BLE001
                pass
            text = _first_line(exc)
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
        if not adapter_has_weights(pipe, adapter):
            pipe.delete_adapters(adapter)
            raise InvalidInput(f"The LoRA '{lora.name}' matches no layer of the model '{self.model}': none of its "
                               "weights could be placed, so it would change nothing.",
                               "It was made for another kind of model (or its layer names are not ones diffusers "
                               "converts): use a LoRA made for this base model.")
        return adapter


# diffusers' older layout of LoRA keys -> peft's (what diffusers.utils.convert_state_dict_to_diffusers renames)
_OLD_TO_PEFT = ((".lora.down.", ".lora_A."), (".lora.up.", ".lora_B."),
                (".lora_linear_layer.down.", ".lora_A."), (".lora_linear_layer.up.", ".lora_B."))


_PEFT_INCONSISTENCY = "While injecting the PEFT adapters, an inconsistency was discovered"


def _is_shipped_lora(folder) -> bool:
    """Whether `folder` holds a shipped demo LoRA (demo-tall, demo-lcm). Those files are of mixed
    layouts (see mixed_layout_state_dict): diffusers loads their 44 peft-layout modules and leaves
    the 56 attention modules at zero. Their model card's figures and the shipped tests measure them
    loaded that way (`pipe.load_lora_weights(folder)`), so imagent loads them as measured, without
    peft's warning, until they are exported in one layout and measured again."""
    from tools.adapters import DEMO_LORAS
    from tools.demo import weights_path

    try:
        here = Path(folder).resolve()
    except (OSError, RuntimeError):
        return False
    return any(here == (weights_path() / name).resolve() for name in DEMO_LORAS.values())


def mixed_layout_state_dict(folder, weight_name: str | None) -> dict | None:
    """A LoRA file whose keys mix peft's layout (`proj_in.lora_A.weight`) and diffusers' older one
    (`attn1.to_q.lora.down.weight`), as `convert_state_dict_to_diffusers` writes a peft LoRA that
    targets more than attention (the shipped demo LoRAs): its state dict with every key in peft's
    layout; None for any other file (loaded as it is). diffusers judges a file's layout by its
    first key, so it would load only the peft-layout half and peft would warn about the rest (a
    RuntimeWarning listing every module left at zero)."""
    if not weight_name or not weight_name.endswith(".safetensors"):
        return None
    path = Path(folder) / weight_name
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            keys = list(f.keys())
    except Exception:  # noqa: BLE001  (not readable as safetensors: diffusers says why)
        return None
    peft = any(".lora_A." in k or ".lora_B." in k for k in keys)
    old = any(o in k for k in keys for o, _ in _OLD_TO_PEFT)
    if not (peft and old) or any(k.endswith(".alpha") for k in keys):
        return None
    from safetensors.torch import load_file

    out = {}
    for key, tensor in load_file(str(path)).items():
        for o, n in _OLD_TO_PEFT:
            key = key.replace(o, n)
        out[key] = tensor
    return out


def adapter_has_weights(pipe, adapter: str) -> bool:
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


# -- ControlNet ----------------------------------------------------------------------------------
class ControlNets:
    """ControlNet models by source (loaded once, checked to fit the base UNet) and the control
    pipelines and call arguments for a request's conditions. `defaults`: the model per control
    kind when a condition names none (the demo model ships one for `layout`)."""

    def __init__(self, model: str, device: str, dtype, defaults: dict[str, str] | None = None):
        self.model, self.device, self.dtype = model, device, dtype
        self.defaults = dict(defaults or {})
        self.loaded: dict[str, object] = {}
        self._lock = threading.Lock()

    def model_for(self, control) -> str:
        from tools.adapters import DEMO_CONTROLNETS

        source = control.model or self.defaults.get(control.kind)
        if source is None and self.model == DEMO_MODEL:
            from tools.demo import weights_path

            if control.kind in DEMO_CONTROLNETS:
                source = str(weights_path() / DEMO_CONTROLNETS[control.kind])
        if source is None:
            shipped = ", ".join(DEMO_CONTROLNETS)
            if self.model == DEMO_MODEL:
                hint = (f"The demo model ships a ControlNet for {shipped} only (--control layout:BOXES.png, boxes "
                        f"filled in object colours); for {control.kind}, name one made for this model as the "
                        f"control model {control.kind}=PATH_OR_ID.")
            else:
                hint = (f"Name one made for this base model as the control model {control.kind}=PATH_OR_ID "
                        f"(e.g. canny=lllyasviel/sd-controlnet-canny for SD 1.5); imagent ships one only for the "
                        f"demo model ({shipped}).")
            raise InvalidInput(f"No ControlNet is set for the control kind '{control.kind}'.", hint,
                               param="control_model")
        return source

    def check(self, controls) -> None:
        """InvalidInput for a condition with no ControlNet set: said before any model loads."""
        for control in controls:
            self.model_for(control)

    def has(self, kind: str) -> bool:
        """Whether a ControlNet is set (or shipped, for the demo model) for conditions of `kind`."""
        from tools.adapters import Control

        try:
            source = self.model_for(Control(kind, None))
        except InvalidInput:
            return False
        return not Path(source).is_absolute() or Path(source).exists()

    def load(self, source: str, unet):
        import diffusers

        with self._lock:
            if source in self.loaded:
                return self.loaded[source]
        local = Path(source).expanduser()
        if local.exists() and not (local / "config.json").is_file():
            raise ModelNotFound(f"The ControlNet folder '{local}' has no config.json.",
                                "Point the control model at a folder saved with ControlNetModel.save_pretrained().",
                                param="control_model")
        if not local.exists():
            _require_hub(source)
        try:
            net = diffusers.ControlNetModel.from_pretrained(str(local) if local.exists() else source,
                                                            torch_dtype=self.dtype)
        except Exception as exc:  # noqa: BLE001
            raise ModelNotFound(f"The ControlNet '{source}' could not be loaded ({type(exc).__name__}: "
                                f"{_first_line(exc)}).", _RESAVE_HINT) from None
        if (tuple(net.config.block_out_channels) != tuple(unet.config.block_out_channels)
                or net.config.cross_attention_dim != unet.config.cross_attention_dim):
            raise InvalidInput(f"The ControlNet '{source}' was made for another base model than '{self.model}' "
                               f"(blocks {tuple(net.config.block_out_channels)}, text width "
                               f"{net.config.cross_attention_dim}; the model has "
                               f"{tuple(unet.config.block_out_channels)}, {unet.config.cross_attention_dim}).",
                               "Use a ControlNet trained for this model (e.g. an SD 1.5 one for SD 1.5).")
        net.to(self.device)
        with self._lock:
            self.loaded[source] = net
        return net

    def pipeline(self, base, mode: str, controls):
        """A pipeline for `mode` sharing `base`'s components, with the conditions' ControlNets."""
        import diffusers

        if not hasattr(base, "unet"):
            raise InvalidInput(f"The model '{self.model}' does not take ControlNet conditions.",
                               "Use a Stable Diffusion or SDXL model for control conditions.")
        nets = [self.load(self.model_for(c), base.unet) for c in controls]
        controlnet = nets[0] if len(nets) == 1 else diffusers.MultiControlNetModel(nets)
        cls = {"txt2img": diffusers.AutoPipelineForText2Image,
               "img2img": diffusers.AutoPipelineForImage2Image}[mode]
        try:
            pipe = cls.from_pipe(base, controlnet=controlnet)
        except Exception as exc:  # noqa: BLE001
            raise InvalidInput(f"This model has no ControlNet pipeline ({type(exc).__name__}: {exc}).",
                               "Use a Stable Diffusion or SDXL model for control conditions.") from None
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @staticmethod
    def call_kwargs(req, size) -> dict:
        """The pipeline call's condition images (at the output size), scales and step range."""
        from tools.adapters import condition_image

        images = [condition_image(c, size) for c in req.controls]
        one = len(images) == 1
        key = "image" if req.mode == "txt2img" else "control_image"
        return {key: images[0] if one else images,
                "controlnet_conditioning_scale": req.controls[0].scale if one else [c.scale for c in req.controls],
                "control_guidance_start": req.controls[0].start if one else [c.start for c in req.controls],
                "control_guidance_end": req.controls[0].end if one else [c.end for c in req.controls]}


# -- IP-Adapter ----------------------------------------------------------------------------------
class IPAdapterSlot:
    """The one IP-Adapter loaded now, and into which pipeline."""

    def __init__(self, model: str):
        self.model = model
        self.current: tuple | None = None   # (pipeline, weights source)

    def apply(self, pipe, ip) -> None:
        """Load the requested IP-Adapter into this call's pipeline (unloading another or an unused
        one first: a loaded adapter would want a reference image on every call)."""
        source = ip.model if ip is not None else None
        if self.current is not None and (ip is None or self.current != (pipe, source)):
            self.current[0].unload_ip_adapter()
            self.current = None
        if ip is None:
            return
        if source is None:
            raise InvalidInput("No IP-Adapter weights are set.",
                               "Name them as the IP-Adapter model: FILE_OR_FOLDER (or ORG/NAME:SUBFOLDER/FILE).",
                               param="ip_adapter_model")
        if self.current is None:
            from tools.adapters import resolve_ip_adapter

            if not hasattr(pipe, "load_ip_adapter"):
                raise InvalidInput(f"The model '{self.model}' ({type(pipe).__name__}) takes no IP-Adapter.",
                                   "Drop the IP-Adapter, or use a Stable Diffusion / SDXL model.", param="ip_adapter")
            folder, subfolder, weight_name = resolve_ip_adapter(source)
            try:
                pipe.load_ip_adapter(folder, subfolder=subfolder, weight_name=weight_name)
            except Exception as exc:  # noqa: BLE001
                try:
                    pipe.unload_ip_adapter()
                except Exception:  # noqa: BLE001
                    pass
                kind = InvalidInput if Path(folder).exists() else ModelNotFound
                raise kind(f"The IP-Adapter '{source}' could not be loaded for '{self.model}' "
                           f"({type(exc).__name__}: {_first_line(exc)}).",
                           "Use IP-Adapter weights made for this base model, with its image_encoder/ folder.") from None
            self.current = (pipe, source)
        pipe.set_ip_adapter_scale(ip.scale)


# -- SDXL refiner --------------------------------------------------------------------------------
class Refiners:
    """SDXL refiners by source, each sharing the base's second text encoder and VAE."""

    def __init__(self, model: str, device: str, dtype):
        self.model, self.device, self.dtype = model, device, dtype
        self.loaded: dict[str, object] = {}
        self._lock = threading.Lock()

    def run(self, base, pipe, call: dict, req, seed: int, callback, cancel):
        """`pipe` (the base) to `refiner_switch` of the steps (latents), then the refiner from there;
        `callback(offset)` is the refiner's step callback."""
        import torch

        refiner = self.load(base, req.refiner)
        latents = pipe(**dict(call, denoising_end=req.refiner_switch, output_type="latent")).images
        if cancel is not None and cancel.is_set():
            raise Cancelled("Generation cancelled.")
        return refiner(prompt=req.prompt, negative_prompt=req.negative_prompt or None, image=latents,
                       num_inference_steps=req.steps, denoising_start=req.refiner_switch, guidance_scale=req.cfg,
                       generator=torch.Generator("cpu").manual_seed(seed),
                       callback_on_step_end=callback(int(req.steps * req.refiner_switch)))

    def load(self, base, source: str):
        import diffusers

        if not type(base).__name__.startswith("StableDiffusionXL"):
            raise InvalidInput(f"A refiner needs an SDXL base model; '{self.model}' is {type(base).__name__}.",
                               "Drop the refiner, or use an SDXL model (e.g. stabilityai/stable-diffusion-xl-base-1.0).",
                               param="refiner")
        with self._lock:
            if source in self.loaded:
                return self.loaded[source]
        local = Path(source).expanduser()
        if local.exists():
            if not (local / "model_index.json").is_file():
                raise ModelNotFound(f"The refiner '{local}' is a folder but not a diffusers model (no model_index.json).",
                                    "Point the refiner at a folder saved with save_pretrained(), or a hub id.", param="refiner")
            check_model_folder(local)
        else:
            _require_hub(source)
        try:  # the refiner shares the base's second text encoder and VAE, as SDXL's guide does
            refiner = diffusers.AutoPipelineForImage2Image.from_pretrained(
                str(local) if local.exists() else source, text_encoder_2=base.text_encoder_2, vae=base.vae,
                dtype=self.dtype)
        except Exception as exc:  # noqa: BLE001
            raise ModelNotFound(f"The refiner '{source}' could not be loaded ({type(exc).__name__}: "
                                f"{_first_line(exc)}).", _RESAVE_HINT) from None
        if not type(refiner).__name__.startswith("StableDiffusionXL"):
            raise InvalidInput(f"The refiner '{source}' is a {type(refiner).__name__}, not an SDXL model.",
                               "Use an SDXL refiner (e.g. stabilityai/stable-diffusion-xl-refiner-1.0).")
        refiner.to(self.device)
        refiner.set_progress_bar_config(disable=True)
        with self._lock:
            self.loaded[source] = refiner
        return refiner


# -- speed and memory ----------------------------------------------------------------------------
_compile_lock = threading.Lock()


def set_speed(pipe, req) -> None:
    """Attention, VAE tiling/slicing for this call (each pipeline keeps its own setting, so each is
    set every call); compile once per process, on first request."""
    sliced = req.attention == "sliced"
    if sliced and req.ip_adapter is not None:
        raise InvalidInput("Sliced attention cannot be combined with an IP-Adapter (both replace the "
                           "attention layers).", "Drop sliced attention, or the IP-Adapter.", param="attention")
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None) or pipe  # shared by from_pipe
    if sliced != getattr(denoiser, "_imagent_sliced", False):  # only on a change: it resets the processors
        pipe.enable_attention_slicing() if sliced else pipe.disable_attention_slicing()  # SDPA again
        denoiser._imagent_sliced = sliced
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "enable_tiling"):
        vae.enable_tiling() if req.vae_tiling else vae.disable_tiling()
        vae.enable_slicing() if req.vae_slicing else vae.disable_slicing()
    if req.compile:
        compile_denoiser(pipe)


def compile_denoiser(pipe) -> None:
    unet = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if unet is None or getattr(unet, "_imagent_compiled", False):
        return
    if not compile_available():
        raise InvalidInput("torch.compile is not available here (this PyTorch or Python cannot compile).",
                           "Drop compile, or install a PyTorch 2.x that supports this Python.", param="compile")
    with _compile_lock:
        unet.compile()          # in place: every pipeline sharing this UNet uses the compiled one
        unet._imagent_compiled = True


def compile_available() -> bool:
    """Whether torch.compile can run here (PyTorch 2 with dynamo support for this Python)."""
    try:
        import torch
        import torch._dynamo

        return hasattr(torch, "compile") and torch._dynamo.is_dynamo_supported()
    except Exception:  # noqa: BLE001
        return False
