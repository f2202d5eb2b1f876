//! The client against a real hub: status codes, ETags, percent-encoded ids, bulk results and
//! error codes as the hub reports them.

use ferrohub_auth::ConnectionString;
use ferrohub_client::api::{
    AuthenticationMechanism, AuthenticationType, Device, DeviceStatus, ExportImportDevice, Module,
    SymmetricKey,
};
use ferrohub_client::{ClientError, HubClient};
use ferrohub_test_support::TestHub;

fn device(id: &str) -> Device {
    Device {
        device_id: id.into(),
        status: Some(DeviceStatus::Enabled),
        authentication: Some(AuthenticationMechanism {
            symmetric_key: Some(SymmetricKey::default()),
            x509_thumbprint: None,
            kind: Some(AuthenticationType::Sas),
        }),
        ..Device::default()
    }
}

#[tokio::test]
async fn device_life_cycle_with_etags() {
    let hub = TestHub::start().await;
    let conn: ConnectionString = hub.owner_connection_string().parse().expect("owner");
    let client = HubClient::new(&conn, Some(&hub.ca_pem())).expect("client");

    let created = client.create_device(&device("d1")).await.expect("create");
    let etag = created.etag.clone().expect("etag");
    assert!(
        created
            .authentication
            .as_ref()
            .and_then(|a| a.symmetric_key.as_ref())
            .and_then(|k| k.primary_key.as_deref())
            .is_some_and(|k| !k.is_empty()),
        "the hub generated keys"
    );

    let err = client
        .create_device(&device("d1"))
        .await
        .expect_err("taken");
    assert_eq!(err.code(), Some("DeviceAlreadyExists"));
    assert_eq!(err.status(), Some(409));

    let mut changed = created.clone();
    changed.status = Some(DeviceStatus::Disabled);
    let updated = client
        .update_device(&changed, Some(&etag))
        .await
        .expect("update with the current etag");
    assert_eq!(updated.status, Some(DeviceStatus::Disabled));
    assert_ne!(updated.etag.as_deref(), Some(etag.as_str()));

    let err = client
        .update_device(&changed, Some(&etag))
        .await
        .expect_err("stale etag");
    assert_eq!(err.code(), Some("PreconditionFailed"));
    client
        .update_device(&changed, None)
        .await
        .expect("\"*\" matches any etag");

    let err = client
        .delete_device("d1", Some(&etag))
        .await
        .expect_err("stale etag");
    assert_eq!(err.code(), Some("PreconditionFailed"));
    client.delete_device("d1", None).await.expect("delete");
    let err = client.device("d1").await.expect_err("gone");
    assert_eq!(err.code(), Some("DeviceNotFound"));
    assert!(matches!(err, ClientError::Api { status: 404, .. }));
}

#[tokio::test]
async fn ids_with_reserved_characters_round_trip() {
    let hub = TestHub::start().await;
    let client = hub.client();
    for id in ["a%b", "q?x=1", "semi;colon", "p(a)r!e*n's", "at@d$:1"] {
        let created = client.create_device(&device(id)).await.expect(id);
        assert_eq!(created.device_id, id);
        assert_eq!(client.device(id).await.expect(id).device_id, id);
        let module = Module {
            device_id: id.into(),
            module_id: format!("{id}-m"),
            ..Module::default()
        };
        client.create_module(&module).await.expect(id);
        let modules = client.modules(id).await.expect(id);
        assert_eq!(modules.len(), 1);
        assert_eq!(modules[0].module_id, format!("{id}-m"));
    }
    let listed = client.devices(Some(2)).await.expect("list");
    assert_eq!(listed.len(), 2);
    let all = client.devices(None).await.expect("list");
    assert_eq!(all.len(), 5);
    assert!(matches!(
        client.device("").await,
        Err(ClientError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn modules() {
    let hub = TestHub::start().await;
    let client = hub.client();
    client.create_device(&device("d")).await.expect("device");
    let m = Module {
        device_id: "d".into(),
        module_id: "m".into(),
        ..Module::default()
    };
    let created = client.create_module(&m).await.expect("create");
    let etag = created.etag.clone().expect("etag");
    let err = client.create_module(&m).await.expect_err("taken");
    assert_eq!(err.code(), Some("ModuleAlreadyExistsOnDevice"));
    let mut changed = created.clone();
    changed.managed_by = Some("someone".into());
    client
        .update_module(&changed, Some(&etag))
        .await
        .expect("update");
    assert_eq!(client.module("d", "m").await.expect("read").module_id, "m");
    client.delete_module("d", "m", None).await.expect("delete");
    let err = client.module("d", "m").await.expect_err("gone");
    assert_eq!(err.code(), Some("ModuleNotFound"));
}

#[tokio::test]
async fn bulk_reports_per_record_outcomes() {
    let hub = TestHub::start().await;
    let client = hub.client();
    let rec = |id: &str, mode: &str| ExportImportDevice {
        id: id.into(),
        import_mode: Some(mode.into()),
        status: Some(DeviceStatus::Enabled),
        ..ExportImportDevice::default()
    };

    let ok = client
        .bulk(&[rec("b1", "create"), rec("b2", "create")])
        .await
        .expect("bulk");
    assert!(ok.is_successful, "{ok:?}");
    assert!(ok.errors.is_empty());

    let partial = client
        .bulk(&[rec("b1", "create"), rec("b3", "create")])
        .await
        .expect("a 400 with a bulk result is still a result");
    assert!(!partial.is_successful);
    assert_eq!(partial.errors.len(), 1);
    assert_eq!(partial.errors[0].device_id, "b1");
    assert_eq!(partial.errors[0].error_code, "DeviceAlreadyExists");

    let stats = client.registry_statistics().await.expect("stats");
    assert_eq!(stats.total_device_count, 3);
    assert_eq!(stats.enabled_device_count, 3);
    let service = client.service_statistics().await.expect("stats");
    assert_eq!(service.connected_device_count, 0);

    let too_many: Vec<ExportImportDevice> =
        (0..101).map(|i| rec(&format!("x{i}"), "create")).collect();
    let err = client.bulk(&too_many).await.expect_err("too many");
    assert_eq!(err.code(), Some("TooManyDevices"));
}

#[tokio::test]
async fn wrong_key_is_unauthorized() {
    let hub = TestHub::start().await;
    let wrong = ConnectionString::policy(
        format!("localhost:{}", hub.https_addr().port()),
        "iothubowner",
        ferrohub_auth::SymmetricKey::generate().to_base64(),
    );
    let client = HubClient::new(&wrong, Some(&hub.ca_pem())).expect("client");
    let err = client.registry_statistics().await.expect_err("refused");
    assert_eq!(err.status(), Some(401));
    assert!(
        err.code()
            .is_some_and(|c| c.starts_with("IotHubUnauthorized")),
        "{err:?}"
    );
}

#[tokio::test]
async fn untrusted_certificate_is_a_transport_error() {
    let hub = TestHub::start().await;
    let other = TestHub::start().await;
    let conn: ConnectionString = hub.owner_connection_string().parse().expect("owner");
    let client = HubClient::new(&conn, Some(&other.ca_pem())).expect("client");
    let err = client.registry_statistics().await.expect_err("untrusted");
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
}
