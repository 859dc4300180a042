"""musicnn backbone: the PyPI wheel's TF 1 checkpoint → ONNX, checked against TensorFlow on real audio.

Needs the ``train`` extra (TensorFlow, tf2onnx, onnx), the musicnn 0.1.0 wheel (downloaded
once by pip into ``$GENRESTREAM_CACHE``, default ``~/.cache/genrestream``; the tests skip if
it cannot be) and the shared clips (``audio/gtzan-parity``, ``audio/free``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import FREE_AUDIO, PARITY_AUDIO, REPO, free_port

pytestmark = pytest.mark.slow

pytest.importorskip("tensorflow", reason="the musicnn export needs TensorFlow (pip install genrestream[train])")
pytest.importorskip("tf2onnx", reason="the musicnn export needs tf2onnx (pip install genrestream[train])")
onnx = pytest.importorskip("onnx", reason="the musicnn export needs onnx (pip install genrestream[train])")
ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is a serving dependency of genrestream")

from export import musicnn

TAGS_TOLERANCE = 1e-4  # |ORT - TF| of a probability; measured 1.2e-6 on 289 patches (TF 2.21, ORT 1.31)
EMBEDDING_TOLERANCE = 1e-3  # values up to about 4.3; measured 6.3e-6
HEAVY = ("metal", "heavy metal", "hard rock", "punk")

CLIPS = {
    "metal": PARITY_AUDIO / "metal.00000.wav",
    "classical": PARITY_AUDIO / "classical.00000.wav",
    "jazz": PARITY_AUDIO / "jazz.00000.wav",
    "metal_free": FREE_AUDIO / "metal_el_senator_chaos_god.ogg",
    "classical_free": FREE_AUDIO / "classical_brahms_hungarian_dance_5.ogg",
}


@pytest.fixture(scope="module")
def wheel():
    try:
        return musicnn.fetch_wheel()
    except musicnn.WheelError as error:
        pytest.skip(f"musicnn wheel not available (pip download musicnn==0.1.0 failed): {error}")


@pytest.fixture(scope="module")
def patches():
    missing = [str(p) for p in CLIPS.values() if not p.is_file()]
    if missing:
        pytest.skip(f"shared clips not found: {missing} (set GENRESTREAM_SHARED)")
    return {name: musicnn.patches_from_file(path) for name, path in CLIPS.items()}


@pytest.fixture(scope="module")
def all_patches(patches):
    return np.concatenate(list(patches.values()))


@pytest.fixture(scope="module")
def checkpoint(wheel):
    return musicnn.load_checkpoint("MSD_musicnn", wheel)


@pytest.fixture(scope="module")
def backbone(checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("musicnn") / "msd_musicnn.onnx"
    out, parity = musicnn.write_backbone(path, checkpoint)
    assert parity is None and out == path
    return path


# --- the wheel --------------------------------------------------------------------------------


def test_wheel_is_the_pinned_file(wheel, tmp_path):
    assert wheel.name == "musicnn-0.1.0-py3-none-any.whl"
    assert musicnn.sha256_file(wheel) == musicnn.WHEEL_SHA256
    damaged = tmp_path / wheel.name
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(musicnn.WheelError, match="sha256"):
        musicnn.verify_wheel(damaged)
    with pytest.raises(FileNotFoundError):
        musicnn.verify_wheel(tmp_path / "nothing.whl")


def test_fetch_wheel_reuses_the_cache_and_replaces_a_damaged_wheel(wheel, tmp_path):
    cached = tmp_path / wheel.name
    shutil.copyfile(wheel, cached)
    stamp = cached.stat().st_mtime_ns
    assert musicnn.fetch_wheel(tmp_path) == cached
    assert cached.stat().st_mtime_ns == stamp  # reused, not downloaded again
    cached.write_bytes(b"not a wheel")
    assert musicnn.fetch_wheel(tmp_path) == cached  # downloaded again (pip, the package index)
    assert musicnn.sha256_file(cached) == musicnn.WHEEL_SHA256
    assert sorted(p.name for p in tmp_path.iterdir()) == [wheel.name]


def test_fetch_wheel_without_an_index_says_so(tmp_path, monkeypatch):
    # pip with no configuration, pointed at a closed loopback port: what "no network" looks like.
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{free_port()}/simple")
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(musicnn.WheelError, match="pip download musicnn==0.1.0 failed"):
        musicnn.fetch_wheel(tmp_path / "cache", timeout_s=120)
    assert list((tmp_path / "cache").iterdir()) == []  # no partial download left behind


# --- the checkpoint ---------------------------------------------------------------------------


def test_checkpoint_is_read_and_frozen(checkpoint):
    assert checkpoint.n_variables == 64
    assert len(checkpoint.labels) == 50 and checkpoint.labels[:3] == ("rock", "pop", "alternative")
    assert {"metal", "heavy metal", "jazz", "blues", "country"} <= set(checkpoint.labels)
    assert "Universitat Pompeu Fabra" in checkpoint.licence and "Permission to use, copy, modify" in checkpoint.licence
    ops = {n.op for n in checkpoint.graph_def.node}
    assert not ops & {"Switch", "Merge", "VariableV2", "RandomUniform"}, ops
    assert [n.name for n in checkpoint.graph_def.node if n.op == "Placeholder"] == ["model/Placeholder"]
    # The reference graph still has musicnn's conditionals and its is_training placeholder.
    assert {"Switch", "Merge"} <= {n.op for n in checkpoint.reference_graph_def.node}


def test_read_checkpoint_rejects_unknown_models(wheel):
    with pytest.raises(ValueError, match="MSD_vgg"):
        musicnn.read_checkpoint(wheel, "MSD_vgg")


def test_frozen_graph_matches_the_reference_and_is_training_matters(checkpoint, all_patches):
    reference = musicnn.tf_predict(all_patches, checkpoint)
    frozen = musicnn.tf_predict(all_patches, checkpoint, graph="frozen")
    assert reference["tags"].shape == (len(all_patches), 50)
    assert reference["embedding"].shape == (len(all_patches), 200)
    assert np.all(np.isfinite(reference["tags"])) and np.all(np.isfinite(reference["embedding"]))
    np.testing.assert_allclose(frozen["tags"], reference["tags"], atol=1e-5)
    np.testing.assert_allclose(frozen["embedding"], reference["embedding"], atol=1e-4)
    np.testing.assert_allclose(reference["tags"], 1 / (1 + np.exp(-reference["logits"].astype(np.float64))),
                               atol=1e-6)
    # Fed True, batch statistics replace the moving averages and dropout drops units.
    training = musicnn.tf_predict(all_patches, checkpoint, is_training=True)
    assert np.max(np.abs(training["tags"] - reference["tags"])) > 0.05


# --- the ONNX backbone ------------------------------------------------------------------------


def test_onnx_contract_and_dynamic_batch(backbone, all_patches):
    model = onnx.load(str(backbone))
    onnx.checker.check_model(model)
    assert len(model.graph.node) < 100  # the training graph's 2896 nodes are gone
    assert not {n.op_type for n in model.graph.node} & {"If", "Loop", "RandomUniform", "RandomUniformLike"}
    assert all(not n.name.startswith("model/") for n in [*model.graph.node, *model.graph.initializer])
    session = ort.InferenceSession(str(backbone), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape) == ("logmel", "tensor(float)", ["batch", 187, 96])
    assert [(o.name, o.type, o.shape) for o in session.get_outputs()] == [
        ("tags", "tensor(float)", ["batch", 50]),
        ("embedding", "tensor(float)", ["batch", 200]),
    ]
    tiled = np.concatenate([all_patches, all_patches])
    for n in (1, 3, 64):
        tags, embedding = session.run(None, {"logmel": tiled[:n]})
        assert tags.shape == (n, 50) and embedding.shape == (n, 200)
        assert tags.dtype == np.float32 and np.all((tags >= 0) & (tags <= 1))
    # A patch's outputs do not depend on the others in its batch.
    one = session.run(None, {"logmel": all_patches[5:6]})[0]
    np.testing.assert_allclose(session.run(None, {"logmel": tiled[:64]})[0][5:6], one, atol=1e-6)


def test_onnx_matches_tensorflow_on_real_patches(backbone, checkpoint, all_patches, tmp_path):
    parity = musicnn.check_parity(backbone, all_patches, checkpoint)
    assert parity["n_patches"] == len(all_patches) >= 60
    assert sorted(parity["by_batch"]) == [1, 7, 64]
    assert parity["tf_finite"] and parity["ort_finite"]
    assert parity["tags"] <= TAGS_TOLERANCE, parity
    assert parity["embedding"] <= EMBEDDING_TOLERANCE, parity
    # The comparison catches a wrong weight.
    model = onnx.load(str(backbone))
    bias = next(i for i in model.graph.initializer if i.name == "dense_1/bias")
    value = onnx.numpy_helper.to_array(bias).copy()
    value[0] += 0.05
    bias.CopyFrom(onnx.numpy_helper.from_array(value, bias.name))
    onnx.save_model(model, tmp_path / "perturbed.onnx")
    assert musicnn.check_parity(tmp_path / "perturbed.onnx", all_patches[:8], checkpoint, (8,))["tags"] > TAGS_TOLERANCE


def test_top_tags_are_musically_sensible(backbone, checkpoint, patches):
    session = musicnn.ort_session(backbone)
    mean = {name: dict(zip(checkpoint.labels, musicnn.ort_predict(session, p)["tags"].mean(axis=0)))
            for name, p in patches.items()}
    top = {name: [t for t, _ in musicnn.top_tags(musicnn.ort_predict(session, p)["tags"], checkpoint.labels, 5)]
           for name, p in patches.items()}
    for name in ("metal", "metal_free"):
        assert top[name][0] == "metal" and "heavy metal" in top[name][:3], top[name]
        assert mean[name]["metal"] > 0.25
    assert top["jazz"][0] == "jazz", top["jazz"]
    # The MSD tags have no "classical": orchestral music comes out "instrumental" (and "jazz"), not heavy.
    for name in ("classical", "classical_free"):
        assert "instrumental" in top[name][:3], top[name]
        assert all(mean[name][t] < 0.05 for t in HEAVY), {t: mean[name][t] for t in HEAVY}


def test_mtt_checkpoint_tags_classical_music(wheel, patches, tmp_path):
    checkpoint = musicnn.load_checkpoint("MTT_musicnn", wheel)
    assert "classical" in checkpoint.labels and "jazz" not in checkpoint.labels
    path, parity = musicnn.write_backbone(tmp_path / "mtt.onnx", checkpoint, opset=13,
                                          verify_patches=patches["classical"])
    assert parity["tags"] <= TAGS_TOLERANCE
    for name in ("classical", "classical_free"):
        top = musicnn.top_tags(musicnn.ort_predict(path, patches[name])["tags"], checkpoint.labels, 3)
        assert top[0][0] == "classical", top


# --- the front end and the command line -------------------------------------------------------


def test_serving_logmel_is_finite_where_musicnns_float16_cast_overflows():
    from stream.frontends import logmel

    t = np.arange(3 * musicnn.SAMPLE_RATE) / musicnn.SAMPLE_RATE
    y = np.sign(np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # full-scale square wave
    S = logmel.log_mel(y)
    assert S.dtype == np.float32 and np.all(np.isfinite(S))
    import librosa

    power = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=256, n_mels=96, center=False).T
    with np.errstate(over="ignore"):
        assert not np.all(np.isfinite(np.log10(10000 * power.astype(np.float16) + 1)))  # musicnn's cast
    np.testing.assert_allclose(S, np.log10(10000 * power.astype(np.float64) + 1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="patches"):
        musicnn.ort_predict("unused.onnx", np.zeros((2, 100, 96), np.float32))


def test_command_line_writes_a_verified_backbone(wheel, tmp_path):
    if not CLIPS["metal"].is_file():
        pytest.skip(f"{CLIPS['metal']} not found (set GENRESTREAM_SHARED)")
    out = tmp_path / "backbone.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "export.musicnn", "--out", str(out), "--audio", str(CLIPS["metal"]),
         "--cache-dir", str(wheel.parent), "--no-timing"],
        check=False, capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file() and "parity ONNX Runtime vs TensorFlow on 10 patches" in proc.stdout
    assert "metal.00000.wav" in proc.stdout and " metal " in proc.stdout
