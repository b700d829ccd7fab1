"""Blockwise runs against faults and misbehaving peers: the sealed job
file, the scheduler bound to loopback behind an authenticated relay, a raw
daisy client, hanging worker templates, bad numbers and names on the
command line, and write errors during a run.

Every connection stays on loopback. Volumes are tiny (8 x 32 x 48 voxels,
2 x 1 x 2 blocks); the runs with worker processes carry the ``slow`` marker.
"""

from __future__ import annotations

import errno
import os
import pickle
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipelines import blockwise as bw
from pipelines.blockwise.jobfile import JobFileError, new_secret, read_job, read_secret, write_job
from pipelines.blockwise.relay import Relay, RelayError, prove_worker
from tests.blockwise_jobs import HUNG_SECONDS, RogueFirst, RogueSuccess
from tests.helpers import (
    TINY_BLOCK,
    TINY_SCALE,
    blockwise_targets_args,
    tiny_predictor,
)

ROOT = Path(__file__).resolve().parents[1]
BLOCK, SCALE = TINY_BLOCK, TINY_SCALE  # 2 x 1 x 2 blocks of the 8 x 32 x 48 voxels of tiny_data
pytestmark = pytest.mark.usefixtures("repo_importable_in_tmp")


def _plan(data, output):
    return bw.plan_targets(data / "gt", output, tiny_predictor(), BLOCK, mask=data / "mask")


def _args(data, output, *extra):
    return blockwise_targets_args(data, output, BLOCK, SCALE, *extra)


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """The targets computed in this process (daisy's serial mode)."""
    output = tmp_path_factory.mktemp("reference") / "out.zarr"
    bw.run_job(_plan(tiny_data, output), progress=False, multiprocessing=False)
    return zarr.open_array(str(output / "target" / "s0"), mode="r")[...]


def _target(output):
    return zarr.open_array(str(output / "target" / "s0"), mode="r")[...]


# ---------------------------------------------------------------------------
# the job file
# ---------------------------------------------------------------------------


class Planted:
    """Unpickling this creates the file ``path`` (what a planted job would do)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_job_file_is_sealed_and_refuses_planted_links(tmp_path):
    job, key = tmp_path / "job.pickle", tmp_path / "job.key"
    secret = new_secret()
    write_job(job, key, {"blocks": [1, 2]}, secret)
    assert oct(key.stat().st_mode & 0o777) == "0o600" and read_secret(key) == secret
    assert read_job(job, secret) == {"blocks": [1, 2]}
    # a job from another run, and one whose pickle was replaced, are refused unread
    with pytest.raises(JobFileError, match="does not match this run's key"):
        read_job(job, new_secret())
    header = job.read_bytes().split(b"\n", 2)
    job.write_bytes(b"\n".join([*header[:2], pickle.dumps(Planted(tmp_path / "pwned"))]))
    with pytest.raises(JobFileError, match="does not match this run's key"):
        read_job(job, secret)
    assert not (tmp_path / "pwned").exists()
    # a plain pickle (the old format) is refused too
    job.write_bytes(pickle.dumps(Planted(tmp_path / "pwned")))
    with pytest.raises(JobFileError):
        read_job(job, secret)
    assert not (tmp_path / "pwned").exists()
    # a key file others may read, or a link to one, is refused
    key.chmod(0o644)
    with pytest.raises(JobFileError, match="mode 0600"):
        read_secret(key)
    key.chmod(0o600)
    (tmp_path / "link.key").symlink_to(key)
    with pytest.raises(JobFileError, match="cannot open"):
        read_secret(tmp_path / "link.key")
    # symbolic links planted at either name: refused, their targets untouched
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's results")
    for planted in (job, key):
        for path in (job, key):
            path.unlink(missing_ok=True)
        planted.symlink_to(victim)
        with pytest.raises(JobFileError, match="symbolic link"):
            write_job(job, key, {"blocks": []}, secret)
        assert victim.read_text() == "the user's results"
        assert planted.is_symlink()
    # a regular file left by an earlier run is replaced
    key.unlink()  # the planted link; no job file was written beside it
    job.write_bytes(b"stale")
    write_job(job, key, [3], secret)
    assert read_job(job, secret) == [3]


@pytest.mark.parametrize(
    "name, extra",
    [("job.pickle", ["--worker-command", "{command}"]), ("worker_0.err", [])],
)
def test_link_planted_in_the_log_directory_stops_the_run(tiny_data, tmp_path, capsys, name, extra):
    """A link where this run (job.pickle) or daisy (a worker's log) would
    write stops the run before any worker starts; the task's log directory
    is then 0700, so nothing can be planted while a run goes."""
    output = tmp_path / "out.zarr"
    logs = tmp_path / "out.zarr.logs" / "targets"
    logs.mkdir(parents=True, mode=0o775)
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's results")
    (logs / name).symlink_to(victim)
    assert bw.main(_args(tiny_data, output, *extra)) == 1
    assert f"refusing to use the log directory {logs}: {name} is a symbolic link" in (
        capsys.readouterr().err
    )
    assert victim.read_text() == "the user's results"
    assert oct(logs.stat().st_mode & 0o777) == "0o700"
    assert not zarr.open_array(str(output / "done" / "targets"), mode="r")[...].any()  # no block
    (logs / name).unlink()
    if not extra:
        assert bw.main(_args(tiny_data, output)) == 0  # once removed, the run goes


# ---------------------------------------------------------------------------
# the relay in front of the scheduler
# ---------------------------------------------------------------------------


def _echo_server():
    """A loopback server that echoes one connection; returns (port, accepted list)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve():
        with server:
            conn, _ = server.accept()
            accepted.append(conn)
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], accepted


def test_relay_passes_only_workers_that_prove_the_secret():
    port, accepted = _echo_server()
    secret = new_secret()
    relay = Relay(secret, "127.0.0.1", ("127.0.0.1", port))
    try:
        host, relay_port = relay.address
        assert relay._listener.getsockname()[0] == "127.0.0.1"  # only the address asked for
        # a worker of another run: refused, the scheduler never sees it
        with socket.create_connection((host, relay_port)) as sock:
            with pytest.raises(RelayError):
                prove_worker(sock, new_secret())
        # a raw client that sends daisy bytes without the handshake: dropped
        with socket.create_connection((host, relay_port)) as sock:
            sock.settimeout(60)
            sock.sendall(b"\x00" * 96)
            sock.recv(100)  # the challenge
            try:
                rest = sock.recv(100)
            except ConnectionResetError:  # closed with our bytes unread
                rest = b""
            assert rest == b""
        deadline = time.monotonic() + 60
        while relay.refused < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert relay.refused == 2 and not accepted and not relay.connected.is_set()
        # this run's worker: bytes pass both ways
        with socket.create_connection((host, relay_port)) as sock:
            prove_worker(sock, secret)
            sock.sendall(b"acquire")
            assert sock.recv(100) == b"acquire"
            assert relay.connected.is_set() and len(accepted) == 1
        assert relay.finished.wait(60)
    finally:
        relay.close()


def _children():
    """Live child processes of this process."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.slow
@pytest.mark.parametrize(
    "rogue, message",
    [
        (RogueFirst, "the daisy scheduler stopped on an internal error"),
        (RogueSuccess, "1 of 4 blocks not done"),
    ],
)
def test_raw_client_cannot_lose_blocks(tiny_data, reference, tmp_path, rogue, message):
    """A client that is no worker of the run (on loopback: the scheduler
    listens nowhere else) releases a block unprocessed, which makes daisy's
    scheduler panic, or claims it done (no done marker is written: only
    the job writes them): the run fails with a clear error, leaves no
    process behind, and the rerun completes every block.

    The released block's worker never ends by itself (``HUNG_SECONDS``),
    so the run returning, and no worker being left, show that the run
    stopped it; the bounds are far above what a loaded machine needs."""
    output = tmp_path / "out.zarr"
    job = _plan(tiny_data, output)
    bad = rogue(**{k: v for k, v in vars(job).items() if not k.startswith("_")})
    started = time.monotonic()
    try:
        with pytest.raises(bw.BlockwiseError, match=message) as info:
            bw.run_job(bad, num_workers=1, progress=False)
        assert time.monotonic() - started < HUNG_SECONDS / 2  # did not wait for the worker
        said = str(info.value)
        assert "rerun the same command to resume" in said or "missing write ROIs" in said
        hostname, *addresses = (tmp_path / "rogue.txt").read_text().split()
        assert hostname == "127.0.0.1" and addresses == ["0100007F"]  # loopback, IPv4 only
        deadline = time.monotonic() + 60  # the stopped workers may still be exiting
        while _children() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _children() == []  # the workers daisy left running were stopped
    finally:
        for pid in _children():  # only if the test failed: what the run left
            os.kill(pid, 9)
    if rogue is RogueSuccess:
        return  # the rerun is the same as after a panic
    report = bw.run_job(job, num_workers=1, progress=False)
    assert report.completed == report.blocks == 4 and job.markers.done().all()
    np.testing.assert_array_equal(_target(output), reference)


# ---------------------------------------------------------------------------
# worker templates that hang
# ---------------------------------------------------------------------------


def _sleepers(tag):
    """pids of processes running ``sleep <tag>``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().split(b"\0")[:2] == [b"sleep", tag.encode()]:
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize("where", ["before", "after"])
def test_hanging_worker_template_is_killed_and_reported(
    tiny_data, reference, tmp_path, capsys, caplog, where
):
    tag = str(1000000 + os.getpid() % 1000 * 10 + (where == "after"))
    template = f"sleep {tag}; {{command}}" if where == "before" else f"{{command}}; sleep {tag}"
    # "after": the worker itself must connect in time, on a loaded machine too
    # (it starts and unpickles its job in 0.3 s on the idle machine), and the
    # run then waits the whole timeout for the template to exit
    timeout = "1" if where == "before" else "5"
    output = tmp_path / "out.zarr"
    started = time.monotonic()
    code = bw.main(
        _args(
            tiny_data,
            output,
            "--worker-command",
            template,
            "--worker-start-timeout",
            timeout,
            "--worker-restarts",
            "0",
        )
    )
    assert time.monotonic() - started < 300  # not the template's sleep (11 days)
    assert _sleepers(tag) == []  # the whole process group was killed
    if where == "before":
        assert code == 1
        err = capsys.readouterr().err
        assert "did not connect to the scheduler within 1 s (--worker-start-timeout" in err
        assert "--scheduler-host" in err
    else:
        assert code == 0  # every block was done; the template was killed afterwards
        assert f"did not exit within {timeout} s after its worker had finished" in caplog.text
        np.testing.assert_array_equal(_target(output), reference)


def test_template_that_never_starts_the_worker(tiny_data, tmp_path, capsys):
    """``echo {command}`` exits 0 without a worker: a failed worker, not a
    clean one that daisy would start again and again."""
    output = tmp_path / "out.zarr"
    code = bw.main(
        _args(tiny_data, output, "--worker-command", "echo {command}", "--worker-restarts", "0")
    )
    assert code == 1
    assert "exited (status 0) without its worker connecting" in capsys.readouterr().err


def test_scheduler_host_that_is_not_this_machine(tiny_data, tmp_path, capsys):
    address = "203.0.113.77"  # TEST-NET-3: no address of this machine, nothing can listen there
    try:
        socket.create_server((address, 0)).close()
        pytest.skip(f"{address} is an address of this machine")
    except OSError:
        pass
    output = tmp_path / "out.zarr"
    args = _args(tiny_data, output, "--worker-command", "{command}", "--scheduler-host", address)
    assert bw.main(args) == 2
    assert f"cannot listen on --scheduler-host '{address}'" in capsys.readouterr().err


LAUNCHER = """
import sys
import daisy
from pipelines.blockwise.jobfile import new_secret
from pipelines.blockwise.worker import CommandLauncher

context = daisy.Context(hostname="127.0.0.1", port=1, worker_id=0, task_id="t")
CommandLauncher(sys.argv[1], "job", "key", sys.argv[2], new_secret())(context=context)
"""


def test_stopped_launcher_kills_its_command_group(tmp_path):
    """SIGTERM to a launcher (as daisy's worker process) kills its worker
    command's whole process group, not just the shell."""
    tag = str(1000500 + os.getpid() % 1000)
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, f"sleep {tag} & sleep {tag}; {{command}}", str(tmp_path)],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while len(_sleepers(tag)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_sleepers(tag)) == 2
        launcher.terminate()
        assert launcher.wait(timeout=30) == 128 + 15
        assert _sleepers(tag) == []
    finally:
        launcher.kill()
        launcher.wait()
        for pid in _sleepers(tag):  # only if the test failed: what it started
            os.kill(pid, 9)


@pytest.mark.slow
def test_ctrl_c_stops_the_run_and_its_worker_commands(tiny_data, tmp_path):
    """SIGINT to the scheduler's process group (Ctrl-C): one line, exit 130,
    every worker command's process group gone."""
    tag = str(1000700 + os.getpid() % 1000)
    command = [sys.executable, "-m", "pipelines.blockwise"]
    command += _args(
        tiny_data, tmp_path / "out.zarr", "--worker-command", f"sleep {tag}; {{command}}"
    )
    run = subprocess.Popen(
        command, cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 180  # the run starts its worker command
        while not _sleepers(tag) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sleepers(tag)
        os.killpg(run.pid, 2)
        assert run.wait(timeout=120) == 130
        err = run.stderr.read()
        assert err.strip().splitlines()[-1] == (
            f"interrupted: finished blocks are kept in {tmp_path / 'out.zarr'}; rerun the same "
            "command to resume"
        )
        assert "in main" not in err  # no traceback of this command (daisy logs its workers')
        assert _sleepers(tag) == []
    finally:
        run.kill()
        run.wait()
        for pid in _sleepers(tag):  # only if the test failed: what it started
            os.kill(pid, 9)


# ---------------------------------------------------------------------------
# the command line: numbers, names, paths
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-retries", "-1"], "--max-retries must be at least 0, got -1"),
        (["--worker-restarts", "-1"], "--worker-restarts must be at least 0, got -1"),
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--threads-per-worker", "0"], "--threads-per-worker must be at least 1"),
        (["--block-timeout", "nan"], "--block-timeout must be a positive number of seconds"),
        (["--block-timeout", "0"], "--block-timeout must be a positive number of seconds"),
        (["--worker-start-timeout", "inf"], "--worker-start-timeout must be a positive"),
        (["--context", "inf"], "context must be one or 3 finite non-negative values"),
        (["--context", "nan"], "context must be one or 3 finite non-negative values"),
        (["--context", "8", "-8", "8"], "context must be one or 3 finite non-negative values"),
        (["--block-shape", "4", "0", "32"], "block_shape must be 3 positive voxel counts"),
        (["--block-shape", "4", "32"], "block_shape must be 3 positive voxel counts"),
        (["--distance-mask", "/tmp/elsewhere"], "'/tmp/elsewhere' must be a relative path"),
        (["--distance-mask", "../outside"], "'../outside' must be a relative path inside"),
        (["--target", "a/../../b"], "'a/../../b' must be a relative path inside --output"),
    ],
)
def test_bad_numbers_and_names_are_refused_before_writing(
    tiny_data, tmp_path, capsys, extra, message
):
    output = tmp_path / "out.zarr"
    assert bw.main(_args(tiny_data, output) + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing created, not even outside


def test_output_whose_parent_is_a_file(tiny_data, tmp_path, capsys):
    parent = tmp_path / "results"
    parent.write_text("the user's file")
    assert bw.main(_args(tiny_data, parent / "out.zarr")) == 2
    assert f"{parent} is a file, not a directory" in capsys.readouterr().err
    assert parent.read_text() == "the user's file"


def test_read_only_output_is_one_line(tiny_data, tmp_path, capsys, monkeypatch):
    """The file system refuses the output (read-only; tests run as root, so
    the refusal is injected where the container is created)."""

    def refuse(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    output = tmp_path / "out.zarr"
    assert bw.main(_args(tiny_data, output)) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: file system error at {output}: Read-only file system (errno {errno.EROFS}); "
        "no block was processed and existing outputs are unchanged"
    )


@pytest.mark.slow
def test_file_size_limit_during_block_writes_then_resume(tiny_data, reference, tmp_path):
    """Workers whose writes fail (a file-size limit: chunk files of the
    target exceed it, so the file system refuses them as a full disk would)
    end the run with one line; the rerun without the limit completes."""
    output = tmp_path / "out.zarr"
    command = [sys.executable, "-m", "pipelines.blockwise", *_args(tiny_data, output)]
    command += ["--max-retries", "0", "--worker-restarts", "0"]

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    result = subprocess.run(
        command, capture_output=True, text=True, preexec_fn=limit, cwd=ROOT, timeout=300
    )
    assert result.returncode == 1, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in result.stderr.split("error:")[-1]
    assert "blocks not done: cannot write" in error[0]
    assert "File too large (errno 27)" in error[0] and "rerun the same command" in error[0]
    assert bw.main(_args(tiny_data, output)) == 0
    np.testing.assert_array_equal(_target(output), reference)
