"""The served OpenAPI document says what the service really does."""

from __future__ import annotations

from typing import Any

from serving.openapi import ERROR, document


def _spec() -> dict[str, Any]:
    body: dict[str, Any] = {"content": {"application/json": {"schema": {}}}}
    ok = {"description": "ok", "content": {"application/octet-stream": {}}}
    return {
        "components": {
            "schemas": {
                "InvalidArgument": {
                    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}
                }
            }
        },
        "paths": {
            "/churn/predict": {"post": {"requestBody": dict(body), "responses": {"200": ok}}},
            "/churn/predict_file": {"post": {"requestBody": dict(body), "responses": {"200": ok}}},
            "/models": {"get": {"responses": {"200": ok}}},
            "/livez": {"get": {"responses": {"200": ok}}},
        },
    }


def test_bodies_required_errors_as_sent_and_every_status_listed() -> None:
    spec = document(_spec())
    detail = spec["components"]["schemas"]["InvalidArgument"]["properties"]["detail"]
    assert {"type": "array", "items": {"type": "object"}} in detail["oneOf"]
    predict = spec["paths"]["/churn/predict"]["post"]
    assert predict["requestBody"]["required"] is True
    assert {"200", "400", "401", "413", "429", "503"} <= set(predict["responses"])
    assert predict["responses"]["503"]["content"]["application/json"]["schema"] == ERROR
    upload = spec["paths"]["/churn/predict_file"]["post"]["responses"]
    assert "415" in upload and "text/csv" in upload["200"]["content"]
    assert {"401", "403"} <= set(spec["paths"]["/models"]["get"]["responses"])
    assert set(spec["paths"]["/livez"]["get"]["responses"]) == {"200"}
