"""productpage: the page a reader sees. It calls details and reviews (forwarding the user and the trace
headers) and shows which reviews version answered and whether ratings could be reached.

``GET /productpage`` (HTML) and ``GET /api/v1/productpage`` (the same as JSON); the user is the
``end-user`` header, else the ``user`` cookie, else ``?u=NAME``. Also ``/api/v1/products``,
``/api/v1/products/<id>``, ``/api/v1/products/<id>/reviews``, ``/health``.
"""

from __future__ import annotations

import html
import os
from http.cookies import SimpleCookie
from typing import Any

from common import Answer, Request, call, health, serve

DETAILS = os.environ.get("DETAILS_SERVICE", "http://details:9080")
REVIEWS = os.environ.get("REVIEWS_SERVICE", "http://reviews:9080")
TIMEOUT = float(os.environ.get("SERVICE_TIMEOUT", "3"))
PRODUCT = {"id": 0, "title": "The Comedy of Errors", "descriptionHtml": "A comedy by William Shakespeare."}


def user_of(request: Request) -> str:
    if request.headers.get("end-user"):
        return request.headers["end-user"]
    cookie = SimpleCookie(request.headers.get("cookie", ""))
    if "user" in cookie:
        return cookie["user"].value
    return request.query.get("u", "")


def page(request: Request) -> dict[str, Any]:
    user = user_of(request)
    headers = request.forwarded(**{"end-user": user})
    out: dict[str, Any] = {"product": PRODUCT, "user": user or None}
    status, body, error = call(f"{DETAILS}/details/{PRODUCT['id']}", headers, TIMEOUT)
    out["details"] = (
        body if status == 200 else {"error": "details are currently unavailable", "status": status}
    )
    status, body, error = call(f"{REVIEWS}/reviews/{PRODUCT['id']}", headers, TIMEOUT)
    if status == 200 and isinstance(body, dict):
        ratings = [r.get("rating") for r in body.get("reviews") or () if "rating" in r]
        out["reviews"] = body
        out["reviewsVersion"] = body.get("version")
        # v1 never asks ratings: there is nothing to say about it then.
        out["ratingsReachable"] = all("stars" in r for r in ratings) if ratings else None
        out["stars"] = next((r["color"] for r in ratings if "color" in r), None)
    else:
        out["reviews"] = {
            "error": "product reviews are currently unavailable",
            "status": status,
            "cause": error,
        }
        out["reviewsVersion"] = None
        out["ratingsReachable"] = None
        out["stars"] = None
    return out


def page_json(request: Request) -> Answer:
    return 200, page(request)


def page_html(request: Request) -> Answer:
    data = page(request)
    esc = html.escape
    rows = []
    reviews = data["reviews"]
    if "error" in reviews:
        rows.append(f"<p class=error>Error: {esc(reviews['error'])}</p>")
    for review in reviews.get("reviews") or ():
        rating = review.get("rating")
        if rating is None:
            stars = ""
        elif "stars" in rating:
            stars = f"<span style='color:{esc(rating['color'])}'>{'&#9733;' * int(rating['stars'])}</span>"
        else:
            stars = f"<span class=error>{esc(rating['error'])}</span>"
        rows.append(
            f"<blockquote>{esc(review['text'])}<br>"
            f"<small>{esc(review['reviewer'])}</small> {stars}</blockquote>"
        )
    details = data["details"]
    facts = "".join(f"<dt>{esc(str(k))}</dt><dd>{esc(str(v))}</dd>" for k, v in details.items() if k != "id")
    who = esc(data["user"]) if data["user"] else "nobody (sign in with ?u=jason)"
    body = (
        "<!doctype html><html><head><title>Bookinfo</title></head><body>"
        f"<h1>{esc(str(PRODUCT['title']))}</h1><p>{PRODUCT['descriptionHtml']}</p><p>Signed in: {who}</p>"
        f"<h2>Book details</h2><dl>{facts}</dl>"
        f"<h2>Book reviews <small>(reviews {esc(str(data['reviewsVersion'] or '-'))})</small></h2>"
        f"{''.join(rows)}"
        "</body></html>"
    )
    return 200, body


def products(request: Request) -> Answer:
    parts = [p for p in request.path.split("/") if p][3:]  # after api/v1/products
    headers = request.forwarded(**{"end-user": user_of(request)})
    if not parts:
        return 200, [PRODUCT]
    if not parts[0].isdigit():
        return 400, {"error": "please provide a numeric product id"}
    if len(parts) == 1:
        status, body, _ = call(f"{DETAILS}/details/{parts[0]}", headers, TIMEOUT)
        return (status or 503), body
    if parts[1] == "reviews":
        status, body, _ = call(f"{REVIEWS}/reviews/{parts[0]}", headers, TIMEOUT)
        return (status or 503), body
    return 404, {"error": f"no route for {request.path}"}


if __name__ == "__main__":
    serve(
        "productpage",
        {
            "/productpage": page_html,
            "/api/v1/productpage": page_json,
            "/api/v1/products": products,
            "/health": health,
            "/": lambda _: (200, "<a href=/productpage>/productpage</a>"),
        },
    )
