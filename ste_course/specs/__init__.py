"""The registry of check specs, one module per kind of exercise.

Importing this package registers every spec in :data:`ste_course.specs.registry.SPECS` (also
:data:`ste_course.specs.base.SPECS`), and makes a name that is not registered look for a course's own
checks (:func:`ste_course.specs.declarative.discover`).
"""

from ste_course.specs import elementwise  # noqa: F401
from ste_course.specs import backprop, jacobian, proxies, stop_gradient, zero_gradient  # noqa: F401,E402
from ste_course.specs import discrete, qat  # noqa: F401,E402  (assignments 07 and 08)
from ste_course.specs import deploy  # noqa: F401,E402  (assignment 09)
from ste_course.specs import declarative, registry  # noqa: E402

registry.add_finder(declarative.discover)
