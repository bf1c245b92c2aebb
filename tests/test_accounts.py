"""Accounts and API keys: normalised identities, argon2id passwords, hashed keys, the key cache."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from resayil_gateway.auth.accounts import AccountError
from resayil_gateway.auth.api_keys import KeyRefused, generate_key, mask_key
from resayil_gateway.auth.passwords import hash_password, verify_password
from resayil_gateway.auth.phones import InvalidPhone, normalize_phone
from resayil_gateway.errors import AuthenticationFailed
from resayil_gateway.store.tables import accounts, api_keys


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("50000000", "+96550000000"),
        ("5000 0000", "+96550000000"),
        ("+965 5000-0000", "+96550000000"),
        ("0096550000000", "+96550000000"),
        ("+966 50 123 4567", "+966501234567"),
        ("+971501234567", "+971501234567"),
    ],
)
def test_phone_is_normalised_to_e164_with_plus_and_8_digit_numbers_are_kuwaiti(raw, expected):
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize("raw", ["", "abc", "123", "+96512"])
def test_invalid_phone_is_refused_with_a_reason(raw):
    with pytest.raises(InvalidPhone):
        normalize_phone(raw)


def test_passwords_are_argon2id_and_a_broken_hash_means_invalid_not_an_error():
    hashed = hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "correct horse battery")
    assert not verify_password(hashed, "wrong password")
    assert not verify_password("$2y$10$notargon", "anything")
    assert not verify_password("", "anything")
    with pytest.raises(ValueError):
        hash_password("short")


async def test_email_is_lower_cased_and_email_and_phone_are_unique(gateway):
    account = await gateway.accounts.create("  Amal@Example.COM ", "50000001", "correct horse battery")
    assert (account.email, account.phone, account.role) == ("amal@example.com", "+96550000001", "user")
    with pytest.raises(AccountError) as taken:
        await gateway.accounts.create("AMAL@example.com", "50000002", "correct horse battery")
    assert taken.value.field == "email"
    with pytest.raises(AccountError) as taken:
        await gateway.accounts.create("other@example.com", "+965 5000 0001", "correct horse battery")
    assert taken.value.field == "phone"
    assert (await gateway.accounts.find("+96550000001")).id == account.id
    assert (await gateway.accounts.find("AMAL@EXAMPLE.COM")).id == account.id


async def test_login_by_email_or_phone_and_the_same_answer_for_every_failure(gateway):
    await gateway.accounts.create("amal@example.com", "50000001", "correct horse battery")
    assert await gateway.accounts.verify_login("AMAL@example.com", "correct horse battery")
    assert await gateway.accounts.verify_login("50000001", "correct horse battery")
    assert await gateway.accounts.verify_login("amal@example.com", "wrong") is None
    assert await gateway.accounts.verify_login("nobody@example.com", "correct horse battery") is None


async def test_admin_is_a_role_in_the_database(gateway):
    admin = await gateway.accounts.create("boss@example.com", "50000003", "correct horse battery", role="admin")
    async with gateway.store.connect() as conn:
        assert await conn.scalar(select(accounts.c.role).where(accounts.c.id == admin.id)) == "admin"
    with pytest.raises(AccountError):
        await gateway.accounts.create("x@example.com", "50000004", "correct horse battery", role="root")


def test_keys_are_rsk_plus_43_url_safe_characters_and_masked_in_messages():
    key = generate_key()
    assert key.startswith("rsk-") and len(key) == 47
    assert set(key[4:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert mask_key(key) == f"{key[:12]}****{key[-4:]}"


async def test_key_is_stored_only_as_a_keyed_hash_with_a_12_character_prefix(gateway):
    account = await gateway.accounts.create("amal@example.com", "50000001", "correct horse battery")
    new = await gateway.keys.create(account.id, "laptop")
    async with gateway.store.connect() as conn:
        row = (await conn.execute(select(api_keys))).one()
    assert row.prefix == new.secret[:12]
    assert new.secret not in str(tuple(row))
    assert row.key_hash == gateway.keys.hash_key(new.secret) != new.secret
    assert [key.label for key in await gateway.keys.list(account.id)] == ["laptop"]


async def test_keys_per_account_are_limited_by_plan(gateway):
    account = await gateway.accounts.create("amal@example.com", "50000001", "correct horse battery")
    await gateway.keys.create(account.id, "one")
    with pytest.raises(KeyRefused, match="basic plan allows 1"):
        await gateway.keys.create(account.id, "two")


async def test_authentication_is_served_from_the_cache_until_a_revocation(gateway):
    await gateway.state.start()  # the invalidation channel is alive: cached callers can be trusted
    try:
        account = await gateway.accounts.create("amal@example.com", "50000001", "correct horse battery")
        new = await gateway.keys.create(account.id, "k")
        caller = await gateway.keys.authenticate(f"Bearer {new.secret}")
        assert (caller.account_id, caller.key_prefix, caller.plan) == (account.id, new.secret[:12], "basic")
        async with gateway.store.begin() as conn:  # a cached caller needs no store round trip
            await conn.execute(api_keys.delete())
        assert (await gateway.keys.authenticate(f"Bearer {new.secret}")).account_id == account.id
        gateway.keys.forget_account(account.id)
        with pytest.raises(AuthenticationFailed):
            await gateway.keys.authenticate(f"Bearer {new.secret}")
    finally:
        await gateway.state.close()


async def test_cached_keys_are_not_trusted_while_the_invalidation_channel_is_down(make_gateway, stack):
    if stack != "postgres":
        pytest.skip("the channel is Redis; in-process state is always alive")
    gateway = make_gateway()
    account = await gateway.accounts.create("amal@example.com", "50000001", "correct horse battery")
    new = await gateway.keys.create(account.id, "k")
    await gateway.state.start()
    try:
        await gateway.keys.authenticate(f"Bearer {new.secret}")
        await gateway.state.close()  # the subscription is gone, as when Redis is unreachable
        async with gateway.store.begin() as conn:  # revoked by another process that could not broadcast
            await conn.execute(api_keys.update().values(revoked_at=gateway.clock.now()))
        with pytest.raises(AuthenticationFailed, match="revoked"):
            await gateway.keys.authenticate(f"Bearer {new.secret}")
    finally:
        await gateway.state.close()


async def test_disabled_account_keys_are_refused(gateway):
    account = await gateway.accounts.create("amal@example.com", "50000001", "correct horse battery")
    new = await gateway.keys.create(account.id, "k")
    await gateway.keys.authenticate(f"Bearer {new.secret}")
    await gateway.accounts.set_status(account.id, "disabled", actor="admin")
    with pytest.raises(AuthenticationFailed, match="disabled"):
        await gateway.keys.authenticate(f"Bearer {new.secret}")


async def test_key_usage_is_counted_in_batches_not_per_request(gateway):
    account = await gateway.accounts.create("amal@example.com", "50000001", "correct horse battery")
    new = await gateway.keys.create(account.id, "k")
    for _ in range(3):
        await gateway.keys.authenticate(f"Bearer {new.secret}")
    async with gateway.store.connect() as conn:
        assert await conn.scalar(select(api_keys.c.request_count)) == 0
    await gateway.keys.flush_usage()
    (key,) = await gateway.keys.list(account.id)
    assert key.request_count == 3 and key.last_used_at is not None


async def test_revocation_on_one_worker_reaches_another_through_shared_state(make_gateway, stack):
    if stack != "postgres":
        pytest.skip("one worker only with in-process state")
    first, second = make_gateway(), make_gateway()
    await first.state.start()
    await second.state.start()
    try:
        account = await first.accounts.create("amal@example.com", "50000001", "correct horse battery")
        new = await first.keys.create(account.id, "k")
        await second.keys.authenticate(f"Bearer {new.secret}")
        await first.keys.revoke(new.secret[:12])
        for _ in range(100):  # the broadcast arrives within milliseconds
            if account.id not in second.keys._by_account:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(AuthenticationFailed, match="revoked"):
            await second.keys.authenticate(f"Bearer {new.secret}")
    finally:
        await first.state.close()
        await second.state.close()
