"""A documented service: its messages at /events/asyncapi, its HTTP API at /docs."""

from __future__ import annotations

from enum import StrEnum

from fastapi import FastAPI, Header
from pydantic import BaseModel, Field

from fastapi_stream import StreamRouter

dispatched_log: list[str] = []


# --8<-- [start:models]
class Priority(StrEnum):
    NORMAL = "normal"
    EXPRESS = "express"


class Address(BaseModel):
    street: str
    city: str = Field(examples=["Lyon"])


class Shipment(BaseModel):
    id: int = Field(examples=[42])
    to: Address
    priority: Priority = Priority.NORMAL
    note: str | None = Field(None, description="Free text for the driver")


class Dispatched(BaseModel):
    shipment_id: int
    truck: str


# --8<-- [end:models]


# --8<-- [start:router]
router = StreamRouter("memory://asyncapi-example", prefix="/events")


@router.subscriber("shipments.{region}", group="dispatch", title="Dispatch shipments")
@router.publisher("dispatched", description="One event per dispatched shipment.")
async def dispatch(shipment: Shipment, region: str, tenant: str = Header()) -> Dispatched:
    """Assign a truck to a new shipment."""
    dispatched_log.append(f"{tenant}:{shipment.id}")
    return Dispatched(shipment_id=shipment.id, truck=f"{region}-1")


@router.subscriber("audit", include_in_schema=False)
async def audit(entry: dict[str, str]) -> None:
    """Internal: not in the document."""


# --8<-- [end:router]


# --8<-- [start:app]
app = FastAPI(
    title="Dispatch",
    version="1.4.0",
    # Swagger UI renders the description as Markdown: a link back to the AsyncAPI page.
    description="Assigns trucks to shipments. Messages: [AsyncAPI](/events/asyncapi).",
    # Who the app is: what the AsyncAPI parser asks of a document, besides its messages.
    contact={
        "name": "Dispatch team",
        "url": "https://dispatch.example.com",
        "email": "dispatch@example.com",
    },
    license_info={"name": "Apache 2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
    openapi_tags=[{"name": "dispatch", "description": "Trucks for shipments"}],
)
app.state.asyncapi_id = "urn:example:dispatch"  # the id of an AsyncAPI 2.6.0 document
app.include_router(router)
# --8<-- [end:app]
