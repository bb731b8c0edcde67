"""From any picture to the teacher's and the students' predictions.

The models learnt from Fashion-MNIST: 28×28 grey, a light object on a black background, centred, its
longest edge filling the frame (Xiao et al. 2017 describe this recipe). `prepare_image` brings a photo,
a dark drawing on white, or a transparent sketch to that form: flatten alpha onto white, grayscale,
invert when the background is light, stretch the contrast from the background up, crop to the object,
pad to a square and resize. It returns the uint8 image the models actually see (the app shows it) and
the steps taken. An image that already has the model's size and a dark background (a real test image)
passes through unchanged. Normalisation (mean / std from the checkpoint) happens inside `Classifier`.
"""

from __future__ import annotations

import functools
import statistics
import struct
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from kd_core.models import checkpoints

DEFAULT_STUDENTS_DIR = checkpoints.CHECKPOINT_DIR / "default-students"
MIN_CONTRAST = 16  # grey levels between background and brightest pixel below which a picture is blank
MAX_PIXELS = 40_000_000  # larger pictures are refused before decoding (40 MP decode to ~120 MB of RGB)
INK_THRESHOLD = 0.1  # a pixel belongs to the object above this fraction of the brightest pixel


@dataclass(frozen=True, eq=False)
class Classifier:
    """A model with what it needs to read uint8 images: class names and normalisation."""

    name: str  # shown in the UI: "teacher", "CE student", "KD student"
    model: nn.Module  # on CPU, eval mode
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, images scaled to [0, 1]
    std: tuple[float, ...]
    in_shape: tuple[int, int, int]  # (C, H, W)
    meta: dict = field(default_factory=dict, repr=False)  # the checkpoint's metadata (recipe, config, …)
    logit_bias: tuple[int, float] | None = None  # (class, b): b added to that class's logit (kd_core.engine.bias)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> float32 logits [B, K]."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        with torch.inference_mode():
            out = self.model((images.float() / 255.0 - mean) / std).float()
            if self.logit_bias is not None:
                out[:, self.logit_bias[0]] += self.logit_bias[1]
        return out

    def probabilities(self, image: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """uint8 [C, H, W] -> softmax(logits / T), float32 [K]."""
        return softened(self.logits(image.unsqueeze(0))[0], temperature)


def classifier_from(name: str, model: nn.Module, meta: dict) -> Classifier:
    return Classifier(name, model.cpu().eval(), tuple(meta["classes"]), tuple(meta["mean"]),
                      tuple(meta["std"]), tuple(meta["in_shape"]), meta)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float, name: str) -> Classifier:
    model, meta = checkpoints.load_model(path, "cpu")
    missing = {"classes", "mean", "std"} - meta.keys()
    if missing:
        raise checkpoints.CheckpointError(f"{path} lacks {sorted(missing)} in its metadata; "
                                          f"it cannot be used to classify pictures")
    return classifier_from(name, model, meta)


def load_classifier(path: str | Path, name: str) -> Classifier:
    """The checkpoint at `path` as a Classifier, loaded once per process (reloaded if the file changes)."""
    path = Path(path)
    if not path.is_file():
        raise checkpoints.CheckpointError(f"checkpoint not found: {path}")
    return _load(str(path.resolve()), path.stat().st_mtime, name)


def default_teacher(dataset: str = "fashion-mnist") -> Classifier:
    return load_classifier(checkpoints.default_teacher_path(dataset), "teacher")


def default_students(directory: str | Path = DEFAULT_STUDENTS_DIR) -> tuple[Classifier, Classifier]:
    """The pre-trained CE / KD student pair shipped in checkpoints/default-students/."""
    directory = Path(directory)
    try:
        return (load_classifier(directory / "ce-student.safetensors", "CE student"),
                load_classifier(directory / "kd-student.safetensors", "KD student"))
    except checkpoints.CheckpointError as error:
        raise checkpoints.CheckpointError(
            f"{error}; make the default pair with `python -m kd_core distill --epochs 5 "
            f"--save-students {directory}`") from error


# ----------------------------------------------------------------------------------- preprocessing

@dataclass(frozen=True)
class Prepared:
    pixels: torch.Tensor  # uint8 [C, H, W]: exactly what the models see, before normalisation
    steps: tuple[str, ...]  # what was done, in order, for the caption under the image


def open_image(path: str | Path) -> Image.Image:
    """The image file at `path` (the first frame of an animation), or ValueError saying why not.

    The size is checked from the header before any pixel is decoded, so a decompression bomb (a tiny
    file that claims billions of pixels) is refused without using the memory it asks for.
    """
    name = Path(path).name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise ValueError(f"{name} is {image.width}×{image.height} pixels; pictures above "
                                     f"{MAX_PIXELS // 1_000_000} megapixels are refused")
                image.seek(0)
                image.load()
                return ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(f"{name} is refused: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, struct.error) as error:
        raise ValueError(f"{name} is not an image this app can read "
                         f"(PNG, JPEG, WebP, GIF or BMP): {error}") from None


def prepare_image(image: Image.Image | np.ndarray, in_shape: tuple[int, int, int] = (1, 28, 28)) -> Prepared:
    """Any picture -> the uint8 [C, H, W] model input; ValueError if it is blank."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    channels, height, width = in_shape
    steps = []
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        if image.getchannel("A").getextrema()[0] < 255:  # some pixel is (partly) transparent
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image)
            steps.append("transparent parts made white")
        image = image.convert("RGB")
    if channels == 3:
        return _prepare_colour(image.convert("RGB"), height, width, steps)
    if image.mode != "L":
        image = image.convert("L")
        steps.append("grayscale")
    grey = np.asarray(image, dtype=np.float32)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    if background > 127:
        grey, background = 255.0 - grey, 255.0 - background
        steps.append("inverted (light background)")
    if grey.max() - background < MIN_CONTRAST:
        raise ValueError("the picture is blank (one flat colour): draw or upload something first")
    if grey.shape == (height, width) and background < MIN_CONTRAST:
        steps.append(f"already {height}×{width} on a dark background: used as is")
        return Prepared(torch.from_numpy(grey.astype(np.uint8))[None], tuple(steps))
    grey = np.clip((grey - background) / (grey.max() - background), 0.0, 1.0)  # background -> 0, top -> 1
    rows, cols = np.nonzero(grey > INK_THRESHOLD)
    grey = grey[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    steps.append("cropped to the object")
    side = max(grey.shape)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - grey.shape[0]) // 2, (side - grey.shape[1]) // 2
    square[top:top + grey.shape[0], left:left + grey.shape[1]] = grey
    small = Image.fromarray((square * 255).astype(np.uint8)).resize((width, height), Image.Resampling.LANCZOS)
    steps.append(f"padded to a square, resized to {height}×{width}")
    return Prepared(torch.from_numpy(np.asarray(small, dtype=np.uint8).copy())[None], tuple(steps))


def _prepare_colour(image: Image.Image, height: int, width: int, steps: list[str]) -> Prepared:
    if image.size != (width, height):
        image = ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
        steps.append(f"centre-cropped and resized to {height}×{width}")
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return Prepared(pixels.contiguous(), tuple(steps))


def enlarge(pixels: torch.Tensor, scale: int = 8) -> Image.Image:
    """uint8 [C, H, W] -> a PIL image `scale` times larger with sharp pixels (for display)."""
    array = pixels.permute(1, 2, 0).numpy()
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


# ------------------------------------------------------------------------------------ predictions

def softened(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) over the last dimension; T > 0 (T = 1 is the plain softmax)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature!r}")
    return torch.softmax(logits.float() / temperature, dim=-1)


def top_k(probabilities: torch.Tensor, classes: tuple[str, ...], k: int) -> dict[str, float]:
    """The k most probable classes, {name: probability}, most probable first."""
    values, indices = probabilities.topk(min(k, len(classes)))
    return {classes[i]: float(p) for p, i in zip(values.tolist(), indices.tolist(), strict=True)}


def predict_all(classifiers: dict[str, Classifier], pixels: torch.Tensor,
                k: int = 3) -> dict[str, dict[str, float]]:
    """{key: that classifier's top-k {class: probability}} for one uint8 [C, H, W] image."""
    return {key: top_k(c.probabilities(pixels), c.classes, k) for key, c in classifiers.items()}


def cpu_latency_ms(model: nn.Module, in_shape: tuple[int, int, int], *, repeats: int = 50) -> float:
    """Median wall time of one forward pass on one image (batch 1) on the CPU, in milliseconds."""
    model = model.cpu().eval()
    x = torch.zeros(1, *in_shape)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 5):
            start = time.perf_counter()
            model(x)
            if i >= 5:  # the first calls warm up allocators and kernels
                times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)
