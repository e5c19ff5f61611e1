"""Progress per split while the Beam job runs (one line per split, not one per shard).

Workers run anywhere (local processes, Dataflow VMs) and only know their own shards, so
each one leaves a small marker file per finished shard in OUT/_bonify_progress/; the
launcher polls that folder and prints, per split, how many shards and images are done,
and one line when a split's last shard is written. The folder is removed before
manifest.json is written.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping

from bonify.vocabulary import SPLITS

#: The folder (inside --output_dir) of the per-shard markers.
PROGRESS_DIR = "_bonify_progress"

#: Seconds between two looks at the markers (a split's line is printed at most this often).
POLL_SECONDS = 10.0


def shard_marker(split: str, written: int, rejected: int, finished_at: float) -> dict:
    """What a worker records about one finished shard (finished_at: time.time())."""
    return {"split": split, "written": written, "rejected": rejected, "finished_at": finished_at}


def marker_name(shard_file_name: str) -> str:
    """The marker file name of a shard."""
    return f"{shard_file_name}.json"


class SplitProgress:
    """Turns the markers seen so far into progress lines, printing only what changed.

    shards_per_split / images_per_split: what the job will write per split (images as
    indexed; some may still be rejected when decoded). started: time.time() of the run.
    """

    def __init__(
        self,
        shards_per_split: Mapping[str, int],
        images_per_split: Mapping[str, int],
        started: float,
    ):
        self._shards = dict(shards_per_split)
        self._images = dict(images_per_split)
        self._started = started
        self._last_reported: dict[str, int] = {}

    def update(self, markers: Mapping[str, Mapping]) -> list[str]:
        """Lines for the splits whose count of finished shards changed since the last call.

        markers: marker name -> shard_marker() of every finished shard seen so far.
        """
        lines = []
        for split in SPLITS:
            done = [marker for marker in markers.values() if marker["split"] == split]
            total_shards = self._shards.get(split, 0)
            if not total_shards or self._last_reported.get(split) == len(done):
                continue
            self._last_reported[split] = len(done)
            written = sum(marker["written"] for marker in done)
            rejected = sum(marker["rejected"] for marker in done)
            if len(done) == total_shards:
                seconds = max(marker["finished_at"] for marker in done) - self._started
                lines.append(
                    f"{split}: all {total_shards} shards written: {written} images"
                    f"{f', {rejected} rejected' if rejected else ''} ({seconds:.1f} s)"
                )
            elif done:
                expected = self._images.get(split, 0)
                percent = 100 * (written + rejected) / expected if expected else 100
                lines.append(
                    f"{split}: {len(done)} of {total_shards} shards written, "
                    f"{written + rejected} of {expected} images ({percent:.0f}%)"
                )
        return lines


def watch_progress(
    read_markers: Callable[[], Mapping[str, Mapping]],
    progress: SplitProgress,
    emit: Callable[[str], None],
    poll_seconds: float = POLL_SECONDS,
) -> Callable[[], None]:
    """Report progress from a background thread; returns `finish`, which stops the thread
    and reports the final state (call it after the pipeline has finished)."""
    stop = threading.Event()
    lock = threading.Lock()

    def report() -> None:
        markers = read_markers()
        with lock:
            for line in progress.update(markers):
                emit(line)

    def loop() -> None:
        while not stop.wait(poll_seconds):
            # A failed look (e.g. a network error on gs://) must never fail the job.
            with contextlib.suppress(Exception):
                report()

    thread = threading.Thread(target=loop, name="bonify-progress", daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join()
        report()

    return finish
