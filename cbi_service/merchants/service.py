"""Merchants: the shops that accept the agency's paper vouchers of the programmes they serve, and where they
are paid. Each gets a payable account in each of its programmes (accounting's), which redemptions credit;
what those accounts hold is the merchant's `unsettled` total.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.accounting import service as accounting
from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal
from cbi_service.kit.errors import NotFound, UnprocessableEntity
from cbi_service.kit.money import Money
from cbi_service.merchants.models import Merchant
from cbi_service.merchants.repository import MerchantRepository
from cbi_service.merchants.schemas import MerchantCreate, MerchantDetail, MerchantOut
from cbi_service.programmes import service as programmes

PAPER_VOUCHER = "paper_voucher"


@dataclass(frozen=True)
class ProgrammeOfMerchant:
    """What accounting needs of one of the merchant's programmes (their currency is the merchant's)."""

    id: uuid.UUID
    currency: str


@dataclass(frozen=True)
class MerchantRef:
    """A merchant as redemptions need it: who, in which currency, for which programmes."""

    id: uuid.UUID
    name: str
    currency: str
    programme_ids: frozenset[uuid.UUID]


async def create_merchant(session: AsyncSession, principal: Principal, data: MerchantCreate) -> MerchantDetail:
    currency = await _programmes_currency(session, data.programme_ids)
    payout = data.payout
    merchant = await MerchantRepository(session).add(
        Merchant(
            name=data.name,
            country=data.country,
            currency=currency,
            payout_account_name=payout.account_name,
            payout_iban=payout.iban,
            payout_bic=payout.bic,
            payout_account_number=payout.account_number,
            payout_bank_code=payout.bank_code,
            created_by=principal.id,
        )
    )
    programme_ids = sorted(data.programme_ids)
    await MerchantRepository(session).add_programmes(merchant.id, programme_ids)
    await accounting.open_merchant_accounts(session, _refs(programme_ids, currency), merchant.id)
    account = payout.iban or payout.account_number or ""
    summary = {
        "name": merchant.name,
        "country": merchant.country,
        "currency": currency,
        "programme_ids": [str(p) for p in programme_ids],
        "payout_account": f"…{account[-4:]}",
    }
    await record_audit(session, principal, "merchant.created", "merchant", merchant.id, None, summary)
    return MerchantDetail(
        **MerchantOut.of(merchant, programme_ids).model_dump(), unsettled=Money.of(0, merchant.currency)
    )


async def _programmes_currency(session: AsyncSession, programme_ids: Sequence[uuid.UUID]) -> str:
    """The one currency of the listed paper-voucher programmes, or the 422 naming each that does not fit."""
    errors = []
    currencies = set()
    for index, programme_id in enumerate(programme_ids):
        field = f"programme_ids[{index}]"
        try:
            programme = await programmes.get_programme(session, programme_id)
        except NotFound:
            errors.append({"field": field, "message": "no such programme"})
            continue
        if programme.delivery_mechanism != PAPER_VOUCHER:
            errors.append({"field": field, "message": "not a paper_voucher programme: its provider pays merchants"})
        currencies.add(programme.currency)
    if len(currencies) > 1:
        errors.append({"field": "programme_ids", "message": "programmes in more than one currency"})
    if errors:
        raise UnprocessableEntity("The merchant cannot serve these programmes.", errors=errors)
    return currencies.pop()


def _refs(programme_ids: Sequence[uuid.UUID], currency: str) -> list[ProgrammeOfMerchant]:
    return [ProgrammeOfMerchant(programme_id, currency) for programme_id in programme_ids]


async def get_merchant(session: AsyncSession, merchant_id: uuid.UUID) -> MerchantDetail:
    repo = MerchantRepository(session)
    merchant = await repo.require(merchant_id)
    programme_ids = (await repo.programmes_of([merchant.id]))[merchant.id]
    unsettled = await accounting.merchant_payable(session, _refs(programme_ids, merchant.currency), merchant.id)
    return MerchantDetail(
        **MerchantOut.of(merchant, programme_ids).model_dump(), unsettled=Money.of(unsettled, merchant.currency)
    )


async def list_merchants(
    session: AsyncSession,
    *,
    after_id: uuid.UUID | None,
    limit: int,
    programme_id: uuid.UUID | None,
    country: str | None,
) -> tuple[Sequence[Merchant], dict[uuid.UUID, list[uuid.UUID]]]:
    """A page of merchants (one more than `limit`, for `page_of`) and each one's programmes."""
    repo = MerchantRepository(session)
    rows = await repo.list(after_id=after_id, limit=limit, programme_id=programme_id, country=country)
    return rows, await repo.programmes_of([m.id for m in rows])


async def merchant_ref(session: AsyncSession, merchant_id: uuid.UUID) -> MerchantRef:
    """The merchant of this id (404 if there is none)."""
    found = (await merchant_refs(session, [merchant_id])).get(merchant_id)
    if found is None:
        raise NotFound(MerchantRepository.not_found)
    return found


async def merchant_refs(session: AsyncSession, merchant_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, MerchantRef]:
    """`merchant_ref` for the merchants of many keys at once (a group of redemptions), by id."""
    rows = await MerchantRepository(session).refs(sorted(set(merchant_ids)))
    return {id_: MerchantRef(id_, name, currency, frozenset(programmes)) for id_, name, currency, programmes in rows}


async def exists(session: AsyncSession, merchant_id: uuid.UUID) -> bool:
    return await MerchantRepository(session).get(merchant_id) is not None
