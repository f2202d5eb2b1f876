//! What the tokens a client put on `$cbs` (or gave in SASL PLAIN) let its links do.
//!
//! The hub keeps each token as sent, by the audience it was put for: a later put-token for the
//! same audience replaces it (Node renews every 45 minutes on the same connection). A link is
//! authorized when one of the connection's tokens authorizes it under the hub's ordinary rules
//! — a policy token with ServiceConnect whose scope covers the service node, or a token that
//! authenticates the device or module the link's address names — and it stays authorized while
//! that audience's token is valid: when it expires unrenewed, the link is detached with
//! `amqp:unauthorized-access` (amqp-contract §1.5).

use std::collections::HashMap;

use ferrohub_auth::{SasToken, Scope};
use ferrohub_types::{DeviceId, ErrorCode, ModuleId, Permission};

use crate::hub::{Hub, HubError};
use crate::telemetry::Origin;

/// The tokens of one connection, by audience.
#[derive(Debug, Default)]
pub(super) struct Tokens {
    by_audience: HashMap<String, StoredToken>,
}

#[derive(Debug)]
struct StoredToken {
    token: String,
    /// The token's expiry plus the skew Azure allows, in Unix seconds.
    valid_until: u64,
}

/// What authorized a link: the audience whose token did, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Authorization {
    pub(super) audience: String,
    pub(super) valid_until: u64,
}

/// The unit a link needs authority over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Need<'a> {
    /// A service node (`/messages/devicebound`, feedback, file notifications), by path.
    Service(&'a str),
    /// The Event Hubs endpoint: its entity as the client names it, and the rest of the path
    /// (`ConsumerGroups/{cg}/Partitions/{p}`), compared case-insensitively.
    EventHubs { entity: &'a str, rest: &'a str },
    /// A device's or module's own links.
    Identity(&'a DeviceId, Option<&'a ModuleId>),
}

fn valid_until(token: &str) -> u64 {
    SasToken::parse(token)
        .map(|t| {
            t.expiry()
                .saturating_add(ferrohub_auth::MAX_CLOCK_SKEW_SECS)
        })
        .unwrap_or(0)
}

impl Tokens {
    /// Checks `token` (put for `audience`) well enough to answer the put-token: it must be a
    /// SAS token signed by a policy or an identity of this hub and not expired. What it may do
    /// is decided per link. Returns the identity it authenticates, if it is an identity's.
    pub(super) fn put(
        &mut self,
        hub: &Hub,
        audience: &str,
        token: &str,
    ) -> Result<Option<Origin>, HubError> {
        let parsed = SasToken::parse(token).map_err(|e| {
            HubError::new(
                ErrorCode::IotHubUnauthorizedAccess,
                format!("malformed shared access signature: {e}"),
            )
        })?;
        let hosts: Vec<&str> = hub.host_names().iter().map(String::as_str).collect();
        let scope = parsed.scope(&hosts).map_err(|_| {
            HubError::new(
                ErrorCode::IotHubUnauthorizedAccess,
                "the token's scope is not this hub",
            )
        })?;
        let origin = match &scope {
            Scope::Device(d) => Some(hub.authenticate_device(token, d, None)?),
            Scope::Module(d, m) => Some(hub.authenticate_device(token, d, Some(m))?),
            other => {
                // A policy token: signature, expiry and that it is this hub's, for its own
                // scope; the permission is checked per link.
                hub.authorize_service_token(
                    token,
                    &other.path(),
                    &[
                        Permission::ServiceConnect,
                        Permission::RegistryRead,
                        Permission::RegistryWrite,
                        Permission::DeviceConnect,
                    ],
                )?;
                None
            }
        };
        self.by_audience.insert(
            audience.to_owned(),
            StoredToken {
                token: token.to_owned(),
                valid_until: valid_until(token),
            },
        );
        Ok(origin)
    }

    /// Whether the token put for `audience` is still valid at `now` (Unix seconds).
    pub(super) fn valid(&self, audience: &str, now: u64) -> bool {
        self.by_audience
            .get(audience)
            .is_some_and(|t| t.valid_until >= now)
    }

    /// When the soonest of `audiences`' tokens stops being valid.
    pub(super) fn next_expiry<'a>(&self, audiences: impl Iterator<Item = &'a str>) -> Option<u64> {
        audiences
            .filter_map(|a| self.by_audience.get(a).map(|t| t.valid_until))
            .min()
    }

    /// Finds a token that gives `need`; for identities, also who it authenticates.
    pub(super) fn authorize(
        &self,
        hub: &Hub,
        need: &Need<'_>,
    ) -> Result<(Authorization, Option<Origin>), HubError> {
        let mut last = None;
        for (audience, stored) in &self.by_audience {
            match check(hub, &stored.token, need) {
                Ok(origin) => {
                    return Ok((
                        Authorization {
                            audience: audience.clone(),
                            valid_until: stored.valid_until,
                        },
                        origin,
                    ));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            HubError::new(
                ErrorCode::IotHubUnauthorizedAccess,
                "no token authorizes this link: put one on $cbs first",
            )
        }))
    }
}

/// In a cluster, before a put-token is decided: an identity's token this node's cache refuses
/// is checked again after the identity is re-read from the shared store, so that the put-token
/// finds it (it may have been created or re-keyed through another node a moment ago).
pub(super) async fn refresh_identity_of(hub: &Hub, token: &str) {
    let Ok(parsed) = SasToken::parse(token) else {
        return;
    };
    let hosts: Vec<&str> = hub.host_names().iter().map(String::as_str).collect();
    let Ok(scope) = parsed.scope(&hosts) else {
        return;
    };
    let _ = match &scope {
        Scope::Device(d) => hub.authenticate_device_current(token, d, None).await,
        Scope::Module(d, m) => hub.authenticate_device_current(token, d, Some(m)).await,
        _ => return,
    };
}

/// Whether `token` gives `need`.
pub(super) fn check(hub: &Hub, token: &str, need: &Need<'_>) -> Result<Option<Origin>, HubError> {
    match need {
        Need::Service(path) => {
            hub.authorize_service_token(token, path, &[Permission::ServiceConnect])?;
            Ok(None)
        }
        Need::Identity(d, m) => Ok(Some(hub.authenticate_device(token, d, *m)?)),
        Need::EventHubs { entity, rest } => {
            let hosts: Vec<&str> = hub.host_names().iter().map(String::as_str).collect();
            let scope = SasToken::parse(token)
                .ok()
                .and_then(|t| t.scope(&hosts).ok())
                .ok_or_else(|| {
                    HubError::new(
                        ErrorCode::IotHubUnauthorizedAccess,
                        "the token's scope is not this hub",
                    )
                })?;
            hub.authorize_service_token(token, &scope.path(), &[Permission::ServiceConnect])?;
            let covered = match &scope {
                Scope::Hub => true,
                Scope::Other(path) => {
                    // The SDKs write `consumergroups` or `ConsumerGroups`, `$default` or
                    // `$Default`: compared segment by segment without regard to case.
                    let target = format!("{entity}/{rest}").to_ascii_lowercase();
                    let scope = path.to_ascii_lowercase();
                    let mut t = target.split('/');
                    scope.split('/').all(|s| t.next().is_some_and(|x| x == s))
                        || scope == "messages/events"
                }
                _ => false,
            };
            if covered {
                Ok(None)
            } else {
                Err(HubError::new(
                    ErrorCode::IotHubUnauthorizedAccess,
                    "the token's scope does not cover this Event Hubs entity",
                ))
            }
        }
    }
}
