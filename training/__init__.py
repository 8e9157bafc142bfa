"""Training, evaluation, registration and promotion of ClientInsight's models (`python -m training`)."""
