"""One formatter for byte counts: the config's messages, `show`'s table and the progress bar's speed."""
import doctest

from brsm import sizes
from brsm.console.progress import binary_rate


def test_doctests():
    assert doctest.testmod(sizes).failed == 0


def test_the_speed_and_the_sizes_read_alike():
    assert binary_rate(1536) == "1.5 KiB/s" and sizes.size_text(1536) == "1.5 KiB"
    assert binary_rate(512) == "512 B/s" and binary_rate(None) == "?"
    assert sizes.size_text(3 << 40) == "3.0 TiB"
