"""python -m demo_provider: serve the demo provider."""

from __future__ import annotations

import argparse

import uvicorn

from demo_provider.app import DemoConfig, create_app


def parse_delays(text: str) -> tuple[float, float, float]:
    parts = [float(part) for part in text.split(",")]
    if len(parts) != 3 or any(part < 0 for part in parts):
        raise argparse.ArgumentTypeError("three non-negative numbers: before queued, sent, delivered")
    return parts[0], parts[1], parts[2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo_provider", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9100, help="port to listen on")
    parser.add_argument("--portal", default="http://127.0.0.1:8000", help="the messageservice server it serves")
    parser.add_argument("--public-url", help="where the portal reaches this app (default http://HOST:PORT)")
    parser.add_argument("--code", default="demo_sms", help="the sender CODE it registers")
    parser.add_argument(
        "--delays", type=parse_delays, default=(0.5, 1.0, 1.0), help="seconds before queued,sent,delivered"
    )
    args = parser.parse_args(argv)
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    public_url = args.public_url or f"http://{host}:{args.port}"
    config = DemoConfig(portal_url=args.portal, public_url=public_url, code=args.code, delays=args.delays)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
