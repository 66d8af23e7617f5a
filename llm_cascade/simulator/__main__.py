"""`python -m llm_cascade.simulator`: serve the simulator until interrupted.

    python -m llm_cascade.simulator --port 8199 --script script.json

The script file maps model names to lists of behaviours, e.g.
`{"gpt-4o": [{"type": "fail", "status": 429, "retry_after": "30"}]}`; a reply's `stream`
object scripts how it is streamed: `{"type": "reply", "text": "hi", "stream": {"chunks": 2}}`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from .behaviours import from_json
from .server import Simulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llm_cascade.simulator", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--script", help="JSON file: {model: [behaviour, ...]}")
    parser.add_argument("--api-key", help="accept only this key (default: any non-empty key)")
    args = parser.parse_args(argv)
    sim = Simulator(port=args.port, api_key=args.api_key)
    if args.script:
        try:
            with open(args.script, encoding="utf-8") as fh:
                for model, items in json.load(fh).items():
                    sim.script(model, *(from_json(i) for i in items))
        except (OSError, ValueError, AttributeError) as exc:
            print(f"simulator: cannot use script {args.script}: {exc}", file=sys.stderr)
            return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    sim.start()
    print(sim.url, flush=True)
    done.wait()
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
