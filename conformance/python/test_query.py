"""Query scenarios run with Microsoft's azure-iot-hub 2.7.0 (IoTHubRegistryManager.query_iot_hub)
against a running ferrohub (twins-methods-contract.md §5).

SDK facts these tests rely on (read in .venv/lib/python3.11/site-packages/azure/iot/hub):
  * query_iot_hub(QuerySpecification(query=q), continuation_token, max_item_count) sends
    POST /devices/query with {"query": q}, x-ms-continuation and x-ms-max-item-count when given,
    and accepts 200 only.
  * It returns QueryResult(type=<x-ms-item-type>, continuation_token=<x-ms-continuation, None when
    absent>, items=[Twin…]): every row becomes a Twin model, unknown keys landing in
    additional_properties.
  * The caller pages by passing continuation_token back until it is None.

Other suites use the same hub, so every query here is scoped to this run's own tag.
"""

import uuid

import pytest
from msrest.exceptions import HttpOperationError

from azure.iot.hub.models import QuerySpecification, Twin

from test_device import (  # noqa: F401 - fixtures are used by name
    ca_pem,
    devices,
    hub,
    redirect_ports,
    registry,
)

pytestmark = pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLSv1_2 is deprecated:DeprecationWarning")


def _fleet(registry, devices, n):
    """n devices tagged with a fresh run id, region EU (odd) or US (even) and their index."""
    run = "run-%s" % uuid.uuid4()
    ids = []
    for i in range(n):
        device = devices.create()
        registry.update_twin(
            device.device_id,
            Twin(tags={"run": run, "i": i, "region": "EU" if i % 2 else "US"}),
            "*",
        )
        ids.append(device.device_id)
    return run, ids


def _all_pages(registry, query, page_size):
    """Every page of the query: the page sizes, the items, the item type of the first page."""
    sizes, items, kind = [], [], None
    token = None
    while True:
        result = registry.query_iot_hub(QuerySpecification(query=query), token, str(page_size))
        kind = kind or result.type
        sizes.append(len(result.items))
        items.extend(result.items)
        token = result.continuation_token
        if token is None:
            return sizes, items, kind
        assert token != "", "the last page carries no token rather than an empty one"
        assert len(sizes) < 50, "paging ends"


def test_query_pages_across_several_pages(registry, devices):
    run, ids = _fleet(registry, devices, 7)
    query = "SELECT * FROM devices WHERE tags.run = '%s'" % run

    sizes, items, kind = _all_pages(registry, query, 3)
    assert sizes == [3, 3, 1]
    assert kind == "twin"
    assert [t.device_id for t in items] == sorted(ids)
    assert all(isinstance(t, Twin) for t in items)
    by_id = {t.device_id: t for t in items}
    assert by_id[ids[4]].tags == {"run": run, "i": 4, "region": "US"}
    assert by_id[ids[4]].status == "enabled"
    assert by_id[ids[4]].connection_state == "Disconnected"

    # A page that ends exactly on the last row has no continuation.
    sizes, items, _ = _all_pages(registry, query + " AND tags.region = 'EU'", 3)
    assert sizes == [3]
    assert sorted(t.device_id for t in items) == sorted(ids[1::2])

    # Without max_item_count: one page (the default size holds them all).
    result = registry.query_iot_hub(QuerySpecification(query=query))
    assert len(result.items) == 7
    assert result.continuation_token is None


def test_query_projections_and_aggregates(registry, devices):
    run, ids = _fleet(registry, devices, 5)

    result = registry.query_iot_hub(
        QuerySpecification(query="SELECT COUNT() AS total FROM devices WHERE tags.run = '%s'" % run)
    )
    assert result.type == "raw"
    assert len(result.items) == 1
    assert result.items[0].additional_properties == {"total": 5}

    sizes, items, kind = _all_pages(
        registry,
        "SELECT COUNT() AS n, tags.region AS region FROM devices WHERE tags.run = '%s' GROUP BY tags.region"
        % run,
        1,
    )
    assert kind == "raw"
    assert sizes == [1, 1]
    groups = sorted((t.additional_properties["region"], t.additional_properties["n"]) for t in items)
    assert groups == [("EU", 2), ("US", 3)]

    sizes, items, _ = _all_pages(
        registry,
        "SELECT deviceId, tags.i FROM devices WHERE tags.run = '%s' AND tags.i IN [0, 4]" % run,
        1,
    )
    assert sizes == [1, 1]
    assert sorted(t.device_id for t in items) == sorted([ids[0], ids[4]])


def test_query_refuses_what_is_not_supported(registry):
    with pytest.raises(HttpOperationError) as excinfo:
        registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices ORDER BY deviceId"))
    response = excinfo.value.response
    assert response.status_code == 400
    assert response.headers["iothub-errorcode"] == "ArgumentInvalid"
    assert "ORDER BY" in response.text
