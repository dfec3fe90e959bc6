"""NIfTI reading and atomic writing: geometry kept exactly, stored values never altered."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mmseg_robust.data.nifti_io import ImageGeometry, ImageReadError, read_header, read_image, write_image_atomic

OBLIQUE = ImageGeometry(size=(7, 6, 5), spacing=(0.8, 1.1, 3.0), origin=(-12.5, 30.0, 4.25),
                        direction=(0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))


def test_round_trip_keeps_values_and_geometry(tmp_path):
    array = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    path = write_image_atomic(array, OBLIQUE, tmp_path / "x.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]
    voxels, geometry = read_image(path)
    assert voxels.dtype == np.int16
    np.testing.assert_array_equal(voxels, array)
    assert read_header(path).geometry.mismatches(OBLIQUE, 1e-6) == []
    assert geometry == read_header(path).geometry
    # The same array as SimpleITK gives, for an oblique, anisotropic, non-RAS file.
    np.testing.assert_array_equal(voxels, sitk.GetArrayFromImage(sitk.ReadImage(str(path))))


def test_scaled_nifti_from_another_writer_matches_simpleitk(tmp_path):
    data = np.random.default_rng(0).integers(0, 1000, (9, 8, 7)).astype(np.int16)
    image = nib.Nifti1Image(data, np.diag([-1.2, 0.9, 2.0, 1.0]))
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, tmp_path / "scaled.nii.gz")
    voxels, geometry = read_image(tmp_path / "scaled.nii.gz")
    np.testing.assert_allclose(voxels, sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "scaled.nii.gz"))))
    np.testing.assert_allclose(voxels, (data * 0.5 + 10.0).T)
    assert geometry.size == (9, 8, 7) and np.allclose(geometry.spacing, (1.2, 0.9, 2.0))


def test_nan_and_inf_are_read_as_stored(tmp_path):
    array = np.ones((4, 5, 6), dtype=np.float32)
    array[1, 2, 3], array[2, 2, 2] = np.nan, -np.inf
    path = write_image_atomic(array, ImageGeometry((6, 5, 4), (1.0,) * 3, (0.0,) * 3,
                                                   (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)), tmp_path / "f.nii.gz")
    voxels, _ = read_image(path)
    assert np.isnan(voxels[1, 2, 3]) and voxels[2, 2, 2] == -np.inf
    assert np.count_nonzero(~np.isfinite(voxels)) == 2


def test_truncated_file_is_an_error_not_zeros(tmp_path):
    array = np.random.default_rng(1).integers(1, 100, (20, 20, 20)).astype(np.int16)
    path = write_image_atomic(array, ImageGeometry((20, 20, 20), (1.0,) * 3, (0.0,) * 3,
                                                   (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)), tmp_path / "t.nii.gz")
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ImageReadError, match=r"t.nii.gz: unreadable image, truncated or corrupt"):
        read_image(path)


def test_write_refuses_mismatched_geometry_and_leaves_no_file(tmp_path):
    with pytest.raises(ValueError, match="does not match geometry"):
        write_image_atomic(np.zeros((5, 6, 6), np.int16), OBLIQUE, tmp_path / "bad.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_atomic_outputs_get_the_mode_of_a_plain_new_file(tmp_path):
    from mmseg_robust.atomic import NEW_FILE_MODE, write_json_atomic

    path = write_image_atomic(np.zeros((4, 5, 6), np.uint8), ImageGeometry((6, 5, 4), (1.0,) * 3, (0.0,) * 3,
                                                                          (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)),
                              tmp_path / "label.nii.gz")
    write_json_atomic(tmp_path / "plans.json", {"a": 1})
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    expected = plain.stat().st_mode & 0o777
    assert NEW_FILE_MODE == expected
    assert (path.stat().st_mode & 0o777) == expected == ((tmp_path / "plans.json").stat().st_mode & 0o777)
