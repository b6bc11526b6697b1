"""Conformance: the official openshell 0.1.5 SDK clients against our gateway (mTLS, active gateway).

Only the SDK's public clients are used. `openshell._proto.*_pb2` is imported for enum constants
only, because the SDK itself returns those message types (health(), SandboxTemplateClient).

Our gateway has no compute driver yet: sandboxes stay in PROVISIONING, so nothing here waits for
READY or runs exec.
"""

from __future__ import annotations

import time

import grpc
import pytest

import openshell
from openshell import DeletionOutcome, GatewayError
from openshell._proto import openshell_pb2 as pb

WAIT_S = 30.0  # bound on every poll loop below

# Phases a freshly created sandbox may report (PROVISIONING while there is no compute driver).
LIVE_PHASES = {pb.SANDBOX_PHASE_PROVISIONING, pb.SANDBOX_PHASE_STARTING, pb.SANDBOX_PHASE_READY}


# --------------------------------------------------------------------------- helpers


def expect_error(code: grpc.StatusCode, fn, *args, **kwargs) -> GatewayError:
    """Call fn; it must raise openshell.GatewayError carrying `code`."""
    try:
        result = fn(*args, **kwargs)
    except GatewayError as err:
        assert err.code() == code, (
            f"expected {code.name}, got {err.code()} details={err.details()!r}"
        )
        assert isinstance(err, grpc.RpcError)
        return err
    pytest.fail(f"expected GatewayError {code.name}, call succeeded with {result!r}")


def eventually(check, what: str, timeout: float = WAIT_S):
    """Poll check() until it returns a truthy value; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for: {what} (last={last!r})")


def assert_fresh_sandbox(sb: openshell.SandboxRef, *, workspace: str, name: str | None = None):
    assert sb.id, f"sandbox.metadata.id must be non-empty: {sb!r}"
    assert sb.name, f"sandbox.metadata.name must be non-empty: {sb!r}"
    if name is not None:
        assert sb.name == name, f"name mismatch: {sb.name!r} != {name!r}"
    assert sb.workspace == workspace, (
        f"metadata.workspace must be {workspace!r} (the SDK reuses it for later calls): {sb!r}"
    )
    assert sb.status.phase in LIVE_PHASES, f"unexpected phase {sb.status.phase}: {sb!r}"


def sandbox_gone(client, name: str, workspace: str) -> bool:
    try:
        client.get(name, workspace=workspace)
        return False
    except GatewayError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND, f"get after delete: {err.code()}"
        return True


def delete_sandbox_and_confirm(client, sb: openshell.SandboxRef) -> None:
    result = client.delete(sb.name, workspace=sb.workspace)
    assert result.outcome in (DeletionOutcome.COMPLETED, DeletionOutcome.ACCEPTED), (
        f"DeleteSandbox outcome must be COMPLETED or ACCEPTED, got {result.outcome!r}"
    )
    assert result.sandbox_id in (None, sb.id), f"sandbox_id {result.sandbox_id!r} != {sb.id!r}"
    if result.outcome == DeletionOutcome.ACCEPTED:
        client.wait_deleted(sb.name, workspace=sb.workspace, timeout_seconds=WAIT_S,
                            expected_sandbox_id=result.sandbox_id)
    eventually(lambda: sandbox_gone(client, sb.name, sb.workspace), f"sandbox {sb.name} gone")


# --------------------------------------------------------------------------- health


def test_health_reports_healthy_and_version(client):
    resp = client.health()
    assert resp.status == pb.SERVICE_STATUS_HEALTHY, f"status={resp.status} ({resp})"
    assert resp.version.strip(), f"version must be non-empty: {resp!r}"


# --------------------------------------------------------------------------- sandboxes


def test_create_with_gateway_chosen_name(client, created_sandboxes):
    sb = client.create(workspace="default")
    created_sandboxes.append((sb.name, sb.workspace))
    assert_fresh_sandbox(sb, workspace="default")
    got = client.get(sb.name, workspace="default")
    assert got.id == sb.id, f"GetSandbox by the returned name must find the same sandbox: {got!r}"


def test_create_explicit_name_get_list_delete(client, created_sandboxes, uid):
    name = f"conf-{uid}"
    labels = {"conf-test": uid, "team": "runtime"}
    sb = client.create(workspace="default", name=name, labels=labels)
    created_sandboxes.append((name, "default"))
    assert_fresh_sandbox(sb, workspace="default", name=name)
    assert dict(sb.labels) == labels, f"labels not echoed: {dict(sb.labels)!r}"

    got = client.get(name, workspace="default")
    assert (got.id, got.name, got.workspace) == (sb.id, name, "default"), repr(got)
    assert dict(got.labels) == labels, f"labels after get: {dict(got.labels)!r}"
    assert got.status.phase in LIVE_PHASES, f"phase {got.status.phase}"

    listed = client.list_all(workspace="default", label_selector=f"conf-test={uid}")
    assert [s.id for s in listed] == [sb.id], f"label-selected list: {listed!r}"
    assert sb.id in client.list_ids(workspace="default"), "unfiltered list_ids misses the sandbox"

    delete_sandbox_and_confirm(client, sb)
    again = client.delete(name, workspace="default", allow_missing=True)
    assert again.outcome == DeletionOutcome.ALREADY_ABSENT, f"second delete: {again!r}"
    assert sb.id not in client.list_ids(workspace="default"), "deleted sandbox still listed"


def test_list_pagination_and_label_selector(client, created_sandboxes, uid):
    total, page_size = 7, 3
    ids = set()
    for i in range(total):
        sb = client.create(workspace="default", name=f"conf-page-{uid}-{i}",
                           labels={"conf-page": uid})
        created_sandboxes.append((sb.name, "default"))
        ids.add(sb.id)
    decoy = client.create(workspace="default", name=f"conf-decoy-{uid}",
                          labels={"conf-page": f"other-{uid}"})
    created_sandboxes.append((decoy.name, "default"))

    selector = f"conf-page={uid}"
    first = next(iter(client.list(workspace="default", page_size=page_size,
                                  label_selector=selector)))
    assert 0 < len(first.items) <= page_size, f"first page has {len(first.items)} items"
    assert first.next_page_token, "first page of 7 with page_size 3 must carry next_page_token"

    for size in (1, page_size, 100):
        listed = client.list_all(workspace="default", page_size=size, label_selector=selector)
        got = [s.id for s in listed]
        assert len(got) == len(set(got)), f"page_size={size}: duplicates in {got}"
        assert set(got) == ids, f"page_size={size}: expected {sorted(ids)}, got {sorted(got)}"
        assert all(dict(s.labels).get("conf-page") == uid for s in listed)

    everything = client.list_ids(workspace="default", page_size=2)
    assert len(everything) == len(set(everything)), "unfiltered paging returned duplicates"
    assert ids | {decoy.id} <= set(everything), "unfiltered paging misses sandboxes"


def test_get_missing_is_not_found(client, uid):
    expect_error(grpc.StatusCode.NOT_FOUND, client.get, f"conf-missing-{uid}", workspace="default")


def test_delete_missing(client, uid):
    name = f"conf-missing-{uid}"
    expect_error(grpc.StatusCode.NOT_FOUND, client.delete, name, workspace="default")
    result = client.delete(name, workspace="default", allow_missing=True)
    assert result.outcome == DeletionOutcome.ALREADY_ABSENT, f"allow_missing delete: {result!r}"


def test_create_invalid_name_is_invalid_argument(client):
    err = expect_error(grpc.StatusCode.INVALID_ARGUMENT, client.create,
                       workspace="default", name="Bad_Name!")
    assert err.field_violations, (
        "INVALID_ARGUMENT must carry google.rpc.BadRequest field_violations in "
        "grpc-status-details-bin (Status.code/message must equal the transport status); "
        f"details={err.details()!r} raw_status={err.raw_status!r}"
    )
    fields = [v.field for v in err.field_violations]
    assert any("name" in f for f in fields), f"no violation names the 'name' field: {fields}"
    assert all(v.description for v in err.field_violations), "violation without description"


def test_create_duplicate_name_is_already_exists(client, created_sandboxes, uid):
    name = f"conf-dup-{uid}"
    first = client.create(workspace="default", name=name)
    created_sandboxes.append((name, "default"))
    expect_error(grpc.StatusCode.ALREADY_EXISTS, client.create, workspace="default", name=name)
    assert client.get(name, workspace="default").id == first.id, "duplicate create changed the sandbox"


# --------------------------------------------------------------------------- workspaces


def test_default_workspace_exists_and_is_active(workspaces):
    ws = workspaces.get("default")
    assert ws.name == "default", repr(ws)
    assert ws.phase == "WORKSPACE_PHASE_ACTIVE", repr(ws)
    assert "default" in [w.name for w in workspaces.list_all()], "default workspace not listed"


def test_workspace_create_get_list_delete(workspaces, created_workspaces, uid):
    name = f"conf-ws-{uid}"
    labels = {"conf-ws": uid}
    ws = workspaces.create(name, labels=labels)
    created_workspaces.append(name)
    assert (ws.name, ws.phase, ws.labels) == (name, "WORKSPACE_PHASE_ACTIVE", labels), repr(ws)

    got = workspaces.get(name)
    assert (got.name, got.phase, got.labels) == (name, "WORKSPACE_PHASE_ACTIVE", labels), repr(got)

    all_names = [w.name for w in workspaces.list_all(page_size=1)]
    assert len(all_names) == len(set(all_names)), f"duplicates while paging: {all_names}"
    assert {"default", name} <= set(all_names), f"list_all: {all_names}"
    selected = [w.name for w in workspaces.list_all(label_selector=f"conf-ws={uid}")]
    assert selected == [name], f"label-selected workspaces: {selected}"

    expect_error(grpc.StatusCode.ALREADY_EXISTS, workspaces.create, name)

    result = workspaces.delete(name)
    assert result.outcome in (DeletionOutcome.COMPLETED, DeletionOutcome.ACCEPTED), repr(result)

    def gone():
        try:
            workspaces.get(name)
            return False
        except GatewayError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND, f"get after delete: {err.code()}"
            return True

    eventually(gone, f"workspace {name} gone")
    again = workspaces.delete(name, allow_missing=True)
    assert again.outcome == DeletionOutcome.ALREADY_ABSENT, repr(again)


def test_workspace_get_missing_is_not_found(workspaces, uid):
    expect_error(grpc.StatusCode.NOT_FOUND, workspaces.get, f"conf-ws-missing-{uid}")


def test_sandboxes_are_isolated_by_workspace(client, workspaces, created_workspaces,
                                             created_sandboxes, uid):
    ws_name = f"conf-iso-{uid}"
    workspaces.create(ws_name)
    created_workspaces.append(ws_name)
    label = {"conf-iso": uid}

    in_default = client.create(workspace="default", name=f"conf-iso-a-{uid}", labels=label)
    created_sandboxes.append((in_default.name, "default"))
    in_other = client.create(workspace=ws_name, name=f"conf-iso-b-{uid}", labels=label)
    created_sandboxes.append((in_other.name, ws_name))
    assert_fresh_sandbox(in_other, workspace=ws_name)
    # Names are unique per workspace, not globally.
    twin = client.create(workspace=ws_name, name=in_default.name, labels=label)
    created_sandboxes.append((twin.name, ws_name))
    assert twin.id != in_default.id, "same name in another workspace must be a new sandbox"

    selector = f"conf-iso={uid}"
    default_ids = {s.id for s in client.list_all(workspace="default", label_selector=selector)}
    other_ids = {s.id for s in client.list_all(workspace=ws_name, label_selector=selector)}
    assert default_ids == {in_default.id}, f"default sees {default_ids}"
    assert other_ids == {in_other.id, twin.id}, f"{ws_name} sees {other_ids}"

    expect_error(grpc.StatusCode.NOT_FOUND, client.get, in_other.name, workspace="default")
    assert client.get(in_default.name, workspace=ws_name).id == twin.id

    everywhere = client.list_all_for_all_workspaces(page_size=1, label_selector=selector)
    by_id = {s.id: s.workspace for s in everywhere}
    assert len(by_id) == len(everywhere), "duplicates in list_all_for_all_workspaces"
    assert by_id == {in_default.id: "default", in_other.id: ws_name, twin.id: ws_name}, by_id
    assert {in_default.id, in_other.id, twin.id} <= set(
        client.list_ids_for_all_workspaces(label_selector=selector))


# --------------------------------------------------------------------------- sandbox templates


def test_sandbox_template_create_get_list_delete(templates, uid):
    name = f"conf-tpl-{uid}"
    image = "docker.io/library/python:3.12-slim"
    try:
        tpl = templates.create(workspace="default", name=name, image=image,
                               labels={"conf-tpl": uid}, environment={"A": "1"})
        assert tpl.metadata.name == name, f"{tpl}"
        assert tpl.metadata.workspace == "default", f"metadata.workspace: {tpl.metadata}"
        assert dict(tpl.metadata.labels) == {"conf-tpl": uid}, f"{tpl.metadata}"
        assert tpl.spec.workload.image == image, f"{tpl.spec}"
        assert dict(tpl.spec.workload.environment) == {"A": "1"}, f"{tpl.spec}"

        got = templates.get(name, workspace="default")
        assert (got.metadata.name, got.spec.workload.image) == (name, image), f"{got}"

        expect_error(grpc.StatusCode.ALREADY_EXISTS, templates.create,
                     workspace="default", name=name)

        listed = [t.metadata.name for t in
                  templates.list_all(workspace="default", label_selector=f"conf-tpl={uid}")]
        assert listed == [name], f"label-selected templates: {listed}"
        everywhere = [t.metadata.name for t in templates.list_all_for_all_workspaces(page_size=1)]
        assert name in everywhere, f"list_all_for_all_workspaces: {everywhere}"

        result = templates.delete(name, workspace="default")
        assert result.outcome in (DeletionOutcome.COMPLETED, DeletionOutcome.ACCEPTED), repr(result)
        expect_error(grpc.StatusCode.NOT_FOUND, templates.get, name, workspace="default")
        again = templates.delete(name, workspace="default", allow_missing=True)
        assert again.outcome == DeletionOutcome.ALREADY_ABSENT, repr(again)
    finally:
        try:
            templates.delete(name, workspace="default", allow_missing=True)
        except GatewayError:
            pass


def test_sandbox_template_get_missing_is_not_found(templates, uid):
    expect_error(grpc.StatusCode.NOT_FOUND, templates.get, f"conf-tpl-missing-{uid}",
                 workspace="default")


def test_create_sandbox_from_template_records_provenance(client, templates, uid):
    tpl_name, sb_name = f"conf-tplsrc-{uid}", f"conf-fromtpl-{uid}"
    # The local driver runs sandboxes from the host root filesystem: a template without an OCI image.
    templates.create(workspace="default", name=tpl_name)
    try:
        sb = client.create_from_template(workspace="default", workload_template=tpl_name,
                                         name=sb_name)
        assert_fresh_sandbox(sb, workspace="default", name=sb_name)
        prov = client.get(sb_name, workspace="default").created_from_workload_template
        assert prov is not None and prov.name == tpl_name, f"provenance: {prov!r}"
    finally:
        for cleanup in (lambda: client.delete(sb_name, workspace="default", allow_missing=True),
                        lambda: templates.delete(tpl_name, workspace="default",
                                                 allow_missing=True)):
            try:
                cleanup()
            except GatewayError:
                pass
