"""Import/export job scenarios with Microsoft's azure-iot-hub 2.7.0 (IoTHubJobManager) against a
running ferrohub, using file:// blob containers on the hub's host.

Environment: as test_registry.py (set by conformance/run).
"""

import json
import os
import tempfile
import time
import uuid

import pytest

from azure.iot.hub import IoTHubJobManager, IoTHubRegistryManager
from azure.iot.hub.models import JobProperties

from test_registry import _require_env, _with_port


@pytest.fixture(scope="module")
def cs():
    return _with_port(_require_env("FERROHUB_CONNECTION_STRING"), _require_env("FERROHUB_HTTPS_PORT"))


def _wait(jobs, job_id, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = jobs.get_import_export_job(job_id)
        if job.status in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    pytest.fail("job %s did not finish in %s s" % (job_id, timeout))


def test_export_then_import_round_trip(cs):
    registry = IoTHubRegistryManager.from_connection_string(cs)
    jobs = IoTHubJobManager.from_connection_string(cs)
    prefix = "job-%s" % uuid.uuid4().hex[:8]
    for i in range(3):
        registry.create_device_with_sas("%s-%d" % (prefix, i), None, None, "enabled")

    out_dir = tempfile.mkdtemp(prefix="ferrohub-export-")
    job = jobs.create_import_export_job(
        JobProperties(type="export", output_blob_container_uri="file://" + out_dir, exclude_keys_in_export=False)
    )
    assert job.job_id
    assert job.status in ("enqueued", "running", "completed")
    done = _wait(jobs, job.job_id)
    assert done.status == "completed", done.failure_reason
    with open(os.path.join(out_dir, "devices.txt")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    mine = {r["id"]: r for r in records if r["id"].startswith(prefix)}
    assert sorted(mine) == ["%s-%d" % (prefix, i) for i in range(3)]
    assert mine["%s-0" % prefix]["authentication"]["symmetricKey"]["primaryKey"]

    # Import two new devices (one record missing importMode: createOrUpdate) and one bad record.
    in_dir = tempfile.mkdtemp(prefix="ferrohub-import-")
    with open(os.path.join(in_dir, "devices.txt"), "w") as f:
        f.write(json.dumps({"id": prefix + "-new-a", "importMode": "create", "status": "enabled"}) + "\n")
        f.write(json.dumps({"id": prefix + "-new-b", "status": "disabled"}) + "\n")
        f.write(json.dumps({"id": prefix + "-0", "importMode": "create", "status": "enabled"}) + "\n")
    job = jobs.create_import_export_job(
        JobProperties(
            type="import",
            input_blob_container_uri="file://" + in_dir,
            output_blob_container_uri="file://" + in_dir,
        )
    )
    done = _wait(jobs, job.job_id)
    assert done.status == "completed", done.failure_reason
    assert registry.get_device(prefix + "-new-a").status == "enabled"
    assert registry.get_device(prefix + "-new-b").status == "disabled"
    with open(os.path.join(in_dir, "importErrors.log")) as f:
        errors = [json.loads(line) for line in f if line.strip()]
    assert [(e["deviceId"], e["errorCode"]) for e in errors] == [(prefix + "-0", "DeviceAlreadyExists")]

    listed = jobs.get_import_export_jobs()
    assert job.job_id in [j.job_id for j in listed]
    # Cancelling a finished job leaves it as it is.
    jobs.cancel_import_export_job(job.job_id)
    assert jobs.get_import_export_job(job.job_id).status == "completed"
