"""The Lumen wire shapes: field names and spelling as Lumen's clients send and read them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from iod.connections.schemas import StrictBody

# -- errors --------------------------------------------------------------------------------


class ErrorItem(BaseModel):
    """One error, as Lumen's clients read it; an error answer is a list of them."""

    model_config = ConfigDict(title="LumenError")

    code: str = Field(examples=["INVALID_STATE"])
    reason: str = Field(
        examples=["The Service Id cannot be modified since the current status is - Change pending"]
    )
    propertyPath: str | None = Field(
        description="The request field it is about (`productOrderItem[0].action`, a query "
        "parameter or header name), or null.",
        examples=["productOrderItem[0].product.id"],
    )


# -- token ---------------------------------------------------------------------------------


class Token(BaseModel):
    model_config = ConfigDict(title="LumenToken")

    access_token: str
    token_type: str = Field(examples=["Bearer"])
    expires_in: int
    scope: str


# -- inventory -----------------------------------------------------------------------------


class Characteristic(BaseModel):
    name: str = Field(examples=["Bandwidth"])
    value: str = Field(examples=["500 Mbps"])


class InventoryProduct(BaseModel):
    id: str = Field(description="The product code.", examples=["718"])
    name: str = Field(examples=["Internet On-Demand"])
    status: str = Field(
        description="`Provisioning`, `Active`, `Change pending`, `Suspend pending`, "
        "`Suspended`, `Resume pending`, `Disconnect pending`, `Disconnected` (docs/lumen.md).",
        examples=["Active"],
    )
    productCharacteristic: list[Characteristic]


class BillingAccountRef(BaseModel):
    id: str = Field(examples=["1-ABCDE"])
    name: str


class InventoryLocation(BaseModel):
    masterSiteid: str = Field(description="The same as `masterSiteId` (clients read either).")
    masterSiteId: str = Field(examples=["PL0001247634"])
    name: str
    address: str


class RelatedParty(BaseModel):
    id: str


class LocationProfile(BaseModel):
    dataCenter: bool
    relatedParty: RelatedParty


class InventoryItem(BaseModel):
    """A service: one of our connections, with its 11-digit `serviceId`."""

    model_config = ConfigDict(title="ServiceInventoryItem", populate_by_name=True)

    serviceId: str = Field(pattern=r"^[0-9]{11}$", examples=["77012345678"])
    serviceType: str = Field(examples=["Internet On-Demand"])
    status: str = Field(
        description="`Provisioning`, `Active`, `Suspended` or `Disconnected` (docs/lumen.md)."
    )
    product: InventoryProduct
    bandwidth: str = Field(alias="Bandwidth", examples=["500 Mbps"])
    uniServiceId: str = Field(
        alias="UNI Service ID",
        description="Our connection's id: the same connection at `/internet-on-demand/`.",
    )
    ipv4Block: str | SkipJsonSchema[None] = Field(default=None, alias="IPv4 Block")
    billingAccount: BillingAccountRef
    location: InventoryLocation
    locationProfile: LocationProfile
    startDate: datetime
    lastUpdateDate: datetime


class Inventory(BaseModel):
    serviceInventory: list[InventoryItem]


# -- discovery -----------------------------------------------------------------------------


class Pagination(BaseModel):
    pageNumber: int
    pageSize: int
    totalRecords: int


class Partner(BaseModel):
    id: str = Field(examples=["1000"])
    name: str
    partnerType: str = Field(examples=["CLOUD_PARTNER"])


class PartnerList(BaseModel):
    pagination: list[Pagination]
    listPartners: list[Partner]


class Location(BaseModel):
    model_config = ConfigDict(title="LumenLocation")

    masterSiteId: str = Field(examples=["PL0001247634"])
    name: str
    address: str
    partnerId: str
    availableSpeeds: list[str] = Field(examples=[["100 Mbps", "1 Gbps"]])


class LocationList(BaseModel):
    location: list[Location]


class BillingAccount(BaseModel):
    id: str = Field(examples=["1-ABCDE"])
    name: str
    hqCountry: str = Field(examples=["US"])


class BillingAccountList(BaseModel):
    billingAccount: list[BillingAccount]


# -- orders --------------------------------------------------------------------------------

ShortText = Annotated[str, Field(min_length=1, max_length=255)]
# Numbers that every JSON implementation reads exactly (IEEE doubles' integers).
SafeInt = Annotated[int, Field(ge=-(2**53) + 1, le=2**53 - 1)]
ContactValue = Annotated[str, Field(max_length=255)] | SafeInt | bool


class _Body(StrictBody):
    model_config = ConfigDict(extra="forbid")


class RefIn(_Body):
    id: ShortText
    name: Annotated[str, Field(max_length=255)] | SkipJsonSchema[None] = None


class ChannelIn(_Body):
    id: ShortText | SafeInt = Field(description="A string or a number.")
    name: Annotated[str, Field(max_length=255)] | SkipJsonSchema[None] = None


class NoteIn(_Body):
    id: Annotated[str, Field(max_length=255)] | SkipJsonSchema[None] = None
    author: Annotated[str, Field(max_length=255)] | SkipJsonSchema[None] = None
    date: Annotated[str, Field(max_length=64)] | SkipJsonSchema[None] = None
    text: Annotated[str, Field(max_length=4000)] | SkipJsonSchema[None] = None


class CharacteristicIn(_Body):
    name: ShortText
    value: Annotated[str, Field(max_length=255)] | SafeInt | bool


class ProductIn(_Body):
    id: Annotated[str, Field(max_length=64)] | SkipJsonSchema[None] = Field(
        default=None,
        description="The `serviceId` to modify or delete; not needed to add.",
        examples=["77012345678"],
    )
    productCharacteristic: list[CharacteristicIn] = Field(default_factory=list, max_length=50)
    productSpecification: RefIn | SkipJsonSchema[None] = None


class OrderItemIn(_Body):
    id: ShortText | SafeInt = Field(description="The item's id in this order (a string or number).")
    quantity: int = Field(default=1, ge=1, le=1, description="Always 1.")
    action: Literal["add", "modify", "delete"]
    product: ProductIn
    productOffering: RefIn | SkipJsonSchema[None] = None


class OrderRequest(_Body):
    """`POST /Customer/v3/Ordering/orderRequest`."""

    model_config = ConfigDict(title="LumenOrderRequest")

    externalId: str = Field(
        min_length=1,
        max_length=20,
        description="The client's id of the order, at most 20 characters (a number is taken "
        "as its digits). A repeat with the same `externalId` answers the same order.",
        examples=["IOD-2026-0001"],
    )
    billingAccount: RefIn
    channel: list[ChannelIn] = Field(default_factory=list, max_length=10)
    note: list[NoteIn] = Field(default_factory=list, max_length=20)
    productOrderItem: list[OrderItemIn] = Field(min_length=1, max_length=10)
    quote: list[RefIn] = Field(
        default_factory=list,
        max_length=10,
        description="The quote of an `add` or `modify` (`name` is `quoteId` or the id).",
    )
    relatedContactInformation: list[Annotated[dict[str, ContactValue], Field(max_length=20)]] = (
        Field(
            default_factory=list,
            max_length=10,
            description="Contacts (`name`, `number`, `emailAddress`, `role`, ...), kept as sent.",
        )
    )

    @field_validator("externalId", mode="before")
    @classmethod
    def _digits(cls, value: Any) -> Any:
        # Some clients send a number (a timestamp): taken as its digits.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value


class OrderItemOut(BaseModel):
    id: str
    quantity: int
    action: str
    state: str = Field(description="`inProgress`, `completed`, `failed` or `cancelled`.")
    product: dict[str, Any]
    productOffering: dict[str, Any] | SkipJsonSchema[None] = None


class Order(BaseModel):
    """The order document: the request as received, with ids and states."""

    model_config = ConfigDict(title="LumenOrder")

    id: str
    externalId: str
    state: str = Field(description="`inProgress`, `completed`, `failed` or `partial`.")
    orderDate: datetime
    billingAccount: dict[str, Any]
    channel: list[dict[str, Any]]
    note: list[dict[str, Any]]
    productOrderItem: list[OrderItemOut]
    quote: list[dict[str, Any]]
    relatedContactInformation: list[dict[str, Any]]
