"""Every distributed case on 4 gloo ranks == one process on the global batch.

tests/test_distributed.py runs every case on 2 ranks (fast set) and a few core cases on 4;
issue 15 asks for 2 and 4 ranks for every engine objective. With 4 ranks each rank's shard is a
quarter of the global batch, so a rank holds rows whose positives, labels, partners or mixture
partners live on up to three other ranks. One spawn runs all cases (process start-up dominates);
marked slow.
"""

from __future__ import annotations

import pytest
from test_distributed import FAMILY, FAST, MORE, _compare, _spawn, _worker

NAMES = list(dict.fromkeys(FAST + MORE + FAMILY))


@pytest.fixture(scope="module")
def four():
    return _spawn(_worker, 4, NAMES, (), timeout=240.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_four_processes_match_single_process(four, name):
    _compare([res["exact"] for res in four], [name], 4)
