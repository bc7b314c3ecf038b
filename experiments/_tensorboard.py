"""Every metric a Sacred run logs, mirrored to TensorBoard event files.

Sacred metrics are named ``<group>.<metric>[.d<level>][.exp<j>]`` with the experience (or
update, or bin) as the step, so each name is one curve over the run, in the run folder's
``metrics.json``, in MongoDB (Omniboard) with ``-m``, and in TensorBoard with this
observer: one scalar tag per metric name, ``add_scalar(name, value, step)``, the same
series. A run writes to ``<DIR>/<run id>`` (the run folder's name: ``7``, ``7.r1``, a
sweep's ``<12 hex digits>``), so ``tensorboard --logdir DIR`` shows every run side by side.
A resumed run re-logs the history it continues, so its folder holds every step.

    python -m experiments.stream --tensorboard runs/tensorboard with cbp
    python -m experiments.sweep stream --grid bp cbp --tensorboard runs/tensorboard
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

from sacred import Experiment
from sacred.commandline_options import cli_option
from sacred.observers import RunObserver

__all__ = ["TensorBoardObserver", "add_option", "tensorboard_option"]


class TensorBoardObserver(RunObserver):
    """A Sacred observer that writes every logged scalar to ``<root>/<run id>``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.writer = None

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        # Observers run in priority order and the run folder's observer (priority 20) names
        # the run first, so _id is its folder's name; without one, the start time.
        name = str(_id) if _id is not None else start_time.strftime("%Y%m%d-%H%M%S-%f")
        from torch.utils.tensorboard import SummaryWriter  # imports TensorBoard: lazily

        self.writer = SummaryWriter(log_dir=str(self.root / name))

    def log_metrics(self, metrics_by_name, info):
        if self.writer is None:
            return
        for name, series in metrics_by_name.items():
            for step, value, stamp in zip(
                series["steps"], series["values"], series["timestamps"], strict=True
            ):
                self.writer.add_scalar(name, value, step, walltime=_seconds(stamp))
        self.writer.flush()

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def completed_event(self, stop_time, result):
        self._close()

    def interrupted_event(self, interrupt_time, status):
        self._close()

    def failed_event(self, fail_time, fail_trace):
        self._close()


def _seconds(stamp) -> float:
    """Sacred's metric timestamps are naive UTC datetimes; TensorBoard takes epoch seconds."""
    if isinstance(stamp, datetime.datetime):
        return stamp.replace(tzinfo=datetime.UTC).timestamp()
    return time.time()


@cli_option("-T", "--tensorboard")
def tensorboard_option(args, run):
    """Also write every logged metric to TensorBoard event files in <DIR>/<run id>."""
    run.observers.append(TensorBoardObserver(Path(args).absolute()))


def add_option(ex: Experiment) -> Experiment:
    """Give ``ex`` the ``--tensorboard DIR`` option (once): on its command line, and in
    ``ex.run(options={"--tensorboard": DIR})``."""
    if tensorboard_option not in ex.additional_cli_options:
        ex.additional_cli_options.append(tensorboard_option)
        ex.all_cli_options.append(tensorboard_option)
    return ex
