"""``SmppTransport``: SMS through an SMSC over SMPP 3.4, configured as vumi2's transport.

The config keys are vumi2's ``SmppTransceiverTransport`` keys, nested as vumi2 nests
them (``submit_sm_processor_config``, ``sm_processor_config``, ``dr_processor_config``,
``smpp_cache_config``, ...), and vumi2's class path is an alias of this one, so a vumi2
SMPP config file runs unchanged. New keys: ``bind_mode``, ``window``, TLS, timeouts,
and the rate limit and retry keys every transport has. Where vumi2's defaults lose
messages, these don't:

* a text GSM 03.38 cannot encode goes as UCS-2, instead of being dropped;
* a text too long for one SMS is split (``multipart_handling: short_message``, vumi2's
  default, splits with a UDH header here, where vumi2 refuses it);
* delivery receipts are requested (``registered_delivery.delivery_receipt`` 1) unless
  the config says otherwise, since a message's DELIVERED status depends on them.

Outbound: each message becomes one submit_sm per part (``encoding.encode_text``), each
waiting for a place in the ``window`` and counted against ``max_tps``; the SMSC's
message ids are its provider ids. A refused submit is a ``nack``; throttling, a full
queue or a lost session is a retry. A message whose later part fails after an earlier
one went is retried whole: its phone may see that earlier part twice.

Inbound: a deliver_sm (or data_sm) that is a receipt becomes a delivery report, found
by the SMSC's id in whichever base it writes it; any other is an inbound message, the
parts of a long one reassembled through the message cache (``message_cache_class:
redis`` to reassemble parts received by different replicas). The SMSC is answered only
once the report or message is on the broker, so it redelivers what was not.

While no session is bound the transport stops taking outbound, and binds again with
backoff (``rebind_delay_base`` doubling up to ``rebind_delay_max``).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from vumi_like.config import ConfigModel
from vumi_like.messages import DeliveryStatus, Message
from vumi_like.transports.base import BaseTransport, TransportConfig
from vumi_like.transports.smpp.encoding import (
    Alphabet,
    DefaultAlphabet,
    EncodingOptions,
    InboundPart,
    Splitting,
    encode_text,
    inbound_part,
    join_parts,
)
from vumi_like.transports.smpp.esme import BindMode, EsmeSettings
from vumi_like.transports.smpp.pdus import DeliverSm
from vumi_like.transports.smpp.rebind import Rebinder
from vumi_like.transports.smpp.receipts import parse_receipt, provider_id_candidates
from vumi_like.transports.smpp.statuses import submit_sm_outcome

__all__ = ["SmppTransport", "SmppTransportConfig"]

# vumi2's defaults for the processor and cache classes: accepted, and what they name is
# what this transport does.
_VUMI2_SEQUENCERS = {"vumi2.transports.smpp.sequencers.InMemorySequencer", "memory"}
_VUMI2_SUBMIT_PROCESSORS = {"vumi2.transports.smpp.processors.SubmitShortMessageProcessor"}
_VUMI2_SM_PROCESSORS = {"vumi2.transports.smpp.processors.ShortMessageProcessor"}
_VUMI2_DR_PROCESSORS = {"vumi2.transports.smpp.processors.DeliveryReportProcesser"}
_VUMI2_SMPP_CACHES = {"vumi2.transports.smpp.smpp_cache.InMemorySmppCache"}

_DATA_CODINGS = {0: Alphabet.GSM, 3: Alphabet.LATIN_1, 8: Alphabet.UCS2}
_MULTIPART = {
    "short_message": Splitting.UDH,
    "multipart_udh": Splitting.UDH,
    "multipart_sar": Splitting.SAR,
    "message_payload": Splitting.PAYLOAD,
}
_DEFAULT_CODECS = {
    "gsm0338": DefaultAlphabet.GSM,
    "ascii": DefaultAlphabet.ASCII,
    "latin1": DefaultAlphabet.LATIN_1,
    "latin-1": DefaultAlphabet.LATIN_1,
    "iso-8859-1": DefaultAlphabet.LATIN_1,
}
_DELIVERY_STATUSES = {status.value: status for status in DeliveryStatus}


def _known_class(name: str, known: set[str], key: str) -> str:
    if name not in known:
        choices = ", ".join(sorted(known))
        raise ValueError(f"{key} {name!r} is not supported; this transport does {choices}")
    return name


class RegisteredDelivery(ConfigModel):
    delivery_receipt: int = Field(
        default=1,
        ge=0,
        le=3,
        description="SMSC receipt asked for: 0 none, 1 final (delivered or failed), "
        "2 failures only, 3 success only",
    )
    sme_originated_acks: list[int] = Field(
        default_factory=list, description="SME acknowledgements asked for (1, 2)"
    )
    intermediate_notification: bool = Field(
        default=False, description="Ask for intermediate notifications"
    )

    def value(self) -> int:
        acks = 0
        for ack in self.sme_originated_acks:
            acks |= {1: 0x04, 2: 0x08}.get(ack, 0)
        return self.delivery_receipt | acks | (0x10 if self.intermediate_notification else 0)


class SubmitSmProcessorConfig(ConfigModel):
    data_coding: int = Field(
        default=0,
        description="0 GSM 03.38, 3 Latin-1, 8 UCS-2; a text the chosen alphabet cannot "
        "encode goes as UCS-2",
    )
    multipart_handling: Literal[
        "short_message", "message_payload", "multipart_sar", "multipart_udh"
    ] = Field(
        default="short_message",
        description="How a long text is sent: split with a UDH header (short_message, "
        "multipart_udh), split with SAR TLVs (multipart_sar), or whole in message_payload",
    )
    service_type: str = Field(default="", description="submit_sm service_type")
    source_addr_ton: int = Field(default=0, description="Type of number of the sender")
    source_addr_npi: int = Field(default=0, description="Numbering plan of the sender")
    dest_addr_ton: int = Field(default=0, description="Type of number of the recipient")
    dest_addr_npi: int = Field(default=1, description="Numbering plan of the recipient (ISDN)")
    registered_delivery: RegisteredDelivery = Field(default_factory=RegisteredDelivery)
    gsm_packed: bool = Field(
        default=False, description="Pack GSM 03.38 septets (most SMSCs want them unpacked)"
    )

    @field_validator("data_coding")
    @classmethod
    def _supported_coding(cls, value: int) -> int:
        if value not in _DATA_CODINGS:
            raise ValueError("supported data_coding values are 0 (GSM 03.38), 3, 8")
        return value


class SmProcessorConfig(ConfigModel):
    data_coding_overrides: dict[int, str] = Field(
        default_factory=dict,
        description="Codec of an inbound data_coding; only 0 (the SMSC's default "
        "alphabet) may be set: gsm0338, ascii or latin1",
    )

    @field_validator("data_coding_overrides")
    @classmethod
    def _only_the_default(cls, overrides: dict[int, str]) -> dict[int, str]:
        for coding, codec in overrides.items():
            if coding != 0 or codec.lower() not in _DEFAULT_CODECS:
                raise ValueError(
                    "only data_coding 0 can be overridden, to gsm0338, ascii or latin1"
                )
        return overrides


class DrProcessorConfig(ConfigModel):
    regex: str | None = Field(
        default=None,
        description="Regular expression reading a receipt's text, with named groups id "
        "and stat (default: the SMPP 3.4 Appendix B format, and the receipt TLVs)",
    )
    status_mapping: dict[str, str] = Field(
        default_factory=dict,
        description="Receipt stat -> pending, delivered or failed, over the built-in map",
    )

    @field_validator("regex")
    @classmethod
    def _named_groups(cls, regex: str | None) -> str | None:
        if regex is not None:
            groups = re.compile(regex).groupindex
            if "id" not in groups or "stat" not in groups:
                raise ValueError("the regex needs the named groups id and stat")
        return regex

    @field_validator("status_mapping")
    @classmethod
    def _statuses(cls, mapping: dict[str, str]) -> dict[str, str]:
        for stat, status in mapping.items():
            if status not in _DELIVERY_STATUSES:
                raise ValueError(f"{stat!r} maps to {status!r}: use pending, delivered, failed")
        return mapping


class SmppCacheConfig(ConfigModel):
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="Seconds a message id stays matched for receipts (sets provider_id_ttl)",
    )


class SmppTransportConfig(TransportConfig):
    transport_name: str = Field(
        default="smpp", description="Connector name: consumes <transport_name>.outbound"
    )
    host: str = Field(default="localhost", description="The SMSC's host")
    port: int = Field(default=2775, ge=1, le=65535, description="The SMSC's port")
    system_id: str = Field(default="smppclient1", max_length=15, description="Bind system_id")
    password: SecretStr = Field(
        default=SecretStr("password"), max_length=8, description="Bind password"
    )
    system_type: str | None = Field(default=None, max_length=12, description="Bind system_type")
    interface_version: int = Field(
        default=34, ge=0, le=34, description="SMPP version: 34 is 3.4, 0 to 33 earlier ones"
    )
    address_range: str | None = Field(
        default=None, max_length=40, description="Bind address_range"
    )
    smpp_enquire_link_interval: float = Field(
        default=55, gt=0, description="Seconds between enquire_link requests"
    )
    bind_mode: BindMode = Field(
        default=BindMode.TRANSCEIVER,
        description="transceiver (one connection) or transmitter_receiver (two)",
    )
    window: int = Field(default=10, ge=1, description="Most submit_sm awaiting their response")
    connect_timeout: float = Field(default=10, gt=0, description="Seconds to connect and bind")
    response_timeout: float = Field(
        default=10, gt=0, description="Seconds a submit_sm waits for its response"
    )
    rebind_delay_base: float = Field(
        default=1, gt=0, description="Seconds before binding again (doubling per failure)"
    )
    rebind_delay_max: float = Field(default=60, gt=0, description="Longest wait between binds")
    tls: bool = Field(default=False, description="Connect with TLS")
    tls_ca_file: str | None = Field(
        default=None, description="PEM CA certificates to trust (default: the system's)"
    )
    tls_verify: bool = Field(default=True, description="Check the SMSC's certificate and name")
    temporary_statuses: list[int] = Field(
        default_factory=list,
        description="The SMSC's own command_status values that mean 'try again later'",
    )
    multipart_ttl: float = Field(
        default=3600, gt=0, description="Seconds the parts of an incomplete message are kept"
    )
    sequencer_class: str = Field(
        default="vumi2.transports.smpp.sequencers.InMemorySequencer",
        description="Sequence numbers: per session, from a random start (vumi2's name accepted)",
    )
    sequencer_config: dict[str, Any] = Field(default_factory=dict, description="Ignored")
    submit_sm_processor_class: str = Field(
        default="vumi2.transports.smpp.processors.SubmitShortMessageProcessor",
        description="vumi2's name for how outbound is encoded (only its default)",
    )
    submit_sm_processor_config: SubmitSmProcessorConfig = Field(
        default_factory=SubmitSmProcessorConfig, description="How outbound is encoded"
    )
    sm_processor_class: str = Field(
        default="vumi2.transports.smpp.processors.ShortMessageProcessor",
        description="vumi2's name for how inbound is decoded (only its default)",
    )
    sm_processor_config: SmProcessorConfig = Field(
        default_factory=SmProcessorConfig, description="How inbound is decoded"
    )
    dr_processor_class: str = Field(
        default="vumi2.transports.smpp.processors.DeliveryReportProcesser",
        description="vumi2's name for how receipts are read (only its default)",
    )
    dr_processor_config: DrProcessorConfig = Field(
        default_factory=DrProcessorConfig, description="How receipts are read"
    )
    smpp_cache_class: str = Field(
        default="vumi2.transports.smpp.smpp_cache.InMemorySmppCache",
        description="vumi2's name for the id cache; message_cache_class chooses it here",
    )
    smpp_cache_config: SmppCacheConfig = Field(
        default_factory=SmppCacheConfig, description="timeout: as provider_id_ttl"
    )

    @model_validator(mode="after")
    def _vumi2_classes(self) -> SmppTransportConfig:
        _known_class(self.sequencer_class, _VUMI2_SEQUENCERS, "sequencer_class")
        _known_class(
            self.submit_sm_processor_class, _VUMI2_SUBMIT_PROCESSORS, "submit_sm_processor_class"
        )
        _known_class(self.sm_processor_class, _VUMI2_SM_PROCESSORS, "sm_processor_class")
        _known_class(self.dr_processor_class, _VUMI2_DR_PROCESSORS, "dr_processor_class")
        _known_class(self.smpp_cache_class, _VUMI2_SMPP_CACHES, "smpp_cache_class")
        if self.smpp_cache_config.timeout is not None:
            self.provider_id_ttl = self.smpp_cache_config.timeout
        return self

    def esme_settings(self) -> EsmeSettings:
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=self.tls_ca_file)
            if not self.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return EsmeSettings(
            host=self.host,
            port=self.port,
            system_id=self.system_id,
            password=self.password.get_secret_value(),
            system_type=self.system_type or "",
            interface_version=0x34 if self.interface_version == 34 else 0x33,
            address_range=self.address_range or "",
            bind_mode=self.bind_mode,
            ssl_context=context,
            connect_timeout=self.connect_timeout,
            response_timeout=self.response_timeout,
            enquire_link_interval=self.smpp_enquire_link_interval,
            window=self.window,
        )

    def encoding_options(self) -> EncodingOptions:
        submit = self.submit_sm_processor_config
        default = self.sm_processor_config.data_coding_overrides.get(0, "gsm0338")
        return EncodingOptions(
            alphabet=_DATA_CODINGS[submit.data_coding],
            splitting=_MULTIPART[submit.multipart_handling],
            gsm_packed=submit.gsm_packed,
            default_alphabet=_DEFAULT_CODECS[default.lower()],
        )


class SmppTransport(BaseTransport):
    config_class = SmppTransportConfig
    config: SmppTransportConfig
    tracks_connection = True  # the client reports every loss and recovery
    limit_each_send = False  # max_tps counts PDUs: rate_limit() before each submit_sm

    async def setup_provider(self) -> None:
        config = self.config
        self.options = config.encoding_options()
        submit = config.submit_sm_processor_config
        self.addressing = {
            "service_type": submit.service_type,
            "source_addr_ton": submit.source_addr_ton,
            "source_addr_npi": submit.source_addr_npi,
            "dest_addr_ton": submit.dest_addr_ton,
            "dest_addr_npi": submit.dest_addr_npi,
            "registered_delivery": submit.registered_delivery.value(),
        }
        dr = config.dr_processor_config
        self.receipt_regex = re.compile(dr.regex) if dr.regex else None
        self.status_mapping = {
            stat.upper(): _DELIVERY_STATUSES[status] for stat, status in dr.status_mapping.items()
        }
        self.esme = Rebinder(
            config.esme_settings(),
            self._on_deliver,
            backoff_base=config.rebind_delay_base,
            backoff_max=config.rebind_delay_max,
            on_state_change=self._bound_changed,
        )
        self.provider_down("not bound yet")
        await self.nursery.start(self.esme.run)

    def _bound_changed(self, bound: bool) -> None:
        if bound:
            self.provider_up()
        else:
            self.provider_down(f"not bound: {self.esme.last_error or 'session ended'}")

    def provider_id_forms(self, provider_id: str) -> list[str]:
        return provider_id_candidates(provider_id)

    # -- outbound

    async def send(self, message: Message) -> Sequence[str]:
        parts = encode_text(message.content or "", self.options)
        ids = []
        for part in parts:
            await self.rate_limit()
            submit = part.submit_sm(
                source_addr=message.from_addr,
                destination_addr=message.to_addr,
                **self.addressing,
            )
            response = await self.esme.submit_sm(submit)
            ids.append(submit_sm_outcome(response, temporary=self.config.temporary_statuses))
        return [provider_id or message.message_id for provider_id in ids]

    # -- inbound

    async def _on_deliver(self, deliver: DeliverSm) -> None:
        if await self._receipt(deliver):
            return
        part = inbound_part(deliver, self.options)
        if part.key is None:
            text: str | None = part.text
        else:
            text = await self._reassembled(part)
            if text is None:
                return  # kept until the other parts come
        await self.publish_inbound(
            Message(
                to_addr=deliver.destination_addr,
                from_addr=deliver.source_addr,
                transport_name=self.config.transport_name,
                transport_type="sms",
                content=text,
                transport_metadata={
                    "smpp": {
                        "data_coding": deliver.data_coding,
                        "source_addr_ton": deliver.source_addr_ton,
                        "source_addr_npi": deliver.source_addr_npi,
                    }
                },
            )
        )

    async def _receipt(self, deliver: DeliverSm) -> bool:
        """Publish ``deliver`` as a delivery report if it is one; whether it was."""
        receipt = parse_receipt(deliver)
        message_id, stat, err, status = (
            (receipt.message_id, receipt.stat, receipt.err, receipt.status)
            if receipt
            else (None, None, None, None)
        )
        if self.receipt_regex is not None and (
            match := self.receipt_regex.search(deliver.content.decode("latin-1"))
        ):
            message_id, stat = match["id"], match["stat"]
            status = status or DeliveryStatus.PENDING
        if status is None:
            return False
        if stat is not None:
            status = self.status_mapping.get(stat.upper(), status)
        # A receipt without an id matches nothing: it waits as unmatched, then goes to
        # the dead-letter queue with the reason, rather than vanish.
        metadata = {"smpp": {"stat": stat, "err": err}}
        await self.delivery_report(message_id or "", status, metadata)
        return True

    async def _reassembled(self, part: InboundPart) -> str | None:
        assert part.key is not None
        source, destination, reference = part.key
        key = f"{self.config.transport_name}:{source}:{destination}:{reference}"
        stored = part.text.encode("utf-16-be", "surrogatepass")
        parts = await self.cache.add_part(
            key, part.part_number, part.total_parts, stored, self.config.multipart_ttl
        )
        if parts is None:
            return None
        return join_parts(
            InboundPart(
                part.key, number, part.total_parts, raw.decode("utf-16-be", "surrogatepass")
            )
            for number, raw in enumerate(parts, start=1)
        )
