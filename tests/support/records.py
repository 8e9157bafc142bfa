"""Shared records for tests: how a decision's predictions are stored, without a model family;
the churn customer and credit applicant payloads the tests send."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recording:
    """What `persistence.writer.prediction_block` reads (a family declares the real one)."""

    decision: str
    primary_model: str
    entity_field: str
    score_field: str
    label_field: str


def recording(
    decision: str,
    *,
    entity_field: str,
    score_field: str,
    label_field: str,
    primary_model: str | None = None,
) -> Recording:
    return Recording(decision, primary_model or decision, entity_field, score_field, label_field)


#: One churn customer with the contract's (snake_case) field names: the first row of the IBM
#: Telco sample.
SNAKE = {
    "customer_id": "7590-VHVEG",
    "gender": "Female",
    "senior_citizen": 0,
    "partner": "Yes",
    "dependents": "No",
    "tenure": 1,
    "phone_service": "No",
    "multiple_lines": "No phone service",
    "internet_service": "DSL",
    "online_security": "No",
    "online_backup": "Yes",
    "device_protection": "No",
    "tech_support": "No",
    "streaming_tv": "No",
    "streaming_movies": "No",
    "contract": "Month-to-month",
    "paperless_billing": "Yes",
    "payment_method": "Electronic check",
    "monthly_charges": 29.85,
    "total_charges": 29.85,
}

#: The same customer as `SNAKE` with IBM's column names and text values, as in the CSV.
IBM = {
    "customerID": "7590-VHVEG",
    "gender": "Female",
    "SeniorCitizen": "0",
    "Partner": "Yes",
    "Dependents": "No",
    "tenure": "1",
    "PhoneService": "No",
    "MultipleLines": "No phone service",
    "InternetService": "DSL",
    "OnlineSecurity": "No",
    "OnlineBackup": "Yes",
    "DeviceProtection": "No",
    "TechSupport": "No",
    "StreamingTV": "No",
    "StreamingMovies": "No",
    "Contract": "Month-to-month",
    "PaperlessBilling": "Yes",
    "PaymentMethod": "Electronic check",
    "MonthlyCharges": "29.85",
    "TotalCharges": "29.85",
}

#: One credit applicant with the contract's field names (AER's yes/no values).
APPLICANT = {
    "applicant_id": "a-1",
    "reports": 0,
    "age": 37.7,
    "income": 4.52,
    "owner": "yes",
    "selfemp": "no",
    "dependents": 3,
    "months": 54,
    "majorcards": 1,
    "active": 12,
}
