"""Shared code for every BTP service: settings, errors, wire schemas, HTTP plumbing and clients.

Imports only pydantic, pydantic-settings, httpx, fastapi/starlette and prometheus-client, so any tool can
use the clients without torch or SQLAlchemy.
"""
