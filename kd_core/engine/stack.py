"""A stack of students trained as one: S models whose layers run once for all of them.

The engine (`kd_core.engine.loop`) trains every student of a run — CE and KD, every (T, α) of a sweep, every
seed of a repeat — in one loop on the same steps. `make_stack(students, group_size, in_shape)` puts the S
students behind one interface: `stack(x, train=…, part=…)` maps a batch to logits [S, K, B] (with
`features=True`, also every student's penultimate features [S, F, B], the input of its last Linear), and
`parameters()`, `module(i)`, `state_dict(i)`, `logits(inputs)` and `to(device)` do what their names say.

Students come in G consecutive groups of `group_size`: one group per seed, whose students share their
initial weights and read the same batch. A batch is `x` [G, B, C, H, W] (group g's students read x[g]).

`StudentStack` is the fast kind, for `nn.Sequential` students made of Flatten, Linear, ReLU, Conv2d,
BatchNorm2d and pooling layers (mlp-*, cnn-tiny): it keeps the S students' tensors stacked along a new
first dimension and runs each layer once — the first Linear as one batched matmul per group, later Linears
as one `baddbmm`, convolutions as one grouped convolution whose groups are the students (BatchNorm is per
channel, so per student). Its logits are class-major [S, K, B], because a CPU log-softmax (forward and
backward) over a non-last dimension of size 10 ran 10× faster here than over the last one. `ModuleStack`
is the general kind (ResNets): the S modules run one after another, with the same interface.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.models import zoo as models

STACKABLE = (nn.Flatten, nn.Linear, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)
# bytes of one layer's activations for the students run together (see StudentStack.parts): 17 cnn-tiny
# students at once ([256, 17·8, 28, 28] fp32, 109 MB a layer) ran 1.9× slower per student here than 2–4
# at a time (over a third of the CPU time went to the kernel); MLP students' layers are narrow enough to
# run all students at once
ACTIVATION_BYTES = 2**24
EVAL_CHUNK = 4096  # images per forward pass when evaluating a ModuleStack


def stackable(student: nn.Module) -> bool:
    layers = list(student.children()) if isinstance(student, nn.Sequential) else []
    return bool(layers) and all(isinstance(layer, STACKABLE) and getattr(layer, "groups", 1) == 1
                                for layer in layers)


def make_stack(students: list[nn.Module], group_size: int, in_shape: tuple[int, int, int]):
    """G = len(students) groups of `group_size` copies each (copy j of group g starts as students[g])."""
    if stackable(students[0]):
        return StudentStack(students, group_size, in_shape)
    return ModuleStack(students, group_size)


class StudentStack:
    """S = G · group_size `nn.Sequential` students, their tensors stacked along a new first dimension.

    Inside `__call__`, activations are "input" [G, B, …] until the first layer with weights, "channels"
    [B, S·C, H, W] (student s owns channels s·C … s·C + C − 1) in the conv part, and "features" [S, F, B]
    in the Linear part. `parts(B)` splits the students into whole groups whose activations stay within
    ACTIVATION_BYTES.
    """

    def __init__(self, students: list[nn.Module], group_size: int, in_shape: tuple[int, int, int]):
        if not all(stackable(student) for student in students):
            raise ValueError(f"a stacked student is built from {', '.join(t.__name__ for t in STACKABLE)} "
                             f"layers only (mlp-tiny, mlp-small, mlp-medium, cnn-tiny)")
        self.template = copy.deepcopy(students[0]).cpu().eval()
        self.layers = list(self.template.named_children())  # read for their settings only
        self.group_size, self.groups = group_size, len(students)
        self.copies = group_size * len(students)
        with torch.no_grad():  # the widest activation of one student for one sample, in bytes
            h, widest, own = torch.zeros(1, *in_shape), 0, False
            for layer in self.template:
                h = layer(h)
                own = own or any(True for _ in layer.parameters())  # before that, all share the input
                widest = max(widest, h.numel() * 4 if own else 0)
        self.widest_bytes = max(widest, 4)

        def stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack([t.detach().cpu() for t in tensors]).repeat_interleave(group_size, 0).contiguous()

        states = [dict(student.named_parameters()) for student in students]
        self.params = {name: stacked([s[name] for s in states]).requires_grad_() for name in states[0]}
        buffers = [dict(student.named_buffers()) for student in students]
        self.buffers = {name: stacked([b[name] for b in buffers]) for name in buffers[0]}

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def parts(self, batch: int) -> list[slice]:
        """Consecutive runs of whole groups whose widest activation for `batch` samples fits
        ACTIVATION_BYTES (at least one group each)."""
        per_group = batch * self.widest_bytes * self.group_size
        size = max(1, ACTIVATION_BYTES // per_group) * self.group_size
        return [slice(first, min(first + size, self.copies)) for first in range(0, self.copies, size)]

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Every student's logits for inputs [N, C, H, W] every student reads: [S, N, K] float32, eval mode
        (running BatchNorm statistics); in parts and chunks whose activations fit ACTIVATION_BYTES."""
        rows = []
        with torch.inference_mode():
            for part in self.parts(1):
                chunk = max(1, ACTIVATION_BYTES // ((part.stop - part.start) * self.widest_bytes))
                rows.append(torch.cat([self(inputs[i:i + chunk].unsqueeze(0), train=False, part=part,
                                            shared=True).transpose(1, 2)
                                       for i in range(0, len(inputs), chunk)], dim=1))
        return torch.cat(rows).float()

    def to(self, device: torch.device | str) -> StudentStack:
        """Move every stacked tensor to `device`; returns self (an earlier optimizer keeps the old ones)."""
        self.params = {n: p.detach().to(device).requires_grad_() for n, p in self.params.items()}
        self.buffers = {n: b.to(device) for n, b in self.buffers.items()}
        return self

    def state_dict(self, index: int) -> dict[str, torch.Tensor]:
        """Student `index`'s tensors under the template's state-dict names (detached, CPU)."""
        return {name: value[index].detach().cpu() for name, value in {**self.params, **self.buffers}.items()}

    def module(self, index: int) -> nn.Module:
        """Student `index` as an ordinary module of the template's class (CPU, eval mode)."""
        model = copy.deepcopy(self.template)
        model.load_state_dict(self.state_dict(index))
        return model.eval()

    def __call__(self, x: torch.Tensor, *, train: bool, part: slice = slice(None), shared: bool = False,
                 features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x [G, B, C, H, W] (one batch per group; only the groups of `part`, or with `shared` [1, B, …]
        read by all) -> logits [S, K, B] of the students in `part`; with `features`, (penultimate features
        [S, F, B], the input of the last Linear, logits). `train` picks BatchNorm's batch statistics (and
        updates the running ones) over the running statistics."""
        students = range(self.copies)[part]
        whole = students == range(self.copies)  # slicing costs a full-size gradient copy

        def take(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return tensor if tensor is None or whole else tensor[part]

        S, B = len(students), x.shape[1]
        if not shared and not whole:  # the batches of the groups in `part`
            x = x[students.start // self.group_size:(students.stop - 1) // self.group_size + 1]
        G = x.shape[0]
        h, layout, penultimate = x, "input", None
        for index, (name, layer) in enumerate(self.layers):
            if features and index == len(self.layers) - 1:
                penultimate = h
            w, b = take(self.params.get(f"{name}.weight")), take(self.params.get(f"{name}.bias"))
            if isinstance(layer, nn.Flatten):
                if layout == "input":
                    h = h.flatten(2)
                elif layout == "channels":  # [B, S·C, H, W] -> [S, C·H·W, B], nn.Flatten's order per student
                    h, layout = h.reshape(B, S, -1).permute(1, 2, 0), "features"
            elif isinstance(layer, nn.Linear):
                if layout == "channels":
                    raise ValueError("a stacked student needs a Flatten between its convolutions and Linears")
                if layout == "input":  # per group: its students' [M·out, in] @ its batch [in, B]
                    grouped = w.reshape(G, -1, w.shape[-1])
                    h = (torch.bmm(grouped, h.transpose(1, 2)) if b is None else
                         torch.baddbmm(b.reshape(G, -1, 1), grouped, h.transpose(1, 2))).view(S, -1, B)
                else:  # [S, out, in] @ [S, in, B]
                    h = torch.bmm(w, h) if b is None else torch.baddbmm(b.unsqueeze(-1), w, h)
                layout = "features"
            elif isinstance(layer, nn.Conv2d):  # one grouped conv: per group of the input, else per student
                if layout == "input":
                    h, groups = h.transpose(0, 1).reshape(B, -1, *h.shape[3:]), G
                else:
                    groups = S
                h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1),
                             layer.stride, layer.padding, layer.dilation, groups)
                layout = "channels"
            elif isinstance(layer, nn.BatchNorm2d):  # per channel = per student and channel
                h = F.batch_norm(h, take(self.buffers[f"{name}.running_mean"]).view(-1),
                                 take(self.buffers[f"{name}.running_var"]).view(-1),
                                 None if w is None else w.reshape(-1), None if b is None else b.reshape(-1),
                                 training=train, momentum=layer.momentum, eps=layer.eps)
                if train:
                    take(self.buffers[f"{name}.num_batches_tracked"]).add_(1)
            elif isinstance(layer, nn.ReLU):
                h = F.relu(h)
            elif isinstance(layer, nn.MaxPool2d):
                h = F.max_pool2d(h, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                                 ceil_mode=layer.ceil_mode)
            else:
                h = F.adaptive_avg_pool2d(h, layer.output_size)
        if layout != "features":
            raise ValueError("a stacked student must end with a Linear layer")
        return (penultimate, h) if features else h


class ModuleStack:
    """The same interface over S separate modules run one after another (any architecture: ResNets)."""

    def __init__(self, students: list[nn.Module], group_size: int):
        self.group_size, self.groups = group_size, len(students)
        self.copies = group_size * len(students)
        self.models = [copy.deepcopy(student) for student in students for _ in range(group_size)]

    def parameters(self) -> list[torch.Tensor]:
        return [p for model in self.models for p in model.parameters()]

    def parts(self, batch: int) -> list[slice]:
        return [slice(None)]

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        rows = []
        with torch.inference_mode():
            for model in self.models:
                model.eval()
                rows.append(torch.cat([model(inputs[i:i + EVAL_CHUNK]).float()
                                       for i in range(0, len(inputs), EVAL_CHUNK)]))
                model.train()
        return torch.stack(rows)

    def to(self, device: torch.device | str, memory_format: torch.memory_format | None = None) -> ModuleStack:
        self.models = [model.to(device) if memory_format is None else model.to(device, memory_format=memory_format)
                       for model in self.models]
        return self

    def state_dict(self, index: int) -> dict[str, torch.Tensor]:
        return {name: value.detach().cpu() for name, value in self.models[index].state_dict().items()}

    def module(self, index: int) -> nn.Module:
        return copy.deepcopy(self.models[index]).cpu().eval()

    def __call__(self, x: torch.Tensor, *, train: bool, part: slice = slice(None), shared: bool = False,
                 features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        outputs, hidden = [], []
        for s in range(self.copies)[part]:
            model = self.models[s].train(train)
            inputs = x[0] if shared else x[s // self.group_size]
            if features:
                penultimate, logits = models.with_features(model, inputs)
                hidden.append(penultimate.transpose(0, 1))
            else:
                logits = model(inputs)
            outputs.append(logits.transpose(0, 1))
        return (torch.stack(hidden), torch.stack(outputs)) if features else torch.stack(outputs)
