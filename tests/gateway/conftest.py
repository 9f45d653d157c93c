"""One gateway stack per test module (router, fake replicas, a gateway, two tenants' keys)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from services.core.settings import Settings
from services.gateway.keys import ApiKey, create_key
from services.gateway.server import GatewayServer
from tests.gateway.harness import GatewayStack


@dataclass
class Gw:
    stack: GatewayStack
    server: GatewayServer
    key_a: str
    key_b: str
    record_a: ApiKey
    tenant_a: str
    tenant_b: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/v1"


@pytest.fixture(scope="module")
def gw(local_stack: Settings) -> Iterator[Gw]:
    unique = uuid.uuid4().hex[:10]
    tenant_a, tenant_b = f"acme-{unique}", f"globex-{unique}"
    record_a, key_a = create_key(local_stack, tenant_a, name="support")
    _, key_b = create_key(local_stack, tenant_b, name="billing")
    stack = GatewayStack(local_stack, unique)
    try:
        server = stack.start_gateway(f"gw-{unique}-1")
        yield Gw(stack, server, key_a, key_b, record_a, tenant_a, tenant_b)
    finally:
        stack.close()
