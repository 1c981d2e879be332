"""``GraphNet``: a network as a torch module of named layers run over named blobs, with the lookups the
Lua scripts used: a layer by its name or by loadcaffe's 1-based module number, and the in-place ReLU rule
of ``resolve_layer``. Every format (Caffe, Torch7) builds one.

Module numbering is loadcaffe's: one module per Caffe layer that computes something (none for input
declarations and Split), plus the "torch_view" flatten loadcaffe inserted before an InnerProduct on an
image-shaped input. VGG-16: relu5_3 = 30, pool5 = 31, torch_view = 32, fc6 = 33, ..., prob = 40.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import GradCamError


@dataclass(frozen=True)
class InputSpec:
    """The image input the prototxt declares: blob name and (C, H, W), None where not declared
    (e.g. an input from a Data layer)."""

    name: str
    channels: int | None
    height: int | None
    width: int | None


@dataclass(frozen=True)
class _Step:
    """One module's place in the net: the blob it reads and the blob it writes."""

    name: str
    type: str  # the Caffe layer type, "torch_view" for the inserted flatten
    bottom: str
    top: str


class GraphNet(nn.Module):
    """The modules of a Caffe net in loadcaffe order, run over named blobs.

    ``forward(x)``: (N, C, H, W) -> the last module's output, e.g. (N, K) after an InnerProduct or a
    Softmax. ``names[i - 1]`` is the Caffe layer name of the 1-based module ``i``.
    """

    def __init__(self, steps: list[_Step], modules: list[nn.Module], input_spec: InputSpec) -> None:
        super().__init__()
        self.layers = nn.ModuleList(modules)
        self.input_spec = input_spec
        self._steps = steps
        self._plan_release()

    @classmethod
    def from_modules(cls, entries: Sequence[tuple[str, str, nn.Module]], input_spec: InputSpec) -> "GraphNet":
        """A chain net (each module reads the previous one's output) from (name, type, module)
        entries, e.g. a Torch7 nn.Sequential; type "ReLU" marks the in-place ReLUs that
        :meth:`resolve_layer` looks through."""
        steps, source = [], input_spec.name
        for number, (name, type_, _) in enumerate(entries, 1):
            steps.append(_Step(name, type_, source, f"#{number}"))
            source = f"#{number}"
        return cls(steps, [module for _, _, module in entries], input_spec)

    @property
    def names(self) -> list[str]:
        """Caffe layer name of each module, in order ("torch_view" for the inserted flatten)."""
        return [step.name for step in self._steps]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the output of the last module."""
        blobs = {self.input_spec.name: x}
        out = x
        for module, step, release in zip(self.layers, self._steps, self._release):
            out = module(blobs[step.bottom])  # called, not .forward(), so hooks fire
            blobs[step.top] = out
            for name in release:
                del blobs[name]
        return out

    def _plan_release(self) -> None:
        """Drop each blob after its last reader, so a batched forward does not hold every activation."""
        last_read = {step.bottom: i for i, step in enumerate(self._steps)}
        self._release = [
            [step.bottom] if last_read[step.bottom] == i and step.bottom != step.top else []
            for i, step in enumerate(self._steps)
        ]

    def index_of(self, layer: str | int) -> int:
        """1-based module index of ``layer``: a Caffe layer name (its first module with that name), or
        a module number - an int or a numeric string, as the Lua scripts' ``tonumber(layer)`` did."""
        number = int(layer) if isinstance(layer, str) and re.fullmatch(r"\s*[+-]?\d+\s*", layer) else layer
        if isinstance(number, int) and not isinstance(number, bool):
            if 1 <= number <= len(self):
                return number
        elif number in self.names:
            return self.names.index(number) + 1
        raise GradCamError(
            f"unknown layer {layer!r}: give a module number 1..{len(self)} or a layer name: "
            + " ".join(f"{i}={name}" for i, name in enumerate(self.names, 1))
        )

    def module_at(self, layer: str | int) -> nn.Module:
        """The module for a layer name or 1-based index."""
        return self.layers[self.index_of(layer) - 1]

    def resolve_layer(self, layer: str | int) -> tuple[nn.Module, nn.Module]:
        """(grad_module, value_module) for Grad-CAM at ``layer``: the gradient is taken w.r.t. the
        output of grad_module, the activation is the output of value_module.

        loadcaffe's ReLUs were in place (``nn.ReLU(true)``), so after a forward the stored output of
        e.g. conv5_3 already held relu5_3's values: value_module is the last of the ReLU layers that
        directly consume the layer's output one after another, else the layer's own module.
        """
        first = last = self.index_of(layer) - 1
        while (
            last + 1 < len(self._steps)
            and self._steps[last + 1].type == "ReLU"
            and self._steps[last + 1].bottom == self._steps[last].top
        ):
            last += 1
        return self.layers[first], self.layers[last]

    def remove_last(self) -> nn.Module:
        """Remove and return the final module (Lua ``cnn:remove()``)."""
        if not self._steps:
            raise GradCamError("the net has no module left to remove")
        module = self.layers[-1]
        del self.layers[-1]
        self._steps.pop()
        self._plan_release()
        return module
