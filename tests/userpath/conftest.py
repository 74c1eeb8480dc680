"""User-path tests: the product driven the way a user drives it (`make up` from a clean clone...)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "userpath: runs the user's own commands from a clean copy of the repository "
        "(needs Docker; `make up` needs 127.0.0.1:5060/5070/8088 free)",
    )
