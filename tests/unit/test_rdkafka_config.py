"""The librdkafka clients take the same Kafka settings as every other client, under librdkafka's
names, and librdkafka accepts them (it refuses unknown or malformed properties at creation)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from facegate.rdkafka_clients import RdConsumer, RdProducer, common_config
from facegate.settings import KafkaSettings

SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _secured() -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers="127.0.0.1:9,127.0.0.1:10",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="gate-office",
        sasl_password=SecretStr("s3cret"),
        ssl_cafile=str(SYSTEM_CA),
        client_id="facegate-test",
        request_timeout_ms=12_000,
    )


def test_the_settings_map_to_librdkafka_names() -> None:
    config = common_config(_secured())
    assert {k: v for k, v in config.items() if k != "logger"} == {
        "bootstrap.servers": "127.0.0.1:9,127.0.0.1:10",
        "security.protocol": "SASL_SSL",
        "client.id": "facegate-test",
        "socket.timeout.ms": 12_000,
        "socket.nagle.disable": True,
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "gate-office",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(SYSTEM_CA),
    }


def test_a_plaintext_cluster_gets_no_credentials() -> None:
    config = common_config(KafkaSettings(bootstrap_servers="127.0.0.1:9"))
    assert not [key for key in config if key.startswith(("sasl.", "ssl."))]


@pytest.mark.skipif(not SYSTEM_CA.exists(), reason="no system CA bundle to point SSL at")
def test_librdkafka_accepts_the_producer_and_consumer_configs() -> None:
    # Nothing listens on ports 9 and 10: creating the clients only validates their options.
    settings = _secured()
    RdProducer(settings).close(timeout=0)
    RdConsumer(settings, "config-check", ["faces"]).close()
