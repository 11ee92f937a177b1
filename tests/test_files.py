"""atom_tf.files: atomic writes, JSON records read with the file named, typed records,
digests, and folders checked before any work starts."""

import json
import os

import numpy as np
import pytest

from atom_tf.errors import InvalidConfigError
from atom_tf.files import (
    DamagedFileError,
    atomic_write_json,
    check_record,
    digest_of,
    is_writable,
    read_json,
    sha256_of_arrays,
    writable_directory,
)


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "record.json"
    atomic_write_json(str(path), {"a": 1})
    atomic_write_json(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    with pytest.raises(TypeError):  # a record that cannot be written leaves the old file
        atomic_write_json(str(path), {"a": object()})
    assert json.loads(path.read_text()) == {"a": 2}
    assert sorted(os.listdir(tmp_path)) == ["record.json"]


@pytest.mark.parametrize(("content", "message"), [
    (None, "is missing"), ('{"epoch": 3', "cannot be read .*JSONDecodeError"),
    (b"\xff\xfe", "cannot be read"),
])  # fmt: skip
def test_read_json_names_the_file_in_one_line(tmp_path, content, message):
    path = tmp_path / "f.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DamagedFileError, match=message) as err:
        read_json(str(path), hint="restore it")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).endswith("restore it")


def test_check_record_types_never_take_a_boolean_for_a_number():
    fields = {"epoch": int, "rate": float, "name": str}
    assert check_record("p", {"epoch": 2, "rate": 1, "name": "x"}, fields, "h")
    for bad in ({"epoch": True, "rate": 1.0, "name": "x"}, {"epoch": 1.5, "rate": 1.0, "name": "x"},
                {"epoch": 1, "rate": "1", "name": "x"}, {"epoch": 1, "rate": 1.0, "name": 3},
                {"epoch": 1, "rate": 1.0}, [1, 2]):  # fmt: skip
        with pytest.raises(DamagedFileError, match=r"^p"):
            check_record("p", bad, fields, "h")


def test_digests_follow_content_shape_and_dtype():
    a = np.arange(6, dtype=np.uint8)
    assert sha256_of_arrays(a) == sha256_of_arrays(a.copy())
    assert sha256_of_arrays(a) != sha256_of_arrays(a.reshape(2, 3))
    assert sha256_of_arrays(a) != sha256_of_arrays(a.astype(np.int16))
    assert digest_of({"a": 1, "b": [2]}) == digest_of({"b": [2], "a": 1})
    assert digest_of({"a": 1}) != digest_of({"a": 1.5})


def test_writable_directory_refuses_what_cannot_hold_a_run(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert writable_directory(str(tmp_path / "new" / "run"), "--output_dir")
    cases = {str(afile): "is a file", str(afile / "run"): "a file is in the way",
             "/proc/atom_tf_run": "--output_dir: cannot write"}  # fmt: skip
    for path, message in cases.items():
        with pytest.raises(InvalidConfigError, match=message):
            writable_directory(path, "--output_dir")
        assert not is_writable(path)
