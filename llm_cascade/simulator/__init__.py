"""A local provider simulator: real HTTP on 127.0.0.1 in each vendor's wire format.

Use it in tests of code built on llm-cascade, and to try cascades offline:

    from llm_cascade.simulator import Simulator, Fail, Reply
    with Simulator() as sim:
        sim.script("primary", Fail(429, retry_after="30"))
        sim.script("backup", Reply("hello"))
    sim.script("streamer", Reply("one two three", stream=Stream(stall_after=1)))
"""

from .behaviours import (
    Behaviour,
    Close,
    Empty,
    ErrorEvent,
    Fail,
    Hang,
    HtmlError,
    InvalidJson,
    Redirect,
    Reply,
    SimToolCall,
    Stream,
)
from .server import Simulator

__all__ = [
    "Behaviour",
    "Close",
    "Empty",
    "ErrorEvent",
    "Fail",
    "Hang",
    "HtmlError",
    "InvalidJson",
    "Redirect",
    "Reply",
    "SimToolCall",
    "Simulator",
    "Stream",
]
