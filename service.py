"""The table of routes: every family in the catalog, served the same way.

    bentoml serve service:ClientInsight --port 3000

Per family (`models/catalog.py`, or the catalog CLIENTINSIGHT_CATALOG names): a model service
in its own worker processes (`serving/model_service.py`), and on the entry service
`POST /{family}/{verb}` (a JSON list of records, batched adaptively) and
`POST /{family}/{verb}_file` (a CSV, Parquet or Arrow file).
`GET /models` lists what every family serves. The entry service's work is `serving/entry.py`;
bodies and uploads are read by the route table (`serving/routes.py`), keys and limits checked
first by the front door (`serving/access.py`). No family, feature logic or SQL is named here.
"""

from __future__ import annotations

import os

# scikit-learn's OpenMP threads thrash against the server's own on small machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import logging
from typing import Any

from fastapi import FastAPI

from models import catalog
from models.family import Family
from persistence.settings import get_settings as get_persistence_settings
from serving import errors, graphql, openapi, tuning
from serving.access import AccessGuard, AccessPolicy
from serving.entry import entry_service
from serving.model_service import model_service
from serving.oip import rest as oip_rest
from serving.oip.dataplane import DataPlane
from serving.routes import FileHandler, JsonHandler, RouteTable
from serving.settings import (
    family_settings,
    get_serving_settings,
    get_settings,
    refuse_bad_configuration,
)

# Model loads and swaps are operational events: logged at INFO whatever the root level is.
for _name in ("clientinsight", "models.registry"):
    logging.getLogger(_name).setLevel(logging.INFO)

# A mistake in the configuration or in a family's declaration stops `bentoml serve` itself
# with one line naming it, instead of a worker that keeps failing to start.
FAMILIES = refuse_bad_configuration(catalog.current)
refuse_bad_configuration(get_serving_settings)
refuse_bad_configuration(lambda: [family_settings(family.name) for family in FAMILIES])
refuse_bad_configuration(get_persistence_settings)
ACCESS_SETTINGS = refuse_bad_configuration(get_settings)

#: The public routes live on this app, which the entry service mounts; BentoML adds its
#: probes, /metrics and /docs.json beside them.
app = FastAPI(title="ClientInsight", docs_url=None, redoc_url=None, openapi_url=None)
errors.install(app)
routes = RouteTable(app)
#: Who may call the public API, and how much.
ACCESS = refuse_bad_configuration(lambda: AccessPolicy(ACCESS_SETTINGS, routes.body_limit))

#: The Open Inference Protocol over REST (`/v2/...`) and gRPC, for every family and model.
INFERENCE = DataPlane(FAMILIES)

MODEL_SERVICES = {family.name: model_service(family) for family in FAMILIES}
ClientInsight = entry_service(
    FAMILIES,
    MODEL_SERVICES,
    app=app,
    policy=ACCESS,
    host=ACCESS_SETTINGS.host,
    inference=INFERENCE,
)


def _predict(family: Family) -> JsonHandler:
    return lambda entry, records: entry.predict(family, records)


def _predict_file(family: Family) -> FileHandler:
    return lambda entry, upload: entry.predict_file(family, upload)


for family in FAMILIES:
    routes.predict(
        family.route,
        operation=family.operation,
        field=family.records_field,
        record=family.record,
        answer=family.answer,
        handler=_predict(family),
        summary=family.summary,
    )
    routes.upload(
        family.file_route,
        operation=f"{family.operation}_file",
        record=family.record,
        aliases=dict(family.column_aliases),
        handler=_predict_file(family),
        answer_name=family.file_answer,
        summary=family.file_summary,
    )
oip_rest.install(app, INFERENCE, routes.service)
#: GraphQL over prediction history (history and admin keys only, `serving/access.py`).
graphql.install(app, FAMILIES)
routes.json_prefixes = ("/v2/",)
routes.info(
    "/models",
    operation="list_models",
    handler=lambda entry: entry.list_models(),
    summary="Which model versions are served, with their key metrics and load time",
)

ClientInsight.add_asgi_middleware(AccessGuard, policy=ACCESS)
tuning.fix_output_media_types(*MODEL_SERVICES.values(), ClientInsight)
tuning.release_request_timers()
tuning.quiet_readiness_probe()
openapi.install(routes, oip_rest.openapi(INFERENCE))

__all__: list[Any] = ["ClientInsight", "app"]
