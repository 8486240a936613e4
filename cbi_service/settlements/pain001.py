"""ISO 20022 pain.001.001.03 (customer credit transfer initiation) for a merchant settlement: one payment
from the agency's settlement account to the merchant's payout account, for the settlement's total, its
end-to-end id the settlement's id, so the bank's statement points back at it.

The file is built with lxml and validated against the official schema (the XSD the `sepaxml` package ships)
before it is served: a file the bank would refuse is never handed out. The generic ISO message is used, not
the EPC's SEPA subset, because merchants are paid in any currency and, where a country has no IBAN, to an
account number at a bank code (`Othr` identifications).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path

import sepaxml
from lxml import etree

from cbi_service.kit.bank_accounts import SettlementAccount
from cbi_service.kit.money import format_amount

NAMESPACE = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"


@dataclass(frozen=True)
class Payee:
    """The merchant as its bank knows it."""

    name: str
    country: str
    iban: str | None
    bic: str | None
    account_number: str | None
    bank_code: str | None


@dataclass(frozen=True)
class CreditTransfer:
    settlement_id: uuid.UUID
    created_at: datetime
    execution_date: date
    amount_minor: int
    currency: str
    redemption_count: int
    initiating_party: str
    debtor: SettlementAccount
    payee: Payee


class InvalidPaymentFile(RuntimeError):
    """The file does not validate against the pain.001 schema: a fault here, never sent to a bank."""


@cache
def _schema() -> etree.XMLSchema:
    path = Path(sepaxml.__file__).parent / "schemas" / "pain.001.001.03.xsd"
    return etree.XMLSchema(etree.parse(str(path)))


def validate(document: bytes) -> None:
    """Raise InvalidPaymentFile naming the first element the schema refuses."""
    schema = _schema()
    if not schema.validate(etree.fromstring(document)):
        error = schema.error_log.last_error
        raise InvalidPaymentFile(f"pain.001 refused by its schema at line {error.line}: {error.message}")


def render(transfer: CreditTransfer) -> bytes:
    """The pain.001 document, validated."""
    amount = format_amount(transfer.amount_minor, transfer.currency)
    reference = transfer.settlement_id.hex  # 32 characters: within every Max35Text id
    root = etree.Element(f"{{{NAMESPACE}}}Document", nsmap={None: NAMESPACE})
    initiation = _sub(root, "CstmrCdtTrfInitn")
    header = _sub(initiation, "GrpHdr")
    _sub(header, "MsgId", reference)
    _sub(header, "CreDtTm", transfer.created_at.replace(microsecond=0).isoformat())
    _sub(header, "NbOfTxs", "1")
    _sub(header, "CtrlSum", amount)
    _sub(_sub(header, "InitgPty"), "Nm", transfer.initiating_party)

    payment = _sub(initiation, "PmtInf")
    _sub(payment, "PmtInfId", reference)
    _sub(payment, "PmtMtd", "TRF")
    _sub(payment, "NbOfTxs", "1")
    _sub(payment, "CtrlSum", amount)
    _sub(payment, "ReqdExctnDt", transfer.execution_date.isoformat())
    _sub(_sub(payment, "Dbtr"), "Nm", transfer.debtor.name)
    _account(_sub(payment, "DbtrAcct"), transfer.debtor.iban, transfer.debtor.account_number)
    _agent(_sub(payment, "DbtrAgt"), transfer.debtor.bic, transfer.debtor.bank_code)
    _sub(payment, "ChrgBr", "SHAR")

    item = _sub(payment, "CdtTrfTxInf")
    _sub(_sub(item, "PmtId"), "EndToEndId", reference)
    _sub(_sub(item, "Amt"), "InstdAmt", amount, Ccy=transfer.currency)
    payee = transfer.payee
    _agent(_sub(item, "CdtrAgt"), payee.bic, payee.bank_code)
    creditor = _sub(item, "Cdtr")
    _sub(creditor, "Nm", payee.name)
    _sub(_sub(creditor, "PstlAdr"), "Ctry", payee.country)
    _account(_sub(item, "CdtrAcct"), payee.iban, payee.account_number)
    remittance = f"Voucher settlement {transfer.settlement_id} ({transfer.redemption_count} redemptions)"
    _sub(_sub(item, "RmtInf"), "Ustrd", remittance[:140])

    document: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    validate(document)
    return document


def _sub(parent: etree._Element, name: str, value: str | None = None, **attributes: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{NAMESPACE}}}{name}", attributes)
    if value is not None:
        element.text = value
    return element


def _account(parent: etree._Element, iban: str | None, account_number: str | None) -> None:
    identification = _sub(parent, "Id")
    if iban is not None:
        _sub(identification, "IBAN", iban)
    else:
        _sub(_sub(identification, "Othr"), "Id", account_number)


def _agent(parent: etree._Element, bic: str | None, bank_code: str | None) -> None:
    institution = _sub(parent, "FinInstnId")
    if bic is not None:
        _sub(institution, "BIC", bic)
    if bank_code is not None:
        _sub(_sub(institution, "Othr"), "Id", bank_code)
