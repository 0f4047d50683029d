"""MQTT in the AsyncAPI document (``mqtt`` bindings 0.2.0, the same in 3.0.0 and 2.6.0
documents, where MQTT has no channel binding):

* the server: ``cleanSession``, ``keepAlive``, ``sessionExpiryInterval`` and the
  ``clientId`` prefix when the router has one;
* a subscriber's receive operation: its ``qos``, with the topic filter it subscribes to
  (``$share/{group}/...``, ``+`` for parameters) in ``x-topic-filter``;
* a publisher's send operation: ``qos``, ``retain`` and ``messageExpiryInterval``;
* on MQTT 5, messages say that the correlation id travels as ``correlationData`` and the
  reply address as ``responseTopic``: properties of the PUBLISH, not headers, so
  messages have no ``correlationId`` and replies name no ``address``. On MQTT 3.1.1
  they are envelope fields, documented like headers (the defaults of
  :class:`BrokerDocs`).
"""

from __future__ import annotations

from typing import Any

from fastapi_stream.asyncapi.brokers import CORRELATION_ID, REPLY_ADDRESS, BrokerDocs
from fastapi_stream.asyncapi.models import JSON, Element
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.core.subscriber import Subscriber
from fastapi_stream.core.transport import SubscriptionSpec, Transport
from fastapi_stream.mqtt.options import qos_of
from fastapi_stream.mqtt.routing import shared_filter

__all__ = ["MqttDocs", "broker_docs"]

_VERSION = "0.2.0"


class MqttDocs(BrokerDocs):
    def __init__(self, transport: Transport, asyncapi_version: str) -> None:
        super().__init__(transport, asyncapi_version)
        self.v5 = bool(getattr(transport, "v5", True))
        self.default_qos = qos_of({"qos": getattr(transport, "qos", 1)}, 1)
        if self.v5:
            self.correlation_id = None
            self.reply_address = None
        else:
            self.correlation_id = CORRELATION_ID
            self.reply_address = REPLY_ADDRESS

    def server_description(self) -> str | None:
        return "MQTT 5" if self.v5 else "MQTT 3.1.1 (metadata in the fastapi-stream envelope)"

    def bindings(self, element: Element, source: Any) -> JSON:
        found: JSON | None = None
        if element == "server":
            found = self._server()
        elif element == "operation" and isinstance(source, Subscriber):
            spec = SubscriptionSpec(
                channel=source.channel, group=source.group, options=source.options
            )
            found = {
                "qos": qos_of(source.options, self.default_qos),
                "x-topic-filter": shared_filter(spec),
            }
        elif element == "operation" and isinstance(source, Publisher):
            options = source.options
            found = {
                "qos": qos_of(options, self.default_qos),
                "retain": bool(options.get("retain", False)),
            }
            if options.get("expiry") is not None:
                found["messageExpiryInterval"] = int(options["expiry"])
        elif element == "message" and self.v5:
            found = {
                "correlationData": {
                    "type": "string",
                    "description": "The correlation id a request and its reply share (UTF-8).",
                },
                "responseTopic": {
                    "type": "string",
                    "description": "The topic of the requester the reply goes to.",
                },
            }
        if not found:
            return {}
        return {"mqtt": {**found, "bindingVersion": _VERSION}}

    def _server(self) -> JSON:
        transport = self.transport
        client_id = getattr(transport, "client_id", None)
        found: JSON = {
            "cleanSession": client_id is None,
            "keepAlive": int(getattr(transport, "keepalive", 60)),
        }
        if client_id is not None:
            found["clientId"] = str(client_id)
            if self.v5:
                found["sessionExpiryInterval"] = int(getattr(transport, "session_expiry", 0))
        return found


def broker_docs(transport: Transport, asyncapi_version: str) -> MqttDocs:
    return MqttDocs(transport, asyncapi_version)
