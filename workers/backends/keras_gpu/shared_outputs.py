"""Every layer's output from the Keras child to its runner without copying it through the
pipe: the child writes them, concatenated, into one anonymous memory file (Linux's memfd)
and passes its descriptor over the connection; the runner maps the file and reads the
arrays in place.

Through the pipe, cifar_cnn's 28 MB of outputs at batch 64 cost 25-30 ms of pickling and
copying, more than half the 44 ms `predict` itself; the file costs the child 5-7 ms to
write and the runner 1.3 ms to map. The file has no name, so nothing is left behind when
either process dies: the memory goes with the last descriptor or mapping, and so stays
as long as any of the arrays (or a view of one) is alive.
"""

from __future__ import annotations

import mmap
import os
import sys
import traceback
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from typing import TypedDict

import numpy as np

from workers.backends.base import split_values

DTYPE = np.dtype("<f4")


class SentArrays(TypedDict):
    """What precedes the descriptor: the arrays' shapes and their bytes in all."""

    shapes: list[tuple[int, ...]]
    bytes: int


def send_arrays(connection: Connection, arrays: list[np.ndarray], parent_pid: int) -> None:
    """Send `arrays` (as float32) to the process at the other end of `connection`; the
    file is written before anything is sent, so a failure to write leaves the connection
    free for the error. A failure once the announcement is out ends this process: the
    other end would read an error message as the descriptor it waits for."""
    arrays = [np.asarray(array, DTYPE, order="C") for array in arrays]
    sent = SentArrays(shapes=[array.shape for array in arrays], bytes=sum(a.nbytes for a in arrays))
    if sent["bytes"] == 0:
        connection.send(sent)
        return
    descriptor = os.memfd_create("driftbench-keras-outputs", os.MFD_CLOEXEC)
    try:
        with open(descriptor, "wb", closefd=False) as file:
            for array in arrays:
                file.write(memoryview(array.reshape(-1).view(np.uint8)))
        connection.send(sent)
        try:
            send_handle(connection, descriptor, parent_pid)
        except BaseException:
            traceback.print_exc()  # the runner reports only this process's exit
            sys.stderr.flush()
            os._exit(1)
    finally:
        os.close(descriptor)


def receive_arrays(connection: Connection, sent: SentArrays, timeout_s: float) -> list[np.ndarray]:
    """The arrays `send_arrays` announced with `sent`: writable views of the child's file,
    which the child closes once sent, so this mapping is its only user. Mapped shared and
    populated in one call: a private mapping costs a copy-on-write fault per page later.
    EOFError when the child is gone, TimeoutError when its descriptor does not come."""
    shapes = [tuple(shape) for shape in sent["shapes"]]
    if sum(int(np.prod(shape)) for shape in shapes) * DTYPE.itemsize != sent["bytes"]:
        raise ValueError(f"{sent['bytes']} bytes announced for arrays of shapes {shapes}")
    if sent["bytes"] == 0:
        return split_values(np.empty(0, DTYPE), shapes)
    if not connection.poll(timeout_s):
        raise TimeoutError(f"no outputs file within {timeout_s:.0f} s of its announcement")
    descriptor = recv_handle(connection)
    try:
        mapped = mmap.mmap(descriptor, sent["bytes"], flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
    finally:
        os.close(descriptor)
    return split_values(np.frombuffer(mapped, DTYPE), shapes)
