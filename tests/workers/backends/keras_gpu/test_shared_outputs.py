"""Outputs from the Keras child through a memory file: the same bits in another process,
even once the child has exited, shapes kept (empty and 0-d ones too), float64 sent as
float32, views the runner may write to; and a child that dies, stalls or sends something
else where its descriptor should be is an error, never a hang."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import numpy as np
import pytest

from workers.backends.keras_gpu.shared_outputs import SentArrays, receive_arrays, send_arrays

SEED = 11
TIMEOUT_S = 60.0


def arrays() -> list[np.ndarray]:
    rng = np.random.default_rng(SEED)
    return [
        rng.standard_normal((4, 8, 8, 3)).astype(np.float32),
        np.zeros((4, 0), np.float32),
        rng.standard_normal((4, 10)),  # float64: sent as float32
        np.array([np.nan, -0.0, np.inf, 1e-45], np.float32),
        np.array(2.5, np.float32),  # 0-d
    ]


def send(connection: Connection, parent_pid: int) -> None:
    send_arrays(connection, arrays(), parent_pid)


def announce_and_die(connection: Connection, _: int) -> None:
    connection.send({"shapes": [(2, 2)], "bytes": 16})
    os._exit(3)


def announce_then_answer_otherwise(connection: Connection, _: int) -> None:
    connection.send({"shapes": [(2, 2)], "bytes": 16})
    connection.send({"error": "something went wrong after the announcement"})
    connection.recv()


def announce_and_stall(connection: Connection, _: int) -> None:
    connection.send({"shapes": [(2, 2)], "bytes": 16})
    connection.recv()


def child(target: Callable[[Connection, int], None]) -> tuple[Connection, BaseProcess]:
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    process = context.Process(target=target, args=(child_end, os.getpid()), daemon=True)
    process.start()
    child_end.close()
    return parent_end, process


def test_arrays_arrive_bit_for_bit_and_writable_after_the_child_has_gone() -> None:
    connection, process = child(send)
    process.join(timeout=60)
    assert process.exitcode == 0
    received = receive_arrays(connection, connection.recv(), TIMEOUT_S)
    expected = arrays()
    assert [a.shape for a in received] == [a.shape for a in expected]
    assert all(a.dtype == np.float32 for a in received)
    for got, sent in zip(received, expected, strict=True):
        want = sent.astype(np.float32)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    received[0][0, 0, 0, 0] = 123.0
    assert received[0][0, 0, 0, 0] == 123.0


def test_only_empty_arrays_need_no_file() -> None:
    parent_end, child_end = multiprocessing.Pipe()
    send_arrays(child_end, [np.zeros((3, 0), np.float32)], os.getpid())
    received = receive_arrays(parent_end, parent_end.recv(), TIMEOUT_S)
    assert [a.shape for a in received] == [(3, 0)]
    assert not parent_end.poll(0)


def test_an_announcement_that_does_not_add_up_is_refused() -> None:
    parent_end, _ = multiprocessing.Pipe()
    with pytest.raises(ValueError, match="20 bytes announced"):
        receive_arrays(parent_end, SentArrays(shapes=[(2, 2)], bytes=20), TIMEOUT_S)


def test_a_child_dying_before_its_descriptor_is_an_error() -> None:
    connection, process = child(announce_and_die)
    with pytest.raises((EOFError, OSError)):
        receive_arrays(connection, connection.recv(), TIMEOUT_S)
    process.join(timeout=30)
    assert process.exitcode == 3


def test_a_message_where_the_descriptor_should_be_is_an_error() -> None:
    connection, process = child(announce_then_answer_otherwise)
    with pytest.raises(RuntimeError, match="0 items of ancdata"):
        receive_arrays(connection, connection.recv(), TIMEOUT_S)
    process.kill()


def test_a_child_that_never_sends_its_descriptor_times_out() -> None:
    connection, process = child(announce_and_stall)
    with pytest.raises(TimeoutError, match="no outputs file within 1 s"):
        receive_arrays(connection, connection.recv(), 1.0)
    process.kill()
