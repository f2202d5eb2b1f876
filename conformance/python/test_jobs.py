"""Import/export job scenarios with Microsoft's azure-iot-hub 2.7.0 (IoTHubJobManager) against a
running ferrohub: with file:// blob containers inside the hub's job file root
(<data dir>/job-files), and with an Azure Storage container SAS URI on Azurite, created with
azure-storage-blob exactly as Azure users create one.

Environment: as test_registry.py (set by conformance/run), plus AZURITE_BLOB_PORT: the blob
service of Azurite on 127.0.0.1 (started by conformance/run).
"""

import datetime
import json
import os
import tempfile
import time
import uuid

import pytest

from azure.iot.hub import IoTHubJobManager, IoTHubRegistryManager
from azure.iot.hub.models import JobProperties

from test_registry import _require_env, _with_port, not_in_cluster

# Import and export jobs live in the data dir of the node that accepted them (jobs.json): a status
# request that the balancer sends to another node answers 404 JobNotFound.
NODE_LOCAL_JOBS = not_in_cluster("import/export jobs are kept by the node that accepted them")


@pytest.fixture(scope="module")
def cs():
    return _with_port(_require_env("FERROHUB_CONNECTION_STRING"), _require_env("FERROHUB_HTTPS_PORT"))


def _job_dir(prefix):
    """A new container directory inside the hub's job file root."""
    root = os.path.join(_require_env("FERROHUB_DATA_DIR"), "job-files")
    return tempfile.mkdtemp(prefix=prefix, dir=root)


def _wait(jobs, job_id, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = jobs.get_import_export_job(job_id)
        if job.status in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    pytest.fail("job %s did not finish in %s s" % (job_id, timeout))


@NODE_LOCAL_JOBS
def test_export_then_import_round_trip(cs):
    registry = IoTHubRegistryManager.from_connection_string(cs)
    jobs = IoTHubJobManager.from_connection_string(cs)
    prefix = "job-%s" % uuid.uuid4().hex[:8]
    for i in range(3):
        registry.create_device_with_sas("%s-%d" % (prefix, i), None, None, "enabled")

    out_dir = _job_dir("export-")
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
    in_dir = _job_dir("import-")
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


# Azurite's well-known development account (the same for every Azurite install).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="module")
def azurite():
    """The Azurite blob service and a helper making a container and its SAS URI."""
    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

    port = _require_env("AZURITE_BLOB_PORT")
    endpoint = "http://127.0.0.1:%s/%s" % (port, AZURITE_ACCOUNT)
    service = BlobServiceClient(
        account_url=endpoint, credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
    )

    def container_with_sas(name):
        container = service.create_container(name)
        sas = generate_container_sas(
            AZURITE_ACCOUNT,
            name,
            account_key=AZURITE_KEY,
            permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True),
            expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
        )
        return container, "%s/%s?%s" % (endpoint, name, sas)

    return container_with_sas


@NODE_LOCAL_JOBS
def test_export_then_import_through_an_azure_storage_container(cs, azurite):
    registry = IoTHubRegistryManager.from_connection_string(cs)
    jobs = IoTHubJobManager.from_connection_string(cs)
    prefix = "blob-%s" % uuid.uuid4().hex[:8]
    for i in range(3):
        registry.create_device_with_sas("%s-%d" % (prefix, i), None, None, "enabled")

    exports, exports_sas = azurite("exports-%s" % prefix)
    job = jobs.create_import_export_job(
        JobProperties(type="export", output_blob_container_uri=exports_sas, exclude_keys_in_export=False)
    )
    done = _wait(jobs, job.job_id)
    assert done.status == "completed", done.failure_reason
    text = exports.get_blob_client("devices.txt").download_blob().readall().decode()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    mine = {r["id"]: r for r in records if r["id"].startswith(prefix)}
    assert sorted(mine) == ["%s-%d" % (prefix, i) for i in range(3)]
    assert mine["%s-0" % prefix]["authentication"]["symmetricKey"]["primaryKey"]

    # Import: two new devices and one that exists, from a blob uploaded with the storage SDK;
    # the errors blob lands in another container.
    imports, imports_sas = azurite("imports-%s" % prefix)
    lines = [
        {"id": prefix + "-new-a", "importMode": "create", "status": "enabled"},
        {"id": prefix + "-new-b", "status": "disabled"},
        {"id": prefix + "-0", "importMode": "create", "status": "enabled"},
    ]
    imports.upload_blob("devices.txt", "\n".join(json.dumps(line) for line in lines) + "\n")
    results, results_sas = azurite("results-%s" % prefix)
    job = jobs.create_import_export_job(
        JobProperties(type="import", input_blob_container_uri=imports_sas, output_blob_container_uri=results_sas)
    )
    done = _wait(jobs, job.job_id)
    assert done.status == "completed", done.failure_reason
    assert registry.get_device(prefix + "-new-a").status == "enabled"
    assert registry.get_device(prefix + "-new-b").status == "disabled"
    text = results.get_blob_client("importErrors.log").download_blob().readall().decode()
    errors = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert [(e["deviceId"], e["errorCode"]) for e in errors] == [(prefix + "-0", "DeviceAlreadyExists")]

    # A SAS URI that does not grant access fails the job, and the reason shows no signature.
    job = jobs.create_import_export_job(
        JobProperties(
            type="import",
            input_blob_container_uri=imports_sas.replace("sig=", "sig=AAAA"),
            output_blob_container_uri=results_sas,
        )
    )
    done = _wait(jobs, job.job_id)
    assert done.status == "failed"
    assert "sig=" not in (done.failure_reason or "")
