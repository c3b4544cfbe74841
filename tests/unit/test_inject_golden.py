"""The injection webhook on recorded AdmissionReview requests for real pod specs (tests/golden/inject/).

Each ``<case>.request.json`` is what the API server sends; ``<case>.golden.yaml`` is the verdict and the
pod after the returned JSONPatch is applied to the request's object. Regenerate after an intended change
with MIZZEN_UPDATE_GOLDENS=1 and review the diff.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from controller.inject.config import InjectConfig
from controller.inject.webhook import Injector
from controller.webhooks import admission

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "inject"
CASES = sorted(p.name.removesuffix(".request.json") for p in GOLDEN.glob("*.request.json"))
VARIANTS = {"native": True, "classic": False}


def _answer(case: str, native: bool) -> dict[str, Any]:
    body = (GOLDEN / f"{case}.request.json").read_bytes()
    request = admission.parse(body)
    review = admission.respond(request, Injector(InjectConfig(), native=native).review(request))
    response = review["response"]
    assert response["uid"] == json.loads(body)["request"]["uid"]
    assert review["apiVersion"] == "admission.k8s.io/v1" and review["kind"] == "AdmissionReview"
    out: dict[str, Any] = {"allowed": response["allowed"]}
    if "status" in response:
        out["status"] = response["status"]
    if response.get("warnings"):
        out["warnings"] = response["warnings"]
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(response["patch"]))
        out["pod"] = jsonpatch.apply_patch(json.loads(body)["request"]["object"], ops)
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("case", CASES)
def test_recorded_review(case: str, variant: str) -> None:
    got = _answer(case, VARIANTS[variant])
    path = GOLDEN / f"{case}.{variant}.golden.yaml"
    if os.environ.get("MIZZEN_UPDATE_GOLDENS"):
        path.write_text(yaml.safe_dump(got, sort_keys=True, width=120))
    assert path.exists(), f"no golden file {path.name}; run with MIZZEN_UPDATE_GOLDENS=1"
    assert got == yaml.safe_load(path.read_text())


def test_the_cases_cover_what_the_issue_names() -> None:
    assert {"probes", "multi_container", "already_injected", "opted_out"} <= set(CASES)
