"""Applying a sandbox step's unified diffs to its workspace (smithers.shared.patch), in memory."""

from __future__ import annotations

import time

import pytest

from smithers.shared.errors import BundleRejected
from smithers.shared.patch import apply_patches, parse_patch

pytestmark = pytest.mark.timeout(10)

WORKSPACE = {"greeting.txt": "hello\nworld\n", "src/m.py": "x = 1\ny = 2\n"}

# What `diff -ruN a b` writes (tabs and times included) for: a line added to
# greeting.txt, new.txt created without a final newline, src/m.py deleted.
DIFF_RUN = (
    "diff -ruN a/greeting.txt b/greeting.txt\n"
    "--- a/greeting.txt\t2026-01-01 10:00:00.000000000 +0000\n"
    "+++ b/greeting.txt\t2026-01-01 10:00:01.000000000 +0000\n"
    "@@ -1,2 +1,3 @@\n"
    " hello\n"
    "+there\n"
    " world\n"
    "diff -ruN a/new.txt b/new.txt\n"
    "--- a/new.txt\t1970-01-01 00:00:00.000000000 +0000\n"
    "+++ b/new.txt\t2026-01-01 10:00:01.000000000 +0000\n"
    "@@ -0,0 +1 @@\n"
    "+new\n"
    "\\ No newline at end of file\n"
    "diff -ruN a/src/m.py b/src/m.py\n"
    "--- a/src/m.py\t2026-01-01 10:00:00.000000000 +0000\n"
    "+++ b/src/m.py\t1970-01-01 00:00:00.000000000 +0000\n"
    "@@ -1,2 +0,0 @@\n"
    "-x = 1\n"
    "-y = 2\n"
)

GIT_DIFF = (
    "diff --git a/src/m.py b/src/m.py\n"
    "index 1111111..2222222 100644\n"
    "--- a/src/m.py\n"
    "+++ b/src/m.py\n"
    "@@ -1,2 +1,2 @@\n"
    " x = 1\n"
    "-y = 2\n"
    "+y = 3\n"
    "diff --git a/docs/new.md b/docs/new.md\n"
    "new file mode 100644\n"
    "--- /dev/null\n"
    "+++ b/docs/new.md\n"
    "@@ -0,0 +1,2 @@\n"
    "+# New\n"
    "+text\n"
)


def test_diff_run_output_modifies_creates_and_deletes() -> None:
    changes = apply_patches(WORKSPACE, [("patches/p.diff", DIFF_RUN)])
    assert changes == {"greeting.txt": "hello\nthere\nworld\n", "new.txt": "new", "src/m.py": None}


def test_git_diff_with_new_file() -> None:
    changes = apply_patches(WORKSPACE, [("patches/g.diff", GIT_DIFF)])
    assert changes == {"src/m.py": "x = 1\ny = 3\n", "docs/new.md": "# New\ntext\n"}


def test_later_patches_see_earlier_changes_and_unchanged_files_are_left_out() -> None:
    second = "--- a/src/m.py\n+++ b/src/m.py\n@@ -2 +2 @@\n-y = 3\n+y = 4\n"
    changes = apply_patches(WORKSPACE, [("patches/1.diff", GIT_DIFF), ("patches/2.diff", second)])
    assert changes["src/m.py"] == "x = 1\ny = 4\n"
    assert "greeting.txt" not in changes


def test_hunk_found_at_an_offset() -> None:
    files = {"f.txt": "".join(f"line {i}\n" for i in range(20))}
    patch = "--- a/f.txt\n+++ b/f.txt\n@@ -3,2 +3,2 @@\n line 10\n-line 11\n+eleven\n"
    assert apply_patches(files, [("patches/p", patch)])["f.txt"].count("eleven") == 1


def test_blank_context_line_without_its_space() -> None:
    files = {"f.txt": "a\n\nb\n"}
    patch = "--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n a\n\n-b\n+c\n"
    assert apply_patches(files, [("patches/p", patch)]) == {"f.txt": "a\n\nc\n"}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "'..'"),
        ("--- a//etc/passwd\n+++ b//etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "absolute"),
        ("--- passwd\n+++ passwd\n@@ -1 +1 @@\n-a\n+b\n", "no a/ or b/ prefix"),
        ("--- a/x\n+++ b/y\n@@ -1 +1 @@\n-a\n+b\n", "renames are not supported"),
        ("diff --git a/x b/y\nrename from x\nrename to y\n", "not supported"),
        ("diff --git a/x b/x\nGIT binary patch\nliteral 1\n", "not supported"),
        ("just some text\n", "not a unified diff"),
        ("--- a/greeting.txt\n+++ b/greeting.txt\n@@ -1,2 +1,2 @@\n hello\n", "hunk ends early"),
        ("--- a/greeting.txt\n+++ b/greeting.txt\n@@ -1 +1 @@\n-nope\n+b\n", "hunk 1 does not apply"),
        ("--- a/missing.txt\n+++ b/missing.txt\n@@ -1 +1 @@\n-a\n+b\n", "not in the workspace"),
        ("--- /dev/null\n+++ b/greeting.txt\n@@ -0,0 +1 @@\n+x\n", "already exists"),
        ("--- a/greeting.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-hello\n", "leaves lines"),
        ('--- "a/q"\n+++ "b/q"\n@@ -1 +1 @@\n-a\n+b\n', "quoted"),
    ],
)
def test_refused_patches_name_the_patch_and_the_problem(patch: str, message: str) -> None:
    with pytest.raises(BundleRejected) as caught:
        apply_patches(WORKSPACE, [("patches/bad.diff", patch)])
    assert caught.value.message.startswith("patches/bad.diff")
    assert message in caught.value.message


def test_parse_reports_hunks_per_file() -> None:
    files = parse_patch(DIFF_RUN, "patches/p.diff")
    assert [(f.old_path, f.new_path, len(f.hunks)) for f in files] == [
        ("greeting.txt", "greeting.txt", 1),
        (None, "new.txt", 1),
        ("src/m.py", None, 1),
    ]


def _many_hunks(lines: int, hunks: int, shift: int) -> tuple[dict[str, str], str]:
    """A file of ``lines`` distinct lines and a patch changing ``hunks`` of them, each
    hunk's header off by ``shift`` lines."""
    text = "".join(f"line {n}\n" for n in range(lines))
    step = lines // hunks
    body = ["--- a/big.txt\n", "+++ b/big.txt\n"]
    for h in range(hunks):
        n = h * step
        body += [f"@@ -{n + 1 + shift},1 +{n + 1 + shift},1 @@\n", f"-line {n}\n", f"+LINE {n}\n"]
    return {"big.txt": text}, "".join(body)


def test_many_hunks_apply_in_linear_time() -> None:
    # given 20,000 lines and 8,000 hunks (14 s when each hunk sorted every candidate)
    files, patch = _many_hunks(20_000, 8_000, shift=0)
    # when it is applied
    started = time.monotonic()
    changes = apply_patches(files, [("patches/big.diff", patch)])
    # then it takes a fraction of a second and every hunk landed
    assert time.monotonic() - started < 2
    assert changes["big.txt"] is not None and changes["big.txt"].count("LINE ") == 8_000


def test_hunks_far_from_their_line_numbers_are_refused_not_searched_forever() -> None:
    # given hunks that each claim to be 15,000 lines from where they are
    files, patch = _many_hunks(20_000, 2_000, shift=15_000)
    # when it is applied, then it is refused within the work budget, in bounded time
    started = time.monotonic()
    with pytest.raises(BundleRejected, match="too costly to apply"):
        apply_patches(files, [("patches/far.diff", patch)])
    assert time.monotonic() - started < 5


def test_a_hunk_at_an_offset_is_still_found() -> None:
    files, patch = _many_hunks(200, 4, shift=3)
    changes = apply_patches(files, [("patches/off.diff", patch)])
    assert changes["big.txt"] is not None and changes["big.txt"].count("LINE ") == 4
