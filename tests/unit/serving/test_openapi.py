"""The served OpenAPI document says what the service really does."""

from __future__ import annotations

from typing import Any

from fastapi.openapi.utils import get_openapi

from serving.openapi import ERROR, SECURITY_SCHEMES, document
from serving.routes import RouteTable
from tests.support.routes import Service, toy_routes


def _routes() -> RouteTable:
    return toy_routes(Service())


def _spec(routes: RouteTable) -> dict[str, Any]:
    """What BentoML serves: its own components and probes, and the mounted app's paths."""
    ok = {"description": "ok", "content": {"application/octet-stream": {}}}
    spec = get_openapi(title="x", version="1", routes=routes.app.routes)
    spec["info"] = {"title": "clientinsight", "version": "None", "contact": {"name": "BentoML"}}
    spec.setdefault("components", {})["schemas"] = {
        "InvalidArgument": {
            "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}
        }
    }
    spec["paths"]["/models"] = {"get": {"responses": {"200": ok}}}
    spec["paths"]["/livez"] = {"get": {"responses": {"200": ok}}}
    return spec


def test_our_title_version_and_the_two_ways_to_send_a_key() -> None:
    routes = _routes()
    spec = document(_spec(routes), routes)
    assert spec["info"]["title"] == "ClientInsight"
    assert spec["info"]["version"] not in ("None", "") and "contact" not in spec["info"]
    assert spec["components"]["securitySchemes"] == SECURITY_SCHEMES
    assert spec["paths"]["/toy/predict"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in spec["paths"]["/livez"]["get"]


def test_bodies_and_answers_come_from_the_contract() -> None:
    routes = _routes()
    spec = document(_spec(routes), routes)
    predict = spec["paths"]["/toy/predict"]["post"]
    body = predict["requestBody"]
    assert body["required"] is True
    ref = body["content"]["application/json"]["schema"]["$ref"]
    request = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert request["required"] == ["toys"] and request["additionalProperties"] is False
    assert spec["components"]["schemas"]["Toy"]["required"] == ["name", "count"]
    answer = predict["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["items"] == {"$ref": "#/components/schemas/ToyAnswer"}
    upload = spec["paths"]["/toy/predict_file"]["post"]
    form = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["file"] == {
        "type": "string",
        "format": "binary",
        "description": "A CSV (UTF-8), Parquet or Arrow IPC file",
    }
    assert "text/csv" in upload["responses"]["200"]["content"]


def test_errors_as_sent_and_every_status_listed() -> None:
    routes = _routes()
    spec = document(_spec(routes), routes)
    detail = spec["components"]["schemas"]["InvalidArgument"]["properties"]["detail"]
    assert {"type": "array", "items": {"type": "object"}} in detail["oneOf"]
    predict = spec["paths"]["/toy/predict"]["post"]["responses"]
    assert {"200", "400", "401", "413", "429", "503"} <= set(predict)
    assert predict["503"]["content"]["application/json"]["schema"] == ERROR
    assert "415" in spec["paths"]["/toy/predict_file"]["post"]["responses"]
    assert {"401", "403"} <= set(spec["paths"]["/models"]["get"]["responses"])
    assert set(spec["paths"]["/livez"]["get"]["responses"]) == {"200"}


def test_the_contracts_bounds_are_json_schema_bounds() -> None:
    """A validator placed before a field's constraints makes pydantic emit them as raw `ge`
    and `le` keys, which no client or fuzzer reads as bounds."""
    from models import churn, credit

    def keys(node: Any) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for value in node.values() for k in keys(value)}
        if isinstance(node, list):
            return {k for value in node for k in keys(value)}
        return set()

    for record in (churn.Customer, credit.Applicant):
        found = keys(record.model_json_schema())
        assert not found & {"ge", "le", "gt", "lt"}, record.__name__
        assert {"minimum", "maximum"} <= found


def test_the_inference_protocols_routes_are_documented_from_the_catalog() -> None:
    from models.catalog import FAMILIES
    from serving.oip import rest
    from serving.oip.dataplane import DataPlane

    routes = _routes()
    plane = DataPlane(FAMILIES)
    spec = document(_spec(routes), routes, rest.openapi(plane))
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    [name] = infer["parameters"]
    assert name["schema"]["enum"] == list(plane.models)
    assert {"churn", "credit-evaluation", "credit-segment"} <= set(name["schema"]["enum"])
    assert {"200", "400", "401", "404", "413", "429", "503"} <= set(infer["responses"])
    assert infer["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in spec["paths"]["/v2/health/ready"]["get"]
    assert "/v2/models/{name}/versions/{version}/ready" in spec["paths"]
    request = spec["components"]["schemas"]["OipInferenceRequest"]
    assert request["required"] == ["inputs"]
    datatypes = request["properties"]["inputs"]["items"]["properties"]["datatype"]["enum"]
    assert {"BYTES", "INT64", "FP64", "BOOL"} <= set(datatypes)
