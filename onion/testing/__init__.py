"""Tools for testing stacks: a scripted provider, a fake clock (strategies and laws follow)."""

from ._clock import FakeClock
from ._scripted import Fail, Reply, ScriptedProvider, StreamRecord

__all__ = ["FakeClock", "Fail", "Reply", "ScriptedProvider", "StreamRecord"]
