"""The Lumen wire shapes: field names and spelling as Lumen's clients send and read them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from iod.connections.schemas import StrictBody
from iod.domain.text import Text

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

    externalId: Text = Field(
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


# -- prices and quotes ---------------------------------------------------------------------

Amount = Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", examples=["0.46"])]


class SpeedPrice(BaseModel):
    speed: str = Field(examples=["100 Mbps"])
    price: Amount = Field(description="The hourly rate, a decimal string in `currencyCode`.")
    currencyCode: str = Field(examples=["USD"])
    term: str = Field(examples=["Hourly Rate"])
    displayValue: str = Field(examples=["USD 0.46/hour"])


class PriceList(BaseModel):
    model_config = ConfigDict(title="LumenPriceList")

    productCode: str = Field(examples=["718"])
    masterSiteId: str
    pricePerSpeed: list[SpeedPrice]


SiteId = Annotated[str, Field(min_length=1, max_length=64)]


class PriceRequestIn(_Body):
    """`POST /Product/v1/priceRequest`: a new service (`partnerId` and `masterSiteId`) or a
    change of one (`serviceId`), at `speed`."""

    model_config = ConfigDict(title="LumenPriceRequest")

    sourceSystem: Annotated[str, Field(max_length=64)] | SkipJsonSchema[None] = None
    customerNumber: Annotated[str, Field(max_length=40)] | SkipJsonSchema[None] = Field(
        default=None, description="The `x-customer-number` (checked when given)."
    )
    currencyCode: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | SkipJsonSchema[None] = Field(
        default=None,
        description="The price book's currency (checked when given).",
        examples=["USD"],
    )
    productCode: Annotated[str, Field(min_length=1, max_length=16)] = Field(examples=["718"])
    productName: Annotated[str, Field(max_length=255)] | SkipJsonSchema[None] = None
    masterSiteId: SiteId | SkipJsonSchema[None] = Field(
        default=None, description="The location; needed for a new service.", examples=["PL01"]
    )
    speed: Annotated[
        str, Field(pattern=r"^[0-9]{1,9}(\.[0-9]{1,20})? ?[MmGg][Bb][Pp][Ss]$", max_length=32)
    ] = Field(description="A speed the location offers (`availableSpeeds`).", examples=["1 Gbps"])
    serviceId: Annotated[str, Field(pattern=r"^[0-9]{11}$")] | SkipJsonSchema[None] = Field(
        default=None, description="The service to change (then no partner is needed)."
    )
    partnerId: SiteId | SkipJsonSchema[None] = Field(
        default=None, description="The partner (`listPartners[].id`) of a new service."
    )
    PartnerId: SiteId | SkipJsonSchema[None] = Field(
        default=None, description="The same as `partnerId` (some clients capitalise it)."
    )
    customerPriceRequestDescription: (
        Annotated[str, Field(max_length=1000)] | SkipJsonSchema[None]
    ) = None
    customerPurchaseOrderNumber: Annotated[str, Field(max_length=64)] | SkipJsonSchema[None] = None


class QuotePrice(BaseModel):
    name: str = Field(examples=["Hourly Rate"])
    term: str = Field(examples=["Hourly Rate"])
    price: Amount
    currencyCode: str
    displayValue: str = Field(examples=["USD 331.20/month"])


class ValidFor(BaseModel):
    startDateTime: datetime
    endDateTime: datetime


class PriceQuote(BaseModel):
    """A quote: its `id` goes in an order's `quote[].id`, within 15 minutes."""

    model_config = ConfigDict(title="LumenPriceQuote")

    id: str = Field(examples=["quo_0Jc2n3W9b8"])
    state: str = Field(description="`approved`; `ordered` once an order used it.")
    priceRequest: dict[str, Any] = Field(description="The request, as sent.")
    price: list[QuotePrice] = Field(description="An `Hourly Rate` and a `Monthly Rate` entry.")
    validFor: ValidFor
    serviceId: str | SkipJsonSchema[None] = None
    masterSiteId: str
    speed: str


# -- bills ---------------------------------------------------------------------------------


class BillCharges(BaseModel):
    currentCharges: Amount


class DocumentSummary(BaseModel):
    billCharges: BillCharges
    currencyCode: str
    fromDate: str = Field(description="The first day of the month (`YYYY-MM-DD`).")
    toDate: str = Field(description="The last day of the month (`YYYY-MM-DD`).")
    statementDate: str = Field(description="When it closed; while open, today.")


class CustomerBill(BaseModel):
    invoiceNumber: str = Field(description="Our statement's id.")
    billingAccountNumber: str
    status: str = Field(description="`open` while the month runs, then `closed`.")
    documentSummaryDetails: list[DocumentSummary]


class CustomerBills(BaseModel):
    model_config = ConfigDict(title="LumenCustomerBills")

    customerBillDetails: list[CustomerBill]
    totalRecords: int


class Charge(BaseModel):
    netAmount: Amount
    currencyCode: str


class ServiceCharge(BaseModel):
    billingServiceId: str = Field(description="The service id (or our connection id).")
    chargeDescription1: str = Field(examples=["Internet On-Demand hourly usage"])
    chargeDescription2: str = Field(examples=["1 Gbps, 3.00 hours at USD 0.99/hour"])
    charge: Charge
    chargeFromDate: datetime
    chargeToDate: datetime
    bandwidth: str | SkipJsonSchema[None] = None
    usageSeconds: int | SkipJsonSchema[None] = None


class ServiceChargeDetail(BaseModel):
    invoiceNumber: str
    billingAccountNumber: str
    serviceLevelCharge: list[ServiceCharge]
    totalRecords: int


class ServiceChargeDetails(BaseModel):
    model_config = ConfigDict(title="LumenServiceLevelChargeDetails")

    serviceLevelChargeDetail: list[ServiceChargeDetail]
