"""Draw the gradients of DFH's quadratic quantization term and of the first-order one.

    python -m dfh_tf.quantization_figure --out docs/figures/dfh_quantization_gradients.png

The curves are the autodiff gradients of :func:`dfh_tf.losses.quantization_loss` (per
element, i.e. times the number of elements), so the figure shows what training uses.
Left: in the relaxed code h; right: in the hash layer's pre-activation a (h = tanh a),
the gradient the network receives. (h^2 - 1)^2 is drawn too: the other "quadratic"
form, whose gradient vanishes at h = 0 where undecided bits sit.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

OUT = flags.DEFINE_string("out", "docs/figures/dfh_quantization_gradients.png", "PNG to write.")


def gradients(h: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (d/dh, d/da)} per element for h in (-1, 1), by autodiff through the code."""
    import tensorflow as tf

    from dfh_tf import losses

    a = tf.Variable(np.arctanh(h).astype(np.float64))
    terms = {
        "quadratic (|h| - 1)^2 (DFH)": lambda x: losses.quantization_loss(x, "quadratic"),
        "first order | |h| - 1 | (DDAH)":
            lambda x: losses.quantization_loss(x, "first_order"),
        "(h^2 - 1)^2": lambda x: tf.reduce_mean(tf.square(tf.square(x) - 1.0)),
    }
    out = {}
    for name, term in terms.items():
        with tf.GradientTape(persistent=True) as tape:
            relaxed = tf.tanh(tf.cast(a, tf.float32))
            tape.watch(relaxed)
            value = term(relaxed) * h.size
        out[name] = (tape.gradient(value, relaxed).numpy(), tape.gradient(value, a).numpy())
    return out


def draw(path: str) -> None:
    from common.reproduce.figures import matplotlib_pyplot

    plt = matplotlib_pyplot()
    h = np.linspace(-0.995, 0.995, 399)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, (in_h, in_a) in gradients(h).items():
        axes[0].plot(h, in_h, label=name)
        axes[1].plot(np.arctanh(h), in_a, label=name)
    axes[0].set(xlabel="relaxed code h", ylabel="d term / d h",
                title="gradient in h: quadratic fades to 0 at +-1")
    axes[1].set(xlabel="pre-activation a (h = tanh a)", ylabel="d term / d a",
                title="gradient the hash layer receives")
    for ax in axes:
        ax.axhline(0, color="grey", lw=0.6)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> None:
    del argv
    draw(OUT.value)
    print(f"wrote {OUT.value}")


if __name__ == "__main__":
    app.run(main)
