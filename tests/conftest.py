"""Strict numerics for the whole suite (after equinox's conftest): float64 on, and rank
promotion raises, so no test passes through a silent broadcast."""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
