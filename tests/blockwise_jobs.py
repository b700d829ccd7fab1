"""Block jobs that misbehave on purpose, for the blockwise tests.

Worker processes unpickle these jobs, which imports this module: it
imports only what a targets worker imports (no torch, no gunpowder, no
test module), so a worker starts in a fraction of a second instead of the
seconds a test module's imports take.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipelines import blockwise as bw

HUNG_SECONDS = 600  # longer than any run of a test: only a kill ends it sooner


class FailOnce(bw.TargetsJob):
    """Fails the first attempt at the first block (flag file beside the output)."""

    def process(self, write_roi):
        flag = Path(self.output).parent / "failed_once"
        if write_roi.offset == self.volume_roi.offset and not flag.exists():
            flag.write_text("x")
            raise RuntimeError(f"injected failure at {write_roi}")
        return super().process(write_roi)


class FailAlways(bw.TargetsJob):
    def process(self, write_roi):
        if write_roi.offset == self.volume_roi.offset:
            raise RuntimeError(f"injected failure at {write_roi}")
        return super().process(write_roi)


class SlowFirstBlock(bw.TargetsJob):
    """The first block any worker starts (the one that creates the flag file
    ``pid`` beside the output) writes its pid there and sleeps before
    computing, so it can be killed mid-block."""

    def process(self, write_roi):
        try:
            flag = os.open(Path(self.output).parent / "pid", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return super().process(write_roi)
        os.write(flag, str(os.getpid()).encode())
        os.close(flag)
        time.sleep(300)
        return super().process(write_roi)


def listening(port):
    """The local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    found.append(local.rsplit(":", 1)[0])
    return found


class RogueFirst(bw.TargetsJob):
    """In the first block a worker starts (flag file beside the output), a
    raw daisy client of the same machine takes another block and gives it
    back unprocessed (``mode`` "release") or claims it done (``mode``
    "success"); it also records where the scheduler listens. After a
    release the worker stays in its block (as one busy with a long block
    would), so only the run stopping it ends it."""

    mode: str = "release"

    def process(self, write_roi):
        import daisy
        import daisy._daisy as native

        flag = Path(self.output).parent / "rogue.txt"
        if not flag.exists():
            context = daisy.Context.from_env()
            port = int(context["port"])
            flag.write_text(f"{context['hostname']} {' '.join(listening(port))}")
            client = native.SyncClient(context["hostname"], port, context["task_id"], None)
            block = client.acquire_block()
            if self.mode == "success":
                block.status = native.BlockStatus.SUCCESS
            client.release_block(block)
            if self.mode == "release":
                time.sleep(HUNG_SECONDS)
        return super().process(write_roi)


class RogueSuccess(RogueFirst):
    mode = "success"
