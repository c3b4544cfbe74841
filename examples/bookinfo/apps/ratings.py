"""ratings: stars per reviewer. ``GET /ratings/<id>``."""

from __future__ import annotations

from common import Answer, Request, health, serve


def ratings(request: Request) -> Answer:
    product = request.path.rsplit("/", 1)[-1]
    if not product.isdigit():
        return 400, {"error": "please provide a numeric product id"}
    return 200, {"id": int(product), "ratings": {"Reviewer1": 5, "Reviewer2": 4}}


if __name__ == "__main__":
    serve("ratings", {"/ratings/": ratings, "/health": health})
