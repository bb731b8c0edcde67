"""Pretrained weights, fetched fast or refused in one line: the Hub (timm, hf-hub:), torchvision's download host.

Every download first asks whether its file is cached; if not, whether its host answers on port 443 within
OFFLINE_CHECK_S seconds (HF_HUB_OFFLINE: not at all). Otherwise one ValueError names what could not be had, so a
run asked to start from pretrained weights never starts from random ones instead (timm alone retries for about
70 s offline). Teachers (kd_core.teacher.sources), students (kd_core.models.students) and the zoo's
`--pretrained` ResNets (kd_core.models.zoo.load_pretrained) all come through here.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

OFFLINE_CHECK_S = 1.5  # a download's host must answer within this, else the run stops with one line


def timm_hub_id(name: str) -> str:
    """The Hub repository of timm model `name`'s default pretrained weights; ValueError when it has none."""
    import timm

    hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id if timm.is_model(name) else None
    if not hub_id:
        raise ValueError(f"timm:{name} has no pretrained weights on the Hub")
    return hub_id


def torchvision_weights(name: str):
    """torchvision's default weights enum of `name`, its file in torch's cache (downloaded there if missing)."""
    import torch
    from torchvision import models as tv_models

    try:
        weights = tv_models.get_model_weights(name).DEFAULT
    except (KeyError, ValueError) as error:
        raise ValueError(f"torchvision has no pretrained weights for {name!r}") from error
    file = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    reachable_or_cached(file, "download.pytorch.org", f"torchvision:{name}'s weights")
    try:
        weights.get_state_dict(progress=False)  # into torch's cache now, so later loads are local
    except Exception as error:  # a proxy, a full disk, a dropped connection: one line each
        raise ValueError(f"cannot download torchvision:{name}'s weights ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:160] if str(error) else ''})") from error
    return weights


def hub_folder(repo_id: str) -> Path:
    """The Hub repo's files in the local cache, downloaded first when online; ValueError within 2 s offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["config.json", "*.safetensors", "pytorch_model.bin"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    reachable_or_cached(None, "huggingface.co", f"hf-hub:{repo_id}")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as error:  # a wrong id, a private repo, a dropped connection: one line each
        raise ValueError(f"cannot download hf-hub:{repo_id} ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:160]})") from error


def hub_file(repo_id: str) -> Path:
    folder = hub_folder(repo_id)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model.bin"))
    if not files:
        raise ValueError(f"hf-hub:{repo_id} has no weights file")
    return files[0]


def answers(host: str, port: int, within_s: float = OFFLINE_CHECK_S) -> bool:
    """Whether `host` accepts a connection on `port` within `within_s`: how a download learns it is offline at once
    (the libraries retry for 20 s or more before failing)."""
    answered: list[bool] = []

    def connect() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=within_s).close()
            answered.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(within_s)
    return bool(answered)


def reachable_or_cached(cached: Path | None, host: str, what: str) -> None:
    """Return when `cached` exists or `host` answers on port 443 within OFFLINE_CHECK_S; else ValueError."""
    if cached is not None and cached.is_file():
        return
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") and host == "huggingface.co":
        raise ValueError(f"cannot get {what}: HF_HUB_OFFLINE is set and it is not in the local Hub cache")
    if not answers(host, 443):
        raise ValueError(f"cannot get {what}: {host} did not answer within {OFFLINE_CHECK_S:g} s (offline?) "
                         f"and it is not cached on this machine")
