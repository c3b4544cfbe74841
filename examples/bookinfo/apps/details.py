"""details: facts about a book. ``GET /details/<id>``."""

from __future__ import annotations

from common import Answer, Request, health, serve

BOOK = {
    "author": "William Shakespeare",
    "year": 1595,
    "type": "paperback",
    "pages": 200,
    "publisher": "PublisherA",
    "language": "English",
    "ISBN-10": "1234567890",
    "ISBN-13": "123-1234567890",
}


def details(request: Request) -> Answer:
    product = request.path.rsplit("/", 1)[-1]
    if not product.isdigit():
        return 400, {"error": "please provide a numeric product id"}
    return 200, {"id": int(product), **BOOK}


if __name__ == "__main__":
    serve("details", {"/details/": details, "/health": health})
