"""Serving infrastructure shared by the BentoML services: settings-free helpers, no models."""
