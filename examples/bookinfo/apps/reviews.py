"""reviews: what readers wrote. ``GET /reviews/<id>``. Three versions from one program (env ``VERSION``):
v1 shows no stars and never calls ratings; v2 shows black stars, v3 red ones, both from ratings."""

from __future__ import annotations

import os
import socket

from common import Answer, Request, call, health, serve

VERSION = os.environ.get("VERSION", "v1")
STAR_COLOR = os.environ.get("STAR_COLOR", "black")
ENABLE_RATINGS = os.environ.get("ENABLE_RATINGS", "false") == "true"
RATINGS = os.environ.get("RATINGS_SERVICE", "http://ratings:9080")
RATINGS_TIMEOUT = float(os.environ.get("RATINGS_TIMEOUT", "2.5"))
POD = os.environ.get("POD_NAME") or socket.gethostname()

REVIEWS = [
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays.",
    ),
]


def reviews(request: Request) -> Answer:
    product = request.path.rsplit("/", 1)[-1]
    if not product.isdigit():
        return 400, {"error": "please provide a numeric product id"}
    stars: dict[str, int] | None = None
    error = ""
    if ENABLE_RATINGS:
        status, body, error = call(f"{RATINGS}/ratings/{product}", request.forwarded(), RATINGS_TIMEOUT)
        if status == 200 and isinstance(body, dict):
            stars = body.get("ratings") or {}
        else:
            error = error or f"ratings answered {status}"
    out = []
    for reviewer, text in REVIEWS:
        review: dict[str, object] = {"reviewer": reviewer, "text": text}
        if ENABLE_RATINGS:
            if stars is not None and reviewer in stars:
                review["rating"] = {"stars": stars[reviewer], "color": STAR_COLOR}
            else:
                review["rating"] = {"error": "Ratings service is currently unavailable", "cause": error}
        out.append(review)
    return 200, {"id": int(product), "version": VERSION, "pod": POD, "reviews": out}


if __name__ == "__main__":
    serve(f"reviews-{VERSION}", {"/reviews/": reviews, "/health": health})
