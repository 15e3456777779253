"""The owner's side of docs/protocol.md 10.6 (status on the receipt), in a live exchange with a
real owner node, played against an origin written from the document alone
(tests/independent/ref_owner_runs.py).

Zhejiang is the real owner: "zj.medical.cross-region-filing" is decided automatically, and its
inbound policy refuses purpose `research` by a deny rule (10.3 step 10). Jiangsu, the origin, is
played here from both ends: its applications are built, sealed to Zhejiang's key (5) and signed
with Jiangsu's key (3.1) by the independent code, from the laid-out seeds, manifest and the
owner's catalogue file, and sent over real gRPC to Zhejiang's `PeerService.Deliver`; and Jiangsu's
node is replaced, at its address and with its pinned TLS certificate, by an independent
`NotifyStatus` receiver that verifies each envelope (3.2), takes the changes in (10.2) and answers
with signed receipts (4, 4.1). So every change the owner sends by `NotifyStatus` is seen, which
the application's absence from a real Jiangsu would hide. Shanghai's key plays a relay: it wraps
Jiangsu's signed envelope as a `forward` (3.3), which the destination takes whatever the manifest
says about relays.

For each delivery `OwnerModel` predicts the receipt (outcome, code, `rule_id`) and whether it
carries a run (10.6 rules 1-3): a new one of the storing transaction's changes (sequence 1.., an
automatic decision's four statuses, 10.2), the very run of the first receipt again, or none; and
what the owner then owes the origin by `NotifyStatus`, once. The origin's own checks of 10.6
(tests/independent/ref_receipt_runs.py) take every receipt a direct delivery gets.

Disagreements with the node are marked xfail(strict=True) naming the gap of
tests/independent/OWNER_RUN_GAPS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
import pytest_asyncio

from simulations.local_federation import PROVINCES
from tests.independent import wire
from tests.independent.primitives import Rejected
from tests.independent.ref_cases import Transfer, read_transfer
from tests.independent.ref_manifest import Manifest, verify_anchor
from tests.independent.ref_owner_runs import (
    ACCEPTED,
    DELIVER,
    DUPLICATE,
    NEW_RUN,
    NO_RUN,
    NOTIFY_STATUS,
    REJECTED,
    RETRY,
    CatalogueEntry,
    Change,
    Delivery,
    OwnerModel,
    Prediction,
    Receipt,
    application_id,
    attachments_for,
    batch,
    deliver_application,
    deliver_forward,
    describe,
    encode_payload,
    encode_receipt,
    encode_transfer,
    fill_form,
    read_batch,
    read_catalogue_entry,
    read_receipt,
    read_status_item,
    resident_id,
    run_fits,
    seal_to,
    signed_response,
)
from tests.independent.ref_protocol import (
    Envelope,
    NonceStore,
    envelope_digest,
    read_envelope,
    signed_request,
    verify_request,
    verify_response,
)
from tests.independent.ref_receipt_runs import USABLE, take_receipt
from tests.independent.ref_status import Origin, apply_status_item
from tests.support.federation import ALLOW_ALL, Federation, allow_all_specs, node_channel

pytestmark = pytest.mark.asyncio(loop_scope="module")

ORIGIN, OWNER, RELAY = "jiangsu", "zhejiang", "shanghai"
SERVICE = "zj.medical.cross-region-filing"  # handler "auto" in Zhejiang's catalogue
BUNDLE = "zj.hangzhou.newborn"  # handler "bundle", every part Zhejiang's own
DENY_RULE = "zj-in-deny-research"
MAX_SKEW_MS = 30_000
SECOND_MS = 1000
# Zhejiang's bundle: allow everything, but refuse an application for purpose `research` by a
# deny rule (docs/policies.md: a matching deny wins), so 10.3 step 10 has a case.
OWNER_BUNDLE = ALLOW_ALL.format(node=OWNER).replace(
    "rules:\n",
    f"rules:\n  - id: {DENY_RULE}\n    effect: deny\n    when:\n      direction: inbound\n"
    "      purpose: research\n",
)


def now_ms() -> int:
    return int(time.time() * 1000)


def _read_seed(path: Path) -> bytes:
    text = path.read_text().strip()
    assert text.startswith("ed25519:"), "an unsealed key file of the test layout"
    return bytes.fromhex(text.removeprefix("ed25519:"))


class OriginServer:
    """Jiangsu's `PeerService.NotifyStatus`, from the document: each envelope verified by 3.2 (4.1:
    on its own), its `StatusItem` taken in by 10.2 for an application this origin sent (any other
    is `unknown_application`), answered by a receipt signed as a response (4) at its position."""

    def __init__(self, manifest: Manifest, seed: bytes) -> None:
        self.manifest, self.seed = manifest, seed
        self.nonces = NonceStore()
        self.origins: dict[str, Origin] = {}  # the applications Jiangsu sent, by id
        self.arrived: dict[str, list[Change]] = defaultdict(list)  # every change, in arrival order
        self.refused: list[tuple[str, str]] = []  # (application, code) of what this origin refused
        self.news = asyncio.Event()  # set whenever a change arrives
        self.server: grpc.aio.Server | None = None

    async def start(self, address: str, cert_pem: bytes, key_pem: bytes) -> None:
        handler = grpc.method_handlers_generic_handler(
            "yrd.peer.v1.PeerService",
            {"NotifyStatus": grpc.unary_unary_rpc_method_handler(self.notify_status)},
        )
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_secure_port(address, grpc.ssl_server_credentials([(key_pem, cert_pem)]))
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)

    async def notify_status(self, request: bytes, context: Any) -> bytes:
        now = now_ms()
        answers = []
        for raw in read_batch(request):
            env = read_envelope(raw)
            answers.append(signed_response(request=env, seed=self.seed, body=self._take(env, now), at_ms=now))
        return batch(answers)

    def _take(self, env: Envelope, now: int) -> bytes:
        try:
            verify_request(
                env,
                manifest=self.manifest,
                receiver=ORIGIN,
                method_called=NOTIFY_STATUS,
                now_ms=now,
                max_skew_ms=MAX_SKEW_MS,
                nonces=self.nonces,
            )
        except Rejected as refused:
            self.refused.append(("", refused.code))
            item_id = "env:" + envelope_digest(env).hex()
            return encode_receipt(
                item_id=item_id, outcome=REJECTED, reason_code=refused.code, received_at_ms=now
            )
        try:
            changes = read_status_item(env.body)
            app = changes[0].application_id if changes else ""
            origin = self.origins.get(app, Origin(app, owner="", recorded=set()))
            code, item_id, _ = apply_status_item(origin, env.body, env.sender)
        except wire.WireError:  # 3.4: no status item of this method (or one that does not parse)
            self.refused.append(("", "malformed_body"))
            item_id = "env:" + envelope_digest(env).hex()
            return encode_receipt(
                item_id=item_id, outcome=REJECTED, reason_code="malformed_body", received_at_ms=now
            )
        if code in ("accepted", "duplicate"):
            self.arrived[app].extend(changes)
            self.news.set()
            outcome = ACCEPTED if code == "accepted" else DUPLICATE
            return encode_receipt(item_id=item_id, outcome=outcome, received_at_ms=now)
        self.refused.append((app, code))
        return encode_receipt(item_id=item_id, outcome=REJECTED, reason_code=code, received_at_ms=now)


@dataclasses.dataclass
class World:
    fed: Federation
    manifest: Manifest
    seeds: dict[str, bytes]
    entry: CatalogueEntry
    bundle: CatalogueEntry
    origin: OriginServer
    channel: grpc.aio.Channel


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    root = tmp_path_factory.mktemp("owner-runs")
    specs = [s for s in allow_all_specs(root, PROVINCES) if s.node_id in (ORIGIN, OWNER, RELAY)]
    owner_spec = next(s for s in specs if s.node_id == OWNER)
    assert owner_spec.bundle is not None
    owner_spec.bundle.write_text(OWNER_BUNDLE)
    fed = await Federation(root, specs).start()
    origin: OriginServer | None = None
    try:
        # The inputs of the independent side: the laid-out files, read without node code.
        manifest = verify_anchor((root / OWNER / "anchor.manifest").read_bytes())
        seeds = {s.node_id: _read_seed(root / s.node_id / "node.key") for s in specs}
        catalogue = (root / OWNER / "catalogue.toml").read_text()
        entry = read_catalogue_entry(catalogue, SERVICE)
        bundle = read_catalogue_entry(catalogue, BUNDLE)
        assert (entry.handler, bundle.handler) == ("auto", "bundle")
        # Jiangsu's node makes way for the independent receiver, at its address, with its pinned
        # certificate (6.8), so Zhejiang's NotifyStatus calls reach the played origin.
        address = fed.configs[ORIGIN].grpc_listen
        await fed.stop_node(ORIGIN)
        origin = OriginServer(manifest, seeds[ORIGIN])
        tls = root / ORIGIN
        await origin.start(address, (tls / "tls.crt").read_bytes(), (tls / "tls.key").read_bytes())
        async with node_channel(fed.nodes[OWNER]) as channel:
            yield World(fed, manifest, seeds, entry, bundle, origin, channel)
    finally:
        if origin is not None:
            await origin.stop()
        await fed.close()


# Building and sending, with the independent code only.


@dataclasses.dataclass(frozen=True)
class Built:
    transfer: Transfer
    delivery: Delivery  # as the owner sees it, for the model


def build(
    w: World,
    *,
    service: str = SERVICE,
    status_on_receipt: bool = True,
    app_id: str | None = None,
    origin_node: str = ORIGIN,
    signer: str | None = None,
    service_version: int | None = None,
    purpose: str = "service-delivery",
    submitted_at_ms: int | None = None,
    form: dict[str, object] | None = None,
    admission: str | None = None,
    via: str | None = None,
) -> Built:
    """An application of `service` from `origin_node`, its form filled from Zhejiang's catalogue
    entry (docs/catalogue.md), sealed to Zhejiang's key as the manifest publishes it (5, 5.1)."""
    now = now_ms()
    entry = w.bundle if service == BUNDLE else w.entry
    form = form if form is not None else fill_form(entry, datetime.date.today())
    payload = encode_payload(
        "张三",
        resident_id("33010219900307123"),
        json.dumps(form, ensure_ascii=False).encode("utf-8"),
        attachments_for(entry),
    )
    owner = w.manifest.member(OWNER)
    assert owner is not None and len(owner.keys) == 1
    transfer = Transfer(
        application_id=app_id or application_id(now),
        origin_node=origin_node,
        service_id=service,
        service_version=entry.version if service_version is None else service_version,
        submitted_at_ms=submitted_at_ms if submitted_at_ms is not None else now,
        purpose=purpose,
        consent=True,
        sealed_payload=seal_to(owner.keys[0].public_key, payload),
        fields_present=tuple(sorted(form)),
        status_on_receipt=status_on_receipt,
    )
    assert read_transfer(encode_transfer(transfer)) == transfer  # the writer and reader agree
    policy = ("rule_deny", DENY_RULE) if purpose == "research" else None
    delivery = Delivery(
        sender=signer or origin_node,
        direct=via is None,
        form_fields=tuple(form),
        admission=admission,
        policy=policy,
    )
    return Built(transfer, delivery)


def again(b: Built, *, status_on_receipt: bool | None = None, via: str | None = None) -> Built:
    """The same application once more (4.1: a fresh envelope), asking or not, directly or not."""
    asks = b.transfer.status_on_receipt if status_on_receipt is None else status_on_receipt
    return Built(
        dataclasses.replace(b.transfer, status_on_receipt=asks),
        dataclasses.replace(b.delivery, direct=via is None),
    )


@dataclasses.dataclass(frozen=True)
class Answer:
    request: Envelope  # the envelope the owner answered (the relay's outer one, when relayed)
    response: Envelope
    receipt: Receipt
    sent_ms: int
    answered_ms: int


def envelope_for(w: World, b: Built, via: str | None, at_ms: int) -> Envelope:
    """`b` signed by its sender (3.1), or wrapped as a `forward` by `via` (3.3)."""
    body = deliver_application(encode_transfer(b.transfer))
    sender = b.delivery.sender
    env = signed_request(
        sender=sender, seed=w.seeds[sender], destination=OWNER, method=DELIVER, body=body, at_ms=at_ms
    )
    if via is None:
        return env
    wrapped = deliver_forward(env)
    return signed_request(
        sender=via, seed=w.seeds[via], destination=OWNER, method=DELIVER, body=wrapped, at_ms=at_ms
    )


async def send_many(w: World, items: list[tuple[Built, str | None]]) -> list[Answer]:
    """One `Deliver` call to Zhejiang over gRPC carrying an envelope per item (4.1). Each receipt
    must verify as a response (4) to the envelope at its position (the relay's outer one)."""
    sent = now_ms()
    envs = [envelope_for(w, b, via, sent) for b, via in items]
    for b, _ in items:
        if b.delivery.sender == ORIGIN:  # this origin holds it from now on (10.2 step 5)
            app = b.transfer.application_id
            w.origin.origins.setdefault(app, Origin(app, OWNER, set()))
    call = cast("grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]", w.channel.unary_unary(DELIVER))
    raw = await call(batch(envs), timeout=10)
    answers = [read_envelope(r) for r in read_batch(raw)]
    answered = now_ms()
    assert len(answers) == len(envs)  # 4.1: one receipt per envelope, at its position
    for env, answer in zip(envs, answers, strict=True):
        verify_response(
            answer,
            request=env,
            manifest=w.manifest,
            receiver=env.sender,
            now_ms=answered,
            max_skew_ms=MAX_SKEW_MS,
        )
    return [
        Answer(env, answer, read_receipt(answer.body), sent, answered)
        for env, answer in zip(envs, answers, strict=True)
    ]


async def send(w: World, b: Built, *, via: str | None = None) -> Answer:
    [answer] = await send_many(w, [(b, via)])
    return answer


def check(
    w: World, b: Built, a: Answer, p: Prediction, *, first: Answer | None = None
) -> tuple[Change, ...] | None:
    """Compare a receipt with the prediction; return its run (None for none)."""
    r, app = a.receipt, b.transfer.application_id
    got = (r.outcome, r.reason_code, r.item_id)
    assert got == (p.outcome, p.reason_code, app), (p, r)  # 10.4: item_id names the application
    if p.rule_id is not None:
        assert r.rule_id == p.rule_id, r
    if p.reason_as_first:
        assert first is not None, "a copy refused at step 3 answers a first delivery"
        assert r.reason == first.receipt.reason, (r, first.receipt)
    run = r.run()
    if p.run == NO_RUN:
        assert run is None, f"no run expected, got {describe(run or ())}"
    elif p.run == NEW_RUN:
        assert run is not None and r.status_run is not None, f"a run expected: {p.changes}"
        assert len(run) == len(p.changes), describe(run)
        assert all(e.matches(c, app) for e, c in zip(p.changes, run, strict=True)), (p.changes, run)
        assert run_fits(r.status_run), len(r.status_run)
        # 10.2 field 4, 10.6: numbered in the storing transaction, before the receipt was signed.
        for c in run:
            assert a.sent_ms - MAX_SKEW_MS <= c.changed_at_ms <= a.answered_ms + MAX_SKEW_MS, c
    else:
        assert first is not None and run is not None, "the first receipt's run expected again"
        assert run == first.receipt.run(), (describe(run), describe(first.receipt.run() or ()))
    if b.delivery.direct and b.delivery.sender == ORIGIN and r.outcome != RETRY:
        # The origin's side of 10.6 takes the receipt: usable, whatever the run.
        origin = w.origin.origins[app]
        before = set(origin.recorded)
        usable, applied = take_receipt(origin, a.response.body, a.response.sender)
        assert usable == USABLE, usable
        if p.run == NEW_RUN:
            assert applied == [e.sequence for e in p.changes if e.sequence not in before]
    return run


async def settle(
    w: World, model: OwnerModel, kept: dict[str, tuple[Change, ...]], seconds: float = 10
) -> None:
    """What came by NotifyStatus is what the owner owed, each change once (10.3, 10.6), and
    nothing for an application whose run rode. Owed changes are waited for; then a marker
    application that does not ask is delivered and its run awaited, so a change the owner should
    not have sent, queued before the marker's, has had its chance to arrive (an observation, not a
    promise of the document: nothing orders the owner's outbox)."""
    marker = build(w, status_on_receipt=False)
    p = model.deliver(marker.transfer, marker.delivery, now_ms())
    check(w, marker, await send(w, marker), p)
    wanted = {app: (len(kept[app]) if o.kept else len(o.changes)) for app, o in model.owed.items()}

    def arrived_all() -> bool:
        return all(len(w.origin.arrived.get(app, ())) >= n for app, n in wanted.items())

    deadline = time.monotonic() + seconds
    while not arrived_all() and (left := deadline - time.monotonic()) > 0:
        w.origin.news.clear()
        if arrived_all():
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(w.origin.news.wait(), left)
    await asyncio.sleep(0.2)  # a copy sent twice would follow closely
    mine = model.delivered
    got = {app: list(w.origin.arrived.get(app, ())) for app in mine}
    for app in mine:
        owed = model.owed.get(app)
        arrived = got[app]
        if owed is None:
            assert arrived == [], f"{app}: nothing owed by NotifyStatus, got {describe(tuple(arrived))}"
        elif owed.kept:
            assert tuple(arrived) == kept[app], (app, describe(tuple(arrived)), describe(kept[app]))
        elif owed.more:  # the changes of storing, then perhaps later ones (in flight), each once
            sequences = [c.sequence for c in arrived]
            assert len(set(sequences)) == len(sequences), describe(tuple(arrived))
            by_sequence = {c.sequence: c for c in arrived}
            assert all(e.sequence in by_sequence for e in owed.changes), describe(tuple(arrived))
            assert all(e.matches(by_sequence[e.sequence], app) for e in owed.changes), arrived
        else:
            assert len(arrived) == len(owed.changes), (app, describe(tuple(arrived)), owed.changes)
            assert all(e.matches(c, app) for e, c in zip(owed.changes, arrived, strict=True)), arrived
    refused = [(app, code) for app, code in w.origin.refused if app in mine or not app]
    assert refused == [], refused  # every change the owner sent verified and was taken in


def fresh_model(w: World) -> OwnerModel:
    """The owner as its catalogue file publishes SERVICE and BUNDLE (docs/catalogue.md)."""
    services = {SERVICE: w.entry.version, BUNDLE: w.bundle.version}
    return OwnerModel(OWNER, services, frozenset({SERVICE}), frozenset({BUNDLE}))


async def deliver(
    w: World, model: OwnerModel, b: Built, *, via: str | None = None, first: Answer | None = None
) -> tuple[Answer, tuple[Change, ...] | None]:
    if first is None:
        assert b.delivery.direct == (via is None)
    p = model.deliver(b.transfer, b.delivery, now_ms())
    a = await send(w, b, via=via)
    return a, check(w, b, a, p, first=first)


AUTOMATIC = [(1, "DELIVERED"), (2, "IN_REVIEW"), (3, "APPROVED"), (4, "COMPLETED")]


# The cases.


async def test_asked_and_direct_the_automatic_decision_rides_on_the_receipt(world: World) -> None:
    """Rules 1-3 hold, step 11: ACCEPTED with DELIVERED, IN_REVIEW, APPROVED, COMPLETED as 1-4,
    which the origin's checks take; the owner MUST NOT send them by NotifyStatus too."""
    model = fresh_model(world)
    b = build(world)
    _, run = await deliver(world, model, b)
    assert run is not None and describe(run) == AUTOMATIC
    assert world.origin.origins[b.transfer.application_id].shows() == 4
    await settle(world, model, {})


async def test_a_direct_copy_gets_the_same_run_again(world: World) -> None:
    """10.6: "A copy that arrives directly gets the same run again (the same changes,
    changed_at_ms included)" on its DUPLICATE receipt, as often as it comes, whatever else the
    copy carries."""
    model = fresh_model(world)
    b = build(world)
    first, run = await deliver(world, model, b)
    assert run is not None
    for _ in range(2):
        await deliver(world, model, again(b), first=first)
    # 10.3 step 3: "nothing else is checked or changed", so a copy whose payload no longer opens
    # is still a DUPLICATE, and still gets the run.
    garbled = dataclasses.replace(b.transfer, sealed_payload=bytes(64))
    await deliver(world, model, dataclasses.replace(b, transfer=garbled), first=first)
    await settle(world, model, {})


async def test_an_origin_that_does_not_ask_gets_no_run_and_the_changes_by_notify_status_once(
    world: World,
) -> None:
    """Rule 1 fails: ACCEPTED without field 7; the four changes come by NotifyStatus, once. A
    later copy that asks gets no run either: its first receipt carried none (rule 3)."""
    model = fresh_model(world)
    b = build(world, status_on_receipt=False)
    first, _ = await deliver(world, model, b)
    await deliver(world, model, again(b, status_on_receipt=True), first=first)
    await settle(world, model, {})
    assert describe(tuple(world.origin.arrived[b.transfer.application_id])) == AUTOMATIC


async def test_an_item_through_a_relay_gets_no_run_and_the_changes_by_notify_status_once(
    world: World,
) -> None:
    """Rule 2 fails (3.3: the destination's receipt reaches the relay and never carries a run): the
    receipt names the application, and the changes go to the origin itself by NotifyStatus. A
    later direct copy that asks gets none on its DUPLICATE (its first receipt carried none)."""
    model = fresh_model(world)
    b = build(world, via=RELAY)
    first, _ = await deliver(world, model, b, via=RELAY)
    assert first.response.destination == RELAY
    await deliver(world, model, again(b), first=first)
    await settle(world, model, {})


async def test_a_self_wrapped_forward_is_not_direct(world: World) -> None:
    """Rule 2 reads "the body of the Deliver envelope S itself signed and sent to the owner, not
    the inner envelope of a relay's forward": an origin wrapping its own envelope as a `forward`
    (3.3 takes it at the destination, whoever the outer sender) sends an inner envelope, so no
    run (3.3: a destination's receipt for a forward "never carries a status run"; gap 4)."""
    model = fresh_model(world)
    b = build(world, via=ORIGIN)
    await deliver(world, model, b, via=ORIGIN)
    await settle(world, model, {})


async def test_copies_that_cannot_carry_the_kept_run_get_it_by_notify_status_once(world: World) -> None:
    """The first receipt carried the run; a copy through a relay and a copy that does not ask get
    DUPLICATE without it, and "the owner then sends that run by NotifyStatus, once" (the same
    changes, changed_at_ms included); a direct copy that asks still gets it on its receipt."""
    model = fresh_model(world)
    b = build(world)
    first, run = await deliver(world, model, b)
    assert run is not None
    await deliver(world, model, again(b, via=RELAY), via=RELAY, first=first)
    await deliver(world, model, again(b, status_on_receipt=False), first=first)
    await deliver(world, model, again(b, via=RELAY), via=RELAY, first=first)
    await deliver(world, model, again(b), first=first)
    await settle(world, model, {b.transfer.application_id: run})


async def test_a_refusal_by_policy_carries_its_single_refused_change(world: World) -> None:
    """Step 10 stores the refusal: REJECTED `rule_deny` with the rule's id, and its single REFUSED
    change (sequence 1, the rule's id, 10.2 field 7) on the receipt; a direct copy gets REJECTED
    `refused` with the stored reason and rule id and the same run; a copy through a relay or not
    asking gets none, and the kept run then comes by NotifyStatus, once (gaps 1, 2 and 7)."""
    model = fresh_model(world)
    b = build(world, purpose="research")
    first, run = await deliver(world, model, b)
    assert run is not None and describe(run) == [(1, "REFUSED")]
    await deliver(world, model, again(b), first=first)
    # Copies that cannot carry it: the kept run by NotifyStatus, once; a direct one still has it.
    await deliver(world, model, again(b, via=RELAY), via=RELAY, first=first)
    await deliver(world, model, again(b, status_on_receipt=False), first=first)
    await deliver(world, model, again(b), first=first)
    await settle(world, model, {b.transfer.application_id: run})


async def test_a_refusal_by_policy_not_asked_comes_by_notify_status(world: World) -> None:
    """Step 10 without rule 1: no run; the single REFUSED change comes by NotifyStatus, once. A
    copy that asks gets none (rule 3: the first receipt carried none)."""
    model = fresh_model(world)
    b = build(world, purpose="research", status_on_receipt=False)
    first, _ = await deliver(world, model, b)
    await deliver(world, model, again(b, status_on_receipt=True), first=first)
    await settle(world, model, {})


async def test_a_form_the_owner_refuses_gets_no_run_and_one_refused_change_by_notify_status(
    world: World,
) -> None:
    """Step 8 (a phone that is no phone, docs/catalogue.md) stores nothing: REJECTED
    `invalid_form_field` without a run even when asked (10.6: no run on a refusal at steps
    1-9); 10.3 sends the REFUSED change (sequence 1, reason "<code>: ...") by NotifyStatus, once
    per application id, also when a copy (directly or through a relay) is checked again."""
    model = fresh_model(world)
    form = fill_form(world.entry, datetime.date.today()) | {"phone": "12"}
    b = build(world, form=form, admission="invalid_form_field")
    first, _ = await deliver(world, model, b)
    await deliver(world, model, again(b), first=first)
    await deliver(world, model, again(b, via=RELAY), via=RELAY, first=first)
    await settle(world, model, {})


async def test_a_transfer_stamped_ahead_is_retried_without_a_run(world: World) -> None:
    """Step 6: RETRY `stamped_ahead`, nothing stored or told; no run on a RETRY receipt (10.6)."""
    model = fresh_model(world)
    b = build(world, submitted_at_ms=now_ms() + 10 * 60 * SECOND_MS)
    await deliver(world, model, b)
    await settle(world, model, {})


async def test_an_id_taken_by_another_origin_gets_no_run(world: World) -> None:
    """Step 3 from another origin: REJECTED `id_taken`, which rule 3 does not name: no run, even
    for an application whose first receipt carried one."""
    model = fresh_model(world)
    b = build(world)
    first, run = await deliver(world, model, b)
    assert run is not None
    other = build(world, app_id=b.transfer.application_id, origin_node=RELAY)
    await deliver(world, model, other, first=first)
    await settle(world, model, {})


async def test_items_refused_at_steps_1_and_2_get_no_run_and_nothing_is_sent(world: World) -> None:
    """10.6 applies to an item "that passes 10.3 steps 1 and 2"; those refusals send nothing
    (10.3: "no origin to trust, or no id safe to name")."""
    model = fresh_model(world)
    await deliver(world, model, build(world, origin_node=RELAY, signer=ORIGIN))
    await deliver(world, model, build(world, app_id="Not-An-Id"))
    await settle(world, model, {})


async def test_a_batch_gets_each_receipt_as_its_own_item_asks(world: World) -> None:
    """4.1: each envelope of a call is answered on its own, at its position; 10.6 decides the run
    per item: asked and direct, not asked, through a relay, a refusal by policy (directly, and
    through a relay)."""
    model = fresh_model(world)
    items = [
        (build(world), None),
        (build(world, status_on_receipt=False), None),
        (build(world, via=RELAY), RELAY),
        (build(world, purpose="research"), None),
        (build(world, purpose="research", via=RELAY), RELAY),
    ]
    predictions = [model.deliver(b.transfer, b.delivery, now_ms()) for b, _ in items]
    answers = await send_many(world, items)
    runs = [check(world, b, a, p) for (b, _), a, p in zip(items, answers, predictions, strict=True)]
    assert [run is not None for run in runs] == [True, False, False, True, False]
    await settle(world, model, {})


async def test_copies_in_the_same_call_as_the_first(world: World) -> None:
    """A copy behind its first in one call is a copy at step 3 all the same: asking and direct it
    gets the run its first receipt carries; not asking, none, and the run comes by NotifyStatus,
    once; behind a first that did not ask, none."""
    model = fresh_model(world)
    rode, rode_too, not_asked = build(world), build(world), build(world, status_on_receipt=False)
    items: list[tuple[Built, str | None]] = [
        (rode, None),
        (again(rode), None),
        (rode_too, None),
        (again(rode_too, status_on_receipt=False), None),
        (not_asked, None),
        (again(not_asked, status_on_receipt=True), None),
    ]
    predictions = [model.deliver(b.transfer, b.delivery, now_ms()) for b, _ in items]
    answers = await send_many(world, items)
    runs = []
    for i, ((b, _), a, p) in enumerate(zip(items, answers, predictions, strict=True)):
        runs.append(check(world, b, a, p, first=answers[i - 1] if i % 2 else None))
    assert [run is not None for run in runs] == [True, True, True, False, False, False]
    kept = runs[2]
    assert kept is not None
    await settle(world, model, {rode_too.transfer.application_id: kept})


async def test_the_kept_run_survives_a_restart_of_the_owner(world: World) -> None:
    """10.6: the owner "MUST keep the run with the application: its receipt may be lost". After
    the owner restarts, a direct copy still gets the same run, and a copy that does not ask
    still brings it by NotifyStatus, once."""
    model = fresh_model(world)
    b = build(world)
    first, run = await deliver(world, model, b)
    assert run is not None
    await world.fed.stop_node(OWNER)
    await world.fed.start_node(OWNER)
    await deliver(world, model, again(b), first=first)
    await deliver(world, model, again(b, status_on_receipt=False), first=first)
    await settle(world, model, {b.transfer.application_id: run})


async def test_an_id_refused_at_the_owners_checks_then_stored(world: World) -> None:
    """10.1 field 4: refused `unknown_version`, "the origin, after it syncs the catalogue, submits
    again"; sent again under the same id (steps 4-9 store nothing, so a re-sent copy is checked
    again) it is stored, and its run holds the changes numbered in storing it "in sequence order
    from 1" (10.6), although the REFUSED change of 10.3 took sequence 1 already (OWNER_RUN_GAPS.md gap 6)."""
    model = fresh_model(world)
    b = build(world, service_version=world.entry.version + 1)
    first, _ = await deliver(world, model, b)
    assert first.receipt.reason_code == "unknown_version"
    fixed = dataclasses.replace(b.transfer, service_version=world.entry.version)
    await deliver(world, model, dataclasses.replace(b, transfer=fixed))
    await settle(world, model, {})


async def test_a_bundle_goes_by_notify_status_even_when_asked(world: World) -> None:
    """10.6: "An owner MAY send the changes by NotifyStatus even when all three hold ... The
    reference sends them by NotifyStatus for a bundle's service (10.5)": ACCEPTED without a run;
    DELIVERED and IN_REVIEW come by NotifyStatus (then the parts' progress, 10.5). A direct copy
    that asks gets none either (rule 3: the first receipt carried none)."""
    model = fresh_model(world)
    b = build(world, service=BUNDLE)
    first, _ = await deliver(world, model, b)
    await deliver(world, model, again(b), first=first)
    await settle(world, model, {})
