"""Stock BentoML: one service, a batchable endpoint as BentoML's docs show it, default settings,
the same registered pipeline. (`list[Customer]` input: DataFrame batching is broken in 1.4.)

    bentoml serve bench.baselines.stock_bentoml:StockChurn --port 3102
"""

from __future__ import annotations

import bentoml

from models import churn, registry


@bentoml.service
class StockChurn:
    def __init__(self) -> None:
        self.served = registry.load(churn.MODEL_NAME)

    @bentoml.api(batchable=True, route="/churn/predict")
    def predict(self, customers: list[churn.Customer]) -> list[churn.ChurnPrediction]:
        frame = churn.to_frame(customers)
        probabilities = self.served.model.predict_proba(frame)[:, 1]
        return churn.predictions_from_probabilities(
            customers, probabilities, self.served.threshold, self.served.version
        )
