"""Anti-replay window (RFC 4303 section 3.4.3, Appendix A): sliding bitmap and ESN inference."""

from __future__ import annotations

import pytest

from kipsec_sidecar.core.errors import LocalProtocolError, ReplayError
from kipsec_sidecar.core.replay import DEFAULT_WINDOW_SIZE, ReplayWindow


def receive(window: ReplayWindow, seq_low: int) -> int:
    full = window.check(seq_low)
    window.accept(full)
    return full


def test_default_window_is_1024() -> None:
    assert ReplayWindow().size == DEFAULT_WINDOW_SIZE == 1024


def test_in_order_packets_are_accepted() -> None:
    window = ReplayWindow(64)
    for seq in range(1, 200):
        assert receive(window, seq) == seq
    assert window.top == 199


def test_duplicate_is_rejected() -> None:
    window = ReplayWindow(64)
    receive(window, 5)
    with pytest.raises(ReplayError, match="already"):
        window.check(5)


def test_reordered_packet_inside_the_window_is_accepted_once() -> None:
    window = ReplayWindow(64)
    receive(window, 100)
    receive(window, 40)
    with pytest.raises(ReplayError):
        window.check(40)


def test_packet_left_of_the_window_is_rejected() -> None:
    window = ReplayWindow(64)
    receive(window, 100)
    receive(window, 37)  # 100 - 63: the window's left edge
    with pytest.raises(ReplayError, match="left of the window"):
        window.check(36)


def test_sequence_number_zero_is_rejected() -> None:
    with pytest.raises(ReplayError):
        ReplayWindow(64).check(0)


def test_check_does_not_change_state() -> None:
    window = ReplayWindow(64)
    window.check(10)
    assert (window.top, window.bitmap) == (0, 0)
    receive(window, 10)


def test_accept_refuses_a_duplicate_that_raced_the_check() -> None:
    window = ReplayWindow(64)
    full = window.check(7)
    window.accept(full)
    with pytest.raises(ReplayError):
        window.accept(full)


def test_big_jump_clears_the_bitmap() -> None:
    window = ReplayWindow(64)
    receive(window, 1)
    receive(window, 1_000_000)
    assert window.bitmap == 1
    receive(window, 1_000_000 - 63)


@pytest.mark.parametrize("size", [32, 64, 1024, 4096])
def test_window_sizes_up_to_4096_keep_exactly_size_entries(size: int) -> None:
    window = ReplayWindow(size)
    top = size * 3
    receive(window, top)
    for seq in range(top - size + 1, top):
        receive(window, seq)
    with pytest.raises(ReplayError, match="left"):
        window.check(top - size)
    with pytest.raises(ReplayError, match="already"):
        window.check(top - size + 1)
    assert window.bitmap == (1 << size) - 1


@pytest.mark.parametrize("size", [0, 31, 1 << 17])
def test_window_size_outside_bounds_is_refused(size: int) -> None:
    with pytest.raises(LocalProtocolError):
        ReplayWindow(size)


def test_esn_infers_the_next_epoch_across_two_to_the_32() -> None:
    window = ReplayWindow(64, esn=True)
    window.accept(0xFFFFFFF0)
    assert receive(window, 0x00000003) == 0x1_00000003
    assert window.top == 0x1_00000003


def test_esn_infers_the_previous_epoch_for_late_packets_after_the_wrap() -> None:
    window = ReplayWindow(64, esn=True)
    window.accept(0x1_00000005)
    assert receive(window, 0xFFFFFFF0) == 0x0_FFFFFFF0


def test_esn_late_packet_already_seen_before_the_wrap_is_a_replay() -> None:
    window = ReplayWindow(64, esn=True)
    receive(window, 0xFFFFFFF0)
    receive(window, 0x00000002)
    with pytest.raises(ReplayError):
        window.check(0xFFFFFFF0)


def test_esn_within_an_epoch_keeps_the_high_half() -> None:
    window = ReplayWindow(64, esn=True)
    window.accept(0x7_00001000)
    assert window.check(0x00000FF0) == 0x7_00000FF0
    assert window.check(0x00002000) == 0x7_00002000


def test_without_esn_the_wire_value_is_the_sequence_number() -> None:
    window = ReplayWindow(64)
    window.accept(0xFFFFFFF0)
    with pytest.raises(ReplayError):
        window.check(3)
