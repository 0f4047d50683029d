"""RabbitMQ in the AsyncAPI document, from the same rules the transport declares by.

A channel is a routing key on an exchange (``is: routingKey``, with the exchange) or, on
RabbitMQ's default exchange, a queue (``is: queue``, with the queue). A subscriber's own
queue on an exchange (``group=`` makes ``<channel>.<group>``) and its binding key go in
its receive operation: ``cc`` holds the key, ``x-queue`` the queue, since the channel
binding may name a queue only on the default exchange. A publisher's routing key,
delivery mode, ``mandatory``, priority and expiration go in its send operation.

The correlation id and reply-to address are AMQP message properties, which AsyncAPI's
runtime expressions (``$message.header``/``$message.payload``) cannot point at: receive
operations say so in their ``amqp`` binding (``x-correlation-id``), messages have no
``correlationId`` and replies name no ``address``.

Bindings ``amqp`` 0.3.0 in AsyncAPI 3.0.0 documents, 0.2.0 in 2.6.0 ones.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlsplit

from fastapi_stream.asyncapi.brokers import BrokerDocs
from fastapi_stream.asyncapi.models import JSON, Element
from fastapi_stream.core.publisher import Publisher
from fastapi_stream.core.subscriber import Subscriber
from fastapi_stream.core.transport import SubscriptionSpec, Transport
from fastapi_stream.rabbit.options import (
    Binding,
    RabbitExchange,
    RabbitQueue,
    as_exchange,
    binding_for,
)

__all__ = ["RabbitDocs", "broker_docs"]

_CORRELATION = {
    "property": "correlation_id",
    "description": "The correlation id a request and its reply share: the AMQP message "
    "property correlation_id. A request names where to reply in the property reply_to.",
}


class RabbitDocs(BrokerDocs):
    correlation_id = None
    reply_address = None

    @property
    def version(self) -> str:
        return "0.3.0" if self.v3 else "0.2.0"

    @property
    def exchange(self) -> RabbitExchange | None:
        return getattr(self.transport, "exchange", None)

    def server_name(self) -> str | None:
        return f"amqp_{self.exchange.name}" if self.exchange else None

    def server_description(self) -> str | None:
        if self.exchange is None:
            return "RabbitMQ, default exchange (routes by queue name)"
        return f"RabbitMQ, exchange {self.exchange.name!r} ({self.exchange.type.value})"

    def address(self, source: Any) -> str | None:
        if not isinstance(source, Subscriber):
            return None
        binding = self._binding(source)
        if binding.exchange is None:
            return binding.queue.name
        # Publishers reach the queue with a routing key its binding key matches: the key
        # as written, {param} parts included (they bind as "*").
        options = source.options
        return str(
            options.get("routing_key") or binding.queue.routing_key or source.channel.template
        )

    def bindings(self, element: Element, source: Any) -> JSON:
        found: JSON | None = None
        if element == "channel" and isinstance(source, Subscriber):
            binding = self._binding(source)
            found = self._channel(binding.exchange, binding.queue)
        elif element == "channel" and isinstance(source, Publisher):
            exchange = as_exchange(source.options.get("exchange", self.exchange))
            found = self._channel(exchange, RabbitQueue(source.channel, declare=False))
        elif element == "operation" and isinstance(source, Subscriber):
            found = self._receive(self._binding(source))
        elif element == "operation" and isinstance(source, Publisher):
            found = self._send(source)
        elif element == "message" and isinstance(source, Publisher):
            message_type = source.options.get("message_type")
            found = {"messageType": str(message_type)} if message_type else None
        if not found:
            return {}
        return {"amqp": {**found, "bindingVersion": self.version}}

    def _binding(self, subscriber: Subscriber) -> Binding:
        spec = SubscriptionSpec(
            channel=subscriber.channel, group=subscriber.group, options=subscriber.options
        )
        exchange = as_exchange(spec.options.get("exchange", self.exchange))
        if exchange is None and spec.group is not None and "queue" not in spec.options:
            # On the default exchange a group names no queue of its own (the transport
            # warns about it when it subscribes; the document need not warn again).
            spec = replace(spec, group=None)
        queue_arguments = getattr(self.transport, "queue_arguments", None)
        return binding_for(spec, self.exchange, queue_arguments)

    def _channel(self, exchange: RabbitExchange | None, queue: RabbitQueue) -> JSON:
        if exchange is None:
            return {"is": "queue", "queue": self._queue(queue)}
        return {
            "is": "routingKey",
            "exchange": {
                "name": exchange.name,
                "type": exchange.type.value,
                "durable": exchange.durable,
                "autoDelete": exchange.auto_delete,
                "vhost": self._vhost(),
            },
        }

    def _receive(self, binding: Binding) -> JSON:
        found: JSON = {"x-correlation-id": _CORRELATION}
        if binding.exchange is not None:  # else the channel binding says it all: the queue
            found.update({"cc": [binding.routing_key], "x-queue": self._queue(binding.queue)})
        return found

    def _send(self, publisher: Publisher) -> JSON:
        options = publisher.options
        found: JSON = {
            "cc": [publisher.channel],
            "deliveryMode": 2 if options.get("persist", True) else 1,
            "mandatory": bool(options.get("mandatory", True)),
        }
        if options.get("priority") is not None:
            found["priority"] = int(options["priority"])
        if options.get("expiration") is not None:
            found["expiration"] = int(float(options["expiration"]) * 1000)  # milliseconds
        return found

    def _vhost(self) -> str:
        """The virtual host of the URL: its path, ``/`` when it has none."""
        path = urlsplit(str(getattr(self.transport, "url", ""))).path
        return unquote(path[1:]) or "/"

    def _queue(self, queue: RabbitQueue) -> JSON:
        found: JSON = {"name": queue.name}
        if queue.declare:
            found.update(
                durable=queue.durable, exclusive=queue.exclusive, autoDelete=queue.auto_delete
            )
        found["vhost"] = self._vhost()
        return found


def broker_docs(transport: Transport, asyncapi_version: str) -> RabbitDocs:
    return RabbitDocs(transport, asyncapi_version)
