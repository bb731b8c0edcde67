import pytest
import torch

from kd_core import models


@pytest.mark.parametrize("name", ["mlp-teacher", "cnn-teacher", *models.SMALL_STUDENTS])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_model_maps_images_to_class_logits(name, shape):
    model = models.build(name, shape, 10).eval()
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


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
