"""Tally: a community's incentive systems on AWS Lambda and PostgreSQL."""

__version__ = "0.1.0"
