"""--reload's file scan (sidecar/frontend/reloader.py): what counts as a change."""
import os

from sidecar.frontend.reloader import changed, snapshot


def test_snapshot_sees_python_files_and_skips_tool_directories(tmp_path):
    (tmp_path / "app.py").write_text("x = 1\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "views.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("not python\n")
    for skipped in (".venv", "__pycache__", "node_modules", ".hidden", "build"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "lib.py").write_text("z = 3\n")
    files = snapshot([str(tmp_path)])
    assert sorted(os.path.relpath(p, tmp_path) for p in files) == ["app.py", "pkg/views.py"]


def test_changed_lists_added_removed_and_modified_files(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("1\n")
    b.write_text("2\n")
    before = snapshot([str(tmp_path)])
    assert changed(before, snapshot([str(tmp_path)])) == []
    os.utime(a, ns=(before[str(a)] + 10**9, before[str(a)] + 10**9))
    b.unlink()
    (tmp_path / "c.py").write_text("3\n")
    assert changed(before, snapshot([str(tmp_path)])) == sorted(
        [str(a), str(b), str(tmp_path / "c.py")])
