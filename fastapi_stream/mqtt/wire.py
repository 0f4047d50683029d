"""What crosses the wire to MQTT: a :class:`~fastapi_stream.core.message.OutgoingMessage`
as a PUBLISH, and a received PUBLISH as an :class:`MqttMessage`.

On MQTT 5 the metadata travels in the protocol's own fields: ``content_type``,
``correlation_data`` (the correlation id, UTF-8), ``response_topic`` (``reply_to``), and
the headers as user properties, with the message id in the user property
``message_id``. On MQTT 3.1.1, which has none of these, the body is wrapped in the
product's envelope (``core/envelope.py``), a format any producer can write. A payload
without them is all body, either way.
"""

from __future__ import annotations

from zmqtt import Message, PublishProperties

from fastapi_stream.core import envelope
from fastapi_stream.core.errors import ConfigurationError
from fastapi_stream.core.message import OutgoingMessage, StreamMessage, new_message_id

__all__ = ["MESSAGE_ID", "again", "message_of", "payload_of"]

#: The user property that carries the message id on MQTT 5.
MESSAGE_ID = "message_id"


def again(message: StreamMessage) -> StreamMessage:
    """A new delivery of the same PUBLISH, still unacknowledged (a redelivery in process:
    the first settlement of a message is final, so the core needs a new one)."""
    return StreamMessage(
        message.body,
        channel=message.channel,
        headers=message.headers,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        content_type=message.content_type,
        raw_message=message.raw_message,
    )


def payload_of(message: OutgoingMessage, *, v5: bool) -> tuple[bytes, PublishProperties | None]:
    """The payload and (MQTT 5) properties that carry ``message``."""
    expiry = message.options.get("expiry")
    if not v5:
        if expiry is not None:
            raise ConfigurationError("message expiry needs MQTT 5 (the transport's version)")
        if not message.body and message.options.get("retain"):
            return b"", None  # an empty retained message clears the topic's
        return envelope.pack(message), None
    properties = [(MESSAGE_ID, message.message_id), *message.headers.items()]
    return message.body, PublishProperties(
        content_type=message.content_type,
        correlation_data=message.correlation_id.encode() if message.correlation_id else None,
        response_topic=message.reply_to,
        message_expiry_interval=int(expiry) if expiry is not None else None,
        user_properties=tuple(properties),
    )


def message_of(raw: Message) -> StreamMessage:
    """The :class:`StreamMessage` for a received PUBLISH (``raw_message`` is zmqtt's
    :class:`~zmqtt.Message`, with MQTT's ``qos`` and ``retain``). A message without an id
    (another producer's) gets a random one, kept by its redeliveries in this process, so
    the core's retry budget counts them."""
    props = raw.properties
    if props is None or raw.payload.startswith(envelope.ENVELOPE_PREFIX):
        body, meta = envelope.unpack(raw.payload)
        return envelope.message_from(body, meta, raw.topic, raw, message_id=new_message_id())
    headers = dict(props.user_properties)
    message_id = headers.pop(MESSAGE_ID, None) or new_message_id()
    data = props.correlation_data
    return StreamMessage(
        raw.payload,
        channel=raw.topic,
        headers=headers,
        message_id=message_id,
        correlation_id=data.decode(errors="replace") if data else None,
        reply_to=props.response_topic,
        content_type=props.content_type,
        raw_message=raw,
    )
