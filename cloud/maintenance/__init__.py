"""Maintenance schedule: catalogue, schedule engine, visits, evidence, reports."""
