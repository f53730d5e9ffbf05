"""DFH-GANs' augmentation GAN (dfh_tf/gan): networks, losses, pairs, training, resume, augment.

Tiny sizes throughout (width 0.25, 6 identities x 4 images) so the file runs in about a
minute on two CPU cores; the command-line refusals run in subprocesses and stop before
TensorFlow loads.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from checkout import ROOT

pytestmark = pytest.mark.slow  # trains models or starts processes

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
ENV.pop("FACE_HASHING_TRACEBACK", None)
IDENTITIES, PER_ID, TEST_PER_ID = 6, 4, 2


def _tiny_config(**overrides):
    from dfh_tf.gan.trainer import GanConfig

    settings = dict(epochs=1, batch_size=8, seed=3, noise_dim=8, width=0.25, log_every_steps=0)
    settings.update(overrides)
    return GanConfig(**settings)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from common.synthetic import write_synthetic_dataset

    folder = tmp_path_factory.mktemp("gan_data")
    write_synthetic_dataset(str(folder), num_identities=IDENTITIES,
                            train_per_identity=PER_ID, test_per_identity=TEST_PER_ID, seed=0)
    return str(folder)


@pytest.fixture(scope="module")
def gan_data(data_dir):
    from dfh_tf.gan.data import load_gan_data

    return load_gan_data("synthetic", data_dir)


@pytest.fixture(scope="module")
def trained_run(gan_data, tmp_path_factory):
    """A 1-epoch run, then resumed to 2 epochs; returns (folder, resumed models, output)."""
    from dfh_tf.gan.trainer import train_gan

    folder = str(tmp_path_factory.mktemp("gan_run") / "run")
    train_gan(gan_data, _tiny_config(epochs=1), folder, stream=io.StringIO())
    out = io.StringIO()
    models, history = train_gan(gan_data, _tiny_config(epochs=2), folder, stream=out)
    return folder, models, history, out.getvalue()


VALIDATION_FRACTION, VALIDATION_SEED = 0.25, 5  # holds out 1 of each identity's 4 images


@pytest.fixture(scope="module")
def validation_run(data_dir, tmp_path_factory):
    """A 2-step GAN run of the command line with a validation split; returns its folder."""
    folder = str(tmp_path_factory.mktemp("gan_validation_run") / "run")
    result = _cli("dfh_tf.gan.train", "--dataset", "synthetic", "--data_dir", data_dir,
                  "--model_dir", folder, "--validation_fraction", str(VALIDATION_FRACTION),
                  "--validation_seed", str(VALIDATION_SEED), "--epochs", "1",
                  "--max_steps_per_epoch", "2", "--batch_size", "8", "--noise_dim", "8",
                  "--width", "0.25", "--log_every_steps", "0", "--noreport")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "6 held out as the validation split" in result.stdout, result.stdout
    return folder


def _split_rows(data_dir: str, fraction: float = VALIDATION_FRACTION,
                seed: int = VALIDATION_SEED):
    """(rows, labels, kept, held) of the test set's train folder, drawn independently."""
    from common.data import load_pickle_folder
    from common.data.validation_split import validation_indices

    rows, labels = load_pickle_folder(os.path.join(data_dir, "train"))
    kept, held = validation_indices(labels, fraction, seed)
    return rows, labels, kept, held


def _read_info(out) -> dict:
    """The record augment writes with the rows, inside OUT/train."""
    with open(os.path.join(str(out), "train", ".augment.json"), encoding="utf-8") as f:
        return json.load(f)


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)


def _one_error(result: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not line.startswith(("I0", "W0", "E0", "WARNING", "I1",
                                                      "loaded "))]
    assert result.returncode == code, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ pure numpy parts
def test_partners_same_identity_other_image_flip_for_singletons():
    from dfh_tf.gan.pairs import partner_images, sample_partners

    labels = np.array([5, 2, 5, 9, 2, 5, 5, 7, 2])  # 7 and 9 are singletons
    seen = {i: set() for i in range(len(labels))}
    for seed in range(40):
        partners, flip = sample_partners(labels, np.random.default_rng(seed))
        assert np.array_equal(labels[partners], labels)
        single = np.isin(labels, [7, 9])
        assert np.array_equal(flip, single)
        assert np.all(partners[single] == np.flatnonzero(single))
        assert np.all(partners[~single] != np.flatnonzero(~single))
        for i, j in enumerate(partners):
            seen[i].add(int(j))
    for i in range(len(labels)):  # every other image of the identity is drawn
        others = set(np.flatnonzero(labels == labels[i]).tolist()) - {i}
        assert seen[i] == (others or {i})
    images = np.arange(len(labels) * 4 * 4 * 3, dtype=np.float32).reshape(len(labels), 4, 4, 3)
    out = partner_images(images, np.array([3, 0]), np.array([True, False]))
    assert np.array_equal(out[0], images[3][:, ::-1]) and np.array_equal(out[1], images[0])


def test_pixel_scale_round_trips():
    from dfh_tf.gan.data import to_gan_pixels, to_stored_pixels

    pixels = np.arange(256, dtype=np.float32)
    scaled = to_gan_pixels(pixels)
    assert scaled.min() == -1.0 and scaled.max() == 1.0
    assert np.array_equal(to_stored_pixels(scaled), pixels)
    assert np.array_equal(to_stored_pixels(np.array([-3.0, 3.0])), [0.0, 255.0])


def test_gan_data_leaves_out_exactly_the_validation_rows(data_dir):
    from common.data import DataFormatError, to_nhwc
    from dfh_tf.gan.data import load_gan_data, to_gan_pixels

    rows, labels, kept, held = _split_rows(data_dir)
    assert len(held) == IDENTITIES and len(kept) == IDENTITIES * (PER_ID - 1)
    data = load_gan_data("synthetic", data_dir, validation_fraction=VALIDATION_FRACTION,
                         validation_seed=VALIDATION_SEED)
    whole = load_gan_data("synthetic", data_dir)
    assert np.array_equal(data.train_labels, labels[kept])
    assert np.array_equal(data.train_images, to_gan_pixels(to_nhwc(rows[kept])))
    assert np.array_equal(whole.train_images, to_gan_pixels(to_nhwc(rows)))
    held_images = to_gan_pixels(to_nhwc(rows[held]))
    assert not any(np.array_equal(h, t) for h in held_images for t in data.train_images)
    # the test split and the class count are the whole data set's
    assert np.array_equal(data.test_images, whole.test_images)
    assert data.num_classes == whole.num_classes == IDENTITIES
    assert data.description["validation"] == {"fraction": VALIDATION_FRACTION,
                                              "seed": VALIDATION_SEED, "images": IDENTITIES}
    assert data.description["train_images"] == len(kept)
    assert data.description["train_identities"] == IDENTITIES
    assert "validation" not in whole.description
    assert whole.description["train_images"] == IDENTITIES * PER_ID
    other = load_gan_data("synthetic", data_dir, validation_fraction=VALIDATION_FRACTION,
                          validation_seed=VALIDATION_SEED + 1)
    assert np.array_equal(other.train_labels, labels[_split_rows(data_dir,
                                                                 seed=VALIDATION_SEED + 1)[2]])
    with pytest.raises(DataFormatError, match="validation_fraction 0.1 holds out no image") as e:
        load_gan_data("synthetic", data_dir, validation_fraction=0.1)  # round(0.4) = 0
    assert e.value.path == os.path.abspath(os.path.join(data_dir, "train"))


# ------------------------------------------------------------------ TensorFlow parts
def test_network_shapes():
    from dfh_tf.gan.networks import (build_discriminator, build_generator,
                                     build_identity_classifier)

    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    z = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    out = np.asarray(build_generator(8, 0.25)([x, z]))
    assert out.shape == (2, 32, 32, 3) and np.all(np.abs(out) <= 1.0)
    assert build_discriminator(0.25)(np.concatenate([x, x], -1)).shape == (2, 1)
    assert build_identity_classifier(6, 0.25)(x).shape == (2, 6)


def test_warp_identity_and_one_pixel_shift_with_gradient():
    import tensorflow as tf

    from dfh_tf.gan.networks import AffineWarp

    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    warp = AffineWarp()
    identity = np.tile([[1, 0, 0, 0, 1, 0]], (2, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(warp([x, identity])), x, atol=1e-5)
    theta = tf.Variable(np.tile([[1, 0, 2 / 31, 0, 1, 0]], (2, 1)).astype(np.float32))
    with tf.GradientTape() as tape:
        out = warp([x, theta])  # output pixel (i, j) samples input (i, j + 1)
        loss = tf.reduce_sum(out ** 2)
    np.testing.assert_allclose(np.asarray(out)[:, :, :-1], x[:, :, 1:], atol=1e-5)
    assert np.all(np.isfinite(tape.gradient(loss, theta).numpy()))


def test_losses_match_numpy():
    from dfh_tf.gan import losses

    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(7, 1)), rng.normal(size=(11, 1))
    expected_d = np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake))
    assert np.isclose(float(losses.d_hinge_loss(real, fake)), expected_d, rtol=1e-6)
    assert np.isclose(float(losses.g_hinge_loss(fake)), -np.mean(fake), rtol=1e-6)
    f1, f2 = rng.uniform(-1, 1, (4, 32, 32, 3)), rng.uniform(-1, 1, (4, 32, 32, 3))
    z1, z2 = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))
    expected = np.mean(np.abs(z1 - z2)) / (np.mean(np.abs(f1 - f2)) + 1e-5)
    assert np.isclose(float(losses.mode_seeking_term(f1, f2, z1, z2)), expected, rtol=1e-6)
    # identical variants: large but finite (eps)
    assert np.isfinite(float(losses.mode_seeking_term(f1, f1, z1, z2)))


def test_training_steps_are_finite_and_move_all_three_networks(gan_data):
    from dfh_tf.gan.trainer import build_models, epoch_batches, make_train_step
    from dfh_tf.gan.pairs import partner_images

    config = _tiny_config()
    models = build_models(gan_data.num_classes, config)
    nets = (models.generator, models.discriminator, models.classifier)
    before = [[w.numpy() for w in net.trainable_weights] for net in nets]
    b = epoch_batches(gan_data.train_labels, config.noise_dim, config.seed, 1)
    step = make_train_step(models, config)
    for idx in (b.order[:8], b.order[8:16]):  # two steps: the warp head starts at zero, so
        out = step(                           # the layer before it moves from step 2 on
            gan_data.train_images[idx],
            partner_images(gan_data.train_images, b.partners[idx], b.flip[idx]),
            gan_data.train_labels[idx], b.z1[idx], b.z2[idx])
        assert all(np.isfinite(float(v)) for v in out.values())
    for net, old in zip(nets, before):
        changed = {w.path: not np.array_equal(o, w.numpy())
                   for o, w in zip(old, net.trainable_weights)}
        # D's output bias gets -1 + 1 = 0 from the hinge loss while every logit is
        # inside the margins (at initialisation), so it may stay put
        unchanged = [k for k, v in changed.items()
                     if not v and k != "logit/logit_dense/bias"]
        assert not unchanged, unchanged


def test_resume_continues_and_matches_an_uninterrupted_run(gan_data, trained_run, tmp_path):
    from dfh_tf.gan.run_folder import latest_checkpoint_prefix, read_history
    from dfh_tf.gan.trainer import train_gan

    folder, resumed, history, output = trained_run
    assert "resuming" in output and "after epoch 1" in output
    assert "epoch 1/" not in output and "epoch 2/2" in output
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["epoch"] for h in read_history(folder)] == [1, 2]
    assert all(k in history[0] for k in ("d_loss", "g_loss", "identity_ce",
                                         "classifier_accuracy", "diversity", "seconds"))
    assert latest_checkpoint_prefix(folder).endswith("ckpt-2")
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["kind"] == "dfh_gan"
    straight, _ = train_gan(gan_data, _tiny_config(epochs=2), str(tmp_path / "straight"),
                            stream=io.StringIO())
    for a, b in zip(resumed.generator.weights, straight.generator.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


def test_resume_refuses_other_networks(gan_data, trained_run):
    from dfh_tf.gan.run_folder import GanRunError
    from dfh_tf.gan.trainer import train_gan

    with pytest.raises(GanRunError, match="width: 0.25 -> 0.5"):
        train_gan(gan_data, _tiny_config(epochs=3, width=0.5), trained_run[0],
                  stream=io.StringIO())


def test_resume_refuses_another_train_folder_or_changed_rows(data_dir, gan_data, trained_run,
                                                            tmp_path):
    import dataclasses

    from common.data.extra_rows import rows_digest
    from dfh_tf.gan.data import load_gan_data
    from dfh_tf.gan.run_folder import GanRunError, read_run_config
    from dfh_tf.gan.trainer import train_gan

    source = os.path.join(data_dir, "train")
    other = str(tmp_path / "other_train")  # as many rows (the same ones, even)
    shutil.copytree(source, other)
    moved = load_gan_data("synthetic", data_dir, train_dir=other)
    config_file = os.path.join(trained_run[0], "config.json")
    with open(config_file, "rb") as f:
        config_before = f.read()
    with pytest.raises(GanRunError, match=re.escape(f"train_dir: '{source}' -> '{other}'")):
        train_gan(moved, _tiny_config(epochs=3), trained_run[0], stream=io.StringIO())
    changed = dataclasses.replace(gan_data, description=dict(gan_data.description,
                                                             train_sha256="0" * 64))
    with pytest.raises(GanRunError, match=re.escape(f"the rows of {source} (train_sha256: ")):
        train_gan(changed, _tiny_config(epochs=3), trained_run[0], stream=io.StringIO())
    with open(config_file, "rb") as f:
        assert f.read() == config_before  # config.json left as it was
    recorded = read_run_config(trained_run[0])["data"]
    assert recorded["train_sha256"] == rows_digest(*_split_rows(data_dir)[:2])
    # a run made before the digest: resumes as before, with its own folder only
    old = tmp_path / "old_run"
    shutil.copytree(trained_run[0], old)
    with open(old / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    del config["data"]["train_sha256"]
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(GanRunError, match=re.escape(f"train_dir: '{source}' -> '{other}'")):
        train_gan(moved, _tiny_config(epochs=2), str(old), stream=io.StringIO())
    out = io.StringIO()
    train_gan(gan_data, _tiny_config(epochs=2), str(old), stream=out)
    assert "nothing to train" in out.getvalue()
    assert read_run_config(str(old))["data"]["train_sha256"] == recorded["train_sha256"]


def test_non_finite_loss_stops_naming_epoch_and_step(gan_data, tmp_path):
    from dfh_tf.gan.data import GanData
    from dfh_tf.gan.run_folder import latest_checkpoint_prefix
    from dfh_tf.gan.trainer import GanNonFiniteError, train_gan

    images = gan_data.train_images.copy()
    images[:] = np.nan
    bad = GanData(images, gan_data.train_labels, None, None, gan_data.num_classes,
                  dict(gan_data.description))
    with pytest.raises(GanNonFiniteError, match="epoch 1, step 1"):
        train_gan(bad, _tiny_config(), str(tmp_path / "nan"), stream=io.StringIO())
    assert latest_checkpoint_prefix(str(tmp_path / "nan")) is None


def test_report_writes_figure_and_identity_check(gan_data, trained_run):
    from dfh_tf.gan.report import write_report

    folder, models = trained_run[0], trained_run[1]
    report = write_report(models.generator, gan_data, 8, 3, folder, evaluator_epochs=1,
                          epochs_trained=2, stream=io.StringIO())
    with open(os.path.join(folder, "samples.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(folder, "identity_report.json"), encoding="utf-8") as f:
        assert json.load(f)["accuracy"] == report["accuracy"]
    assert all(0.0 <= v <= 1.0 for v in report["accuracy"].values())
    assert report["images"]["test"] == IDENTITIES * TEST_PER_ID
    acc = report["accuracy"]
    expected = None if not acc["real_test"] else acc["generated_test"] / acc["real_test"]
    assert report["identity_kept"] == expected
    diversity = report["diversity_pixels"]
    assert diversity["split"] == "test"
    # two noise draws give two different variants, each different from its source
    assert diversity["mean_abs_between_two_variants"] > 0.0
    assert diversity["mean_abs_variant_minus_source"] > 0.0
    assert diversity["mean_abs_between_real_same_identity_pairs"] > 0.0


def test_augment_writes_a_readable_enlarged_split(data_dir, trained_run, tmp_path):
    from common.data import load_pickle_folder
    from dfh_tf.gan.augmentation import augment_rows, write_augmented
    from dfh_tf.gan.run_folder import load_generator

    generator, config = load_generator(trained_run[0])
    rows, labels = load_pickle_folder(os.path.join(data_dir, "train"))
    x, y = augment_rows(generator, rows, labels, config["settings"]["noise_dim"], 2, seed=1,
                        stream=io.StringIO())
    out = str(tmp_path / "aug")
    write_augmented(out, x, y, {"variants_per_image": 2}, rows_per_file=20)
    back_x, back_y = load_pickle_folder(os.path.join(out, "train"))
    n = len(labels)
    assert back_x.shape == (3 * n, 3072) and back_x.dtype == np.float32
    assert np.array_equal(back_x[:n], rows) and np.array_equal(back_y[:n], labels)
    assert np.array_equal(back_y, np.tile(labels, 3))
    assert back_x.min() >= 0 and back_x.max() <= 255 and np.array_equal(back_x, np.round(back_x))
    assert not np.array_equal(back_x[n:2 * n], back_x[2 * n:])  # two different variants
    assert _read_info(out)["variants_per_image"] == 2
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_augmented(out, x, y, {})
    write_augmented(out, x[:n], y[:n], {}, overwrite=True)
    assert len(load_pickle_folder(os.path.join(out, "train"))[1]) == n
    assert [e for e in os.listdir(out) if e.startswith(".")] == []  # no temporary left


def _tree(folder) -> dict:
    found = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            found[name] = f.read()
    return found


def test_the_record_appears_with_its_rows_or_not_at_all(tmp_path, monkeypatch):
    import errno

    from common.data import load_pickle_folder
    from common.data.extra_rows import rows_digest
    from dfh_tf.gan import augmentation

    out = tmp_path / "out"
    out.mkdir()
    (out / "augment.json").write_text('{"variants_only": true}')  # an older augment's record
    x = np.random.default_rng(0).integers(0, 256, (6, 3072)).astype(np.float32)
    y = np.arange(6) % 3
    train = augmentation.write_augmented(str(out), x, y, {"first": True}, rows_per_file=4)
    info = _read_info(out)
    assert info["first"] and info["rows_sha256"] == rows_digest(*load_pickle_folder(train))
    assert not (out / "augment.json").exists()  # it described the rows replaced
    before = _tree(train)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    for name, fail, named in (("write_json_atomic", full_disk, f"{train}/.augment.json"),
                              ("write_pickle_folder", full_disk, train),
                              ("write_json_atomic", ctrl_c, None)):
        with monkeypatch.context() as patch:
            patch.setattr(augmentation, name, fail)
            with pytest.raises((OSError, KeyboardInterrupt)) as e:
                augmentation.write_augmented(str(out), x[::-1], y, {"second": True},
                                             overwrite=True)
        if named:
            assert e.value.filename == named and e.value.errno == errno.ENOSPC
        assert _tree(train) == before  # the old rows with their own record
        assert sorted(os.listdir(out)) == ["train"]  # no temporary left
    augmentation.write_augmented(str(out), x[::-1], y, {"second": True}, overwrite=True)
    assert "first" not in _read_info(out) and sorted(os.listdir(train)) == [
        ".augment.json", "part_000.pkl"]


def test_augment_names_the_record_it_could_not_write(data_dir, tmp_path):
    source = os.path.join(data_dir, "train")
    out = tmp_path / "out"
    result = _cli("dfh_tf.gan.augment", "--copies_only", "--variants_only", "--train_dir",
                  source, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    before = _tree(out / "train")
    code = ("import errno, sys\n"
            "import dfh_tf.gan.augmentation as a\n"
            "def full(*args, **kwargs): raise OSError(errno.ENOSPC, 'No space left on device')\n"
            "a.write_json_atomic = full\n"
            "sys.argv = ['augment'] + sys.argv[1:]\n"
            "from dfh_tf.gan import augment\n"
            "augment.run()\n")
    result = subprocess.run([sys.executable, "-c", code, "--copies_only", "--train_dir", source,
                             "--out", str(out), "--overwrite"], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=120)
    _one_error(result, 2, f"{out}/train/.augment.json: No space left on device")
    assert _tree(out / "train") == before


def test_copies_only_writes_the_control_split_without_a_gan(data_dir, tmp_path):
    from common.data import load_pickle_folder

    source = os.path.join(data_dir, "train")
    out = tmp_path / "copies"
    result = _cli("dfh_tf.gan.augment", "--copies_only", "--train_dir", source, "--out", str(out),
                  "--variants_per_image", "2", "--rows_per_file", "7")
    assert result.returncode == 0, result.stderr[-2000:]
    rows, labels = load_pickle_folder(source)
    back_x, back_y = load_pickle_folder(str(out / "train"))
    assert np.array_equal(back_x, np.concatenate([rows, rows, rows]))
    assert np.array_equal(back_y, np.concatenate([labels, labels, labels]))
    assert sorted(os.listdir(out / "train"))[1:] == [  # the record first: hidden
        f"part_{i:03d}.pkl" for i in range(-(-3 * len(labels) // 7))]
    info = _read_info(out)
    assert (info["control"], info["copies_per_image"], info["generated_images"],
            info["total_images"]) == ("copies_only", 2, 0, 3 * len(labels))
    _one_error(_cli("dfh_tf.gan.augment", "--copies_only", "--out", str(tmp_path / "o")), 2,
               "--copies_only needs the source split")


def test_train_records_the_validation_split_and_refuses_resuming_with_another(
        data_dir, validation_run):
    from dfh_tf.gan.data import load_gan_data
    from dfh_tf.gan.run_folder import GanRunError, read_history, read_run_config
    from dfh_tf.gan.trainer import train_gan

    data = read_run_config(validation_run)["data"]
    assert data["validation"] == {"fraction": VALIDATION_FRACTION, "seed": VALIDATION_SEED,
                                  "images": IDENTITIES}
    assert data["train_images"] == IDENTITIES * (PER_ID - 1)
    assert [h["epoch"] for h in read_history(validation_run)] == [1]
    other = load_gan_data("synthetic", data_dir, validation_fraction=VALIDATION_FRACTION,
                          validation_seed=VALIDATION_SEED + 1)  # same sizes, other rows
    with pytest.raises(GanRunError, match="validation: "):
        train_gan(other, _tiny_config(epochs=2, seed=0), validation_run, stream=io.StringIO())


def test_augment_skips_the_validation_rows_of_the_gan_run(data_dir, validation_run, tmp_path):
    from common.data import load_pickle_folder
    from dfh_tf.gan.augmentation import augment_rows
    from dfh_tf.gan.run_folder import load_generator

    rows, labels, kept, held = _split_rows(data_dir)
    n = len(kept)
    full, only = tmp_path / "full", tmp_path / "only"
    # the source and the split default to the GAN run's train split and recorded split
    for out, extra in ((full, ()), (only, ("--variants_only",))):
        result = _cli("dfh_tf.gan.augment", "--gan_dir", validation_run, "--out", str(out),
                      "--variants_per_image", "2", "--seed", "1", *extra)
        assert result.returncode == 0, result.stderr[-2000:]
    full_x, full_y = load_pickle_folder(str(full / "train"))
    only_x, only_y = load_pickle_folder(str(only / "train"))
    assert full_x.shape == (3 * n, 3072) and only_x.shape == (2 * n, 3072)
    assert np.array_equal(full_x[:n], rows[kept])  # the originals: the kept rows only
    assert np.array_equal(full_y, np.tile(labels[kept], 3))
    assert np.array_equal(only_y, np.tile(labels[kept], 2))
    assert np.max(np.abs(only_x - full_x[n:])) <= 1.0  # the same variants, noise for noise
    generator, config = load_generator(validation_run)
    expected, _ = augment_rows(generator, rows[kept], labels[kept],
                               config["settings"]["noise_dim"], 2, seed=1,
                               stream=io.StringIO(), originals=False)
    assert np.max(np.abs(only_x - expected)) <= 1.0  # variants of the kept rows
    record = {"fraction": VALIDATION_FRACTION, "seed": VALIDATION_SEED, "images": len(held),
              "source_images": IDENTITIES * PER_ID, "from": "gan_run"}
    info = _read_info(full)
    assert (info["original_images"], info["generated_images"], info["total_images"]) == (
        n, 2 * n, 3 * n)
    assert info["validation"] == record and "variants_only" not in info
    info = _read_info(only)
    assert (info["original_images"], info["generated_images"], info["total_images"],
            info["source_images"], info["variants_only"]) == (0, 2 * n, 2 * n, n, True)
    assert info["validation"] == record and "no originals" in info["row_order"]
    gan_split = {"fraction": VALIDATION_FRACTION, "seed": VALIDATION_SEED}
    assert info["gan_validation"] == gan_split == _read_info(full)["gan_validation"]
    # a hashing run with the same split takes the variants as extra rows, and only them
    from common.data import DataFormatError
    from common.training.data import load_split_data

    def hashing_data(extra, seed=VALIDATION_SEED):
        return load_split_data("folder", train_dir=os.path.join(data_dir, "train"),
                               test_dir=os.path.join(data_dir, "test"),
                               validation_fraction=VALIDATION_FRACTION, validation_seed=seed,
                               extra_train_dir=str(extra / "train"))
    assert len(hashing_data(only).extra_train_labels) == 2 * n
    with pytest.raises(DataFormatError, match="holds the original rows as well"):
        hashing_data(full)
    with pytest.raises(DataFormatError, match="include this run's validation split"):
        hashing_data(only, seed=VALIDATION_SEED + 1)
    # the record names the folders and digests a run checks: its rows as the run reads
    # them, the source folder's rows (all of them) and the folder the GAN trained on
    from common.data.extra_rows import rows_digest

    info = _read_info(only)
    assert info["rows_sha256"] == hashing_data(only).description["extra_train_sha256"]
    assert info["rows_sha256"] == rows_digest(only_x, only_y)
    assert info["source_sha256"] == rows_digest(rows, labels)
    assert info["gan_train_dir"] == os.path.realpath(os.path.join(data_dir, "train"))
    assert not os.path.exists(only / "augment.json")
    # the split with its originals is a train folder only without a validation split
    train_dir = str(full / "train")
    with pytest.raises(DataFormatError, match=f"{train_dir}: holds original rows together "
                                              "with their variants") as e:
        load_split_data("folder", train_dir=train_dir, test_dir=os.path.join(data_dir, "test"),
                        validation_fraction=VALIDATION_FRACTION)
    assert "augment --variants_only" in str(e.value) and "--validation_fraction 0" in str(e.value)
    assert len(load_split_data("folder", train_dir=train_dir, test_dir=os.path.join(
        data_dir, "test")).train_labels) == 3 * n


def test_augment_makes_variants_only_of_the_folder_the_gan_trained_on(data_dir, validation_run,
                                                                     tmp_path):
    source = os.path.join(data_dir, "train")
    other = tmp_path / "other_train"  # the same rows in another folder
    shutil.copytree(source, other)
    out = str(tmp_path / "out")
    _one_error(_cli("dfh_tf.gan.augment", "--gan_dir", validation_run, "--train_dir", str(other),
                    "--variants_only", "--out", out), 2,
               f"{other}: the GAN run {validation_run} trained on {os.path.realpath(source)}, "
               "not on this folder")
    changed = tmp_path / "changed_run"  # its train folder's rows changed since it trained
    shutil.copytree(validation_run, changed)
    with open(changed / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    assert len(config["data"]["train_sha256"]) == 64
    config["data"]["train_sha256"] = "0" * 64
    (changed / "config.json").write_text(json.dumps(config))
    _one_error(_cli("dfh_tf.gan.augment", "--gan_dir", str(changed), "--variants_only",
                    "--out", out), 2, f"{source}: its rows changed since the GAN run")
    assert not os.path.exists(out)
    # the control takes no GAN's variants: any folder
    result = _cli("dfh_tf.gan.augment", "--copies_only", "--variants_only", "--gan_dir",
                  validation_run, "--train_dir", str(other), "--out", out,
                  "--validation_fraction", "0")
    assert result.returncode == 0, result.stderr[-2000:]


def test_copies_only_skips_the_same_validation_rows(data_dir, validation_run, tmp_path):
    from common.data import load_pickle_folder

    rows, labels, kept, held = _split_rows(data_dir)
    source = os.path.join(data_dir, "train")
    # the GAN run's recorded split, its train split named explicitly
    result = _cli("dfh_tf.gan.augment", "--copies_only", "--gan_dir", validation_run,
                  "--train_dir", source, "--out", str(tmp_path / "a"))
    assert result.returncode == 0, result.stderr[-2000:]
    back_x, back_y = load_pickle_folder(str(tmp_path / "a" / "train"))
    assert np.array_equal(back_x, np.concatenate([rows[kept], rows[kept]]))
    assert np.array_equal(back_y, np.tile(labels[kept], 2))
    assert _read_info(tmp_path / "a")["validation"] == {
        "fraction": VALIDATION_FRACTION, "seed": VALIDATION_SEED, "images": len(held),
        "source_images": len(labels), "from": "gan_run"}
    # explicit flags win over the recorded split
    _, _, kept_b, held_b = _split_rows(data_dir, 0.5, 7)
    assert len(held_b) == 2 * IDENTITIES
    result = _cli("dfh_tf.gan.augment", "--copies_only", "--gan_dir", validation_run,
                  "--out", str(tmp_path / "b"), "--validation_fraction", "0.5",
                  "--validation_seed", "7", "--variants_per_image", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    back_x, back_y = load_pickle_folder(str(tmp_path / "b" / "train"))
    assert np.array_equal(back_x, np.tile(rows[kept_b], (3, 1)))
    assert np.array_equal(back_y, np.tile(labels[kept_b], 3))
    info = _read_info(tmp_path / "b")
    assert info["validation"] == {"fraction": 0.5, "seed": 7, "images": len(held_b),
                                  "source_images": len(labels), "from": "flags"}
    assert (info["original_images"], info["total_images"]) == (len(kept_b), 3 * len(kept_b))
    # the control of a --variants_only split: the copies alone, without the originals
    result = _cli("dfh_tf.gan.augment", "--copies_only", "--variants_only", "--gan_dir",
                  validation_run, "--out", str(tmp_path / "d"), "--variants_per_image", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    back_x, back_y = load_pickle_folder(str(tmp_path / "d" / "train"))
    assert np.array_equal(back_x, np.tile(rows[kept], (2, 1)))
    assert np.array_equal(back_y, np.tile(labels[kept], 2))
    info = _read_info(tmp_path / "d")
    assert (info["original_images"], info["total_images"], info["source_images"],
            info["variants_only"]) == (0, 2 * len(kept), len(kept), True)
    # --validation_fraction 0: every row, nothing recorded
    result = _cli("dfh_tf.gan.augment", "--copies_only", "--gan_dir", validation_run,
                  "--out", str(tmp_path / "c"), "--validation_fraction", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.array_equal(load_pickle_folder(str(tmp_path / "c" / "train"))[0],
                          np.concatenate([rows, rows]))
    assert "validation" not in _read_info(tmp_path / "c")


def test_augment_refuses_bad_validation_settings(data_dir, validation_run, tmp_path):
    source = os.path.join(data_dir, "train")
    out = str(tmp_path / "out")
    _one_error(_cli("dfh_tf.gan.augment", "--copies_only", "--train_dir", source, "--out", out,
                    "--validation_fraction", "0.1"), 2,
               f"bad data: {os.path.abspath(source)}: validation_fraction 0.1 holds out no image")
    _one_error(_cli("dfh_tf.gan.augment", "--copies_only", "--train_dir", source, "--out", out,
                    "--validation_seed", "3"), 2, "--validation_seed needs --validation_fraction")
    _one_error(_cli("dfh_tf.gan.augment", "--copies_only", "--train_dir", source, "--out", out,
                    "--validation_fraction", "nan"), 2, "must be a finite number")
    # the GAN's recorded split no longer matches its train folder
    changed = tmp_path / "changed_run"
    shutil.copytree(validation_run, changed)
    with open(changed / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    config["data"]["validation"]["images"] += 1
    (changed / "config.json").write_text(json.dumps(config))
    _one_error(_cli("dfh_tf.gan.augment", "--copies_only", "--gan_dir", str(changed),
                    "--out", out), 2, "it changed since")
    assert not os.path.exists(out)


# ------------------------------------------------------------------ command lines
def test_augment_command_line_refusals(trained_run, tmp_path):
    (tmp_path / "not_a_run").mkdir()
    occupied = tmp_path / "occupied"
    (occupied / "train").mkdir(parents=True)
    (occupied / "train" / "part_000.pkl").write_bytes(b"x")
    out = str(tmp_path / "out")
    _one_error(_cli("dfh_tf.gan.augment", "--gan_dir", trained_run[0], "--out", out,
                    "--variants_per_image", "0"), 2, "variants_per_image")
    _one_error(_cli("dfh_tf.gan.augment", "--out", out), 2, "--gan_dir is required")
    _one_error(_cli("dfh_tf.gan.augment", "--gan_dir", str(tmp_path / "not_a_run"), "--out", out),
               2, "not a GAN run")
    _one_error(_cli("dfh_tf.gan.augment", "--gan_dir", trained_run[0], "--out", str(occupied)),
               2, "--overwrite")


def test_train_command_line_refusals(tmp_path):
    _one_error(_cli("dfh_tf.gan.train", "--width", "0"), 2, "--width must be > 0")
    _one_error(_cli("dfh_tf.gan.train", "--dataset", "folder", "--model_dir",
                    str(tmp_path / "m")), 2, "--train_dir")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"kind": "something_else"}')
    _one_error(_cli("dfh_tf.gan.train", "--model_dir", str(foreign)), 2, "not a GAN run")



def test_train_refuses_bad_validation_settings(data_dir, tmp_path):
    model_dir = str(tmp_path / "m")
    data = ("--dataset", "synthetic", "--data_dir", data_dir, "--model_dir", model_dir)
    _one_error(_cli("dfh_tf.gan.train", *data, "--validation_seed", "3"), 2,
               "--validation_seed needs --validation_fraction")
    _one_error(_cli("dfh_tf.gan.train", *data, "--validation_fraction", "0.1"), 2,
               f"bad data: {os.path.join(data_dir, 'train')}: validation_fraction 0.1 holds "
               "out no image")
    _one_error(_cli("dfh_tf.gan.train", *data, "--validation_fraction", "nan"), 2,
               "--validation_fraction must be a finite number")
    _one_error(_cli("dfh_tf.gan.train", *data, "--validation_fraction", "1"), 2,
               "not a number in the range [0.0, 0.9]")
    assert not os.path.exists(model_dir)
