"""Fault injection: broker instances of the suite's own, a consumer service run as a
separate process, a producer with retry and a ledger oracle (see docs/reliability.md).

``Proxy`` (a loopback TCP proxy that cuts connections) is used by other broker tests too.
"""

from tests.faults.proxy import Proxy

__all__ = ["Proxy"]
