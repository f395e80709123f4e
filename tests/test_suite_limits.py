"""The suite's own guard (``conftest``): compiled programs are dropped before a worker maps
more memory regions than the kernel allows."""

import jax
import jax.numpy as jnp
import pytest

from conftest import _mapped_regions, release_compiled_programs


def test_compiled_programs_are_kept_below_the_limit_and_dropped_past_it():
    if _mapped_regions() is None:
        pytest.skip("this system has no /proc/self/maps")
    double = jax.jit(lambda x: 2 * x)
    double(jnp.ones(3))
    assert _mapped_regions() > 0 and double._cache_size() == 1
    assert release_compiled_programs(10**9) is False and double._cache_size() == 1
    assert release_compiled_programs(0) is True and double._cache_size() == 0
    assert jnp.array_equal(double(jnp.ones(3)), 2 * jnp.ones(3))  # compiled again when called
