"""Image evaluation: the Fréchet distance, the digits feature space, and clear errors for missing FID inputs.

Budget (with tests/test_image_training.py): < 120 s on 2 cores.
"""

import importlib.util
import math

import pytest
import torch

from splitdyn_cld.evaluation import (
    DigitsClassifier,
    FeatureStatistics,
    InceptionWeightsMissingError,
    feature_statistics,
    frechet_distance,
    inception_feature_extractor,
    load_digits_classifier,
    save_digits_classifier,
)

from _scripts import load_example


def _stats(mean, covariance):
    return FeatureStatistics(torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(covariance, dtype=torch.float64), 0)


def _random_spd(d, generator):
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_distance_of_identical_statistics_is_zero(generator):
    s = _stats(torch.randn(6, generator=generator, dtype=torch.float64), _random_spd(6, generator))
    assert frechet_distance(s, s) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_diagonal_gaussians_has_the_closed_form(generator):
    m1, m2 = torch.randn(5, generator=generator, dtype=torch.float64), torch.randn(5, generator=generator, dtype=torch.float64)
    v1, v2 = torch.rand(5, generator=generator, dtype=torch.float64) + 0.1, torch.rand(5, generator=generator, dtype=torch.float64) + 0.1
    expected = ((m1 - m2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum()
    assert frechet_distance(_stats(m1, torch.diag(v1)), _stats(m2, torch.diag(v2))) == pytest.approx(float(expected), rel=1e-10)


def test_frechet_distance_matches_the_matrix_square_root_formula_for_noncommuting_covariances(generator):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    s1, s2 = _random_spd(7, generator), _random_spd(7, generator)
    m1, m2 = torch.randn(7, generator=generator, dtype=torch.float64), torch.randn(7, generator=generator, dtype=torch.float64)
    assert not torch.allclose(s1 @ s2, s2 @ s1)
    covmean = scipy_linalg.sqrtm((s1 @ s2).numpy()).real
    expected = float(((m1 - m2) ** 2).sum() + torch.trace(s1) + torch.trace(s2)) - 2 * covmean.trace()
    assert frechet_distance(_stats(m1, s1), _stats(m2, s2)) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_is_invariant_to_a_rotation_of_the_features(generator):
    a = torch.randn(300, 4, generator=generator, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    b = torch.randn(300, 4, generator=generator, dtype=torch.float64) + 0.3
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=generator, dtype=torch.float64))
    assert frechet_distance(a @ q, b @ q) == pytest.approx(frechet_distance(a, b), rel=1e-9)


def test_feature_statistics_save_and_load_round_trip(tmp_path, generator):
    stats = feature_statistics(torch.randn(50, 3, generator=generator))
    stats.save(tmp_path / "ref.npz")
    loaded = FeatureStatistics.load(tmp_path / "ref.npz")
    assert torch.equal(loaded.mean, stats.mean) and torch.equal(loaded.covariance, stats.covariance) and loaded.n == 50


def test_digits_classifier_round_trips_through_its_file_and_missing_file_names_the_trainer(tmp_path, generator):
    torch.manual_seed(0)
    model = DigitsClassifier(width=8).eval()
    x = torch.rand(5, 1, 8, 8, generator=generator) * 2 - 1
    save_digits_classifier(tmp_path / "clf.pt", model, test_accuracy=0.5)
    loaded = load_digits_classifier(tmp_path / "clf.pt")
    assert torch.equal(loaded.features(x), model.features(x)) and loaded.features(x).shape == (5, 16)
    assert loaded.metadata["test_accuracy"] == 0.5
    with pytest.raises(FileNotFoundError, match="train_digits_classifier.py"):
        load_digits_classifier(tmp_path / "missing.pt")


def test_missing_inception_weights_error_names_the_flag_and_the_file(tmp_path):
    with pytest.raises(InceptionWeightsMissingError, match="--inception-weights") as info:
        inception_feature_extractor(None)
    assert "inception-2015-12-05" in str(info.value)
    with pytest.raises(InceptionWeightsMissingError, match="not found: .*nowhere.pth"):
        inception_feature_extractor(tmp_path / "nowhere.pth")


def test_fid_without_a_backend_says_what_to_install(tmp_path):
    if importlib.util.find_spec("torchmetrics") or importlib.util.find_spec("cleanfid"):
        pytest.skip("an FID backend is installed")
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"not really weights")
    with pytest.raises(ImportError, match="pip install"):
        inception_feature_extractor(weights)


def test_evaluate_cli_without_inception_weights_fails_early_naming_the_flag(tmp_path, capsys):
    cli = load_example("evaluate_images")
    assert cli.main(["--checkpoint", str(tmp_path / "no-checkpoint-needed"), "--metric", "fid"]) == 2
    err = capsys.readouterr().err
    assert "--inception-weights" in err and "inception-2015-12-05" in err


def test_evaluate_cli_reports_digits_frechet_distance_per_sampler_and_nfe_and_the_nll(tmp_path, monkeypatch):
    from splitdyn_cld.image_training import settings_for, train

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    train(settings_for("tiny", out=str(tmp_path / "run"), steps=1, progress=False, tensorboard=False, device="cpu"))
    torch.manual_seed(0)
    save_digits_classifier(tmp_path / "clf.pt", DigitsClassifier(width=8))
    cli = load_example("evaluate_images")
    out = tmp_path / "eval.json"
    assert cli.main(["--checkpoint", str(tmp_path / "run"), "--dataset", "digits", "--metric", "digits-fd", "nll",
                     "--classifier", str(tmp_path / "clf.pt"), "--samplers", "sscs", "em", "--nfe", "3", "5",
                     "--num-samples", "20", "--nll-count", "2", "--nll-rtol", "1e-2", "--nll-atol", "1e-2",
                     "--device", "cpu", "--no-progress", "--json", str(out)]) == 0
    import json

    results = json.loads(out.read_text())
    assert [(r["sampler"], r["nfe"]) for r in results["rows"]] == [("sscs", 3), ("sscs", 5), ("em", 3), ("em", 5)]
    assert all(math.isfinite(r["digits_fd"]) and r["digits_fd"] >= 0 for r in results["rows"])
    assert results["digits_fd_real_test_vs_train"]["n_test"] == 360
    assert results["nll"]["count"] == 2 and math.isfinite(results["nll"]["bits_per_dim"])
