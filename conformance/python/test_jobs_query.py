"""Per-device job records through the query language with Microsoft's azure-iot-hub 2.7.0:
IoTHubRegistryManager.query_iot_hub("SELECT * FROM devices.jobs …") after a scheduled job
(twins-methods-contract.md §5 and §6.3).

SDK facts these tests rely on (read in .venv/lib/python3.11/site-packages/azure/iot/hub):
  * query_iot_hub sends POST /devices/query and returns QueryResult(type=<x-ms-item-type>, items):
    every row becomes a Twin model; deviceId and status map to Twin.device_id and Twin.status,
    the other DeviceJob fields (jobId, jobType, createdDateTimeUtc, …) land in
    additional_properties.
  * IoTHubJobManager.create_scheduled_job / get_scheduled_job as in test_scheduled_jobs.py.
"""

import datetime
import uuid

import pytest

from azure.iot.hub import IoTHubJobManager
from azure.iot.hub.models import JobRequest, QuerySpecification, Twin, TwinProperties

from test_device import (  # noqa: F401 - fixtures are used by name
    WAIT,
    _with_port,
    ca_pem,
    devices,
    hub,
    redirect_ports,
    registry,
    wait_until,
)

pytestmark = pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLSv1_2 is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def jobs(hub):
    return IoTHubJobManager.from_connection_string(_with_port(hub.owner_cs, hub.port))


def test_devices_jobs_returns_each_selected_devices_record(jobs, registry, devices):
    selected = [devices.create(), devices.create()]
    other = devices.create()
    tag = "pyq-%s" % uuid.uuid4().hex[:8]
    for d in selected:
        registry.update_twin(d.device_id, Twin(tags={"batch": tag}), "*")

    job_id = "py-query-%s" % uuid.uuid4()
    jobs.create_scheduled_job(
        job_id,
        JobRequest(
            job_id=job_id,
            type="scheduleUpdateTwin",
            start_time=datetime.datetime.utcnow().isoformat(),
            update_twin=Twin(etag="*", properties=TwinProperties(desired={"level": 3})),
            query_condition="tags.batch = '%s'" % tag,
        ),
    )
    assert wait_until(lambda: jobs.get_scheduled_job(job_id).status == "completed", timeout=WAIT)

    query = "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '%s'" % job_id
    result = registry.query_iot_hub(QuerySpecification(query=query))
    assert result.type == "deviceJob"
    rows = sorted(result.items, key=lambda t: t.device_id)
    assert [t.device_id for t in rows] == sorted(d.device_id for d in selected)
    assert other.device_id not in [t.device_id for t in rows]
    for row in rows:
        assert row.status == "completed"
        extra = row.additional_properties
        assert extra["jobId"] == job_id
        assert extra["jobType"] == "scheduleTwinUpdate"
        for field in ("createdDateTimeUtc", "lastUpdatedDateTimeUtc", "startTimeUtc", "endTimeUtc"):
            assert field in extra, field

    completed = registry.query_iot_hub(
        QuerySpecification(
            query="SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '%s' AND devices.jobs.status = 'failed'"
            % job_id
        )
    )
    assert completed.items == []

    everything = registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices.jobs"))
    assert everything.type == "deviceJob"
    assert {t.device_id for t in everything.items} >= {d.device_id for d in selected}
