"""Kafka client settings shared by Faust, the admin client and plain producers."""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from bridge.config import Settings
from bridge.errors import ConfigError


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka clients: bootstrap servers and security."""
    if not settings.bootstrap:
        raise ConfigError(
            "setting bootstrap (or SAGABRIDGE_BOOTSTRAP, --bootstrap): no Kafka address given; "
            "pass --bootstrap HOST:PORT, or --embedded to try sagabridge on a built-in broker"
        )
    k = settings.kafka
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap,
        "security_protocol": k.security_protocol,
    }
    if k.security_protocol.startswith("SASL"):
        if not (k.sasl_mechanism and k.sasl_username and k.sasl_password):
            raise ConfigError(
                "setting kafka.sasl_mechanism, kafka.sasl_username and kafka.sasl_password: "
                f"all three are needed with security_protocol {k.security_protocol}"
            )
        kwargs.update(
            sasl_mechanism=k.sasl_mechanism,
            sasl_plain_username=k.sasl_username,
            sasl_plain_password=k.sasl_password,
        )
    if k.security_protocol in ("SSL", "SASL_SSL"):
        try:
            kwargs["ssl_context"] = create_ssl_context(
                cafile=str(k.ssl_cafile) if k.ssl_cafile else None,
                certfile=str(k.ssl_certfile) if k.ssl_certfile else None,
                keyfile=str(k.ssl_keyfile) if k.ssl_keyfile else None,
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"setting kafka.ssl_*: cannot load the certificates: {exc}") from None
    return kwargs
