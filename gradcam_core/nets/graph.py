"""``GraphNet``: a network as ONE torch module of named layers run over named blobs, with the lookups the
Lua scripts used: a layer by its name, by the blob it writes, or by loadcaffe's 1-based module number,
and the in-place rule of ``resolve_layer``. Every format (Caffe, Torch7) builds one.

A node is one module with its bottoms (the blobs it is called with, in order) and its tops (the blobs
its result is stored under: one top takes the result, several take the items of the tuple it
returns). Nodes run in order; a blob is dropped after its last reader.

Module numbering is loadcaffe's: one module per Caffe layer that computes something (none for input
declarations and Split), plus the "torch_view" flatten loadcaffe inserted before an InnerProduct on an
image-shaped input. VGG-16: relu5_3 = 30, pool5 = 31, torch_view = 32, fc6 = 33, ..., prob = 40.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import GradCamError
from .registry import LayerError, Shape, count, output_shapes, show_shape


class InputSizeError(GradCamError):
    """The network cannot take an input of this size. ``str(err)`` names the first layer that cannot,
    e.g. ``"fc6 needs 25088 inputs, a 300x300 image gives 512x10x10"``; ``err.reason`` is the same
    without the image size (``"fc6 needs 25088 inputs, gets 512x10x10"``), for messages that name it
    already."""

    def __init__(self, layer: str, requirement: str, given: str, image: str) -> None:
        super().__init__(f"{layer} {requirement}, a {image} image gives {given}")
        self.reason = f"{layer} {requirement}, gets {given}"


@dataclass(frozen=True)
class InputSpec:
    """The image input the prototxt declares: blob name and (C, H, W), None where not declared
    (e.g. an input from a Data layer)."""

    name: str
    channels: int | None
    height: int | None
    width: int | None


@dataclass(frozen=True)
class Node:
    """One module's place in the net: the blobs it reads and the blobs it writes."""

    name: str  # the layer name (Caffe layer, Torch7 module name or class)
    type: str  # the layer type ("Convolution", "nn.SpatialConvolution", ...), "torch_view" for the inserted flatten
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    #: The layer overwrites its one bottom with its result, as the original ran it: a Caffe layer with
    #: top == bottom, loadcaffe's ``nn.ReLU(true)``, a Torch7 ``nn.ReLU(true)``. The modules
    #: themselves need not run in place; :meth:`GraphNet.resolve_layer` reads activations after them.
    in_place: bool = False


class GraphNet(nn.Module):
    """The modules of a net in order, run over named blobs.

    ``forward(x)``: (N, C, H, W) -> the last module's output, e.g. (N, K) after an InnerProduct or a
    Softmax. ``names[i - 1]`` is the layer name of the 1-based module ``i``.

    ``torch7_ties`` tells :func:`~gradcam_core.engine.explain` whether to run this net's guided
    forward with Torch7's convolution numerics by default: the Torch7 loader sets it, and the Caffe
    loader for the nets loadcaffe could have built (the original ran those in Torch7; a DAG net,
    a grouped convolution or a layer type loadcaffe lacked has no Torch7 original); a net built
    otherwise has it False.
    """

    # its forward calls only its modules (engine.guided: no need to watch every torch call for activations)
    calls_activation_functions = False

    def __init__(self, nodes: Sequence[Node], modules: Sequence[nn.Module], input_spec: InputSpec,
                 *, torch7_ties: bool = False, aliases: Mapping[str, str] | None = None) -> None:
        """``aliases``: names (Caffe's Split tops and Split layers) that stand for another blob, for
        :meth:`index_of`."""
        super().__init__()
        self.aliases = dict(aliases or {})
        if len(nodes) != len(modules):
            raise ValueError(f"{len(nodes)} nodes but {len(modules)} modules")
        self.layers = nn.ModuleList(modules)
        self.input_spec = input_spec
        self.torch7_ties = torch7_ties
        self._nodes = list(nodes)
        self._plan_release()

    @classmethod
    def from_modules(cls, entries: Sequence[tuple[str, str, nn.Module]], input_spec: InputSpec,
                     *, torch7_ties: bool = False) -> GraphNet:
        """A chain net (each module reads the previous one's output) from (name, type, module)
        entries, e.g. a Torch7 nn.Sequential; type "ReLU" marks the in-place ReLUs that
        :meth:`resolve_layer` looks through."""
        nodes, source = [], input_spec.name
        for number, (name, type_, _) in enumerate(entries, 1):
            nodes.append(Node(name, type_, (source,), (f"#{number}",), in_place=type_ == "ReLU"))
            source = f"#{number}"
        return cls(nodes, [module for _, _, module in entries], input_spec, torch7_ties=torch7_ties)

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The nodes in run order; ``nodes[i - 1]`` belongs to the 1-based module ``i``."""
        return tuple(self._nodes)

    @property
    def names(self) -> list[str]:
        """Layer name of each module, in order ("torch_view" for the inserted flatten)."""
        return [node.name for node in self._nodes]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the output of the last module. An input size the net cannot take raises
        :class:`InputSizeError` before anything runs (see :meth:`check_input_size`)."""
        if x.dim() == 4 and min(x.shape) > 0:
            self.check_input_size(*x.shape[1:])
        blobs = {self.input_spec.name: x}
        out = x
        for module, node, release in zip(self.layers, self._nodes, self._release):
            out = module(*(blobs[b] for b in node.bottoms))  # called, not .forward(), so hooks fire
            if len(node.tops) == 1:
                blobs[node.tops[0]] = out
            else:
                blobs.update(zip(node.tops, out))
            for name in release:
                del blobs[name]
        return out

    def _plan_release(self) -> None:
        """Drop each blob after its last reader, so a batched forward does not hold every activation."""
        last_read = {b: i for i, node in enumerate(self._nodes) for b in node.bottoms}
        self._release = [
            [b for b in dict.fromkeys(node.bottoms) if last_read[b] == i and b not in node.tops]
            for i, node in enumerate(self._nodes)
        ]

    # ----------------------------------------------------------------------------------------------
    # The shape plan

    def check_input_size(self, channels: int, height: int, width: int, *,
                         plan: dict[str, Shape] | None = None) -> Shape | None:
        """Refuse an input size before running anything: the shape of every blob for a
        (N, ``channels``, ``height``, ``width``) input, by arithmetic on the modules' geometry (no
        tensors), as far as the modules' shape rules (:func:`~gradcam_core.nets.registry.shape_rule`)
        know it. Raises :class:`InputSizeError` naming the first layer that cannot take its input,
        e.g. ``"fc6 needs 25088 inputs, a 300x300 image gives 512x10x10"``. Returns the last module's
        output shape (batch axis excluded), or None where a module without a rule (e.g. some Torch7
        modules) leaves it unknown - then the layers after it are not checked. ``plan``, if given,
        receives the shape of every blob whose shape is known."""
        image = f"{height}x{width}"
        shapes: dict[str, Shape] = {self.input_spec.name: (channels, height, width)}
        if plan is not None:
            plan.update(shapes)
        # per blob, the last image-shaped (or count-changing) shape on its way: what a layer after a
        # flatten "gets" in the message
        shown: dict[str, Shape] = dict(shapes)
        out: Shape | None = shapes[self.input_spec.name] if not self._nodes else None
        for node, module in zip(self._nodes, self.layers):
            if any(b not in shapes for b in node.bottoms):
                for top in node.tops:
                    shapes.pop(top, None)
                out = None
                continue
            in_shapes = [shapes[b] for b in node.bottoms]
            try:
                outs = output_shapes(module, in_shapes)
            except LayerError as err:
                given = ", ".join(show_shape(shown[b]) for b in node.bottoms)
                raise InputSizeError(node.name, str(err), given, image) from None
            if outs is None or len(outs) != len(node.tops):
                outs = None
            for k, top in enumerate(node.tops):
                if outs is None:
                    shapes.pop(top, None)
                    continue
                shapes[top] = outs[k]
                if plan is not None:
                    plan[top] = outs[k]
                source = shown[node.bottoms[0]] if len(node.bottoms) == 1 else None
                # a reshape (same number of values, not an image) keeps showing what it reshaped
                keep = source is not None and len(outs[k]) != 3 and count(outs[k]) == count(in_shapes[0])
                shown[top] = source if keep and source is not None else outs[k]
            out = outs[-1] if outs else None
        return out

    # ----------------------------------------------------------------------------------------------
    # Lookup

    def index_of(self, layer: str | int) -> int:
        """1-based module index of ``layer``: a module number - an int or a numeric string, as the Lua
        scripts' ``tonumber(layer)`` did -, a layer name (its first module with that name), or a blob
        name (the first module that writes it; :meth:`resolve_layer` then follows the in-place layers
        on it, so the activations are the blob's values as the net left them)."""
        number = int(layer) if isinstance(layer, str) and re.fullmatch(r"\s*[+-]?\d+\s*", layer) else layer
        if isinstance(number, int) and not isinstance(number, bool):
            if 1 <= number <= len(self):
                return number
        elif number in self.names:
            return self.names.index(number) + 1
        elif isinstance(number, str):
            blob = self.aliases.get(number, number)
            for i, node in enumerate(self._nodes, 1):
                if blob in node.tops:
                    return i
        raise GradCamError(
            f"unknown layer {layer!r}: give a module number 1..{len(self)} or a layer name: "
            + " ".join(f"{i}={name}" for i, name in enumerate(self.names, 1))
        )

    def module_at(self, layer: str | int) -> nn.Module:
        """The module for a layer name, blob name or 1-based index."""
        return self.layers[self.index_of(layer) - 1]

    def resolve_layer(self, layer: str | int) -> tuple[nn.Module, nn.Module]:
        """(grad_module, value_module) for Grad-CAM at ``layer``: the gradient is taken w.r.t. the
        output of grad_module, the activation is the output of value_module.

        Caffe's rule for a blob that in-place layers rewrite (conv5_3 -> relu5_3 in VGG; conv ->
        BatchNorm -> Scale -> ReLU in ResNet): after a forward the blob holds the value the LAST of
        them wrote, and after a backward its diff is the gradient w.r.t. the output of the layer
        named (of the first writer, for a blob name). So value_module is the last of the in-place
        nodes (:attr:`Node.in_place`) that directly follow the layer one after another on its output,
        else the layer's own module. (loadcaffe's and Torch7's ``nn.ReLU(true)`` are such nodes.)
        """
        first = last = self.index_of(layer) - 1
        while (
            last + 1 < len(self._nodes)
            and self._nodes[last + 1].in_place
            and self._nodes[last + 1].bottoms == self._nodes[last].tops
        ):
            last += 1
        return self.layers[first], self.layers[last]

    def remove_last(self) -> nn.Module:
        """Remove and return the final module (Lua ``cnn:remove()``)."""
        if not self._nodes:
            raise GradCamError("the net has no module left to remove")
        module = self.layers[-1]
        del self.layers[-1]
        self._nodes.pop()
        self._plan_release()
        return module
