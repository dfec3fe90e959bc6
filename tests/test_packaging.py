"""The wheel installs the stage folders under the mmseg_robust namespace, never at top level."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("planners", "preprocessing", "inference")


def test_wheel_installs_stage_packages_under_the_namespace(tmp_path):
    wheel_dir = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheel_dir), str(REPO)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheel_dir.glob("mmrobust-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for stage in STAGES:
        assert f"mmseg_robust/{stage}/__init__.py" in names
        assert not any(n.startswith(f"{stage}/") for n in names), f"top-level {stage} in the wheel"
    assert not any(n.startswith("tests/") for n in names)

    fresh = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(fresh)
    fresh_python = fresh / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(fresh_python), "install", "--quiet",
                    "--no-deps", str(wheel)], check=True, capture_output=True, cwd=tmp_path)
    # Dependencies (torch, SimpleITK, ...) come from the test environment; mmseg_robust must not.
    fresh_site = Path(subprocess.check_output(
        [str(fresh_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (fresh_site / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    probe = ("import mmseg_robust, mmseg_robust.planners, mmseg_robust.preprocessing, mmseg_robust.inference;"
             "import importlib.util as u;"
             "print(mmseg_robust.__file__);"
             "print([u.find_spec(s) is None for s in ('planners', 'preprocessing', 'inference')])")
    out = subprocess.run([str(fresh_python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, check=True)
    package_file, top_level_absent = out.stdout.strip().splitlines()
    assert Path(package_file).is_relative_to(fresh)
    assert top_level_absent == "[True, True, True]"
    version = subprocess.run([str(fresh / "bin" / "mmrobust"), "--version"], capture_output=True, text=True,
                             cwd=tmp_path, check=True)
    assert version.stdout.startswith("mmrobust, version")
