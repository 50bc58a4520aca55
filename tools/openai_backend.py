"""The OpenAI images API as a backend: text-to-image (`images.generate`) and masked edits
(`images.edit`). The API has no seed: seeds are recorded but the result is not reproducible.

Errors say whether they are retryable (tools.errors): a timeout, a 429, a 5xx or 408 and an
unreachable API are; a 400 (bad input, a content-policy refusal), a 401/403/404 and a malformed
answer are not. The openai client itself retries `max_retries` times before any of these.
"""
from __future__ import annotations

import base64
import binascii
import io
import threading
import time

from PIL import Image

from tools.errors import BackendError, Cancelled, InvalidInput, SafetyBlocked
from tools.generate import GenerateRequest, GenerateResult, ProgressFn, check_request
from tools.images import load_image

POLICY_CODES = {"content_policy_violation", "moderation_blocked"}


class OpenAIBackend:
    name = "openai"
    capabilities = frozenset({"txt2img", "inpaint"})

    def __init__(self, model: str = "gpt-image-1", *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float = 120.0, max_retries: int = 2, client=None):
        self.model = model
        self._client = client
        self._client_args = dict(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)

    def client(self):
        if self._client is None:
            import openai

            if not self._client_args["api_key"]:
                raise BackendError("No OpenAI API key is set.",
                                   "Set OPENAI_API_KEY (or use the local diffusers backend: --backend diffusers).")
            self._client = openai.OpenAI(**self._client_args)
        return self._client

    def generate(self, request: GenerateRequest, *, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> GenerateResult:
        req = check_request(request)
        if req.loras or req.controls:
            raise InvalidInput("The OpenAI images API takes no LoRA adapters or ControlNet conditions.",
                               "Drop the LoRAs and control conditions, or use the diffusers backend with a local model.")
        if req.mode == "img2img":
            raise InvalidInput("The OpenAI backend edits only with a mask.",
                               "Add a mask (white = repaint), or use the diffusers backend for img2img.", param="mask")
        size = f"{req.width}x{req.height}" if req.width and req.height else None
        prompt = req.prompt if not req.negative_prompt else f"{req.prompt}\nAvoid: {req.negative_prompt}"
        t0 = time.perf_counter()
        images, revised = [], []
        for i in range(req.count):
            if cancel is not None and cancel.is_set():
                raise Cancelled("Generation cancelled.")
            if progress:
                progress(i, req.count)
            response = self._call(req, prompt, size)
            for item in _items(response):
                images.append(_decode(item))
                revised.append(getattr(item, "revised_prompt", None))
        if progress:
            progress(req.count, req.count)
        width, height = images[0].size
        return GenerateResult(images=images, seeds=[req.seed + i for i in range(len(images))], model=self.model,
                              backend=self.name, width=width, height=height, scheduler=None,
                              timings={"generate_s": time.perf_counter() - t0}, reproducible=False,
                              revised_prompts=revised,
                              warnings=["The OpenAI images API takes no seed: this image cannot be reproduced exactly."])

    def _call(self, req: GenerateRequest, prompt: str, size: str | None):
        import openai

        kwargs = dict(model=self.model, prompt=prompt, n=1)
        if size:
            kwargs["size"] = size
        if self.model.startswith("dall-e"):
            kwargs["response_format"] = "b64_json"
        try:
            if req.mode == "inpaint":
                return self.client().images.edit(image=_png_file(req.init_image, "image.png"),
                                                 mask=_png_file(_alpha_mask(req.mask), "mask.png"), **kwargs)
            return self.client().images.generate(**kwargs)
        except openai.AuthenticationError:
            raise BackendError("OpenAI rejected the API key (401).", "Check OPENAI_API_KEY.") from None
        except openai.RateLimitError:
            raise BackendError("OpenAI rate limit or quota reached (429).",
                               "Wait a minute and retry, ask for fewer images, or check your plan's quota.",
                               retryable=True) from None
        except openai.APITimeoutError:
            raise BackendError(f"OpenAI did not answer within {self._client_args['timeout']:g} s.",
                               "Retry, or raise the timeout (openai_timeout in config.json).",
                               retryable=True) from None
        except openai.APIConnectionError as exc:
            raise BackendError(f"Cannot reach the OpenAI API ({exc.__cause__ or exc}).",
                               "Check the network or OPENAI_BASE_URL.", retryable=True) from None
        except openai.BadRequestError as exc:
            code = getattr(exc, "code", None) or (exc.body.get("code") if isinstance(exc.body, dict) else None)
            if code in POLICY_CODES or "safety" in str(exc).lower():
                raise SafetyBlocked("OpenAI refused the request under its content policy.", "provider_policy",
                                    "Rephrase the prompt.") from None
            raise BackendError(f"OpenAI rejected the request: {_message(exc)}",
                               "Check the size (e.g. 1024x1024) and the model name.") from None
        except openai.APIStatusError as exc:  # 5xx and 408 are the service's trouble; 403, 404, ... are not
            retryable = exc.status_code >= 500 or exc.status_code == 408
            raise BackendError(f"OpenAI error {exc.status_code}: {_message(exc)}",
                               "Retry later." if retryable else "Check the model name, OPENAI_BASE_URL and the "
                               "key's permissions.", retryable=retryable) from None
        except ValueError as exc:  # json.JSONDecodeError: a truncated or non-JSON body
            raise BackendError(f"The answer from the OpenAI API was not valid JSON ({exc}).",
                               "Retry; if it keeps happening, check OPENAI_BASE_URL points at an OpenAI-compatible "
                               "images API (a proxy or gateway may be cutting the answer).") from None


def _items(response) -> list:
    """The `data` list of an images answer, or BackendError when there is none (a 200 answer
    without `data`, `data: null`, an empty list, or a body that is not a JSON object at all)."""
    data = getattr(response, "data", None)
    if isinstance(response, (str, bytes)) or not isinstance(data, list) or not data:
        shown = repr(response)[:120] if isinstance(response, (str, bytes)) else f"`data` is {data!r}"[:120]
        what = ("was not valid JSON" if isinstance(response, (str, bytes))
                else "contained no images")
        raise BackendError(f"The answer from the OpenAI API {what} ({shown}); no images were returned.",
                           "Retry; if it keeps happening, check the model name and that OPENAI_BASE_URL "
                           "points at an OpenAI-compatible images API.")
    return data


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error", {}).get("message") or exc)
    return str(exc)


def _decode(item) -> Image.Image:
    if getattr(item, "b64_json", None):
        try:
            raw = base64.b64decode(item.b64_json, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise BackendError("OpenAI returned image data that is not valid base64.",
                               "Try again; if it keeps happening, check OPENAI_BASE_URL or try another model.") from None
        try:
            return load_image(raw, what="returned image")
        except (InvalidInput, ValueError) as exc:
            raise BackendError(f"OpenAI returned an image imagent cannot read: {getattr(exc, 'message', exc)}",
                               "Try again; if it keeps happening, try another image model.") from None
    raise BackendError("OpenAI returned an image URL instead of image data.",
                       "Use a model that returns b64_json (gpt-image-1, or dall-e-* with response_format).")


def _png_file(image: Image.Image, name: str):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return (name, buf.getvalue(), "image/png")


def _alpha_mask(mask: Image.Image) -> Image.Image:
    """imagent masks are white = repaint; OpenAI's are transparent = repaint."""
    rgba = Image.new("RGBA", mask.size, (0, 0, 0, 255))
    rgba.putalpha(mask.convert("L").point(lambda v: 255 - v))
    return rgba
