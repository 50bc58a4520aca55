"""Schedulers by plain name, with the AUTOMATIC1111 sampler names used in PNG metadata."""
from __future__ import annotations

from tools.errors import InvalidInput

# name -> (diffusers class name, extra config, A1111 sampler name)
SCHEDULERS: dict[str, tuple[str, dict, str]] = {
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}, "DPM++ 2M"),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler",
                        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}, "DPM++ 2M Karras"),
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}, "PLMS"),
    "lcm": ("LCMScheduler", {}, "LCM"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
}

_BY_CLASS = {cls: name for name, (cls, extra, _) in SCHEDULERS.items() if not extra.get("use_karras_sigmas")}
_BY_SAMPLER = {sampler.lower(): name for name, (_, _, sampler) in SCHEDULERS.items()}


def check_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in SCHEDULERS:
        raise InvalidInput(f"Unknown scheduler '{name}'.", f"Choose one of: {', '.join(SCHEDULERS)}.")
    return key


def make_scheduler(name: str, base_config):
    """A fresh scheduler of the named kind, built from a pipeline's scheduler config."""
    import diffusers

    cls_name, extra, _ = SCHEDULERS[check_name(name)]
    cls = getattr(diffusers, cls_name)
    return cls.from_config(base_config, **extra)


def name_of(scheduler) -> str:
    """The plain name of a scheduler instance (its class), e.g. 'euler' or 'pndm'."""
    cls = type(scheduler).__name__
    if cls == "DPMSolverMultistepScheduler" and getattr(scheduler.config, "use_karras_sigmas", False):
        return "dpmpp_2m_karras"
    return _BY_CLASS.get(cls, cls)


def sampler_label(name: str) -> str:
    return SCHEDULERS[name][2] if name in SCHEDULERS else name


def from_sampler_label(label: str) -> str | None:
    return _BY_SAMPLER.get(label.strip().lower())
