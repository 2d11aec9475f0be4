import os

import pytest
import torch

# Tests run two processes on two cores (pytest-xdist): one thread each avoids oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def default_dtype_is_left_as_found():
    """A test (or the code it runs) that changes torch's default dtype and does not restore it breaks the tests
    that run after it in the same worker, far from the cause: restore it and fail the culprit."""
    before = torch.get_default_dtype()
    yield
    after = torch.get_default_dtype()
    if after != before:
        torch.set_default_dtype(before)
        pytest.fail(f"the default dtype was changed from {before} to {after} and not restored")
