"""Sup-only: Dice + CE with each sample's prompt; a short run on a fixed batch lowers the loss."""

from .helpers import trains_on_fixed_batch


def test_sup_only_trains_on_fixed_batch():
    trains_on_fixed_batch("sup_only", {}, "dynamic", 0.0, {"sup"})
