"""Quiet model loading: the libraries' own loading bars and info/warning logs are silenced
(imagent reports progress itself, and "requires torchvision" notes mean nothing to a user)."""
from __future__ import annotations


def quiet_loading() -> None:
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for lib in (dlog, tlog):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
