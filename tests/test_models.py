import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kd_core.models import zoo as models


@pytest.mark.parametrize("name", ["mlp-teacher", "cnn-teacher", *models.SMALL_STUDENTS])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_model_maps_images_to_class_logits(name, shape):
    torch.manual_seed(0)
    model = models.build(name, shape, 10)
    images = torch.randn(6, *shape)
    # training: every parameter takes part, so a loss sends a gradient to each of them
    F.cross_entropy(model(images), torch.arange(6) % 10).backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []
    # evaluation: one image's logits do not depend on the rest of its batch, or on the batch size
    model.eval()
    with torch.inference_mode():
        batch = model(images)
        alone = model(images[2:3])
    assert batch.shape == (6, 10)
    assert torch.allclose(batch[2:3], alone, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1])  # the output depends on the input


def layer(inputs: int, outputs: int) -> int:
    return inputs * outputs + outputs  # Linear: weights and biases


def conv_bn(inputs: int, outputs: int) -> int:
    return 9 * inputs * outputs + 2 * outputs  # 3×3 conv without bias, BatchNorm's scale and shift


# exact counts from the layer shapes, and the rounded figures kd_core/models/zoo.py's comments document
PARAMS = {
    "mlp-tiny": (layer(784, 32) + layer(32, 10), "~25k params"),
    "mlp-small": (layer(784, 128) + layer(128, 10), "~0.1M params"),
    "mlp-medium": (layer(784, 256) + layer(256, 128) + layer(128, 10), "~0.24M"),
    "cnn-tiny": (conv_bn(1, 8) + conv_bn(8, 16) + conv_bn(16, 32) + layer(32, 10), "~6k params"),
    "cnn-teacher": (conv_bn(1, 32) + conv_bn(32, 64) + conv_bn(64, 128) + conv_bn(128, 256) + layer(256, 10),
                    "0.39M params"),
    "mlp-teacher": (layer(784, 2048) + 2 * 2048 + layer(2048, 1024) + 2 * 1024 + layer(1024, 512) + 2 * 512
                    + layer(512, 10), "784 -> 2048 -> 1024 -> 512 -> 10"),
}


def rounded(count: int, documented: str) -> bool:
    """Whether `count` reads as the documented '~25k' / '~0.24M' / '0.39M' (shapes only: always true)."""
    match = re.search(r"~?([\d.]+)([kM]) ", documented + " ")
    if match is None:
        return True
    value = float(match[1]) * {"k": 1e3, "M": 1e6}[match[2]]
    digits = len(match[1].replace(".", "").lstrip("0"))
    return abs(count - value) <= 0.5 * value / 10 ** (digits - 1)


@pytest.mark.parametrize("name", PARAMS)
def test_parameter_counts_match_the_layers_and_the_documented_figures(name):
    from_layers, documented = PARAMS[name]
    assert models.describe(models.build(name))["params"] == from_layers
    assert documented in Path(models.__file__).read_text()
    assert rounded(from_layers, documented), (name, from_layers, documented)


def test_the_model_card_documents_the_teachers_size():
    card = (Path(__file__).resolve().parent.parent / "checkpoints" / "README.md").read_text()
    teacher = models.build("cnn-teacher")
    params = models.describe(teacher)["params"]
    assert f"parameters | {params:,} " in card
    flops = models.flops_per_sample(teacher, (1, 28, 28))
    assert f"{round(flops / 1e6)} MFLOP per image forward" in card


def test_seed_teacher_architecture_and_sizes():
    teacher = models.build("mlp-teacher")
    widths = [m.out_features for m in teacher if isinstance(m, torch.nn.Linear)]
    dropouts = [m.p for m in teacher if isinstance(m, torch.nn.Dropout)]
    assert widths == [2048, 1024, 512, 10]
    assert dropouts == [0.3, 0.3, 0.2]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in teacher) == 3


def test_describe_counts_parameters_and_bytes():
    small = models.describe(models.build("mlp-small"))
    assert small["params"] == 784 * 128 + 128 + 128 * 10 + 10
    assert small["bytes"] == small["params"] * 4
    tiny = models.describe(models.build("mlp-tiny"))
    assert tiny["params"] == 784 * 32 + 32 + 32 * 10 + 10
    assert models.flops_per_sample(models.build("mlp-small"), (1, 28, 28)) == 2 * (784 * 128 + 128 * 10)


def test_students_range_from_tiny_to_small():
    sizes = {name: models.describe(models.build(name))["params"] for name in models.SMALL_STUDENTS}
    teacher = models.describe(models.build("cnn-teacher"))["params"]
    assert min(sizes.values()) < 30_000 and max(sizes.values()) < teacher
    # the CIFAR pair: the student is about half the teacher
    resnet18, resnet50 = (models.describe(models.build(n, (3, 32, 32)))["params"]
                          for n in ("resnet18-cifar", "resnet50-cifar"))
    assert resnet18 < resnet50 / 2


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="mlp-small"):
        models.build("resnet9000")
