"""Float64 numpy references for the DDAH tests, written from the original's PyTorch semantics
(NCHW ops transcribed onto NHWC arrays with explicit index arithmetic), sharing no code with
ddah_tf. tests/ddah_tf/test_numpy_reference.py checks the references themselves on
hand-computed cases.

Used by tests/ddah_tf/test_layers.py, test_model.py and test_loss.py.
"""

from __future__ import annotations

import numpy as np


def f64(x) -> np.ndarray:
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x, np.float64)


# --------------------------------------------------------------------------- basic ops
def conv2d(x, kernel, bias, stride=1):
    """Valid cross-correlation:
    out[n, i, j, o] = sum x[n, s*i + a, s*j + b, c] k[a, b, c, o] + bias."""
    x, kernel = f64(x), f64(kernel)
    kh, kw, _, out_c = kernel.shape
    n, h, w, _ = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, oh, ow, out_c))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, stride * i:stride * i + kh, stride * j:stride * j + kw, :]
            out[:, i, j, :] = np.einsum("nabc,abco->no", patch, kernel)
    return out + f64(bias)


def torch_conv_transpose2d(x, weight, bias, stride, padding, output_padding):
    """``torch.nn.ConvTranspose2d`` by scattering, with PyTorch's weight layout (in, out, kh, kw):
    out[n, s*i + a - p, s*j + b - p, o] += x[n, i, j, c] * weight[c, o, a, b]."""
    x, weight = f64(x), f64(weight)
    n, h, w, _ = x.shape
    _, out_c, kh, kw = weight.shape
    oh = (h - 1) * stride - 2 * padding + kh + output_padding
    ow = (w - 1) * stride - 2 * padding + kw + output_padding
    out = np.zeros((n, oh, ow, out_c))
    for i in range(h):
        for j in range(w):
            for a in range(kh):
                for b in range(kw):
                    r, c = stride * i + a - padding, stride * j + b - padding
                    if 0 <= r < oh and 0 <= c < ow:
                        out[:, r, c, :] += x[:, i, j, :] @ weight[:, :, a, b]
    return out + (0.0 if bias is None else f64(bias))


def keras_to_torch_transpose_kernel(kernel):
    """TensorFlow's conv2d_transpose kernel (kh, kw, out, in) -> PyTorch's (in, out, kh, kw)."""
    return f64(kernel).transpose(3, 2, 0, 1)


def batch_norm(x, weights, training, epsilon=1e-5):
    """BN over the last axis; weights = [gamma, beta, moving_mean, moving_variance].
    Training: the batch's mean and biased variance over every other axis (as PyTorch
    normalises); inference: the moving statistics."""
    x = f64(x)
    gamma, beta, moving_mean, moving_var = (f64(w) for w in weights)
    if training:
        axes = tuple(range(x.ndim - 1))
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = moving_mean, moving_var
    return (x - mean) / np.sqrt(var + epsilon) * gamma + beta


def relu(x):
    return np.maximum(x, 0.0)


def max_pool_2(x):
    """2x2 stride-2 max-pool, floor mode (PyTorch's MaxPool2d(2, 2))."""
    n, h, w, c = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2, :]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def dense(x, weights):
    kernel, bias = (f64(w) for w in weights)
    return f64(x) @ kernel + bias


def min_max(x, epsilon=0.0):
    """Per sample over all non-batch axes: (x - min) / (max - min + eps)."""
    x = f64(x)
    flat = x.reshape(len(x), -1)
    low = flat.min(axis=1).reshape((-1,) + (1,) * (x.ndim - 1))
    high = flat.max(axis=1).reshape((-1,) + (1,) * (x.ndim - 1))
    return (x - low) / (high - low + epsilon)


def flatten_channel_major(x):
    """NHWC -> (n, C*H*W) with unit c*H*W + h*W + w = x[n, h, w, c] (PyTorch's NCHW view)."""
    x = f64(x)
    n, h, w, c = x.shape
    out = np.zeros((n, c * h * w))
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                out[:, ch * h * w + i * w + j] = x[:, i, j, ch]
    return out


def log_softmax(logits):
    z = f64(logits)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


# --------------------------------------------------------------------------- DDAH blocks
def channel_attention_weights(x, hidden, output, epsilon=0.0):
    """The original's global_avgpooling_k MLP + channel min-max: (n, C) weights."""
    return min_max(dense(relu(dense(flatten_channel_major(x), hidden)), output), epsilon)


def channel_attention(x, hidden, output, epsilon=0.0):
    weights = channel_attention_weights(x, hidden, output, epsilon)
    return f64(x) * weights[:, None, None, :]


def spatial_attention_mask(x, p, training, epsilon=0.0):
    """The original's forward up to the normalised mask; p: layer name -> weight list
    (convs [kernel (kh, kw, in, out), bias], transposed convs [kernel (kh, kw, out, in),
    bias], BNs [gamma, beta, mean, var])."""
    def stage(h, conv, bn, stride):
        return relu(batch_norm(conv2d(h, *p[conv], stride=stride), p[bn], training))

    e1 = stage(x, "encoder_1_conv", "encoder_1_bn", 2)
    e2 = stage(e1, "encoder_2_conv", "encoder_2_bn", 2)
    e3 = stage(e2, "encoder_3_conv", "encoder_3_bn", 2)
    b = stage(e3, "bottleneck_conv", "bottleneck_bn", 1)

    def up(h, name):
        kernel, bias = p[name]
        return relu(torch_conv_transpose2d(h, keras_to_torch_transpose_kernel(kernel), bias,
                                           stride=2, padding=1, output_padding=1))

    d1 = batch_norm(up(b, "decoder_1_up") + e2, p["skip_1_bn"], training)
    d2 = batch_norm(up(d1, "decoder_2_up") + e1, p["skip_2_bn"], training)
    d3 = up(d2, "decoder_3_up")
    return min_max(conv2d(d3, *p["mask_conv"]), epsilon)


def spatial_params(layer) -> dict:
    """A built ddah_tf DDAHSpatialAttention's weights as ``spatial_attention_mask`` takes them:
    sub-layer name -> its weight list (read through the layer's attributes only)."""
    subs = [layer.encoder[i][j] for i in range(4) for j in range(2)]
    subs += [layer.up_1, layer.up_2, layer.up_3, layer.bn1, layer.bn2, layer.mask_conv]
    return {sub.name: sub.get_weights() for sub in subs}


def trunk(x, p, training, epsilon=0.0):
    """The original's features / conv4 / channel attentions / fusion / hash / classifier:
    returns (logits, hash)."""
    h = f64(x)
    for i in (1, 2, 3):
        h = max_pool_2(relu(batch_norm(conv2d(h, *p[f"conv{i}_conv"]), p[f"conv{i}_bn"],
                                       training)))
    f3 = h
    f4 = relu(batch_norm(conv2d(f3, *p["conv4_conv"]), p["conv4_bn"], training))
    a3 = channel_attention(f3, *p["channel_attention_3"], epsilon)
    a4 = channel_attention(f4, *p["channel_attention_4"], epsilon)
    fused = np.concatenate([flatten_channel_major(a3), flatten_channel_major(a4)], axis=1)
    face = relu(batch_norm(dense(fused, p["face_features"]), p["face_features_bn"], training))
    hashed = batch_norm(dense(face, p["hash"]), p["hash_bn"], training)
    logits = dense(np.tanh(hashed), p["classifier"])
    return logits, hashed


def ddah(x, spatial_p, trunk_p, training, epsilon=0.0):
    """(logits_a, hash_a, logits_b, hash_b): pass a on x * mask, pass b on x."""
    attended = f64(x) * spatial_attention_mask(x, spatial_p, training, epsilon)
    logits_a, hash_a = trunk(attended, trunk_p, training, epsilon)
    logits_b, hash_b = trunk(x, trunk_p, training, epsilon)
    return logits_a, hash_a, logits_b, hash_b


# --------------------------------------------------------------------------- losses
def nll(labels, logits):
    return float(-np.mean(log_softmax(logits)[np.arange(len(labels)), labels]))


def quantization(hash_values, weight=0.001):
    h = f64(hash_values)
    return float(weight * np.mean(np.sum(np.abs(np.abs(h) - 1.0), axis=1)))
