//! Creating the bench devices in a Ferrohub through the bulk registry API, with keys the
//! generator chose, so it can sign every device's token itself.

use std::time::{Duration, Instant};

use anyhow::Context;
use ferrohub_api::{
    AuthenticationMechanism, AuthenticationType, BulkRegistryOperationResult, DeviceStatus,
    ExportImportDevice, SymmetricKey as ApiKey,
};
use ferrohub_auth::SymmetricKey;

use crate::identity;
use crate::target::Ferrohub;

/// Most records one bulk request may carry.
pub const BULK_LIMIT: usize = 100;

/// How many bulk requests are in flight at once.
const PARALLEL_REQUESTS: usize = 4;

/// The bulk records that create (or update) devices `ids` with `primary` and `secondary` keys.
pub fn bulk_records(
    ids: &[String],
    primary: &SymmetricKey,
    secondary: &SymmetricKey,
) -> Vec<ExportImportDevice> {
    ids.iter()
        .map(|id| ExportImportDevice {
            id: id.clone(),
            import_mode: Some("createOrUpdate".into()),
            status: Some(DeviceStatus::Enabled),
            authentication: Some(AuthenticationMechanism {
                symmetric_key: Some(ApiKey {
                    primary_key: Some(primary.to_base64()),
                    secondary_key: Some(secondary.to_base64()),
                }),
                x509_thumbprint: None,
                kind: Some(AuthenticationType::Sas),
            }),
            ..ExportImportDevice::default()
        })
        .collect()
}

/// Creates or updates devices `{prefix}0 … {prefix}{count-1}`, all with `key` as primary key.
/// Returns how long it took.
pub async fn provision(
    hub: &Ferrohub,
    prefix: &str,
    count: usize,
    key: &SymmetricKey,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let http = hub.http_client()?;
    let token = hub.service_token()?;
    let url = format!(
        "{}/devices?api-version={}",
        hub.base_url(),
        identity::API_VERSION
    );
    let secondary = SymmetricKey::try_generate().context("generating a key")?;
    let ids: Vec<String> = (0..count).map(|i| identity::device_id(prefix, i)).collect();
    let chunks: Vec<&[String]> = ids.chunks(BULK_LIMIT).collect();
    let mut last_report = Instant::now();
    for group in chunks.chunks(PARALLEL_REQUESTS) {
        let requests = group.iter().map(|chunk| {
            let body = bulk_records(chunk, key, &secondary);
            let request = http.post(&url).header("Authorization", &token).json(&body);
            async move {
                let response = request.send().await.context("bulk registry request")?;
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                if !status.is_success() {
                    anyhow::bail!("bulk registry request failed: {status}: {text}");
                }
                let result: BulkRegistryOperationResult =
                    serde_json::from_str(&text).context("parsing the bulk result")?;
                if !result.is_successful {
                    anyhow::bail!(
                        "bulk registry request reported errors: {:?}",
                        result.errors.iter().take(3).collect::<Vec<_>>()
                    );
                }
                Ok(())
            }
        });
        for outcome in futures_util::future::join_all(requests).await {
            outcome?;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let done = group
                .last()
                .and_then(|c| c.last())
                .and_then(|id| id.strip_prefix(prefix))
                .and_then(|n| n.parse::<usize>().ok())
                .map_or(0, |n| n + 1);
            eprintln!("provisioning: {done}/{count} devices");
        }
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_our_keys_and_create_or_update() {
        let k1 = SymmetricKey::from_bytes(vec![1u8; 32]);
        let k2 = SymmetricKey::from_bytes(vec![2u8; 32]);
        let ids = vec!["bench-0".to_owned(), "bench-1".to_owned()];
        let records = bulk_records(&ids, &k1, &k2);
        assert_eq!(records.len(), 2);
        let v = serde_json::to_value(&records[1]).expect("serializes");
        assert_eq!(v["id"], "bench-1");
        assert_eq!(v["importMode"], "createOrUpdate");
        assert_eq!(v["status"], "enabled");
        assert_eq!(
            v["authentication"]["symmetricKey"]["primaryKey"],
            k1.to_base64()
        );
        assert_eq!(
            v["authentication"]["symmetricKey"]["secondaryKey"],
            k2.to_base64()
        );
        assert_eq!(v["authentication"]["type"], "sas");
    }
}
