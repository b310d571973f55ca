"""Oracles of assignment 09's references: ``ste_utils.integer``'s functions as a student hands them in."""


def _integer(name):
    def make():
        import ste_utils

        return getattr(ste_utils, name)
    return make


ORACLES = {
    "deploy/quantize_multiplier": _integer("quantize_multiplier"),
    "deploy/requantize": _integer("requantize"),
    "deploy/dense": _integer("int8_dense"),
}
