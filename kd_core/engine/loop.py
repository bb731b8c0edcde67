"""The one training engine: a stack of students with roles, trained in lockstep, as a stream of events.

A run is a list of *roles* (CE, Hinton KD at some (T, α), …) times `cfg.repeats` seeds. Seed i gets its own
labelled subset, initial weights and batch order; all roles of seed i share them, so any difference between
them is the loss. Every student sits in one `stack.make_stack` (seed-major: group i holds seed i's roles),
so one forward, one backward and one fused Adam step train them all. `train.distill` (roles CE and KD) and
`sweep.sweep` (CE and one KD role per (T, α)) are views over `train_stack`; neither has a loop of its own.

Data (`kd_core.engine.run_data`): the training images some seed uses sit on the device, normalised once; batches
are slices of a permutation per seed, gathered for all seeds at once ([G, B, …]). The teacher's logits come
from its cache, and so do its penultimate features when a role learns from features (hint, cosine; a hint
role also trains a regressor per seed beside the students); with `augment`, the teacher sees every augmented
batch instead. With a transfer set (`cfg.unlabeled`), each step also draws `batch_size` unlabelled images per
seed; distilling roles learn from them (labels never read), the CE role's loss ignores them, and an epoch is
a pass over the longer stream. The validation split is never trained on: a fixed 500-image stratified subset
of it is evaluated `cfg.evaluations` times for the live curves, and the whole split and the test set at the
end.

    StackStarted -> StackEvaluated(step 0) -> { StackStep* (≤ 1 per event_interval_s) | StackEvaluated }*
    -> StackFinished(result)

It never prints. Closing it (a consumer that stops, a Gradio cancel) stops training at the next event.
A consumer may drop roles mid-run by adding their indices to `dropped` between events (a study's pruned
trials): from the next step their losses no longer reach the backward pass, so they stop learning while every
other student's gradients, and so its training, stay bit-identical. With `test=False` no student is evaluated
on the test set (a study chooses on validation alone): the result's test figures are then NaN.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence

import torch

from kd_core.data.datasets import Dataset, augment
from kd_core.engine.events import (
    StackEvaluated,
    StackEvent,
    StackFinished,
    StackResult,
    StackStarted,
    StackStep,
)
from kd_core.engine.roles import FeatureBatch, Role, hinton_columns, new_regressor, stack_losses
from kd_core.engine.run_data import Batches, RunData, epoch_steps
from kd_core.engine.stack import ModuleStack, make_stack
from kd_core.models import checkpoints
from kd_core.models import students as student_sources
from kd_core.models import zoo as models
from kd_core.run import Run, resolve_device
from kd_core.teacher.logits import teacher_features, teacher_logits


class TrainingDiverged(RuntimeError):
    """A student's loss became NaN or infinite; the message suggests what to change."""


def new_student(name: str, dataset: Dataset, seed: int) -> torch.nn.Module:
    """A student initialised from `seed`, leaving the global RNG as it was. Under `models.INIT_LOCK`: two runs
    starting at once (the app trains several) would otherwise draw from each other's seeded generator, and a
    run would not equal itself alone (measured: KD 64.3 % beside another run where alone it is 65.9 %)."""
    return student_sources.fresh(name, dataset.image_shape, dataset.num_classes, seed)


# ------------------------------------------------------------------------------------------ the loop

def train_stack(run: Run, roles: Sequence[Role], seeds: Sequence[int] | None = None, *,
                dropped: set[int] | None = None, test: bool = True) -> Iterator[StackEvent]:
    """Train `roles` × the run's seeds together; yields StackStarted, StackStep, StackEvaluated, StackFinished.

    `run` was resolved where the request entered (kd_core.run.resolve_run), its teacher prepared: the engine reads
    it and resolves nothing. `seeds` replaces the config's (seed, seed + 1, …): several visitors' runs trained as
    one stack (`kd_core.serve.stack_pool`) take the union of their seeds; each seed's students are the same whatever
    the others. `dropped`: role indices the consumer stops training (it may add to the set between events); `test`:
    whether the students are evaluated on the test set at the end."""
    roles = tuple(role.check() for role in roles)
    if not isinstance(run, Run) or not run.prepared:
        raise TypeError("train_stack takes a resolved run with its teacher prepared (kd_core.run.as_run)")
    if run.config.unlabeled and run.config.augment:
        raise ValueError("a transfer set (unlabeled) trains on the cached teacher logits; turn augment off")
    trainer = Trainer(run, roles, seeds, dropped, test)
    try:
        yield from trainer.run()
    finally:
        trainer.release()


class Trainer:
    """One run of `train_stack`: its data, its stack of students and optimiser, and the steps of the loop."""

    def __init__(self, run: Run, roles: tuple[Role, ...], seeds: Sequence[int] | None = None,
                 dropped: set[int] | None = None, test: bool = True):
        cfg, dataset, self.teacher = run.config, run.dataset, run.teacher
        self.cfg, self.roles, self.dataset = cfg, roles, dataset
        self.dropped = set() if dropped is None else dropped  # the consumer's set, read at every step
        self.test = test
        self.device = device = resolve_device(cfg.device)
        self.logits = teacher_logits(self.teacher.path, dataset, device, checkpoint_hash=self.teacher.hash)
        val = dataset.validation_index
        self.teacher_val_acc = (self.logits.train[val].argmax(1) == dataset.train_labels[val]).float().mean().item()
        self.seeds = tuple(seeds) if seeds else cfg.seeds
        self.data = RunData(cfg, dataset, self.logits.train, self.seeds, device)
        self.mixed = device.type == "cuda"  # bf16 autocast (+ channels_last for ModuleStacks) on GPUs
        # a pretrained student: the same body for every seed, the head drawn from the seed (kd_core.models.students)
        initial, student_notes = student_sources.initial(cfg, dataset.image_shape, dataset.mean, dataset.std,
                                                         dataset.num_classes, self.seeds)
        self.notes = run.notes + student_notes
        self.students = make_stack(initial, len(roles), dataset.image_shape)
        if self.mixed and isinstance(self.students, ModuleStack):
            self.students.to(device, memory_format=torch.channels_last)
        else:
            self.students.to(device)
        self.teacher_model = None
        if cfg.augment:
            self.teacher_model, _ = checkpoints.load_model(self.teacher.path, device)
            if self.mixed:
                self.teacher_model = self.teacher_model.to(memory_format=torch.channels_last)
            self.augment_rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.regressors = self.feature_setup(initial[0])  # hint roles' (W, b); {} without any
        trained = [*self.students.parameters(), *(t for pair in self.regressors.values() for t in pair)]
        # fused: one kernel per step instead of ~10 passes over the stacked tensors (10× faster here); Adam
        # is per element, so one Adam over the stacked tensors is one Adam per student
        self.optimizer = torch.optim.Adam(trained, lr=cfg.lr, fused=True)
        self.hinton = hinton_columns(roles, device)  # CE and Hinton-KD roles: one vectorised loss
        self.labelled = Batches(self.data.labelled.shape[1], self.seeds)
        self.transfer = Batches(self.data.transfer.shape[1], self.seeds, salt=2**33)
        n, u = self.data.labelled.shape[1], self.data.transfer.shape[1]
        self.steps_per_epoch = math.ceil(max(n, u) / cfg.batch_size) if u else epoch_steps(n, cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        points = min(cfg.evaluations, self.total_steps)
        self.evaluate_at = {round(k * self.total_steps / points) for k in range(1, points + 1)}

    def feature_setup(self, student: torch.nn.Module) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """With feature roles: the teacher's features of the run's images (from its cache; an augmenting
        run computes them per batch instead) and a regressor per seed for each hint role."""
        self.feature_roles = [i for i, role in enumerate(self.roles) if role.features]
        if not self.feature_roles:
            return {}
        if self.teacher_model is not None:  # augmenting
            teacher_width = models.classifier(self.teacher_model).in_features
        else:
            features = teacher_features(self.teacher.path, self.dataset, self.data.used, self.device,
                                        checkpoint_hash=self.teacher.hash)
            self.data.teacher_features = features.rows.to(self.device)
            teacher_width = features.rows.shape[1]
            if features.computed:
                self.notes += (f"computed the teacher's features of {features.computed:,} training images in "
                               f"{features.seconds:.1f} s (cached for later runs)",)
        student_width = models.classifier(student).in_features
        return {i: new_regressor(student_width, teacher_width, self.seeds, self.device)
                for i in self.feature_roles if self.roles[i].method == "hint"}

    def release(self) -> None:
        self.data = self.teacher_model = None  # drop device copies now
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def pin_threads(self) -> None:
        # OpenMP thread counts are per OS thread, and a consumer may resume this generator from a different
        # thread each time (Gradio does), so this is re-applied after every yield
        if self.device.type == "cpu":
            torch.set_num_threads(self.cfg.cpu_threads)

    def started(self) -> StackStarted:
        data = self.data
        return StackStarted(self.cfg, str(self.device), self.roles, self.seeds, self.logits.test_acc,
                            self.teacher_val_acc, data.labelled.shape[1], data.transfer.shape[1],
                            self.steps_per_epoch, self.total_steps, self.logits.seconds, self.logits.source,
                            self.notes)

    def run(self) -> Iterator[StackEvent]:
        """Started, the first evaluation, then per step: train, maybe report losses, maybe evaluate."""
        cfg = self.cfg
        yield self.started()
        yield self.evaluate(0, 0, 0.0)
        self.pin_threads()
        seconds, step, samples, epochs_done, stopped = 0.0, 0, 0, 0, ""
        loss_sums = torch.zeros(len(self.seeds), len(self.roles), device=self.device)
        steps_in_sum, last_event = 0, -math.inf
        for epoch in range(1, cfg.epochs + 1):
            started = time.perf_counter()
            for labelled, transfer in self.epoch_batches():
                loss_sums += self.train_step(labelled, transfer)
                step, steps_in_sum = step + 1, steps_in_sum + 1
                samples += labelled.numel() + transfer.numel()
                now = time.perf_counter()
                if now - last_event >= cfg.event_interval_s or step == self.total_steps:
                    seconds += now - started
                    yield self.step_event(epoch, step, loss_sums / steps_in_sum, seconds)
                    self.pin_threads()
                    loss_sums.zero_()
                    steps_in_sum, last_event = 0, time.perf_counter()
                    started = last_event
                if cfg.max_seconds and seconds + (time.perf_counter() - started) > cfg.max_seconds:
                    stopped = f"time limit of {cfg.max_seconds:g} s reached in epoch {epoch}"
                if step in self.evaluate_at or stopped:
                    seconds += time.perf_counter() - started
                    yield self.evaluate(epoch, step, seconds)
                    self.pin_threads()
                    started = time.perf_counter()
                if stopped:
                    break
            seconds += time.perf_counter() - started
            epochs_done = epoch
            if stopped:
                break
        self.optimizer.zero_grad(set_to_none=True)  # trained: free the gradients, as big as the weights
        yield StackFinished(self.result(epochs_done, seconds, samples, stopped))

    def epoch_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch's ([G, b] labelled, [G, b'] transfer) positions; no transfer images: [G, 0]."""
        batch = self.cfg.batch_size
        if not self.data.transfer.shape[1]:
            none = torch.empty(len(self.seeds), 0, dtype=torch.int64)
            yield from ((chunk, none) for chunk in self.labelled.epoch(batch))
            return
        n, u = self.data.labelled.shape[1], self.data.transfer.shape[1]
        for _ in range(self.steps_per_epoch):
            yield self.labelled.take(min(batch, n)), self.transfer.take(min(batch, u))

    def batch(self, labelled: torch.Tensor, transfer: torch.Tensor):
        """Student input [G, B, C, H, W], teacher logits [G, K, B], labels [G, L] and the teacher's features
        [G, B, F_t] (None without feature roles) for a step."""
        data = self.data
        rows = torch.gather(data.labelled, 1, labelled.to(data.labelled.device))
        if transfer.shape[1]:
            rows = torch.cat([rows, torch.gather(data.transfer, 1, transfer)], dim=1)
        rows = rows.to(self.device)
        labels = data.labels[rows[:, :labelled.shape[1]]]
        if not self.cfg.augment:
            features = None if data.teacher_features is None else data.teacher_features[rows]
            images = data.images[rows]  # [G, B, C, H, W] uint8
            x = self.dataset.normalize(images.flatten(0, 1)).view(*images.shape[:2], *images.shape[2:])
            return x, data.teacher[rows].transpose(1, 2), labels, features
        flat = augment(data.images[rows.flatten()], self.augment_rng, pad=self.dataset.image_shape[-1] // 8,
                       flip=self.dataset.name != "mnist")  # a mirrored digit is another symbol
        x = self.dataset.normalize(flat)
        if self.mixed:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=self.mixed):
            features, teacher = models.with_features(self.teacher_model, x)
        G, B = rows.shape
        features = features.float().view(G, B, -1).clone() if self.feature_roles else None
        return (x.reshape(G, B, *x.shape[1:]).clone(), teacher.float().view(G, B, -1).transpose(1, 2).clone(),
                labels, features)

    def train_step(self, labelled: torch.Tensor, transfer: torch.Tensor) -> torch.Tensor:
        """One optimiser step of every student; returns their losses [G, M] (detached)."""
        x, teacher, labels, teacher_features = self.batch(labelled, transfer)
        G, M = len(self.seeds), len(self.roles)
        self.optimizer.zero_grad(set_to_none=True)
        losses = []
        for part in self.students.parts(x.shape[1]):  # one part (all students) for MLPs
            students = range(G * M)[part]
            groups = slice(students.start // M, (students.stop - 1) // M + 1)
            with torch.autocast("cuda", torch.bfloat16, enabled=self.mixed):
                out = self.students(x, train=True, part=part, features=bool(self.feature_roles))
            features = None
            if self.feature_roles:
                hidden, out = out
                features = FeatureBatch(hidden.float().view(-1, M, *hidden.shape[1:]), teacher_features[groups],
                                        {i: (w[groups], b[groups]) for i, (w, b) in self.regressors.items()})
            out = out.float().view(-1, M, *out.shape[1:])
            loss = stack_losses(self.roles, self.hinton, out, teacher[groups], labels[groups], features)
            trained = loss if not self.dropped else loss * self.kept()
            trained.sum().backward()  # disjoint graphs: each student gets exactly its own gradient
            losses.append(loss.detach())
        self.optimizer.step()
        return torch.cat(losses).view(G, M)

    def kept(self) -> torch.Tensor:
        """[M] 1 for the roles still trained, 0 for dropped ones: their gradient is then exactly 0, and the
        others' gradients are unchanged (d sum / d loss is the same 1 for them)."""
        return torch.tensor([0.0 if m in self.dropped else 1.0 for m in range(len(self.roles))], device=self.device)

    def step_event(self, epoch: int, step: int, losses: torch.Tensor, seconds: float) -> StackStep:
        values = losses.tolist()
        if not all(math.isfinite(v) for row in values for v in row):
            raise TrainingDiverged(f"training diverged at step {step} (the loss became NaN or infinite); "
                                   f"lower the learning rate (now {self.cfg.lr:g})")
        return StackStep(epoch, step, self.total_steps, tuple(map(tuple, values)), seconds)

    def evaluate(self, epoch: int, step: int, seconds: float) -> StackEvaluated:
        """Every student's accuracy on the live validation subset (fp32, running BatchNorm statistics)."""
        data, G, M = self.data, len(self.seeds), len(self.roles)
        predicted = self.students.logits(data.live_inputs).argmax(2)  # [S, N]
        correct = (predicted == data.live_labels).float()
        accuracy = correct.mean(1).view(G, M).tolist()
        hidden = None
        if self.cfg.hide_class is not None:
            mask = data.live_labels == self.cfg.hide_class
            hidden = tuple(map(tuple, correct[:, mask].mean(1).view(G, M).tolist()))
        progress = step / self.steps_per_epoch if self.steps_per_epoch else 0.0
        return StackEvaluated(epoch, step, progress, tuple(map(tuple, accuracy)), hidden, seconds)

    def result(self, epochs: int, seconds: float, samples: int, stopped: str) -> StackResult:
        """Every student on the whole validation split and the test set, then the stack moved to the CPU."""
        dataset, G, M = self.dataset, len(self.seeds), len(self.roles)
        k = dataset.num_classes
        val = dataset.validation_index
        val_logits = self.students.logits(dataset.normalize(dataset.train_images[val].to(self.device))).cpu()
        if self.test:
            test_logits = self.students.logits(dataset.normalize(dataset.test_images.to(self.device))).cpu()
        else:  # no test image is read: the test figures below are NaN
            test_logits = torch.empty(G * M, 0, k)
        test_labels = dataset.test_labels[:test_logits.shape[1]]
        teacher_test = self.logits.test[:test_logits.shape[1]].argmax(1)
        test_pred = test_logits.argmax(2)  # [S, N]

        def per_student(values: torch.Tensor) -> list:
            return values.view(G, M, *values.shape[1:]).tolist()

        class_acc = torch.stack([class_accuracy(p, test_labels, k) for p in test_pred])
        return StackResult(
            config=self.cfg, device=str(self.device), roles=self.roles, seeds=self.seeds,
            teacher_acc=self.logits.test_acc,
            teacher_val_acc=self.teacher_val_acc,
            teacher_class_acc=class_accuracy(teacher_test, test_labels, k).tolist(),
            test_acc=per_student((test_pred == test_labels).float().mean(1)),
            val_acc=per_student((val_logits.argmax(2) == dataset.train_labels[val]).float().mean(1)),
            class_acc=per_student(class_acc), agreement=per_student((test_pred == teacher_test).float().mean(1)),
            test_logits=test_logits, val_logits=val_logits, teacher_val_logits=self.logits.train[val],
            epochs=epochs, seconds=seconds, samples_per_s=samples / seconds if seconds > 0 else 0.0,
            logits_seconds=self.logits.seconds, stopped=stopped, students=self.students.to("cpu"),
            teacher=self.teacher, teacher_test_logits=self.logits.test[:test_logits.shape[1]])


def class_accuracy(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy per class [K] of top-1 predictions [N] against labels [N]."""
    correct = torch.bincount(labels[predicted == labels], minlength=num_classes).float()
    total = torch.bincount(labels, minlength=num_classes).clamp(min=1).float()
    return correct / total
