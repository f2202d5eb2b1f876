//! Mapping between the wire types of `ferrohub-api` and the registry's domain types, at the
//! edge of the REST API.

use ferrohub_api as api;
use ferrohub_registry as reg;
use ferrohub_types::{DeviceId, ModuleId};

use super::error::ApiError;

/// Overlays the identity's presence (this node's, or the cluster's) on its stored fields.
pub(crate) fn with_presence(
    presence: Option<crate::connections::Presence>,
    state: &mut Option<api::ConnectionState>,
    state_updated: &mut api::Timestamp,
    last_activity: &mut api::Timestamp,
) {
    if let Some(p) = presence {
        *state = Some(if p.connected {
            api::ConnectionState::Connected
        } else {
            api::ConnectionState::Disconnected
        });
        if let Some(t) = p.state_updated {
            *state_updated = api::Timestamp(Some(t));
        }
        *last_activity = api::Timestamp(Some(p.last_activity));
    }
}

pub(crate) fn device_to_api(d: &reg::Device) -> api::Device {
    api::Device {
        device_id: d.device_id.to_string(),
        generation_id: Some(d.generation_id.clone()),
        etag: Some(d.etag.to_string()),
        connection_state: Some(connection_state(d.connection_state)),
        status: Some(match d.status {
            reg::DeviceStatus::Enabled => api::DeviceStatus::Enabled,
            reg::DeviceStatus::Disabled => api::DeviceStatus::Disabled,
        }),
        status_reason: d.status_reason.clone(),
        connection_state_updated_time: d.connection_state_updated_time.into(),
        status_updated_time: d.status_updated_time.into(),
        last_activity_time: d.last_activity_time.into(),
        cloud_to_device_message_count: d.cloud_to_device_message_count,
        authentication: Some(auth_to_api(&d.authentication)),
        capabilities: Some(api::DeviceCapabilities {
            iot_edge: d.iot_edge,
        }),
        device_scope: d.device_scope.clone(),
        parent_scopes: Some(d.parent_scopes.clone()),
    }
}

pub(crate) fn module_to_api(m: &reg::Module) -> api::Module {
    api::Module {
        module_id: m.module_id.to_string(),
        device_id: m.device_id.to_string(),
        generation_id: Some(m.generation_id.clone()),
        etag: Some(m.etag.to_string()),
        connection_state: Some(connection_state(m.connection_state)),
        connection_state_updated_time: m.connection_state_updated_time.into(),
        last_activity_time: m.last_activity_time.into(),
        cloud_to_device_message_count: m.cloud_to_device_message_count,
        authentication: Some(auth_to_api(&m.authentication)),
        managed_by: m.managed_by.clone(),
    }
}

fn connection_state(s: reg::ConnectionState) -> api::ConnectionState {
    match s {
        reg::ConnectionState::Connected => api::ConnectionState::Connected,
        reg::ConnectionState::Disconnected => api::ConnectionState::Disconnected,
    }
}

fn auth_to_api(a: &reg::Authentication) -> api::AuthenticationMechanism {
    api::AuthenticationMechanism {
        symmetric_key: Some(match &a.symmetric_key {
            Some(k) => api::SymmetricKey {
                primary_key: Some(k.primary_key.clone()),
                secondary_key: Some(k.secondary_key.clone()),
            },
            None => api::SymmetricKey::default(),
        }),
        x509_thumbprint: Some(api::X509Thumbprint {
            primary_thumbprint: a.x509_thumbprint.primary_thumbprint.clone(),
            secondary_thumbprint: a.x509_thumbprint.secondary_thumbprint.clone(),
        }),
        kind: Some(match a.kind {
            reg::AuthType::Sas => api::AuthenticationType::Sas,
            reg::AuthType::SelfSigned => api::AuthenticationType::SelfSigned,
            reg::AuthType::CertificateAuthority => api::AuthenticationType::CertificateAuthority,
            reg::AuthType::None => api::AuthenticationType::None,
        }),
    }
}

/// The registry form of a request's credentials; `None` when the request has none.
pub(crate) fn auth_from_api(
    a: Option<&api::AuthenticationMechanism>,
) -> Option<reg::Authentication> {
    let a = a?;
    let kind = match a.kind.unwrap_or(api::AuthenticationType::Sas) {
        api::AuthenticationType::Sas => reg::AuthType::Sas,
        api::AuthenticationType::SelfSigned => reg::AuthType::SelfSigned,
        api::AuthenticationType::CertificateAuthority => reg::AuthType::CertificateAuthority,
        api::AuthenticationType::None => reg::AuthType::None,
    };
    let symmetric_key = a.symmetric_key.as_ref().map(|k| reg::SymmetricKeys {
        primary_key: k.primary_key.clone().unwrap_or_default(),
        secondary_key: k.secondary_key.clone().unwrap_or_default(),
    });
    let x509_thumbprint = a
        .x509_thumbprint
        .as_ref()
        .map(|t| reg::X509Thumbprints {
            primary_thumbprint: t.primary_thumbprint.clone().filter(|s| !s.is_empty()),
            secondary_thumbprint: t.secondary_thumbprint.clone().filter(|s| !s.is_empty()),
        })
        .unwrap_or(reg::X509Thumbprints {
            primary_thumbprint: None,
            secondary_thumbprint: None,
        });
    Some(reg::Authentication {
        kind,
        symmetric_key,
        x509_thumbprint,
    })
}

fn status_from_api(s: Option<api::DeviceStatus>) -> Option<reg::DeviceStatus> {
    s.map(|s| match s {
        api::DeviceStatus::Enabled => reg::DeviceStatus::Enabled,
        api::DeviceStatus::Disabled => reg::DeviceStatus::Disabled,
    })
}

/// A PUT body for device `id`. The body's `deviceId` may be empty; otherwise it must be `id`.
pub(crate) fn device_spec(id: DeviceId, body: &api::Device) -> Result<reg::DeviceSpec, ApiError> {
    if !body.device_id.is_empty() && body.device_id != id.as_str() {
        return Err(ApiError::invalid(format!(
            "The deviceId in the body ('{}') does not match the one in the path ('{id}').",
            body.device_id
        )));
    }
    Ok(reg::DeviceSpec {
        device_id: id,
        status: status_from_api(body.status),
        status_reason: body.status_reason.clone(),
        authentication: auth_from_api(body.authentication.as_ref()),
        iot_edge: body.capabilities.as_ref().is_some_and(|c| c.iot_edge),
        device_scope: body.device_scope.clone(),
        parent_scopes: body.parent_scopes.clone().unwrap_or_default(),
    })
}

/// A PUT body for module `mid` of device `id`.
pub(crate) fn module_spec(
    id: DeviceId,
    mid: ModuleId,
    body: &api::Module,
) -> Result<reg::ModuleSpec, ApiError> {
    if !body.device_id.is_empty() && body.device_id != id.as_str() {
        return Err(ApiError::invalid(format!(
            "The deviceId in the body ('{}') does not match the one in the path ('{id}').",
            body.device_id
        )));
    }
    if !body.module_id.is_empty() && body.module_id != mid.as_str() {
        return Err(ApiError::invalid(format!(
            "The moduleId in the body ('{}') does not match the one in the path ('{mid}').",
            body.module_id
        )));
    }
    Ok(reg::ModuleSpec {
        device_id: id,
        module_id: mid,
        managed_by: body.managed_by.clone(),
        authentication: auth_from_api(body.authentication.as_ref()),
    })
}

pub(crate) fn statistics_to_api(s: &reg::RegistryStatistics) -> api::RegistryStatistics {
    api::RegistryStatistics {
        total_device_count: s.total_device_count,
        enabled_device_count: s.enabled_device_count,
        disabled_device_count: s.disabled_device_count,
    }
}
