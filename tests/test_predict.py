import math

import numpy as np
import pytest
import torch
from PIL import Image

from kd_core.models import checkpoints, predict
from kd_core.teacher.logits import predict_logits

EXAMPLES = checkpoints.CHECKPOINT_DIR / "examples"


def test_shipped_examples_are_real_test_images_one_per_class(fashion):
    files = sorted(EXAMPLES.glob("*.png"))
    assert [int(f.name.split("-")[0]) for f in files] == list(range(10))
    for path in files:
        index = int(path.stem.rsplit("-", 1)[1])  # "3-dress-test-13" -> test image 13
        pixels = torch.from_numpy(np.array(Image.open(path)))
        assert torch.equal(pixels, fashion.test_images[index, 0])
        assert fashion.test_labels[index] == int(path.name.split("-")[0])


def test_a_test_image_passes_through_unchanged(fashion):
    image = Image.fromarray(fashion.test_images[13, 0].numpy())
    prepared = predict.prepare_image(image)
    assert torch.equal(prepared.pixels, fashion.test_images[13])
    assert prepared.steps == ("already 28×28 on a dark background: used as is",)


def test_a_light_background_is_inverted(fashion):
    negative = Image.fromarray(255 - fashion.test_images[13, 0].numpy())
    prepared = predict.prepare_image(negative)
    assert torch.equal(prepared.pixels, fashion.test_images[13])
    assert prepared.steps[0] == "inverted (light background)"


def test_colour_photo_on_white_becomes_a_centred_28x28_object():
    photo = np.full((200, 300, 3), 240, dtype=np.uint8)  # light grey background
    photo[50:150, 100:140] = (20, 40, 200)  # a dark blue upright bar, 100 tall × 40 wide
    prepared = predict.prepare_image(Image.fromarray(photo))
    pixels = prepared.pixels[0]
    assert prepared.pixels.shape == (1, 28, 28) and prepared.pixels.dtype == torch.uint8
    assert prepared.steps == ("grayscale", "inverted (light background)", "cropped to the object",
                              "padded to a square, resized to 28×28")
    rows, cols = (pixels > 128).nonzero(as_tuple=True)
    assert (rows.min(), rows.max()) == (0, 27)  # the longest edge fills the frame
    assert (cols.min(), cols.max()) == (8, 19)  # 40/100 of 28 = 11.2 columns, centred: 8.4 .. 19.6
    assert pixels.max() == 255 and pixels[:, :6].max() == 0  # stretched contrast, black background


def test_transparent_sketch_is_flattened_onto_white():
    sketch = np.zeros((280, 280, 4), dtype=np.uint8)  # fully transparent canvas
    sketch[60:220, 130:150] = (0, 0, 0, 255)  # one black stroke
    prepared = predict.prepare_image(Image.fromarray(sketch, "RGBA"))
    assert prepared.steps[:3] == ("transparent parts made white", "grayscale", "inverted (light background)")
    assert prepared.pixels.max() == 255 and prepared.pixels[0, :, :5].max() == 0


@pytest.mark.parametrize("mode, colour", [("L", 0), ("L", 255), ("RGBA", (0, 0, 0, 0)),
                                          ("RGB", (90, 90, 90))])
def test_a_blank_picture_is_a_clear_error(mode, colour):
    with pytest.raises(ValueError, match="blank"):
        predict.prepare_image(Image.new(mode, (100, 80), colour))


def test_open_image_rejects_a_non_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a picture")
    with pytest.raises(ValueError, match="notes.png is not an image"):
        predict.open_image(path)


def test_open_image_reads_png(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (5, 7), 3).save(path)
    image = predict.open_image(path)
    assert image.size == (5, 7) and image.getpixel((0, 0)) == 3


def test_enlarge_keeps_pixels_sharp():
    pixels = torch.tensor([[[0, 255], [128, 7]]], dtype=torch.uint8)
    big = np.asarray(predict.enlarge(pixels, scale=3))
    assert big.shape == (6, 6)
    assert (big[:3, :3] == 0).all() and (big[:3, 3:] == 255).all() and (big[3:, :3] == 128).all()


def test_softened_matches_softmax_and_flattens_with_temperature():
    logits = torch.tensor([4.0, 1.0, 0.0, -2.0])
    assert torch.allclose(predict.softened(logits, 1.0), torch.softmax(logits, 0))
    assert torch.allclose(predict.softened(logits, 2.0), torch.softmax(logits / 2, 0))
    hot = predict.softened(logits, 1e4)
    assert torch.allclose(hot, torch.full((4,), 0.25), atol=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        predict.softened(logits, 0.0)


def test_top_k_is_sorted_and_cut():
    probs = torch.tensor([0.1, 0.6, 0.05, 0.25])
    assert predict.top_k(probs, ("a", "b", "c", "d"), 2) == {"b": pytest.approx(0.6),
                                                             "d": pytest.approx(0.25)}
    assert list(predict.top_k(probs, ("a", "b", "c", "d"), 10)) == ["b", "d", "a", "c"]


def test_classifier_normalises_like_training(fashion, shipped_teacher):
    """The Classifier path (uint8 -> metadata mean/std) gives the logits the training code computes."""
    teacher = predict.default_teacher()
    images = fashion.test_images[:64]
    expected = predict_logits(teacher.model, fashion, images, "cpu")
    assert torch.allclose(teacher.logits(images), expected, atol=1e-4)
    assert teacher.classes == fashion.classes and teacher.in_shape == (1, 28, 28)


def test_default_students_are_shipped_and_classify(fashion):
    ce, kd = predict.default_students()
    assert (ce.name, kd.name) == ("CE student", "KD student")
    for student in (ce, kd):
        predicted = student.logits(fashion.test_images).argmax(1)
        accuracy = (predicted == fashion.test_labels).float().mean().item()
        assert accuracy == pytest.approx(student.meta["test_acc"], abs=1e-4)
        assert accuracy > 0.84


def test_predict_all_gives_each_model_top_k(fashion):
    teacher = predict.default_teacher()
    ce, kd = predict.default_students()
    result = predict.predict_all({"teacher": teacher, "ce": ce, "kd": kd}, fashion.test_images[13], k=3)
    assert list(result) == ["teacher", "ce", "kd"]
    for probabilities in result.values():
        assert len(probabilities) == 3 and all(0 <= p <= 1 for p in probabilities.values())
    assert result["teacher"] == pytest.approx(
        predict.top_k(teacher.probabilities(fashion.test_images[13]), teacher.classes, 3))


def test_load_classifier_explains_a_missing_file(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="not found"):
        predict.load_classifier(tmp_path / "nope.safetensors", "teacher")
    with pytest.raises(checkpoints.CheckpointError, match="--save-students"):
        predict.default_students(tmp_path)


def test_cpu_latency_is_a_positive_duration():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    latency = predict.cpu_latency_ms(model, (1, 28, 28), repeats=5)
    assert 0 < latency < 1000 and math.isfinite(latency)


# ------------------------------------------------------------------------------ hostile pictures

def hostile(tmp_path, kind: str):
    from PIL import Image, ImageDraw

    path = tmp_path / f"{kind}.png"
    shirt = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(shirt).rectangle((15, 10, 45, 50), fill=0)
    if kind == "one-pixel":
        Image.new("RGB", (1, 1), "red").save(path)
    elif kind == "transparent":
        rgba = Image.new("RGBA", (60, 60), (0, 0, 0, 0))
        ImageDraw.Draw(rgba).rectangle((15, 10, 45, 50), fill=(0, 0, 0, 255))
        rgba.save(path)
    elif kind == "palette":
        shirt.convert("P").save(path)
    elif kind == "16-bit":
        Image.fromarray(np.asarray(shirt, dtype=np.uint16) * 257).save(path)
    elif kind == "cmyk":
        path = tmp_path / "cmyk.jpg"
        shirt.convert("CMYK").save(path)
    elif kind == "animated":
        path = tmp_path / "animated.gif"
        shirt.save(path, save_all=True, append_images=[Image.new("L", (60, 60), 128)], duration=100)
    elif kind == "bomb":  # 20000×20000 one-bit pixels: a few kB on disk, 400 megapixels decoded
        Image.new("1", (20000, 20000), 0).save(path, optimize=True)
    elif kind == "big":  # 60 megapixels: under Pillow's own bomb limit, over ours
        Image.new("1", (8000, 7500), 0).save(path, optimize=True)
    elif kind == "truncated":
        shirt.save(path)
        path.write_bytes(path.read_bytes()[:60])
    return path


@pytest.mark.parametrize("kind", ["transparent", "palette", "16-bit", "cmyk", "animated"])
def test_unusual_but_valid_pictures_are_classified(tmp_path, kind):
    picture = predict.open_image(hostile(tmp_path, kind))
    prepared = predict.prepare_image(picture)
    assert prepared.pixels.shape == (1, 28, 28) and prepared.pixels.dtype == torch.uint8
    assert prepared.pixels.float().std() > 20  # an object, not a flat square


@pytest.mark.parametrize("kind, message", [
    ("bomb", "bomb.png is refused"), ("big", "8000×7500 pixels; pictures above 40 megapixels are refused"),
    ("truncated", "not an image this app can read"),
])
def test_hostile_files_are_refused_clearly(tmp_path, kind, message):
    with pytest.raises(ValueError, match=message):
        predict.open_image(hostile(tmp_path, kind))


def test_a_one_pixel_picture_is_blank_not_a_crash(tmp_path):
    with pytest.raises(ValueError, match="blank"):
        predict.prepare_image(predict.open_image(hostile(tmp_path, "one-pixel")))
