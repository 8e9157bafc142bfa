"""Training, evaluation, registration and promotion of the models (`python -m training`)."""
