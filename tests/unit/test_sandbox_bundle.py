"""Sandbox bundles: request writing, result extraction and result collection (no Docker)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from smithers.shared.bundle import (
    BundleBounds,
    ResultStatus,
    collect_result_bundle,
    write_request_bundle,
)
from smithers.shared.bundle_archive import extract_result_archive
from smithers.shared.errors import BundleRejected, InvalidInput, InvalidWorkflow, SandboxError
from smithers.shared.sandbox import SandboxSpec, VolumeMount, resolve_secret_values

pytestmark = pytest.mark.timeout(10)


def make_bundle(
    root: Path,
    manifest: object | None = None,
    patches: Mapping[str, bytes] | None = None,
    artifacts: Mapping[str, bytes] | None = None,
) -> Path:
    """A result directory with the given files and a manifest listing them."""
    patches = {"fix.diff": b"--- a\n+++ b\n"} if patches is None else patches
    artifacts = {"report.txt": b"all good\n"} if artifacts is None else artifacts
    result = root / "result"
    for kind, files in (("patches", patches), ("artifacts", artifacts)):
        (result / kind).mkdir(parents=True)
        for name, data in files.items():
            (result / kind / name).parent.mkdir(parents=True, exist_ok=True)
            (result / kind / name).write_bytes(data)
    if manifest is None:
        manifest = {
            "status": "succeeded",
            "outputs": {"answer": 42},
            "patches": sorted(patches),
            "artifacts": sorted(artifacts),
        }
    (result / "manifest.json").write_text(json.dumps(manifest))
    return result


def set_manifest(result: Path, **fields: object) -> None:
    manifest = json.loads((result / "manifest.json").read_text())
    manifest.update(fields)
    (result / "manifest.json").write_text(json.dumps(manifest))


def rejected(result: Path, bounds: BundleBounds | None = None) -> str:
    with pytest.raises(BundleRejected) as caught:
        collect_result_bundle(result, bounds or BundleBounds())
    return str(caught.value)


# -- collect_result_bundle: the good case ------------------------------------------


def test_good_bundle_is_collected_with_hashes_and_sizes(tmp_path: Path) -> None:
    result = make_bundle(tmp_path, artifacts={"report.txt": b"ok\n", "deep/dir/data.bin": b"\x00\x01"})
    (result / "logs.txt").write_bytes(b"x" * 10_000)  # runtime logs do not count

    manifest = collect_result_bundle(result, BundleBounds(max_bundle_bytes=1024))

    assert manifest.status is ResultStatus.SUCCEEDED
    assert manifest.outputs == {"answer": 42}
    assert [(p.path, p.size) for p in manifest.patches] == [("fix.diff", 12)]
    assert manifest.patches[0].sha256 == hashlib.sha256(b"--- a\n+++ b\n").hexdigest()
    assert [a.path for a in manifest.artifacts] == ["deep/dir/data.bin", "report.txt"]
    assert manifest.total_bytes == 12 + 3 + 2 + len((result / "manifest.json").read_bytes())


def test_failed_status_and_missing_lists_are_accepted(tmp_path: Path) -> None:
    result = make_bundle(tmp_path, manifest={"status": "failed"})
    manifest = collect_result_bundle(result, BundleBounds())
    assert manifest.status is ResultStatus.FAILED
    assert (manifest.outputs, manifest.patches, manifest.artifacts) == ({}, (), ())


# -- collect_result_bundle: path rules -----------------------------------------------


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("/etc/passwd", "absolute"),
        ("../../etc/passwd", "'..'"),
        ("a/../../x", "'..'"),
        ("./fix.diff", "'.'"),
        ("a//b", "empty"),
        ("a\\..\\b", "backslash"),
        ("bad\nname", "control"),
        ("", "non-empty"),
    ],
)
def test_unsafe_manifest_paths_are_rejected(tmp_path: Path, entry: str, why: str) -> None:
    result = make_bundle(tmp_path)
    set_manifest(result, patches=[entry])
    message = rejected(result)
    assert why in message
    if entry:
        assert entry.replace("\n", "") in message.replace("\n", "") or "bad" in message


def test_symlinked_file_is_rejected_without_reading_its_target(tmp_path: Path) -> None:
    result = make_bundle(tmp_path)
    (result / "artifacts" / "passwd").symlink_to("/etc/passwd")
    set_manifest(result, artifacts=["passwd"])
    assert "artifacts/passwd: is a symbolic link" in rejected(result)


def test_symlink_inside_the_bundle_is_still_rejected(tmp_path: Path) -> None:
    result = make_bundle(tmp_path)
    (result / "artifacts" / "alias.txt").symlink_to("report.txt")
    set_manifest(result, artifacts=["alias.txt"])
    assert "artifacts/alias.txt: is a symbolic link" in rejected(result)


def test_symlinked_directory_component_is_rejected(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host data")
    result = make_bundle(tmp_path)
    (result / "artifacts" / "dir").symlink_to(outside)
    set_manifest(result, artifacts=["dir/secret.txt"])
    assert "artifacts/dir/secret.txt: path goes through a symbolic link" in rejected(result)


def test_symlinked_kind_directory_is_rejected(tmp_path: Path) -> None:
    result = make_bundle(tmp_path, artifacts={})
    (result / "artifacts").rmdir()
    (result / "artifacts").symlink_to(result / "patches")
    set_manifest(result, artifacts=["fix.diff"])
    assert "artifacts/fix.diff: path goes through a symbolic link" in rejected(result)


def test_symlinked_manifest_is_rejected(tmp_path: Path) -> None:
    result = make_bundle(tmp_path)
    real = tmp_path / "real.json"
    (result / "manifest.json").rename(real)
    (result / "manifest.json").symlink_to(real)
    assert "manifest.json: is a symbolic link" in rejected(result)


def test_hard_link_is_rejected(tmp_path: Path) -> None:
    result = make_bundle(tmp_path)
    os.link(result / "artifacts" / "report.txt", result / "artifacts" / "copy.txt")
    set_manifest(result, artifacts=["copy.txt"])
    assert "artifacts/copy.txt: is a hard link" in rejected(result)


def test_hard_link_to_a_file_outside_is_rejected(tmp_path: Path) -> None:
    outside = tmp_path / "host-file"
    outside.write_text("host data")
    result = make_bundle(tmp_path)
    os.link(outside, result / "patches" / "stolen.diff")
    set_manifest(result, patches=["stolen.diff"])
    assert "patches/stolen.diff: is a hard link" in rejected(result)


def test_fifo_is_rejected_without_blocking(tmp_path: Path) -> None:
    result = make_bundle(tmp_path)
    os.mkfifo(result / "artifacts" / "pipe")
    set_manifest(result, artifacts=["pipe"])
    assert "artifacts/pipe: is not a regular file" in rejected(result)


def test_device_is_rejected_without_opening_it(tmp_path: Path) -> None:
    result = make_bundle(tmp_path)
    try:
        os.mknod(result / "artifacts" / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    set_manifest(result, artifacts=["null"])
    assert "artifacts/null: is not a regular file" in rejected(result)


def test_directory_listed_as_file_is_rejected(tmp_path: Path) -> None:
    result = make_bundle(tmp_path, artifacts={"sub/x.txt": b"x"})
    set_manifest(result, artifacts=["sub"])
    assert "artifacts/sub: is not a regular file" in rejected(result)


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    result = make_bundle(tmp_path)
    set_manifest(result, patches=["nope.diff"])
    assert "patches/nope.diff: does not exist in the bundle" in rejected(result)


@pytest.mark.parametrize(
    "entries",
    [
        ["Report.txt", "report.txt"],
        ["report.txt", "report.txt"],
        ["\ufb01le.txt", "file.txt"],  # the "fi" ligature normalizes to "fi"
        ["a", "a/b"],
    ],
)
def test_colliding_names_are_rejected(tmp_path: Path, entries: list[str]) -> None:
    result = make_bundle(tmp_path)
    set_manifest(result, artifacts=entries)
    assert "collides" in rejected(result)


def test_path_too_long_is_rejected(tmp_path: Path) -> None:
    name = "n" * 250 + ".txt"
    result = make_bundle(tmp_path, artifacts={name: b"x"})
    assert f"artifacts: {name}: path longer than" in rejected(result)


# -- collect_result_bundle: size, count and shape bounds ----------------------------


def test_oversize_manifest_is_rejected(tmp_path: Path) -> None:
    result = make_bundle(tmp_path)
    set_manifest(result, outputs={"padding": "x" * 70_000})
    assert "manifest.json: larger than 65536 bytes" in rejected(result)


def test_oversize_bundle_is_rejected(tmp_path: Path) -> None:
    result = make_bundle(tmp_path, artifacts={"big.bin": b"x" * 5000})
    assert "result bundle is larger than 4096 bytes" in rejected(result, BundleBounds(max_bundle_bytes=4096))


def test_unlisted_files_count_towards_the_bundle_size(tmp_path: Path) -> None:
    result = make_bundle(tmp_path)
    (result / "stray.bin").write_bytes(b"x" * 5000)
    assert "larger than 4096" in rejected(result, BundleBounds(max_bundle_bytes=4096))


def test_too_many_patches_are_rejected(tmp_path: Path) -> None:
    result = make_bundle(tmp_path, patches={f"{i}.diff": b"-\n" for i in range(3)})
    assert "more than 2 patches" in rejected(result, BundleBounds(max_patches=2))


def test_too_many_artifacts_are_rejected(tmp_path: Path) -> None:
    result = make_bundle(tmp_path, artifacts={f"{i}.txt": b"." for i in range(3)})
    assert "more than 2 artifacts" in rejected(result, BundleBounds(max_artifacts=2))


def test_too_many_entries_are_rejected(tmp_path: Path) -> None:
    result = make_bundle(tmp_path)
    for i in range(20):
        (result / f"stray{i}").write_bytes(b"")
    assert "more than 10 entries" in rejected(result, BundleBounds(max_entries=10))


def test_too_deep_output_is_rejected(tmp_path: Path) -> None:
    deep: object = 1
    for _ in range(16):
        deep = {"d": deep}
    result = make_bundle(tmp_path)
    set_manifest(result, outputs=deep)  # 16 levels are allowed...
    collect_result_bundle(result, BundleBounds())
    set_manifest(result, outputs={"d": deep})  # ...17 are not
    assert "manifest.json: outputs nested deeper than 16" in rejected(result)


def test_pathologically_deep_json_is_rejected_not_crashing(tmp_path: Path) -> None:
    result = make_bundle(tmp_path)
    (result / "manifest.json").write_text('{"status": "succeeded", "outputs": ' + "[" * 30_000)
    assert "manifest.json: not valid JSON" in rejected(result)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"status": "done"}', "status must be"),
        ('{"status": "failed", "extra": 1}', "unknown keys extra"),
        ('{"status": "failed", "status": "succeeded"}', "appears twice"),
        ('{"status": "failed", "outputs": {"x": NaN}}', "NaN is not JSON"),
        ('{"status": "failed", "outputs": {"x": 1e400}}', "out of range"),
        ('{"status": "failed", "outputs": {"x": ' + "9" * 30 + "}}", "30 digits"),
        ('{"status": "failed", "outputs": {"x": "a\\u0000b"}}', "manifest.json.outputs.x contains a NUL"),
        ('{"status": "failed", "outputs": {"x": "\\ud800"}}', "lone UTF-16 surrogate"),
        ('{"status": "failed", "outputs": [1]}', "outputs must be a JSON object"),
        ('{"status": "failed", "patches": "a.diff"}', "patches must be a list"),
    ],
)
def test_malformed_manifest_is_rejected(tmp_path: Path, text: str, why: str) -> None:
    result = make_bundle(tmp_path)
    (result / "manifest.json").write_text(text)
    message = rejected(result)
    assert message.startswith("manifest.json: ")
    assert why in message


def test_missing_manifest_is_rejected(tmp_path: Path) -> None:
    result = make_bundle(tmp_path)
    (result / "manifest.json").unlink()
    assert "manifest.json: does not exist" in rejected(result)


# -- extract_result_archive: hostile archives ---------------------------------------


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> list[bytes]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buffer.getvalue()
    return [raw[i : i + 1000] for i in range(0, len(raw), 1000)]  # arrives in chunks


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def directory(name: str) -> tuple[tarfile.TarInfo, None]:
    return entry(name, tarfile.DIRTYPE), None


def extract_rejected(chunks: list[bytes], dest: Path, bounds: BundleBounds | None = None) -> str:
    with pytest.raises(BundleRejected) as caught:
        extract_result_archive(chunks, dest, bounds or BundleBounds())
    return str(caught.value)


def test_extract_good_archive_then_collect(tmp_path: Path) -> None:
    manifest = json.dumps({"status": "succeeded", "patches": ["a.diff"], "artifacts": ["o/x"]})
    chunks = tar_of(
        directory("result"),
        (entry("result/manifest.json"), manifest.encode()),
        directory("result/patches"),
        (entry("result/patches/a.diff"), b"diff"),
        (entry("result/artifacts/o/x"), b"x" * 3000),  # parents made on the way
        (entry("result/artifacts/link", tarfile.SYMTYPE, "o/x"), None),  # inside: allowed
    )
    dest = tmp_path / "result"
    assert extract_result_archive(chunks, dest, BundleBounds()) == len(manifest) + 4 + 3000
    assert (dest / "artifacts" / "link").is_symlink()
    collected = collect_result_bundle(dest, BundleBounds())
    assert [a.size for a in collected.artifacts] == [3000]


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([(entry("/etc/cron.d/x"), b"x")], "/etc/cron.d/x: outside the result directory"),
        ([(entry("result/../../x"), b"x")], "'..'"),
        ([(entry("other/x"), b"x")], "other/x: outside the result directory"),
        (
            [(entry("result/artifacts/pw", tarfile.SYMTYPE, "/etc/passwd"), None)],
            "artifacts/pw: symbolic link points outside the bundle (/etc/passwd)",
        ),
        (
            [(entry("result/a", tarfile.SYMTYPE, "b/../../x"), None)],
            "a: symbolic link points outside the bundle",
        ),
        (
            [(entry("result/pw", tarfile.LNKTYPE, "etc/passwd"), None)],
            "pw: hard link points outside the bundle",
        ),
        (
            [(entry("result/pw", tarfile.LNKTYPE, "result/../../etc/passwd"), None)],
            "'..'",
        ),
        (
            [(entry("result/pw", tarfile.LNKTYPE, "result/missing"), None)],
            "pw: hard link target is not a file in the bundle",
        ),
        ([(entry("result/null", tarfile.CHRTYPE), None)], "null: not a regular file"),
        ([(entry("result/disk", tarfile.BLKTYPE), None)], "disk: not a regular file"),
        ([(entry("result/pipe", tarfile.FIFOTYPE), None)], "pipe: not a regular file"),
        ([(entry("result/logs.txt"), b"fake")], "logs.txt: name is reserved"),
        ([(entry("result/x"), b"1"), (entry("result/x"), b"2")], "x: appears twice"),
        ([(entry("result/x"), b"1"), directory("result/x")], "x: exists and is not a directory"),
        ([(entry("result/x"), b"1"), (entry("result/x/y"), b"2")], "x/y: path goes through"),
    ],
)
def test_hostile_archive_members_are_rejected(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], why: str
) -> None:
    assert why in extract_rejected(tar_of(*members), tmp_path / "result")
    assert not (tmp_path / "etc").exists()
    assert not (tmp_path / "x").exists()


def test_archive_member_through_a_symlink_is_rejected(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    chunks = tar_of(
        (entry("result/sub", tarfile.SYMTYPE, "real"), None),
        directory("result/real"),
        (entry("result/sub/evil"), b"x"),
    )
    message = extract_rejected(chunks, tmp_path / "result")
    assert "sub/evil: path goes through a symbolic link" in message


def test_symlink_chain_that_would_climb_out_is_rejected(tmp_path: Path) -> None:
    # "s" -> "." looks harmless, but "s/x/../.." would resolve above the bundle.
    chunks = tar_of(
        (entry("result/s", tarfile.SYMTYPE, "."), None),
        (entry("result/t", tarfile.SYMTYPE, "s/x/../.."), None),
    )
    assert "t: symbolic link points outside the bundle" in extract_rejected(chunks, tmp_path / "result")


def test_oversize_member_is_rejected_while_extracting(tmp_path: Path) -> None:
    chunks = tar_of((entry("result/small"), b"x" * 600), (entry("result/big"), b"x" * 600))
    message = extract_rejected(chunks, tmp_path / "result", BundleBounds(max_bundle_bytes=1000))
    assert "big: result bundle exceeds its byte limit" in message
    assert not (tmp_path / "result" / "big").exists()


def test_oversize_raw_stream_is_cut_off(tmp_path: Path) -> None:
    # A huge pax header carries no file bytes and no entry, only raw stream bytes.
    info = entry("result/x")
    info.pax_headers = {"comment": "x" * 200_000}
    message = extract_rejected(
        tar_of((info, b"")), tmp_path / "result", BundleBounds(max_bundle_bytes=1, max_entries=1)
    )
    assert "result archive is larger than" in message


def test_too_many_archive_entries_are_rejected(tmp_path: Path) -> None:
    chunks = tar_of(*[(entry(f"result/f{i}"), b"") for i in range(12)])
    assert "more than 10 entries" in extract_rejected(
        chunks, tmp_path / "result", BundleBounds(max_entries=10)
    )


def test_over_long_archive_path_is_rejected(tmp_path: Path) -> None:
    chunks = tar_of((entry("result/" + "d/" * 100 + "f"), b"x"))
    assert "path longer than 64 bytes" in extract_rejected(
        chunks, tmp_path / "result", BundleBounds(max_path_length=64)
    )


def test_garbage_archive_is_rejected(tmp_path: Path) -> None:
    assert "not a valid tar" in extract_rejected([b"\x01" * 1024], tmp_path / "result")


def test_in_bundle_hard_link_is_extracted_then_refused_by_collect(tmp_path: Path) -> None:
    manifest = json.dumps({"status": "succeeded", "artifacts": ["b"]})
    chunks = tar_of(
        (entry("result/manifest.json"), manifest.encode()),
        (entry("result/artifacts/a"), b"data"),
        (entry("result/artifacts/b", tarfile.LNKTYPE, "result/artifacts/a"), None),
    )
    dest = tmp_path / "result"
    extract_result_archive(chunks, dest, BundleBounds())
    assert "artifacts/b: is a hard link" in rejected(dest)


# -- write_request_bundle ------------------------------------------------------------


def test_request_bundle_holds_input_upstream_and_files(tmp_path: Path) -> None:
    sandbox_dir = write_request_bundle(
        tmp_path / "sandbox",
        "run-1",
        "step_a",
        {"repo": "x"},
        {"plan": {"steps": 3}},
        {"prompt.md": "hello", "src/main.py": "print(1)\n"},
    )
    assert sandbox_dir == tmp_path / "sandbox" / "run-1" / "step_a"
    request = sandbox_dir / "request"
    assert json.loads((request / "input.json").read_text()) == {
        "input": {"repo": "x"},
        "upstream": {"plan": {"steps": 3}},
    }
    assert (request / "files" / "src" / "main.py").read_text() == "print(1)\n"


def test_request_bundle_replaces_an_earlier_attempt(tmp_path: Path) -> None:
    write_request_bundle(tmp_path, "r", "s", {}, {}, {"old.txt": "old"})
    sandbox_dir = write_request_bundle(tmp_path, "r", "s", {}, {}, {"new.txt": "new"})
    assert sorted(p.name for p in (sandbox_dir / "request" / "files").iterdir()) == ["new.txt"]


@pytest.mark.parametrize(("run_id", "sandbox_id"), [("../x", "s"), ("r", "S"), ("", "s"), ("r", "a" * 65)])
def test_request_bundle_refuses_bad_ids(tmp_path: Path, run_id: str, sandbox_id: str) -> None:
    with pytest.raises(InvalidInput):
        write_request_bundle(tmp_path, run_id, sandbox_id, {}, {}, {})


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/passwd", "a/../../b", "a\\b"])
def test_request_bundle_refuses_traversal(tmp_path: Path, name: str) -> None:
    with pytest.raises(BundleRejected, match="request file"):
        write_request_bundle(tmp_path / "root", "r", "s", {}, {}, {name: "x"})
    assert not (tmp_path / "escape.txt").exists()


def test_request_bundle_refuses_a_symlinked_run_directory(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "root" / "r").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BundleRejected, match="r: exists and is not a directory"):
        write_request_bundle(tmp_path / "root", "r", "s", {}, {}, {})


def test_request_bundle_refuses_non_json_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not JSON"):
        write_request_bundle(tmp_path, "r", "s", {"x": object()}, {}, {})


# -- SandboxSpec, BundleBounds, secrets ------------------------------------------------


def test_spec_defaults_and_frozen_collections() -> None:
    spec = SandboxSpec(command=["sh", "-c", "true"], env={"A": "1"})  # type: ignore[arg-type]
    assert spec.command == ("sh", "-c", "true")
    assert (spec.image, spec.allow_network, spec.memory_mb) == (
        "smithers-sandbox:latest",
        False,
        256,
    )
    with pytest.raises(TypeError):
        spec.env["B"] = "2"  # type: ignore[index]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"command": ()}, "1 to 1024 arguments"),
        ({"command": "ls"}, "must be a list"),
        ({"image": "bad image"}, "not a valid image name"),
        ({"ports": (8080,)}, "need network='full'"),
        ({"ports": (0,), "allow_network": True}, "1..65535"),
        ({"secrets": ("api-key",)}, "must match"),
        ({"secrets": ("TOKEN",), "env": {"TOKEN": "x"}}, "also set in env"),
        ({"env": {"1BAD": "x"}}, "not a valid variable name"),
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"memory_mb": 0}, "memory_mb"),
        ({"cpus": True}, "cpus must be a number"),
        ({"allow_network": "yes"}, "allow_network must be a boolean"),
        ({"files": {"../x": ""}}, "'..'"),
        ({"files": {"A.txt": "", "a.txt": ""}}, "collides"),
        (
            {"volumes": (VolumeMount("/srv/a", "/data"), VolumeMount("/srv/b", "/data/"))},
            "mount twice",
        ),
        ({"volumes": ("/srv:/data",)}, "VolumeMount"),
    ],
)
def test_spec_validation(fields: dict[str, object], why: str) -> None:
    arguments: dict[str, object] = {"command": ("true",), **fields}
    with pytest.raises(InvalidWorkflow, match=why.replace("(", r"\(").replace(".", r"\.")):
        SandboxSpec(**arguments)  # type: ignore[arg-type]


def test_volume_mount_needs_absolute_paths() -> None:
    with pytest.raises(InvalidWorkflow, match="absolute"):
        VolumeMount("relative/dir", "/data")
    for target in ("/proc/self", "/work", "/work/result/x", "/"):
        with pytest.raises(InvalidWorkflow, match="reserved"):
            VolumeMount("/srv", target)


def test_bundle_bounds_from_env() -> None:
    bounds = BundleBounds.from_env(
        {"SMITHERS_SANDBOX_MAX_PATCHES": "5", "SMITHERS_SANDBOX_MAX_BUNDLE_BYTES": " 2048 "}
    )
    assert (bounds.max_patches, bounds.max_bundle_bytes, bounds.max_artifacts) == (5, 2048, 256)
    with pytest.raises(InvalidInput, match="SMITHERS_SANDBOX_MAX_PATCHES"):
        BundleBounds.from_env({"SMITHERS_SANDBOX_MAX_PATCHES": "many"})
    with pytest.raises(InvalidInput, match="SMITHERS_SANDBOX_MAX_ARTIFACTS must be > 0"):
        BundleBounds.from_env({"SMITHERS_SANDBOX_MAX_ARTIFACTS": "0"})


def test_secrets_come_from_files_then_environment(tmp_path: Path) -> None:
    (tmp_path / "API_KEY").write_text("from-file\n")
    values = resolve_secret_values(
        ["API_KEY", "DB_URL"], {"API_KEY": "from-env", "DB_URL": "postgres://x"}, tmp_path
    )
    assert values == {"API_KEY": "from-file", "DB_URL": "postgres://x"}
    with pytest.raises(SandboxError, match="secret MISSING is not available") as caught:
        resolve_secret_values(["MISSING"], {"OTHER": "value"}, None)
    assert "value" not in str(caught.value)
