"""Loading weights: local files, URLs (served on loopback), ImageNet backbones, mismatches."""
from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import paddle
import pytest

from models import build_model
from models import MODELS
from models.family import WeightsSource
from models.weights import load_pretrained
from utils.errors import UserError


@pytest.fixture(scope="module")
def r18() -> paddle.nn.Layer:
    paddle.seed(0)
    model = build_model("resnet18", num_classes=4, num_heads=2, lam=0.3)
    model.eval()
    return model


def _save(state: dict, path: Path) -> Path:
    paddle.save(state, str(path))
    return path


def _logits(model: paddle.nn.Layer, seed: int = 0) -> np.ndarray:
    paddle.seed(seed)
    x = paddle.rand([2, 3, 64, 64])
    model.eval()
    with paddle.no_grad():
        return model(x).numpy()


def test_roundtrip_through_pdparams(r18, tmp_path: Path) -> None:
    path = _save(r18.state_dict(), tmp_path / "w.pdparams")
    fresh = build_model("resnet18", num_classes=4, num_heads=2, lam=0.3, pretrained=str(path))
    np.testing.assert_allclose(_logits(fresh), _logits(r18), rtol=1e-6)


def test_imagenet_backbone_loads_with_fresh_classifier(r18, tmp_path: Path, caplog) -> None:
    state = {k: v for k, v in r18.state_dict().items() if not k.startswith("classifier.")}
    state["fc.weight"] = paddle.zeros([512, 1000])
    state["fc.bias"] = paddle.zeros([1000])
    path = _save(state, tmp_path / "imagenet.pdparams")
    model = build_model("resnet18", num_classes=4, num_heads=2, lam=0.3)
    report = load_pretrained(model, str(path))
    assert report.dropped == ["fc.weight", "fc.bias"]
    assert report.fresh == ["classifier.multi_head.0.head.weight", "classifier.multi_head.1.head.weight"]
    np.testing.assert_array_equal(model.layer4[1].bn2._mean.numpy(), r18.layer4[1].bn2._mean.numpy())


def test_checkpoint_for_another_model_is_refused(tmp_path: Path) -> None:
    other = build_model("resnet34", num_classes=4)
    path = _save(other.state_dict(), tmp_path / "r34.pdparams")
    model = build_model("resnet18", num_classes=4)
    with pytest.raises(UserError) as err:
        load_pretrained(model, str(path))
    msg = str(err.value)
    assert "r34.pdparams" in msg and "layer1.2.conv1.weight" in msg and "--model" in msg


def test_wrong_class_count_names_the_classifier(r18, tmp_path: Path) -> None:
    path = _save(r18.state_dict(), tmp_path / "w.pdparams")
    model = build_model("resnet18", num_classes=7, num_heads=2, lam=0.3)
    with pytest.raises(UserError, match=r"classifier\.multi_head\.0\.head\.weight: checkpoint \[4, 512, 1, 1\] vs model \[7, 512, 1, 1\]"):
        load_pretrained(model, str(path))


def test_wrong_head_count_is_refused(r18, tmp_path: Path) -> None:
    path = _save(r18.state_dict(), tmp_path / "w.pdparams")
    model = build_model("resnet18", num_classes=4, num_heads=1)
    with pytest.raises(UserError, match="classifier.multi_head.1.head.weight"):
        load_pretrained(model, str(path))


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    model = build_model("resnet18", num_classes=4)
    with pytest.raises(UserError, match="not found"):
        load_pretrained(model, str(tmp_path / "nope.pdparams"))
    junk = tmp_path / "junk.pdparams"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError, match="junk.pdparams"):
        load_pretrained(model, str(junk))


class _Server:
    """Serve one folder on 127.0.0.1 and count the GET requests."""

    def __init__(self, folder: Path) -> None:
        self.count = 0
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(folder), **kw)

            def do_GET(self):  # noqa: N802
                outer.count += 1
                super().do_GET()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def server(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CSRA_WEIGHTS_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    srv = _Server(served)
    yield srv, served
    srv.close()


def test_url_is_downloaded_once_into_the_cache(r18, server, tmp_path: Path) -> None:
    srv, served = server
    _save(r18.state_dict(), served / "csra_r18.pdparams")
    url = f"{srv.url}/csra_r18.pdparams"
    for _ in range(2):
        model = build_model("resnet18", num_classes=4, num_heads=2, lam=0.3, pretrained=url)
        np.testing.assert_allclose(_logits(model), _logits(r18), rtol=1e-6)
    assert srv.count == 1
    assert (tmp_path / "cache" / "csra_r18.pdparams").is_file()


def test_imagenet_uses_the_md5_checked_official_entry(r18, server, monkeypatch) -> None:
    srv, served = server
    state = {k: v for k, v in r18.state_dict().items() if not k.startswith("classifier.")}
    path = _save(state, served / "resnet18.pdparams")
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    assert MODELS.get("resnet18").weights["imagenet"].url == "https://paddle-hapi.bj.bcebos.com/models/resnet18.pdparams"
    monkeypatch.setitem(MODELS.get("resnet18").weights, "imagenet", WeightsSource(f"{srv.url}/resnet18.pdparams", md5))
    model = build_model("resnet18", num_classes=4, num_heads=2, lam=0.3, pretrained="imagenet")
    np.testing.assert_array_equal(model.conv1.weight.numpy(), r18.conv1.weight.numpy())


def test_md5_mismatch_is_an_error(r18, server, monkeypatch) -> None:
    srv, served = server
    _save(r18.state_dict(), served / "resnet18.pdparams")
    monkeypatch.setitem(MODELS.get("resnet18").weights, "imagenet", WeightsSource(f"{srv.url}/resnet18.pdparams", "0" * 32))
    monkeypatch.setattr("time.sleep", lambda s: None)
    with pytest.raises(UserError, match="could not download"):
        build_model("resnet18", num_classes=4, pretrained="imagenet")


def test_sha256_prefix_is_checked_on_every_use(r18, server, tmp_path: Path, monkeypatch) -> None:
    """Releases without an md5 (timm's ViTs) are checked by the sha256 prefix their names carry."""
    srv, served = server
    path = _save({k: v for k, v in r18.state_dict().items() if not k.startswith("classifier.")}, served / "resnet18.pdparams")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert MODELS.get("vit_b16").weights["imagenet"].sha256_prefix == "80ecf9dd"  # from the file name
    monkeypatch.setitem(MODELS.get("resnet18").weights, "imagenet",
                        WeightsSource(f"{srv.url}/resnet18.pdparams", sha256_prefix=digest[:8]))
    model = build_model("resnet18", num_classes=4, num_heads=2, lam=0.3, pretrained="imagenet")
    np.testing.assert_array_equal(model.conv1.weight.numpy(), r18.conv1.weight.numpy())
    cached = tmp_path / "cache" / "resnet18.pdparams"
    damaged = bytearray(cached.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # the cached copy is damaged afterwards
    cached.write_bytes(bytes(damaged))
    with pytest.raises(UserError, match=r"resnet18.pdparams .*sha256 .*not the expected " + digest[:8] + r".*deleted"):
        build_model("resnet18", num_classes=4, pretrained="imagenet")
    assert not cached.exists() and srv.count == 1
    build_model("resnet18", num_classes=4, pretrained="imagenet")  # downloaded anew, and right
    assert srv.count == 2
