"""The shared argument checks (:mod:`splitdyn.checks`) accept every legitimate spelling of a value.

(The refusals are in the table of ``tests/test_hostile_inputs_core.py``.)
"""

import numpy as np
import pytest
import torch

from splitdyn import checks


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), torch.tensor(3)])
def test_counts_accept_any_integral_number(value):
    assert checks.check_count("n", value) == 3 and type(checks.check_count("n", value)) is int


@pytest.mark.parametrize("value", [[1], (1,), 1, np.int64(1), torch.tensor([1]), range(1, 2)])
def test_components_accept_any_integer_sequence_or_single_index(value):
    assert checks.check_components("components", value, 2) == [1]


def test_components_keep_their_order():
    assert checks.check_components("components", [2, 0, 1], 3) == [2, 0, 1]


def test_flags_accept_python_and_numpy_bools():
    assert checks.check_flag("flag", np.bool_(True)) is True and checks.check_flag("flag", False) is False


def test_real_numbers_accept_numpy_and_one_element_tensors():
    assert checks.check_real("x", np.float32(0.5)) == 0.5 and checks.check_real("x", torch.tensor([2.0])) == 2.0


def test_tolerances_and_dtypes():
    assert checks.check_tolerance("rtol", 1e-5) == 1e-5
    assert checks.check_floating_dtype("dtype", torch.float16) is torch.float16


def test_matrices_are_float64_cpu_and_checked_for_definiteness():
    M = checks.as_float64_matrix("m", torch.eye(2, dtype=torch.float32), (2, 2), psd=True)
    assert M.dtype == torch.float64 and torch.equal(M, torch.eye(2, dtype=torch.float64))
    assert checks.as_float64_matrix("m", [[0.0, 0.0], [0.0, 1.0]], psd=True).shape == (2, 2)  # semi-definite is fine


def test_nonempty_batch_passes_a_batch_through():
    u = torch.zeros(1, 2)
    assert checks.check_nonempty_batch("u", u) is u
