"""A chain of backends as one backend: `--backend openai,diffusers`.

`FallbackBackend([first, second, ...])` takes backends built elsewhere (nothing is built or loaded
here) and tries them in order. A retryable failure (a BackendError with `retryable` set: a timeout,
a 429, a 5xx, an unreachable service) passes the request on to the next backend; any other error
(bad input, a safety block, a content-policy refusal, a 400, a cancel) is raised at once, as from a
single backend. A backend that cannot do the request's mode (img2img on OpenAI) is passed over.
The result names the backend that made the image (`backend`, `model`) and lists each one passed
over and why (`fallback`: [{"backend": "openai", "error": "..."}]).

`compose` and `native_size` are not chained: they go to the first backend that has them.
"""
from __future__ import annotations

import threading

from tools.errors import BackendError, InvalidInput
from tools.generate import GenerateRequest, GenerateResult, ProgressFn


class FallbackBackend:
    def __init__(self, backends: list):
        backends = list(backends)
        if not backends:
            raise InvalidInput("A backend chain needs at least one backend.", "Pass e.g. openai,diffusers.")
        self.backends = backends
        self.name = ",".join(b.name for b in backends)
        self.model = ",".join(str(b.model) for b in backends)
        self.capabilities = frozenset().union(*(b.capabilities for b in backends))

    @property
    def primary(self):
        """The backend that takes a request first."""
        return self.backends[0]

    def generate(self, request: GenerateRequest, *, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> GenerateResult:
        skipped: list[dict] = []
        for backend in self.backends:
            if request.mode not in backend.capabilities:
                skipped.append({"backend": backend.name, "error": f"cannot do {request.mode}"})
                continue
            try:
                result = backend.generate(request, progress=progress, cancel=cancel)
            except BackendError as exc:
                if not exc.retryable:
                    raise
                skipped.append({"backend": backend.name, "error": exc.message})
                continue
            if skipped:
                result.fallback = skipped + list(result.fallback)
                result.warnings = [f"{backend.name} made the image: " + "; ".join(
                    f"{s['backend']} was skipped ({s['error']})" for s in skipped) + "."] + list(result.warnings)
            return result
        reasons = "; ".join(f"{s['backend']}: {s['error']}" for s in skipped)
        if all(s["error"].startswith("cannot do ") for s in skipped):
            raise InvalidInput(f"No backend of {self.name} can do {request.mode}.",
                               "Add a backend that can (diffusers does txt2img, img2img and inpaint) to --backend.")
        raise BackendError(f"Every backend of {self.name} failed: {reasons}.",
                           "Retry later, or check each one (the network, OPENAI_BASE_URL, the model).",
                           retryable=True)

    def _first_with(self, what: str, capability: str | None = None):
        for backend in self.backends:
            if hasattr(backend, what) and (capability is None or capability in backend.capabilities):
                return backend
        raise InvalidInput(f"No backend of {self.name} can {what.replace('_', ' ')}.",
                           "Add the diffusers backend to --backend.")

    def compose(self, plan, locate, base_image=None, *, cancel: threading.Event | None = None):
        return self._first_with("compose", "compose").compose(plan, locate, base_image, cancel=cancel)

    def native_size(self) -> tuple[int, int]:
        return self._first_with("native_size").native_size()

    def serving(self, capability: str):
        """The backend that would serve `capability` first (for records of composed images)."""
        return self._first_with("generate", capability)

