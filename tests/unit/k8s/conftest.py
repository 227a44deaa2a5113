# Copyright: gpuops.nvidia contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures for the k8s module_utils unit tests."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from k8s_unit_helpers import FakeClock, FakeKube


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_kube(clock: FakeClock) -> Callable[..., FakeKube]:
    def build(**kwargs: Any) -> FakeKube:
        return FakeKube(clock, **kwargs)

    return build
