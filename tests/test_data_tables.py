"""Your own data: Dataset.from_arrays (splits, per-feature standardization, every bad input one
DatasetError line) and load_file (.npz and .csv), checked against values computed here by hand."""

import numpy as np
import pytest

from jaxmlp.data import Dataset, DatasetError, Standardizer, load_file, normalizer_from_dict


def blobs(n=200, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, features)) * np.geomspace(1, 1000, features) + 5 * y[:, None]
    return x, y


def test_from_arrays_splits_and_standardizes_with_the_training_statistics_only():
    x, y = blobs()
    ds = Dataset.from_arrays(x[:150], y[:150], x[150:], y[150:], dev_size=30, seed=4)
    assert (ds.x_train.shape, ds.x_dev.shape, ds.x_test.shape, ds.num_classes) == ((120, 5), (30, 5), (50, 5), 3)
    # the same split written out here: split_train_dev's seeded permutation, the last 30 to dev
    perm = np.random.default_rng(4).permutation(150)
    raw_train = x[:150][perm[:120]]
    mean, std = raw_train.mean(0), raw_train.std(0)
    np.testing.assert_allclose(ds.x_train, (raw_train - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, (x[150:] - mean) / std, rtol=1e-5, atol=1e-5)
    assert ds.y_dev.tolist() == y[:150][perm[120:]].tolist() and ds.y_test.tolist() == y[150:].tolist()
    assert isinstance(ds.normalizer, Standardizer) and normalizer_from_dict(ds.normalizer._asdict()) == ds.normalizer


def test_without_test_arrays_a_tenth_is_held_out_disjoint_from_train_and_dev():
    x, y = blobs(n=300)
    x = np.column_stack([x, np.arange(300)])  # an id column, to see where every example went
    ds = Dataset.from_arrays(x, y, seed=1)
    ids = [
        np.rint(split[:, -1] * ds.normalizer.std[-1] + ds.normalizer.mean[-1]).astype(int)
        for split in (ds.x_train, ds.x_dev, ds.x_test)
    ]
    assert [len(i) for i in ids] == [243, 27, 30]  # test 300 // 10, then dev 270 // 10
    assert sorted(np.concatenate(ids).tolist()) == list(range(300))  # each example in exactly one split
    assert Dataset.from_arrays(x, y, dev_size=0, seed=1).x_dev.shape == (0, 6)


def test_a_constant_feature_is_centred_not_divided_by_zero():
    x, y = blobs()
    x[:, 2] = 7.0
    ds = Dataset.from_arrays(x, y)
    assert np.all(ds.x_train[:, 2] == 0) and ds.normalizer.std[2] == 1.0


BAD = [  # (what is wrong, arrays and options, the one line)
    ("features not 2-D", dict(x_train=np.zeros(10), y_train=np.zeros(10)), "expected a non-empty .examples, features"),
    ("no examples", dict(x_train=np.zeros((0, 3)), y_train=np.zeros(0)), "expected a non-empty"),
    ("labels of another length", dict(y_train=np.zeros(199)), "expected 200 labels, one per example"),
    ("labels not integers", dict(y_train=np.full(200, 0.5)), "expected integer class labels 0, 1, …, found 0.5"),
    ("labels as text", dict(y_train=np.array(["a"] * 200)), "expected integer class labels, got dtype <U1"),
    ("a negative label", dict(y_train=np.r_[-1, np.arange(199) % 3]), "class labels start at 0, found -1"),
    (
        "a label equal to num_classes",
        dict(y_train=np.r_[3, np.arange(199) % 3], num_classes=3),
        r"label 3 is outside 0\.\.2 \(3 classes\)",
    ),
    ("a NaN feature", dict(nan=(7, 2)), r"1 NaN or infinite values \(the first at example 7, feature 2\)"),
    ("an infinite feature", dict(inf=(0, 0)), "NaN or infinite values"),
    (
        "test features of another width",
        dict(x_test=np.zeros((10, 4)), y_test=np.zeros(10)),
        "test features: 4 columns, training has 5",
    ),
    ("x_test without y_test", dict(x_test=np.zeros((10, 5))), "give x_test and y_test together"),
    ("an empty test split", dict(x_test=np.zeros((0, 5)), y_test=np.zeros(0)), "test features: expected a non-empty"),
    ("a test size as large as the data", dict(test_size=200), r"test size 200 must be in \[1, 199\]"),
    ("a dev split that leaves no training example", dict(dev_size=180), r"dev size 180 must be in \[0, 179\]"),
    (
        "a class with no training example",
        dict(y_train=np.where(np.arange(200) % 3 == 1, 2, np.arange(200) % 3)),
        "class 1 has no training example",
    ),
    ("one class only", dict(y_train=np.zeros(200)), "at least 2 classes"),
    ("complex features", dict(x_train=np.ones((200, 5)) * 1j), "expected real numbers"),
]


@pytest.mark.parametrize("what, change, message", BAD, ids=[b[0] for b in BAD])
def test_every_bad_input_is_one_line_naming_it(what, change, message):
    x, y = blobs()
    kw = dict(x_train=x, y_train=y)
    change = dict(change)
    for key, value in (("nan", np.nan), ("inf", np.inf)):
        if key in change:
            x = x.copy()
            x[change.pop(key)] = value
            kw["x_train"] = x
    kw.update(change)
    with pytest.raises(DatasetError, match=message) as e:
        Dataset.from_arrays(kw.pop("x_train"), kw.pop("y_train"), kw.pop("x_test", None), kw.pop("y_test", None), **kw)
    assert "\n" not in str(e.value)


def test_npz_and_csv_files_give_the_same_dataset_as_their_arrays(tmp_path):
    x, y = blobs(n=120, features=3)
    np.savez(tmp_path / "d.npz", x_train=x[:100], y_train=y[:100], x_test=x[100:], y_test=y[100:])
    from_npz = load_file(tmp_path / "d.npz", dev_size=20, seed=2)
    direct = Dataset.from_arrays(x[:100], y[:100], x[100:], y[100:], dev_size=20, seed=2)
    for a, b in zip(from_npz[1:], direct[1:]):
        np.testing.assert_array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
    # a CSV whose label column sits between features, float text as written by a spreadsheet
    lines = ["a,b,label,c"] + [f"{float(r[0])!r},{float(r[1])!r},{int(c)},{float(r[2])!r}" for r, c in zip(x, y)] + [""]
    (tmp_path / "d.csv").write_text("\n".join(lines))
    from_csv = load_file(tmp_path / "d.csv", dev_size=20, seed=2)
    held = Dataset.from_arrays(x, y, dev_size=20, seed=2)
    np.testing.assert_array_equal(from_csv.x_train, held.x_train)
    np.testing.assert_array_equal(from_csv.y_test, held.y_test)
    assert from_csv.name == str(tmp_path / "d.csv")


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("d.csv", "", "empty file"),
        ("d.csv", "a,b,y\n1,2,0\n", "no column named 'label'"),
        ("d.csv", "a,label\n1,0\n2\n", "line 3: 1 fields, the header has 2"),
        ("d.csv", "a,label\n1,0\nx,1\n", "every field must be a number"),
        ("d.txt", "1,2", "expected a .npz or .csv file, got .txt"),
        ("d.npz", "not a zip", "not a readable .npz file"),
    ],
)
def test_unreadable_files_are_one_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError, match=message):
        load_file(tmp_path / name)
    with pytest.raises(DatasetError, match="no such file"):
        load_file(tmp_path / "missing.csv")


def test_an_npz_without_x_train_names_what_it_holds(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 2)), labels=np.zeros(3))
    with pytest.raises(DatasetError, match="no array named x_train or y_train .*; it holds images, labels"):
        load_file(tmp_path / "d.npz")
