"""SIGINT/SIGTERM during training stop at a safe point (common.io.interrupts)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from common.io import interrupts


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_inside_deferred_is_raised_only_by_check(sig):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with interrupts.deferred():
        os.kill(os.getpid(), sig)
        time.sleep(0.05)  # the handler has run: it must not have raised
        with pytest.raises(KeyboardInterrupt, match=signal.Signals(sig).name):
            interrupts.check()
        interrupts.check()  # the request is consumed
        # a second signal would now end the process: the default action is installed
        assert signal.getsignal(sig) == signal.SIG_DFL
    assert {s: signal.getsignal(s) for s in before} == before


def test_only_the_main_thread_takes_its_stop_request():
    """A worker thread's safe point (a service thread saving an index) must not raise the
    main thread's request, which would then be lost to the main thread."""
    import threading

    raised: list[BaseException] = []

    def worker() -> None:
        try:
            interrupts.check()
        except KeyboardInterrupt as exc:
            raised.append(exc)

    with interrupts.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(30)
        assert raised == []
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            interrupts.check()


def test_a_signal_after_the_last_check_is_honoured_when_the_block_ends():
    # A SIGTERM that lands during the final evaluation (after the loop's last check) used
    # to be recorded and then dropped: the process went on as if never asked to stop.
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with interrupts.deferred():
            interrupts.check()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
    interrupts.check()  # consumed: nothing is left pending for a later block


def test_without_a_signal_the_block_runs_to_its_end_and_handlers_are_restored():
    """No stop requested: every check passes (the block reaches its end), the block's
    handlers are in place inside it and the previous ones are back after it."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    reached = []
    with interrupts.deferred():
        inside = {sig: signal.getsignal(sig) for sig in before}
        interrupts.check()
        reached.append("end")
    interrupts.check()
    assert reached == ["end"]
    assert all(handler is not before[sig] for sig, handler in inside.items()), inside
    assert {sig: signal.getsignal(sig) for sig in before} == before


@pytest.mark.slow
def test_a_signal_during_an_export_leaves_the_previous_export(tmp_path, monkeypatch):
    """SIGTERM while the SavedModel is written: the swap is cancelled, nothing is left."""
    import numpy as np

    from common.export import loader
    from common.export import writer as export
    from common.data.preprocess import Normalization
    from common.methods.base import CODES
    from dcbh_tf.method import DCBH

    method = DCBH(num_bits=12, code_length=3, width_multiplier=0.0625)
    model = method.build_model(4)
    codes_output = list(method.output_names).index(CODES)
    norm = Normalization(mean=100.0, std=50.0)
    target = tmp_path / "exp"
    export.export_model(model, norm, str(target), codes_output, info={"first": True})
    real_write = export._write_export

    def write_then_signal(*args, **kwargs):
        real_write(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the export is not yet in place

    monkeypatch.setattr(export, "_write_export", write_then_signal)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        export.export_model(model, norm, str(target), codes_output, info={"first": False})
    assert loader.load_encoder(str(target)).info["first"] is True
    assert sorted(os.listdir(tmp_path)) == ["exp"]
    codes = loader.load_encoder(str(target))(np.zeros((2, 32, 32, 3), np.uint8))["codes"]
    assert codes.shape == (2, 12)
