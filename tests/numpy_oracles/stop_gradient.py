"""Oracle of assignment 04's ``straight_through`` reference: ``ste_utils.straight_through``."""


def _straight_through():
    import ste_utils

    return ste_utils.straight_through


ORACLES = {"stop_gradient/straight_through": _straight_through}
