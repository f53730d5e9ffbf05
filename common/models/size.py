"""How big a trained model is and what coding one face costs: weights and multiply-adds.

Why: a results table compares methods fairly only if it states each row's size. One width
multiplier means very different networks for different methods (DDH's small net, DCBH's
VGG-like backbone, DDAH's attention branch), so every row of the harness's table carries
its trainable weights and the multiply-adds of coding one image.

Multiply-adds are counted from the traced inference graph of one 32x32x3 image, so custom
layers count without code of their own: every convolution (``Conv2D``, a transposed
convolution's ``Conv2DBackpropInput``), matrix product (``MatMul``, ``BatchMatMul*``) and
``Einsum`` (DDH's locally connected layer), one multiply-add per product term. Element-wise
work (batch norm, activations, pooling, attention masks) is not counted, by the usual
convention: it is a small fraction of the products for these networks.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np
import tensorflow as tf

IMAGE_SHAPE = (32, 32, 3)


def trainable_weights(model) -> int:
    """Trainable scalars of ``model`` (classifier heads and centers included)."""
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def _shape(tensor) -> list[int]:
    dims = tensor.shape.as_list()
    if any(d is None for d in dims):
        raise ValueError(f"{tensor.name}: shape {dims} is not fully known")
    return dims


def _op_multiply_adds(op) -> int:
    """Multiply-adds of one graph op (0 for ops that are not products)."""
    kind = op.type
    if kind == "Conv2D":
        out = _shape(op.outputs[0])
        kernel = _shape(op.inputs[1])           # (kh, kw, in, out)
        return int(np.prod(out) * kernel[0] * kernel[1] * kernel[2])
    if kind == "Conv2DBackpropInput":           # transposed convolution
        kernel = _shape(op.inputs[1])           # (kh, kw, out, in)
        grad = _shape(op.inputs[2])             # the transposed conv's input (n, h, w, in)
        return int(np.prod(grad) * kernel[0] * kernel[1] * kernel[2])
    if kind == "MatMul":
        a, b = _shape(op.inputs[0]), _shape(op.inputs[1])
        m, k = (a[1], a[0]) if op.get_attr("transpose_a") else (a[0], a[1])
        n = b[0] if op.get_attr("transpose_b") else b[1]
        return int(m * k * n)
    if kind in ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
        a, b = _shape(op.inputs[0]), _shape(op.inputs[1])
        adj_x, adj_y = op.get_attr("adj_x"), op.get_attr("adj_y")
        m, k = (a[-1], a[-2]) if adj_x else (a[-2], a[-1])
        n = b[-2] if adj_y else b[-1]
        batch = int(np.prod(np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))))
        return int(batch * m * k * n)
    if kind == "Einsum":
        equation = op.get_attr("equation").decode()
        inputs, _ = equation.split("->")
        sizes: dict[str, int] = {}
        for letters, tensor in zip(inputs.split(","), op.inputs):
            for letter, size in zip(letters, _shape(tensor)):
                if letter in string.ascii_letters:
                    sizes[letter] = size
        return int(np.prod(list(sizes.values())))
    return 0


def multiply_adds(inference_model) -> int:
    """Multiply-adds of coding ONE image with ``inference_model`` (inference mode)."""
    @tf.function(input_signature=[tf.TensorSpec([1, *IMAGE_SHAPE], tf.float32)])
    def code(images):
        return inference_model(images, training=False)

    graph = code.get_concrete_function().graph
    total, seen = 0, set()

    def walk(g):
        nonlocal total
        for op in g.get_operations():
            total += _op_multiply_adds(op)
            for attr in ("f", "then_branch", "else_branch", "body", "cond"):
                try:
                    fn = op.get_attr(attr)
                except (ValueError, TypeError):
                    continue
                name = getattr(fn, "name", None)
                if name and name not in seen and name in g._functions:
                    seen.add(name)
                    walk(g._functions[name].graph)

    walk(graph)
    return int(total)


def model_size(method, model) -> dict[str, Any]:
    """{"trainable_weights", "multiply_adds"} of a method's model: every trainable weight
    of the trained model, and the multiply-adds of coding one image with its inference
    part (:meth:`common.methods.base.HashingMethod.inference_model`)."""
    return {"trainable_weights": trainable_weights(model),
            "multiply_adds": multiply_adds(method.inference_model(model))}
