"""UA-MT: Mean Teacher with an MC-dropout uncertainty mask on the consistency."""

from .helpers import trains_on_fixed_batch


def test_uamt_trains_on_fixed_batch():
    trains_on_fixed_batch("uamt", {"mc_passes": 2}, "dynamic", 0.5, {"sup", "cons", "certain_fraction"})
