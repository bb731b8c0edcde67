"""The one engine: the stack, the per-role losses, lockstep seeds, transfer images, what reaches a batch."""

import math

import pytest
import torch
import torch.nn.functional as F

from kd_core.config import RunConfig
from kd_core.engine import loop as engine
from kd_core.engine import roles, run_data
from kd_core.engine.loop import StackFinished, StackStep, train_stack
from kd_core.engine.roles import CE_ROLE, Role, role_losses
from kd_core.engine.stack import ACTIVATION_BYTES, StudentStack
from kd_core.losses import kd_loss
from kd_core.models import zoo as models
from kd_core.run import as_run

SMALL = RunConfig(train_size=2000, epochs=1, repeats=1, event_interval_s=0.0)
PAIR = [CE_ROLE, Role("KD student", "kd", 3.0, 0.7)]


def finished(cfg, roles=PAIR):
    return [e for e in train_stack(as_run(cfg), roles) if isinstance(e, StackFinished)][0].result


def record_batches(monkeypatch) -> list[torch.Tensor]:
    """Every step's training-set rows [G, B] (indices into the dataset), as the engine gathered them."""
    seen = []
    original = engine.Trainer.batch

    def spy(self, labelled, transfer):
        rows = torch.gather(self.data.labelled, 1, labelled)
        if transfer.shape[1]:
            rows = torch.cat([rows, torch.gather(self.data.transfer, 1, transfer)], dim=1)
        seen.append((self.data.used[rows], labelled.shape[1]))
        return original(self, labelled, transfer)

    monkeypatch.setattr(engine.Trainer, "batch", spy)
    return seen


# --------------------------------------------------------------------------------------- the loss

def test_role_losses_are_kd_loss_per_seed_and_role():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 16, 10, generator=g) * 3  # [G, M, B, K]
    teacher = torch.randn(2, 16, 10, generator=g) * 3
    labels = torch.randint(0, 10, (2, 16), generator=g)
    T, alpha = torch.tensor([1.0, 2.0, 8.0]), torch.tensor([0.0, 0.25, 1.0])
    losses = role_losses(logits.transpose(2, 3), teacher.transpose(1, 2), labels, T, alpha)
    for s in range(2):
        for m in range(3):
            expected = kd_loss(logits[s, m], teacher[s], labels[s], T=T[m].item(), alpha=alpha[m].item())
            assert losses[s, m].item() == pytest.approx(expected.item(), rel=1e-5)


def test_transfer_images_add_the_soft_term_alone():
    """The last 6 images are unlabelled: α·T²·KL on them (batchmean) is added; CE (α=0) ignores them."""
    g = torch.Generator().manual_seed(1)
    logits, teacher = torch.randn(1, 2, 16, 10, generator=g), torch.randn(1, 16, 10, generator=g)
    labels = torch.randint(0, 10, (1, 10), generator=g)
    T, alpha = torch.tensor([1.0, 4.0]), torch.tensor([0.0, 0.9])
    losses = role_losses(logits.transpose(2, 3), teacher.transpose(1, 2), labels, T, alpha)
    assert losses[0, 0].item() == pytest.approx(F.cross_entropy(logits[0, 0, :10], labels[0]).item(), rel=1e-6)
    soft = F.kl_div(F.log_softmax(logits[0, 1, 10:] / 4, 1), F.log_softmax(teacher[0, 10:] / 4, 1),
                    reduction="batchmean", log_target=True) * 16 * 0.9
    labelled = kd_loss(logits[0, 1, :10], teacher[0, :10], labels[0], T=4.0, alpha=0.9)
    assert losses[0, 1].item() == pytest.approx((labelled + soft).item(), rel=1e-5)


# -------------------------------------------------------------------------------------- the stack

@pytest.mark.parametrize("student", ["mlp-tiny", "mlp-medium", "cnn-tiny"])
@pytest.mark.parametrize("parts", [[slice(None)], [slice(0, 2), slice(2, 4)]])
def test_stack_runs_each_student_on_its_groups_batch(student, parts):
    """2 seeds × 2 roles with different weights: logits, BatchNorm statistics and gradients equal the
    modules', each group reading its own batch, whether the students run at once or in parts."""
    torch.manual_seed(0)
    stack = StudentStack([models.build(student), models.build(student)], 2, (1, 28, 28))
    with torch.no_grad():
        for tensor in stack.parameters():
            tensor.add_(torch.randn_like(tensor) * 0.05)  # make the four copies differ
    separate = [stack.module(s).train() for s in range(4)]
    x = torch.randn(2, 8, 1, 28, 28)  # one batch per seed group
    outs = [stack(x, train=True, part=part) for part in parts]
    sum(o.square().sum() for o in outs).backward()
    out = torch.cat(outs)
    assert out.shape == (4, 10, 8)
    for s, module in enumerate(separate):
        expected = module(x[s // 2])
        assert torch.allclose(out[s].T, expected, atol=1e-5), s
        expected.square().sum().backward()
        for name, value in module.state_dict().items():  # BatchNorm running statistics moved alike
            assert torch.allclose(stack.state_dict(s)[name].to(value.dtype), value, atol=1e-6), (s, name)
        grads = {name: p.grad for name, p in module.named_parameters()}
        for name, tensor in stack.params.items():
            assert torch.allclose(tensor.grad[s], grads[name], atol=1e-5), (s, name)
    inputs = torch.randn(5, 1, 28, 28)
    for s, module in enumerate(separate):  # eval: the running statistics, one shared input
        assert torch.allclose(stack.logits(inputs)[s], module.eval()(inputs), atol=1e-5), s


def test_parts_hold_whole_seed_groups_and_bound_the_activation_memory():
    mlp = StudentStack([models.build("mlp-small")] * 3, 6, (1, 28, 28))
    assert mlp.widest_bytes == 128 * 4 and mlp.parts(256) == [slice(0, 18)]
    cnn = StudentStack([models.build("cnn-tiny")] * 5, 3, (1, 28, 28))
    assert cnn.widest_bytes == 8 * 28 * 28 * 4  # the first conv's output
    groups = max(1, ACTIVATION_BYTES // (256 * cnn.widest_bytes * 3))
    assert cnn.parts(256) == [slice(i, min(i + 3 * groups, 15)) for i in range(0, 15, 3 * groups)]
    assert all(p.start % 3 == 0 for p in cnn.parts(10**6)) and len(cnn.parts(10**6)) == 5


# ------------------------------------------------------------------------------ lockstep and seeds

def test_one_seed_equals_an_independent_reference_loop(fashion):
    """repeats=1: the engine's CE and KD students equal two plain modules trained by a hand-written loop
    with its own loss formula, its own training set (all but the validation split) and initialisation."""
    from kd_core.models import checkpoints
    from kd_core.teacher.logits import teacher_logits

    cfg = RunConfig(train_size=0, epochs=1, repeats=1, lr=1e-3, batch_size=1024, seed=3, evaluations=1)
    result = finished(cfg)
    teacher = teacher_logits(checkpoints.default_teacher_path("fashion-mnist"), fashion).train
    keep = torch.ones(60000, dtype=torch.bool)
    keep[fashion.validation_index] = False
    index = keep.nonzero().flatten()
    torch.manual_seed(3)
    ce = models.build("mlp-small")
    kd = models.build("mlp-small")
    kd.load_state_dict(ce.state_dict())
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (ce, kd)]
    order = torch.randperm(len(index), generator=torch.Generator().manual_seed(3))
    for first in range(0, len(index), 1024):
        rows = index[order[first:first + 1024]]
        x = (fashion.train_images[rows].float() / 255 - 0.2860) / 0.3530
        y, t = fashion.train_labels[rows], teacher[rows]
        log_p_t = torch.log_softmax(t / 3.0, 1)
        losses = [F.cross_entropy(ce(x), y),
                  0.7 * 9.0 * (log_p_t.exp() * (log_p_t - torch.log_softmax(kd(x) / 3.0, 1))).sum(1).mean()
                  + 0.3 * F.cross_entropy(kd(x), y)]
        for optimizer, loss in zip(optimizers, losses, strict=True):
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for role, mine in enumerate((ce, kd)):
        for name, value in mine.state_dict().items():
            # Adam turns float noise in a near-zero gradient into a ±lr step, so a few weights may differ
            # by a step or two; a wrong loss, batch or initialisation moves most of them
            diff = (result.students.state_dict(role)[name] - value).abs()
            assert (diff < 2e-5).float().mean() > 0.98 and diff.max() < 1e-3, (role, name, diff.max())


def test_each_seeds_students_share_init_batches_and_subset(fashion, monkeypatch):
    """α = 0 twins stay identical within a seed (same init, batches, subset); seeds differ; and seed i of a
    3-seed run equals a run of that seed alone."""
    seen = record_batches(monkeypatch)
    cfg = SMALL.replace(repeats=3, seed=5, batch_size=500)
    twins = [CE_ROLE, Role("twin", "kd", 2.0, 0.0)]
    result = finished(cfg, twins)
    assert len(seen) == 4 and all(rows.shape == (3, 500) for rows, _ in seen)
    for g in range(3):
        # identical but for the fused Adam's rounding, which can differ by position in the stacked tensor
        assert all(torch.allclose(a, b, atol=1e-7, rtol=0) for a, b in zip(result.module(g, 0).parameters(),
                                                     result.module(g, 1).parameters(), strict=True))
        assert result.test_acc[g][0] == result.test_acc[g][1]
    assert not torch.equal(seen[0][0][0], seen[0][0][1])  # seeds draw different batches
    alone = finished(cfg.replace(repeats=1, seed=6), twins)
    for name, value in alone.students.state_dict(0).items():
        assert torch.allclose(result.students.state_dict(2)[name], value, atol=2e-6), name


def test_no_validation_hidden_or_test_image_reaches_a_batch(fashion, monkeypatch):
    seen = record_batches(monkeypatch)
    finished(SMALL.replace(repeats=2, hide_class=3, unlabeled=3000, epochs=2))
    rows = torch.cat([r.flatten() for r, _ in seen])
    assert not torch.isin(rows, fashion.validation_index).any()
    labelled = torch.cat([r[:, :n].flatten() for r, n in seen])
    assert not (fashion.train_labels[labelled] == 3).any()
    assert not (fashion.train_labels[rows] == 3).any()  # unlabeled_hidden is off by default
    assert rows.max() < 60000  # training-set rows only: test images are another tensor


def test_the_hidden_class_may_be_allowed_among_the_unlabelled(fashion, monkeypatch):
    seen = record_batches(monkeypatch)
    finished(SMALL.replace(hide_class=3, unlabeled=20000, unlabeled_hidden=True))
    labelled = torch.cat([r[:, :n].flatten() for r, n in seen])
    transfer = torch.cat([r[:, n:].flatten() for r, n in seen])
    assert not (fashion.train_labels[labelled] == 3).any() and (fashion.train_labels[transfer] == 3).any()


@pytest.mark.parametrize("methods", [("kd",), ("hint", "cosine")])
def test_transfer_labels_are_never_read_and_ce_never_sees_transfer_images(methods, fashion, monkeypatch):
    """The distilling students (Hinton KD; the feature methods) learn from the transfer images, never from
    their labels; the CE student never sees them."""
    cfg = SMALL.replace(train_size=500, unlabeled=1500, epochs=2, batch_size=250, methods=methods)
    pair = [CE_ROLE, *(roles.method_role(m, 4.0, 0.9, 8.0) for m in methods)]
    base = finished(cfg, pair)
    original = run_data.RunData.__init__

    def scrambled(self, *args, **kwargs):
        original(self, *args, **kwargs)
        transfer = self.transfer.flatten()
        self.labels[transfer] = (self.labels[transfer] + 3) % 10  # wrong labels for every transfer image

    monkeypatch.setattr(run_data.RunData, "__init__", scrambled)
    relabelled = finished(cfg, pair)
    monkeypatch.setattr(run_data.RunData, "__init__", original)

    def noisy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        transfer = self.transfer.flatten()
        self.images[transfer] = torch.randint_like(self.images[transfer], 0, 256)
        self.teacher[transfer] = torch.randn_like(self.teacher[transfer])

    monkeypatch.setattr(run_data.RunData, "__init__", noisy)
    other_images = finished(cfg, pair)
    for name, value in base.students.state_dict(0).items():
        assert torch.equal(other_images.students.state_dict(0)[name], value), name  # CE: bit-identical
        for role in range(len(pair)):
            assert torch.equal(relabelled.students.state_dict(role)[name], base.students.state_dict(role)[name])
    for role in range(1, len(pair)):  # while the distilling students learned from them
        assert any(not torch.equal(other_images.students.state_dict(role)[n], v)
                   for n, v in base.students.state_dict(role).items()), role


@pytest.mark.parametrize("change, message", [
    ({"repeats": 0}, "repeats"), ({"repeats": 9}, "repeats"), ({"repeats": 2.5}, "repeats"),
    ({"repeats": True}, "repeats"), ({"unlabeled": -1}, "unlabeled"), ({"unlabeled": 60_000}, "at most"),
    ({"evaluations": 0}, "evaluations"), ({"unlabeled_hidden": "yes"}, "unlabeled_hidden"),
])
def test_bad_repeats_and_transfer_settings_are_clear_errors(change, message, fashion):
    with pytest.raises(ValueError, match=message):
        next(train_stack(as_run(SMALL.replace(**change)), PAIR))


# -------------------------------------------------------------------------------------- the events

def test_steps_reach_the_total_and_evaluations_are_spread(fashion):
    # 257 images at batch 256: the lone last image of each epoch is skipped, and not counted as a step
    events = list(train_stack(as_run(SMALL.replace(train_size=257, epochs=2, batch_size=256, evaluations=16)), PAIR))
    steps = [e for e in events if isinstance(e, StackStep)]
    assert [(s.step, s.total_steps) for s in steps] == [(1, 2), (2, 2)]
    events = list(train_stack(as_run(SMALL.replace(epochs=3, batch_size=100, evaluations=12)), PAIR))
    evaluated = [e for e in events if isinstance(e, engine.StackEvaluated)]
    assert [e.step for e in evaluated] == [0, *range(5, 61, 5)]
    assert evaluated[-1].progress == pytest.approx(3.0) and len(evaluated[1].accuracy[0]) == 2


def test_a_diverging_role_stops_the_run_with_a_message(fashion, monkeypatch):
    def poisoned(logits, teacher, labels, T, alpha):
        return role_losses(logits, teacher, labels, T, alpha) * torch.tensor([1.0, math.nan])

    monkeypatch.setattr(roles, "role_losses", poisoned)
    with pytest.raises(engine.TrainingDiverged, match="lower the learning rate"):
        list(train_stack(as_run(SMALL), PAIR))


# -------------------------------------------------------------------------------------- methods

def test_stack_losses_give_each_method_its_own_formula():
    """CE, KD, KD-std, DKD and DIST roles in one stack: each column equals its 2-D formula per seed."""
    from kd_core.engine.roles import hinton_columns, method_role, stack_losses
    from kd_core.losses import dist_loss, dkd_loss, kd_loss_stacked

    g = torch.Generator().manual_seed(2)
    stack = [CE_ROLE, *(method_role(m, 4.0, 0.9, 8.0) for m in ("kd", "kd-std", "dkd", "dist"))]
    logits = torch.randn(2, 5, 10, 12, generator=g) * 2  # [G, M, K, B] class-major
    teacher = torch.randn(2, 10, 12, generator=g) * 3
    labels = torch.randint(0, 10, (2, 8), generator=g)  # 8 labelled, then 4 transfer images
    losses = stack_losses(stack, hinton_columns(stack, "cpu"), logits, teacher, labels)
    for s in range(2):
        student, t, y = logits[s].transpose(1, 2), teacher[s].T, labels[s]  # [M, B, K], [B, K], [L]
        pseudo = t[8:].argmax(1)
        ce = [F.cross_entropy(student[m, :8], y) for m in range(5)]
        expected = [
            ce[0],
            kd_loss(student[1, :8], t[:8], y, T=4.0, alpha=0.9)
            + 0.9 * 16 * F.kl_div(F.log_softmax(student[1, 8:] / 4, 1), F.log_softmax(t[8:] / 4, 1),
                                  reduction="batchmean", log_target=True),
            kd_loss_stacked(student[2, :8], t[:8], y, 4.0, 0.9, standardize=True)
            + 0.9 * kd_loss_stacked(student[2, 8:], t[8:], pseudo, 4.0, 1.0, standardize=True),
            ce[3] + dkd_loss(student[3], t, torch.cat([y, pseudo]), alpha=1.0, beta=8.0, T=4.0),
            ce[4] + dist_loss(student[4], t, beta=1.0, gamma=1.0, T=1.0),
        ]
        assert losses[s].tolist() == pytest.approx([e.item() for e in expected], rel=1e-5)


def test_methods_train_side_by_side_and_report_against_ce(fashion):
    from kd_core.engine.train import run

    result = run(SMALL.replace(methods=("dkd", "kd", "dist"), repeats=2, epochs=2))
    summary = result.summary()
    assert [m["method"] for m in summary["methods"]] == ["dkd", "kd", "dist"]
    assert result.stack.roles[2].name == "KD student" and summary["kd_acc"] == pytest.approx(
        summary["methods"][1]["acc"])  # the pair's kd fields are Hinton KD's, wherever it stands
    for i, method in enumerate(summary["methods"]):
        per_seed = [row[1 + i] for row in result.stack.test_acc]
        assert method["per_seed"] == per_seed and method["acc"] == pytest.approx(sum(per_seed) / 2)
        assert method["acc"] > 0.6 and method["verdict"]
    with pytest.raises(ValueError, match="methods must be one or more of kd, kd-std, dkd, dkd-std, dist"):
        next(train_stack(as_run(SMALL.replace(methods=("fitnets",))), PAIR))


def test_runs_beside_each_other_equal_the_same_runs_alone(fashion):
    """The app trains several runs at once; each must equal itself alone. (Before the students' initialisation
    took a lock, two runs starting together drew from each other's seeded global generator.)"""
    import threading

    from kd_core.engine.train import run

    cfgs = [SMALL.replace(temperature=T, alpha=0.5, repeats=2) for T in (1.0, 8.0)]
    alone = [run(cfg).kd_acc for cfg in cfgs]
    beside = [None, None]

    def train(i):
        beside[i] = run(cfgs[i]).kd_acc

    threads = [threading.Thread(target=train, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert beside == alone


# --------------------------------------------------------------------------------- feature methods

@pytest.mark.parametrize("student, width", [("mlp-tiny", 32), ("mlp-medium", 128), ("cnn-tiny", 32)])
def test_stack_features_are_each_students_penultimate_layer(student, width):
    """With `features`, the stack also returns every student's input of its last Linear, as a hook sees it."""
    torch.manual_seed(0)
    stack = StudentStack([models.build(student), models.build(student)], 2, (1, 28, 28))
    with torch.no_grad():
        for tensor in stack.parameters():
            tensor.add_(torch.randn_like(tensor) * 0.05)
    x = torch.randn(2, 6, 1, 28, 28)
    features, logits = stack(x, train=False, features=True)
    assert features.shape == (4, width, 6) and torch.equal(logits, stack(x, train=False))
    for s in range(4):
        layers = list(stack.module(s).children())
        before_last = torch.nn.Sequential(*layers[:-1])  # every layer but the final Linear
        assert torch.allclose(features[s].T, before_last(x[s // 2]), atol=1e-5), s


def test_stack_losses_give_the_feature_methods_their_formulas():
    """hint: (1 − w)·CE + w·MSE(regressor(f_s), f_t); cosine: (1 − w)·CE + w·CosineEmbeddingLoss(f_s,
    avg_pool1d(f_t)), both over every image of the batch (transfer images too), CE over the labelled ones."""
    from kd_core.engine.roles import FeatureBatch, hinton_columns, method_role, stack_losses

    g = torch.Generator().manual_seed(4)
    stack = [CE_ROLE, method_role("hint", 4.0, 0.9, 8.0, 0.3), method_role("cosine", 4.0, 0.9, 8.0, 0.6)]
    logits = torch.randn(2, 3, 10, 12, generator=g)  # [G, M, K, B]
    student = torch.randn(2, 3, 32, 12, generator=g)  # [G, M, F_s, B]
    teacher_features = torch.randn(2, 12, 256, generator=g).relu()  # [G, B, F_t]
    regressor = (torch.randn(2, 256, 32, generator=g), torch.randn(2, 256, generator=g))
    labels = torch.randint(0, 10, (2, 8), generator=g)  # 8 labelled, 4 transfer images
    losses = stack_losses(stack, hinton_columns(stack, "cpu"), logits, torch.randn(2, 10, 12, generator=g), labels,
                          FeatureBatch(student, teacher_features, {1: regressor}))
    for s in range(2):
        linear = torch.nn.Linear(32, 256)
        with torch.no_grad():
            linear.weight.copy_(regressor[0][s])
            linear.bias.copy_(regressor[1][s])
        ce = [F.cross_entropy(logits[s, m, :, :8].T, labels[s]) for m in range(3)]
        hint = torch.nn.MSELoss()(linear(student[s, 1].T), teacher_features[s])
        pooled = F.avg_pool1d(teacher_features[s], kernel_size=8)  # the tutorial's: 256 -> 32
        cosine = torch.nn.CosineEmbeddingLoss()(student[s, 2].T, pooled, torch.ones(12))
        expected = [ce[0], 0.7 * ce[1] + 0.3 * hint, 0.4 * ce[2] + 0.6 * cosine]
        assert losses[s].tolist() == pytest.approx([e.item() for e in expected], rel=1e-5)


def test_feature_students_equal_an_independent_reference_loop(fashion, monkeypatch):
    """One seed of CE, hint and cosine students equals plain modules trained by a hand-written loop on the
    engine's batches: the teacher's features from its own forward pass (up to its global pool), a regressor
    nn.Linear for the hint, nn.MSELoss and nn.CosineEmbeddingLoss, one Adam per student."""
    from kd_core.models import checkpoints

    seen = record_batches(monkeypatch)
    cfg = SMALL.replace(methods=("hint", "cosine"), feature_weight=0.4, lr=2e-3, seed=5, evaluations=1)
    result = finished(cfg, [CE_ROLE, roles.method_role("hint", 1.0, 0.0, 0.0, 0.4),
                            roles.method_role("cosine", 1.0, 0.0, 0.0, 0.4)])
    teacher, _ = checkpoints.load_model(checkpoints.default_teacher_path("fashion-mnist"))
    teacher.eval()
    torch.manual_seed(5)
    students = [models.build("mlp-small") for _ in range(3)]
    for student in students[1:]:
        student.load_state_dict(students[0].state_dict())
    regressor = torch.nn.Linear(128, 256)
    weight, bias = roles.new_regressor(128, 256, [5], "cpu")  # the engine's initial regressor of seed 5
    with torch.no_grad():
        regressor.weight.copy_(weight[0])
        regressor.bias.copy_(bias[0])
    optimizers = [torch.optim.Adam(students[0].parameters(), lr=2e-3),
                  torch.optim.Adam([*students[1].parameters(), *regressor.parameters()], lr=2e-3),
                  torch.optim.Adam(students[2].parameters(), lr=2e-3)]
    for rows, _ in seen:
        rows = rows[0]
        x, y = fashion.normalize(fashion.train_images[rows]), fashion.train_labels[rows]
        with torch.no_grad():
            target = teacher[:16](x).half().float()  # conv blocks, global pool, flatten; cached as fp16
        hidden = [student[:3](x) for student in students]  # Flatten, Linear, ReLU: the 128 features
        logits = [student[3](h) for student, h in zip(students, hidden, strict=True)]
        cosine = torch.nn.CosineEmbeddingLoss()(hidden[2], F.avg_pool1d(target, 2), torch.ones(len(rows)))
        losses = [F.cross_entropy(logits[0], y),
                  0.6 * F.cross_entropy(logits[1], y) + 0.4 * F.mse_loss(regressor(hidden[1]), target),
                  0.6 * F.cross_entropy(logits[2], y) + 0.4 * cosine]
        for optimizer, loss in zip(optimizers, losses, strict=True):
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for role, mine in enumerate(students):
        for name, value in mine.state_dict().items():
            diff = (result.students.state_dict(role)[name] - value).abs()
            assert (diff < 2e-5).float().mean() > 0.98 and diff.max() < 1e-3, (role, name, diff.max())



def test_a_seeded_student_is_the_same_while_another_thread_builds_models(fashion):
    """The app builds models outside training too (its CPU-budget check, checkpoint loading); a seeded student
    built meanwhile must still get its seed's weights (without models.INIT_LOCK in `build`: 18 of 200 differed)."""
    import threading

    reference = engine.new_student("mlp-small", fashion, 0).state_dict()
    stop = threading.Event()

    def build_teachers():
        while not stop.is_set():
            models.build("cnn-teacher")

    other = threading.Thread(target=build_teachers)
    other.start()
    try:
        differing = sum(any(not torch.equal(value, reference[name])
                            for name, value in engine.new_student("mlp-small", fashion, 0).state_dict().items())
                        for _ in range(150))
    finally:
        stop.set()
        other.join()
    assert differing == 0
