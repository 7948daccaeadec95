"""The local file system without child processes (lakehouse/java, ``spark.fast_local_fs``).

The session of the test run uses it (a local master, a JDK on PATH): every Delta and streaming
test runs on it. Here: that it is the one in use, for both Hadoop APIs; that permissions and
link look-ups are what Hadoop's own classes give; that a Delta commit starts no process; and
that without a JDK the session falls back to Hadoop's file system.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from lakehouse.spark import FS_CLASSES, local_fs_jar, spark_conf

pytestmark = pytest.mark.integration


def _jvm_fs(spark, path: str):
    jpath = spark._jvm.org.apache.hadoop.fs.Path(f"file://{path}")
    return jpath.getFileSystem(spark._jsc.hadoopConfiguration()), jpath


def test_the_session_uses_it_for_both_hadoop_apis(spark, tmp_path):
    fs, _ = _jvm_fs(spark, str(tmp_path))
    assert fs.getClass().getName() == FS_CLASSES["spark.hadoop.fs.file.impl"]
    assert fs.getRawFileSystem().getClass().getName() == "org.opensky.lakehouse.fs.NoForkRawLocalFileSystem"
    jvm = spark._jvm
    fc = jvm.org.apache.hadoop.fs.FileContext.getFileContext(
        jvm.java.net.URI("file:///"), spark._jsc.hadoopConfiguration())
    assert fc.getDefaultFileSystem().getClass().getName() == FS_CLASSES["spark.hadoop.fs.AbstractFileSystem.file.impl"]


def test_permissions_and_links_are_hadoops(spark, tmp_path):
    jvm = spark._jvm
    fs, _ = _jvm_fs(spark, str(tmp_path))
    raw = fs.getRawFileSystem()
    target = tmp_path / "file"
    out = fs.create(jvm.org.apache.hadoop.fs.Path(f"file://{target}"), True)
    out.write(bytearray(b"x"))
    out.close()
    for mode in (0o640, 0o755, 0o600, 0o444):
        raw.setPermission(jvm.org.apache.hadoop.fs.Path(f"file://{target}"),
                          jvm.org.apache.hadoop.fs.permission.FsPermission(mode))
        assert stat.S_IMODE(os.stat(target).st_mode) == mode
    os.symlink(target, tmp_path / "link")
    (tmp_path / "dir").mkdir()
    hadoops = jvm.org.apache.hadoop.fs.RawLocalFileSystem()
    hadoops.initialize(jvm.java.net.URI("file:///"), spark._jsc.hadoopConfiguration())
    for name in ("file", "link", "dir"):
        path = jvm.org.apache.hadoop.fs.Path(f"file://{tmp_path / name}")
        ours, theirs = raw.getFileLinkStatus(path), hadoops.getFileLinkStatus(path)
        assert (ours.isSymlink(), ours.isDirectory(), ours.getLen(), ours.getPath().toString()) == (
            theirs.isSymlink(), theirs.isDirectory(), theirs.getLen(), theirs.getPath().toString()), name
    with pytest.raises(Exception, match="FileNotFoundException"):
        raw.getFileLinkStatus(jvm.org.apache.hadoop.fs.Path(f"file://{tmp_path / 'missing'}"))


def _processes_started() -> int:
    """Processes and threads started on this machine since boot (``/proc/stat``)."""
    with open("/proc/stat") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("processes "))


def test_a_commit_s_file_calls_start_no_process(spark, tmp_path):
    """What a Delta commit asks of the file system (a file created with its permission, a link
    look-up per rename), 10 times each: Hadoop's class starts a process (and a reader thread)
    for each, this one none."""
    jvm = spark._jvm
    conf = spark._jsc.hadoopConfiguration()
    (tmp_path / "f").write_text("x")
    target = jvm.org.apache.hadoop.fs.Path(f"file://{tmp_path / 'f'}")
    perm = jvm.org.apache.hadoop.fs.permission.FsPermission(0o644)
    hadoops = jvm.org.apache.hadoop.fs.RawLocalFileSystem()
    hadoops.initialize(jvm.java.net.URI("file:///"), conf)
    ours = _jvm_fs(spark, str(tmp_path))[0].getRawFileSystem()
    started = {}
    # The counter is the whole machine's: anything else starting processes or threads meanwhile
    # (the session's own threads, another job) adds to it, never takes away. So each file system
    # gets three attempts and keeps its fewest.
    for name, fs in (("hadoop", hadoops), ("ours", ours)):
        for attempt in range(3):
            before = _processes_started()
            for i in range(10):
                fs.setPermission(target, perm)
                fs.getFileLinkStatus(target)
                out = fs.create(jvm.org.apache.hadoop.fs.Path(f"file://{tmp_path / f'{name}-{attempt}-{i}'}"), perm,
                                False, 4096, 1, 1 << 20, None)
                out.close()
            started[name] = min(started.get(name, 1 << 30), _processes_started() - before)
    assert started["hadoop"] >= 30, started  # the control: chmod, readlink, chmod per round
    assert started["ours"] <= 3, started


def test_without_a_jdk_the_session_keeps_hadoops_file_system(base_settings, tmp_path):
    code = (
        "import json, sys; from lakehouse.spark import spark_conf, local_fs_jar; "
        "from lakehouse.settings import load_settings; "
        f"s = load_settings(profile='test', env={{}}, dotenv=None).replace(spark={{'cache_dir': {str(tmp_path)!r}}}); "
        "print(json.dumps([local_fs_jar(s.spark.cache_dir), sorted(k for k in spark_conf(s) if 'fs.' in k)]))"
    )
    no_jdk = {**os.environ, "PATH": "/nonexistent"}
    out = subprocess.run([sys.executable, "-c", code], env=no_jdk, capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == '[null, []]'


def test_the_jar_is_built_once_per_source(base_settings, tmp_path):
    first = local_fs_jar(str(tmp_path))
    assert first and os.path.isfile(first)
    mtime = os.stat(first).st_mtime_ns
    assert local_fs_jar(str(tmp_path)) == first and os.stat(first).st_mtime_ns == mtime
    conf = spark_conf(base_settings.replace(spark={"cache_dir": str(tmp_path)}))
    assert conf["spark.driver.extraClassPath"] == first and all(conf[k] == v for k, v in FS_CLASSES.items())
    off = spark_conf(base_settings.replace(spark={"cache_dir": str(tmp_path), "fast_local_fs": False}))
    assert not set(FS_CLASSES) & set(off)
