"""Image data loaders and uint8 <-> [-1, 1] conversions (splitdyn_cld.data)."""

import pickle
import sys

import numpy as np
import pytest
import torch

from splitdyn_cld import data

# ---------------------------------------------------------------------------------------------------------------
# CIFAR-10 (python pickle format)
# ---------------------------------------------------------------------------------------------------------------


def write_fake_cifar(root, per_batch=10, seed=0):
    """The real on-disk layout with ``per_batch`` random images in each of the six batch files."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pixels = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": pixels,
                 b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = (pixels, labels)
    return written


def test_load_cifar10_reads_the_python_format(tmp_path):
    written = write_fake_cifar(tmp_path)
    train, labels = data.load_cifar10(tmp_path, train=True, return_labels=True)
    assert train.shape == (50, 3, 32, 32) and train.dtype == torch.uint8
    assert labels.shape == (50,) and labels.dtype == torch.int64
    pixels, first_labels = written["data_batch_1"]
    # row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32
    assert train[3, 1, 5, 7].item() == pixels[3, 1024 + 5 * 32 + 7]
    np.testing.assert_array_equal(train[:10].reshape(10, -1).numpy(), pixels)
    np.testing.assert_array_equal(train[40:].reshape(10, -1).numpy(), written["data_batch_5"][0])
    assert labels[:10].tolist() == first_labels
    test = data.load_cifar10(tmp_path, train=False)
    np.testing.assert_array_equal(test.reshape(10, -1).numpy(), written["test_batch"][0])
    # the batches folder itself is accepted as root as well
    assert torch.equal(data.load_cifar10(tmp_path / "cifar-10-batches-py", train=False), test)


def test_load_cifar10_missing_data_message(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load_cifar10(tmp_path / "nowhere")
    message = str(info.value)
    assert "cifar-10-batches-py" in message and "data_batch_1" in message
    assert "cifar-10-python.tar.gz" in message and "tar xzf" in message


def test_load_cifar10_rejects_a_wrong_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"something": 1}, f)
    with pytest.raises(ValueError, match="not a CIFAR-10"):
        data.load_cifar10(tmp_path, train=False)


# ---------------------------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------------------------


def test_load_image_folder(tmp_path):
    from PIL import Image

    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    # a wide image: red | green | blue thirds; the centre crop keeps the green square
    wide = np.zeros((10, 30, 3), dtype=np.uint8)
    wide[:, :10, 0] = 255
    wide[:, 10:20, 1] = 255
    wide[:, 20:, 2] = 255
    Image.fromarray(wide).save(tmp_path / "a_wide.png")
    Image.fromarray(np.full((16, 16, 3), 77, dtype=np.uint8)).save(tmp_path / "sub" / "b_grey.PNG")
    Image.fromarray(np.full((12, 12), 200, dtype=np.uint8), mode="L").save(tmp_path / "sub" / "deeper" / "c.png")
    Image.fromarray(np.full((8, 8, 3), 128, dtype=np.uint8)).save(tmp_path / "sub" / "d.jpg", quality=95)
    (tmp_path / "notes.txt").write_text("not an image")

    images = data.load_image_folder(tmp_path, 8)
    assert images.shape == (4, 3, 8, 8) and images.dtype == torch.uint8
    green = images[0].int()
    assert (green[1] >= 250).all() and (green[0] <= 5).all() and (green[2] <= 5).all()
    assert (images[1].int() - 77).abs().max() <= 1
    # sorted path order: sub/b_grey.PNG, sub/d.jpg, sub/deeper/c.png
    assert (images[2].int() - 128).abs().max() <= 3  # JPEG
    assert (images[3].int() - 200).abs().max() <= 1  # grey scale converted to RGB
    assert data.load_image_folder(tmp_path, 4, max_images=2).shape == (2, 3, 4, 4)


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_image_folder(tmp_path / "missing", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        data.load_image_folder(tmp_path / "empty", 8)
    with pytest.raises(ValueError, match="image_size"):
        data.load_image_folder(tmp_path, 0)


# ---------------------------------------------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------------------------------------------


def test_load_digits_images():
    images = data.load_digits_images()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.uint8
    assert images.min() == 0 and images.max() == 255
    assert set(torch.unique(images).tolist()) <= {round(k * 255 / 16) for k in range(17)}
    train, train_labels = data.load_digits_images(train=True, return_labels=True)
    test, test_labels = data.load_digits_images(train=False, return_labels=True)
    assert train.shape == (1437, 1, 8, 8) and test.shape == (360, 1, 8, 8)
    assert len(train_labels) == 1437 and set(test_labels.tolist()) == set(range(10))
    assert torch.equal(data.load_digits_images(train=False), test)  # the split is deterministic
    assert torch.equal(data.load_test_uint8("digits"), test)


def test_load_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        data.load_digits_images()


# ---------------------------------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------------------------------


def test_dequantize_range_and_round_trip(generator):
    x = torch.arange(256, dtype=torch.uint8).repeat(2000)
    y = data.dequantize(x, generator=generator)
    assert y.dtype == torch.float32
    assert y.min() >= -1 and y.max() < 1
    assert torch.equal(data.to_uint8(y), x)
    # each level fills its bin [k/128 - 1, (k+1)/128 - 1) uniformly: mean at the bin centre
    means = y.reshape(2000, 256).mean(0)
    centres = (torch.arange(256) + 0.5) / 128 - 1
    assert (means - centres).abs().max() < 5 * (1 / 128) / (12 * 2000) ** 0.5
    # float64 and generator determinism
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(data.dequantize(x, g1, dtype=torch.float64), data.dequantize(x, g2, dtype=torch.float64))
    assert torch.equal(data.to_uint8(data.dequantize(x, dtype=torch.float64)), x)


def test_dequantize_round_trip_in_low_precision():
    # rounding to a coarse dtype would push values near the top of a bin onto the next level
    x = torch.arange(256, dtype=torch.uint8).repeat(200)
    for dtype in (torch.bfloat16, torch.float16):
        y = data.dequantize(x, dtype=dtype)
        assert y.dtype == dtype and torch.equal(data.to_uint8(y), x)


def test_to_float_and_to_uint8():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    y = data.to_float(x)
    assert y.dtype == torch.float32 and y.min() == -1 and y.max() == 1
    assert torch.equal(data.to_uint8(y), x)
    clipped = data.to_uint8(torch.tensor([-3.0, 1.0, 5.0, float("nan")]))
    assert clipped.tolist() == [0, 255, 255, 0]
    with pytest.raises(TypeError):
        data.dequantize(torch.zeros(3))
    with pytest.raises(TypeError):
        data.to_uint8(torch.zeros(3, dtype=torch.uint8))


def test_bits_per_dim_offset():
    assert data.bits_per_dim_offset() == 7.0
    assert data.bits_per_dim_offset(2) == 0.0
    d = 3 * 32 * 32
    assert data.nats_to_bits_per_dim(d * np.log(2), d) == pytest.approx(8.0)
    with pytest.raises(ValueError):
        data.bits_per_dim_offset(1)


# ---------------------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------------------


def test_image_dataset():
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    images[:, :, :, 0] = 255  # left column white
    ds = data.ImageDataset(images)
    assert len(ds) == 4 and ds.image_shape == (1, 2, 2)
    item = ds[0]
    assert item.dtype == torch.float32 and item[0, :, 0].tolist() == [1, 1] and item[0, :, 1].tolist() == [-1, -1]
    torch.manual_seed(0)
    flipping = data.ImageDataset(images, random_flip=True)
    lefts = {flipping[i % 4][0, 0, 0].item() for i in range(64)}
    assert lefts == {-1.0, 1.0}
    noisy = data.ImageDataset(images, dequantize=True, labels=torch.arange(4))
    x, label = noisy[2]
    assert label == 2 and torch.equal(data.to_uint8(x), images[2])
    with pytest.raises(TypeError):
        data.ImageDataset(images.float())
    with pytest.raises(ValueError):
        data.ImageDataset(images[0])


def test_load_uint8_dispatch(tmp_path):
    write_fake_cifar(tmp_path, per_batch=2)
    assert data.load_uint8("cifar10", tmp_path).shape == (10, 3, 32, 32)
    assert data.load_test_uint8("cifar10", tmp_path).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="root"):
        data.load_uint8("cifar10")
    with pytest.raises(ValueError, match="dataset must be"):
        data.load_uint8("mnist")


# ---------------------------------------------------------------------------------------------------------------
# Corrupt files
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, problem", [(b"\x80\x04junk that is no pickle" * 10, "cannot be unpickled"),
                                              (b"", "empty")])
def test_a_junk_cifar10_batch_is_named_with_the_problem(tmp_path, content, problem):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(content)
    with pytest.raises(data.DataFileError, match=problem) as info:
        data.load_cifar10(tmp_path, train=False)
    assert str(folder / "test_batch") in str(info.value)


def test_a_truncated_png_in_an_image_folder_is_named(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((16, 16, 3), 10, dtype=np.uint8)).save(tmp_path / "a_good.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    full = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(full[: len(full) // 2])
    with pytest.raises(data.DataFileError, match=r"cannot read the image .*b\.png"):
        data.load_image_folder(tmp_path, 8)
    (tmp_path / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(data.DataFileError, match=r"b\.png"):
        data.load_image_folder(tmp_path, 8)
