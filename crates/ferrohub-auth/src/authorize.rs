//! The authorization decisions every endpoint makes from a SAS token.
//!
//! [`authorize_service`] answers "may this token call that service API?" and
//! [`authorize_device`] answers "may this token connect as that device or module?". Both look
//! keys up through closures, so they work with any store, and take `now` as a parameter.
//! Whether the identity is enabled is the caller's business.

use ferrohub_types::{DeviceId, ErrorCode, ModuleId, Permission, Permissions, PolicyName};

use crate::key::SymmetricKey;
use crate::sas::{SasError, SasToken};
use crate::scope::{Scope, ScopeError};

/// The primary and secondary key of an identity or policy. Either one signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The primary key.
    pub primary: SymmetricKey,
    /// The secondary key.
    pub secondary: SymmetricKey,
}

impl KeyPair {
    /// Both keys, for [`SasToken::signed_by_any`].
    pub fn both(&self) -> [&SymmetricKey; 2] {
        [&self.primary, &self.secondary]
    }

    /// Two freshly generated keys.
    pub fn generate() -> Self {
        Self {
            primary: SymmetricKey::generate(),
            secondary: SymmetricKey::generate(),
        }
    }
}

/// A shared access policy as the authorizer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyCredentials {
    /// The policy's name (the token's `skn`).
    pub name: PolicyName,
    /// What the policy may do.
    pub permissions: Permissions,
    /// The policy's keys.
    pub keys: KeyPair,
}

/// How a device or module connection was authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAuthMethod {
    /// With the identity's own key (no `skn`).
    IdentityKey,
    /// With a key of the named shared access policy, which holds DeviceConnect.
    Policy(PolicyName),
}

/// Why a token does not authorize the request.
///
/// Messages are safe to send to the client: they never contain a signature or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token is not a well-formed SAS token.
    #[error("malformed shared access signature: {0}")]
    Malformed(SasError),
    /// The token's resource (`sr`) is not a valid resource URI on this hub.
    #[error("invalid token resource: {0}")]
    InvalidResource(ScopeError),
    /// A service API needs a policy token, and this token has no `skn`.
    #[error("the token names no shared access policy (skn)")]
    MissingPolicyName,
    /// No shared access policy of that name.
    #[error("unknown shared access policy {0:?}")]
    UnknownPolicy(String),
    /// The signature was not made by any key that could have signed the token.
    #[error("the token's signature does not match")]
    BadSignature,
    /// The token expired (more than the allowed clock skew ago).
    #[error("the token expired at {expiry} (unix seconds)")]
    Expired {
        /// The token's `se`.
        expiry: u64,
    },
    /// The token is for another hub, or its scope does not cover the request.
    #[error("the token's scope does not cover this resource")]
    WrongScope,
    /// The policy lacks the permission the request needs.
    #[error("the shared access policy lacks the {0} permission")]
    MissingPermission(Permission),
    /// No identity with the device (and module) id the token is for.
    #[error("unknown device or module identity")]
    UnknownIdentity,
}

impl AuthError {
    /// The Azure error code to report: `IotHubUnauthorized` (401003) for an expired token,
    /// `IotHubUnauthorizedAccess` (401002) for everything else.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AuthError::Expired { .. } => ErrorCode::IotHubUnauthorized,
            _ => ErrorCode::IotHubUnauthorizedAccess,
        }
    }
}

fn scope_of(token: &SasToken, hub_hosts: &[&str]) -> Result<Scope, AuthError> {
    token.scope(hub_hosts).map_err(|e| match e {
        ScopeError::WrongHost => AuthError::WrongScope,
        other => AuthError::InvalidResource(other),
    })
}

fn check_signature_and_expiry(token: &SasToken, keys: &KeyPair, now: u64) -> Result<(), AuthError> {
    if !token.signed_by_any(&keys.both()) {
        return Err(AuthError::BadSignature);
    }
    if token.is_expired(now) {
        return Err(AuthError::Expired {
            expiry: token.expiry(),
        });
    }
    Ok(())
}

/// Authorizes a call to a service API at `target_path` (decoded, e.g. `/devices/d1` or
/// `/messages/devicebound`) that needs `required`.
///
/// Checked in this order: the token must name a policy (`skn`) that `policies` knows, be signed
/// by one of its keys, not be expired at `now`, be scoped to one of `hub_hosts` with a path that
/// covers `target_path` (the whole hub always does), and the policy must hold `required`.
/// Returns the policy's name.
pub fn authorize_service(
    token: &str,
    now: u64,
    hub_hosts: &[&str],
    target_path: &str,
    required: Permission,
    policies: impl Fn(&str) -> Option<PolicyCredentials>,
) -> Result<PolicyName, AuthError> {
    let token = SasToken::parse(token).map_err(AuthError::Malformed)?;
    let name = token.key_name().ok_or(AuthError::MissingPolicyName)?;
    let policy = policies(name).ok_or_else(|| AuthError::UnknownPolicy(name.to_owned()))?;
    check_signature_and_expiry(&token, &policy.keys, now)?;
    if !scope_of(&token, hub_hosts)?.covers(target_path) {
        return Err(AuthError::WrongScope);
    }
    if !policy.permissions.contains(required) {
        return Err(AuthError::MissingPermission(required));
    }
    Ok(policy.name)
}

/// Authorizes a device (or, with `module`, a module) connection.
///
/// * Without `skn` the token must be scoped to exactly that device (or that module) and be signed
///   by one of the keys `identity_keys` returns for it → [`DeviceAuthMethod::IdentityKey`].
/// * With `skn` the policy must be signed for, hold DeviceConnect, and the scope must be the
///   hub, all devices, that device (which covers its modules) or that module →
///   [`DeviceAuthMethod::Policy`].
///
/// In both cases the token must not be expired at `now`. The scope is checked first, then the
/// key lookup, signature, expiry and (for policies) permission. Whether the identity is enabled
/// is for the caller to check.
pub fn authorize_device(
    token: &str,
    now: u64,
    hub_hosts: &[&str],
    device: &DeviceId,
    module: Option<&ModuleId>,
    policies: impl Fn(&str) -> Option<PolicyCredentials>,
    identity_keys: impl Fn(&DeviceId, Option<&ModuleId>) -> Option<KeyPair>,
) -> Result<DeviceAuthMethod, AuthError> {
    let token = SasToken::parse(token).map_err(AuthError::Malformed)?;
    let scope = scope_of(&token, hub_hosts)?;
    let same_device = |d: &DeviceId| d == device;
    match token.key_name() {
        None => {
            let exact = match (&scope, module) {
                (Scope::Device(d), None) => same_device(d),
                (Scope::Module(d, m), Some(want)) => same_device(d) && m == want,
                _ => false,
            };
            if !exact {
                return Err(AuthError::WrongScope);
            }
            let keys = identity_keys(device, module).ok_or(AuthError::UnknownIdentity)?;
            check_signature_and_expiry(&token, &keys, now)?;
            Ok(DeviceAuthMethod::IdentityKey)
        }
        Some(name) => {
            let covered = match (&scope, module) {
                (Scope::Hub | Scope::AllDevices, _) => true,
                (Scope::Device(d), _) => same_device(d),
                (Scope::Module(d, m), Some(want)) => same_device(d) && m == want,
                _ => false,
            };
            if !covered {
                return Err(AuthError::WrongScope);
            }
            let policy = policies(name).ok_or_else(|| AuthError::UnknownPolicy(name.to_owned()))?;
            check_signature_and_expiry(&token, &policy.keys, now)?;
            if !policy.permissions.contains(Permission::DeviceConnect) {
                return Err(AuthError::MissingPermission(Permission::DeviceConnect));
            }
            Ok(DeviceAuthMethod::Policy(policy.name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sas::mint;

    const HUB: &str = "myhub.azure-devices.net";
    const NOW: u64 = 1_700_000_000;
    const LATER: u64 = NOW + 3600;

    struct Fixture {
        owner: PolicyCredentials,
        service: PolicyCredentials,
        device_policy: PolicyCredentials,
        registry_read: PolicyCredentials,
        d1: KeyPair,
        d2: KeyPair,
        d1_m1: KeyPair,
    }

    fn policy(name: &str, perms: &[Permission]) -> PolicyCredentials {
        PolicyCredentials {
            name: PolicyName::new(name).expect("valid name"),
            permissions: Permissions::of(perms),
            keys: KeyPair::generate(),
        }
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                owner: policy("iothubowner", &Permission::ALL),
                service: policy("service", &[Permission::ServiceConnect]),
                device_policy: policy("device", &[Permission::DeviceConnect]),
                registry_read: policy("registryRead", &[Permission::RegistryRead]),
                d1: KeyPair::generate(),
                d2: KeyPair::generate(),
                d1_m1: KeyPair::generate(),
            }
        }

        fn policies(&self) -> impl Fn(&str) -> Option<PolicyCredentials> + '_ {
            move |name| {
                [
                    &self.owner,
                    &self.service,
                    &self.device_policy,
                    &self.registry_read,
                ]
                .into_iter()
                .find(|p| p.name.as_str() == name)
                .cloned()
            }
        }

        fn identities(&self) -> impl Fn(&DeviceId, Option<&ModuleId>) -> Option<KeyPair> + '_ {
            move |d, m| match (d.as_str(), m.map(ModuleId::as_str)) {
                ("d1", None) => Some(self.d1.clone()),
                ("d2", None) => Some(self.d2.clone()),
                ("d1", Some("m1")) => Some(self.d1_m1.clone()),
                _ => None,
            }
        }

        fn service(
            &self,
            token: &str,
            now: u64,
            path: &str,
            required: Permission,
        ) -> Result<PolicyName, AuthError> {
            authorize_service(token, now, &[HUB], path, required, self.policies())
        }

        fn device(
            &self,
            token: &str,
            now: u64,
            device: &str,
            module: Option<&str>,
        ) -> Result<DeviceAuthMethod, AuthError> {
            let d = DeviceId::new(device).expect("valid");
            let m = module.map(|m| ModuleId::new(m).expect("valid"));
            authorize_device(
                token,
                now,
                &[HUB, "localhost"],
                &d,
                m.as_ref(),
                self.policies(),
                self.identities(),
            )
        }
    }

    fn name(s: &str) -> PolicyName {
        PolicyName::new(s).expect("valid")
    }

    #[test]
    fn service_success_with_either_key() {
        let f = Fixture::new();
        for key in f.owner.keys.both() {
            let token = mint(HUB, key, LATER, Some("iothubowner"));
            assert_eq!(
                f.service(&token, NOW, "/devices/d1", Permission::RegistryWrite),
                Ok(name("iothubowner"))
            );
        }
        let token = mint(HUB, &f.service.keys.primary, LATER, Some("service"));
        assert_eq!(
            f.service(
                &token,
                NOW,
                "/messages/devicebound",
                Permission::ServiceConnect
            ),
            Ok(name("service"))
        );
    }

    #[test]
    fn service_accepts_real_sr_forms() {
        let f = Fixture::new();
        let k = &f.owner.keys.primary;
        let hosts = ["localhost"];
        let sign_raw = |sr: &str| {
            let sig = crate::sas::encode_component(&crate::sas::sign(&format!("{sr}\n{LATER}"), k));
            format!("SharedAccessSignature sr={sr}&sig={sig}&skn=iothubowner&se={LATER}")
        };
        for sr in [
            "localhost%3A8443",
            "localhost",
            "localhost:5681",
            "https%3A%2F%2Flocalhost",
        ] {
            let token = sign_raw(sr);
            let got = authorize_service(
                &token,
                NOW,
                &hosts,
                "/twins/d1",
                Permission::ServiceConnect,
                f.policies(),
            );
            assert_eq!(got, Ok(name("iothubowner")), "{sr}");
        }
    }

    #[test]
    fn service_narrowed_scope() {
        let f = Fixture::new();
        let token = mint(
            &format!("{HUB}/messages/events"),
            &f.owner.keys.primary,
            LATER,
            Some("iothubowner"),
        );
        assert!(
            f.service(
                &token,
                NOW,
                "/messages/events/x",
                Permission::ServiceConnect
            )
            .is_ok()
        );
        assert_eq!(
            f.service(&token, NOW, "/messages/eventsx", Permission::ServiceConnect),
            Err(AuthError::WrongScope)
        );
        assert_eq!(
            f.service(&token, NOW, "/devices/d1", Permission::RegistryRead),
            Err(AuthError::WrongScope)
        );
    }

    #[test]
    fn service_failures() {
        let f = Fixture::new();
        let owner = |key: &SymmetricKey, exp: u64| mint(HUB, key, exp, Some("iothubowner"));

        // Wrong key.
        let wrong = owner(&SymmetricKey::generate(), LATER);
        let err = f
            .service(&wrong, NOW, "/devices", Permission::RegistryRead)
            .expect_err("wrong key");
        assert_eq!(err, AuthError::BadSignature);
        assert_eq!(err.error_code(), ErrorCode::IotHubUnauthorizedAccess);

        // Expired beyond the skew, and just inside it.
        let old = owner(&f.owner.keys.primary, NOW - 301);
        let err = f
            .service(&old, NOW, "/devices", Permission::RegistryRead)
            .expect_err("expired");
        assert_eq!(err, AuthError::Expired { expiry: NOW - 301 });
        assert_eq!(err.error_code(), ErrorCode::IotHubUnauthorized);
        assert_eq!(err.error_code().number(), 401003);
        let edge = owner(&f.owner.keys.primary, NOW - 300);
        assert!(
            f.service(&edge, NOW, "/devices", Permission::RegistryRead)
                .is_ok()
        );

        // Policy without the permission.
        let reader = mint(
            HUB,
            &f.registry_read.keys.primary,
            LATER,
            Some("registryRead"),
        );
        assert_eq!(
            f.service(&reader, NOW, "/devices/d1", Permission::RegistryWrite),
            Err(AuthError::MissingPermission(Permission::RegistryWrite))
        );
        assert!(
            f.service(&reader, NOW, "/devices/d1", Permission::RegistryRead)
                .is_ok()
        );

        // Unknown policy.
        let ghost = mint(HUB, &f.owner.keys.primary, LATER, Some("ghost"));
        assert_eq!(
            f.service(&ghost, NOW, "/devices", Permission::RegistryRead),
            Err(AuthError::UnknownPolicy("ghost".into()))
        );

        // A device token on a service API.
        let dev = mint(&format!("{HUB}/devices/d1"), &f.d1.primary, LATER, None);
        assert_eq!(
            f.service(&dev, NOW, "/devices/d1", Permission::RegistryRead),
            Err(AuthError::MissingPolicyName)
        );

        // Another hub.
        let other = mint(
            "otherhub.azure-devices.net",
            &f.owner.keys.primary,
            LATER,
            Some("iothubowner"),
        );
        assert_eq!(
            f.service(&other, NOW, "/devices", Permission::RegistryRead),
            Err(AuthError::WrongScope)
        );

        // A policy's key signing under another policy's name.
        let swapped = mint(HUB, &f.service.keys.primary, LATER, Some("iothubowner"));
        assert_eq!(
            f.service(&swapped, NOW, "/devices", Permission::RegistryRead),
            Err(AuthError::BadSignature)
        );

        // Garbage.
        for junk in [
            "",
            "garbage",
            "SharedAccessSignature ",
            "Bearer abc",
            "SharedAccessSignature sr=&sig=&se=",
        ] {
            let err = f
                .service(junk, NOW, "/devices", Permission::RegistryRead)
                .expect_err("garbage");
            assert!(matches!(err, AuthError::Malformed(_)), "{junk:?}: {err:?}");
            assert_eq!(err.error_code(), ErrorCode::IotHubUnauthorizedAccess);
        }
    }

    #[test]
    fn device_key_tokens() {
        let f = Fixture::new();
        let d1 = mint(&format!("{HUB}/devices/d1"), &f.d1.secondary, LATER, None);
        assert_eq!(
            f.device(&d1, NOW, "d1", None),
            Ok(DeviceAuthMethod::IdentityKey)
        );
        let m1 = mint(
            &format!("{HUB}/devices/d1/modules/m1"),
            &f.d1_m1.primary,
            LATER,
            None,
        );
        assert_eq!(
            f.device(&m1, NOW, "d1", Some("m1")),
            Ok(DeviceAuthMethod::IdentityKey)
        );
        // Raw localhost sr and the old trailing api-version segment.
        let local = mint("localhost/devices/d1", &f.d1.primary, LATER, None);
        assert_eq!(
            f.device(&local, NOW, "d1", None),
            Ok(DeviceAuthMethod::IdentityKey)
        );
        let old_style = mint(
            &format!("{HUB}/devices/d1/api-version=2016-11-14"),
            &f.d1.primary,
            LATER,
            None,
        );
        assert_eq!(
            f.device(&old_style, NOW, "d1", None),
            Ok(DeviceAuthMethod::IdentityKey)
        );
    }

    #[test]
    fn device_key_token_failures() {
        let f = Fixture::new();
        let d1_token =
            |key: &SymmetricKey, exp: u64| mint(&format!("{HUB}/devices/d1"), key, exp, None);

        // Wrong key (d2's key on a d1 token).
        assert_eq!(
            f.device(&d1_token(&f.d2.primary, LATER), NOW, "d1", None),
            Err(AuthError::BadSignature)
        );
        // Expired beyond the skew.
        let err = f
            .device(&d1_token(&f.d1.primary, NOW - 301), NOW, "d1", None)
            .expect_err("expired");
        assert_eq!(err, AuthError::Expired { expiry: NOW - 301 });
        assert_eq!(err.error_code(), ErrorCode::IotHubUnauthorized);
        assert!(
            f.device(&d1_token(&f.d1.primary, NOW - 300), NOW, "d1", None)
                .is_ok()
        );
        // A valid d2 token presented as d1.
        let d2 = mint(&format!("{HUB}/devices/d2"), &f.d2.primary, LATER, None);
        assert_eq!(f.device(&d2, NOW, "d1", None), Err(AuthError::WrongScope));
        // A device token used for one of its modules.
        assert_eq!(
            f.device(&d1_token(&f.d1.primary, LATER), NOW, "d1", Some("m1")),
            Err(AuthError::WrongScope)
        );
        // A module token used for its device.
        let m1 = mint(
            &format!("{HUB}/devices/d1/modules/m1"),
            &f.d1_m1.primary,
            LATER,
            None,
        );
        assert_eq!(f.device(&m1, NOW, "d1", None), Err(AuthError::WrongScope));
        // The device's key on a module token.
        let m1_by_d1 = mint(
            &format!("{HUB}/devices/d1/modules/m1"),
            &f.d1.primary,
            LATER,
            None,
        );
        assert_eq!(
            f.device(&m1_by_d1, NOW, "d1", Some("m1")),
            Err(AuthError::BadSignature)
        );
        // A hub-scoped token without skn.
        let hub_no_skn = mint(HUB, &f.d1.primary, LATER, None);
        assert_eq!(
            f.device(&hub_no_skn, NOW, "d1", None),
            Err(AuthError::WrongScope)
        );
        // Unknown identity.
        let ghost = mint(&format!("{HUB}/devices/ghost"), &f.d1.primary, LATER, None);
        assert_eq!(
            f.device(&ghost, NOW, "ghost", None),
            Err(AuthError::UnknownIdentity)
        );
        // Another hub.
        let other = mint(
            "otherhub.azure-devices.net/devices/d1",
            &f.d1.primary,
            LATER,
            None,
        );
        assert_eq!(
            f.device(&other, NOW, "d1", None),
            Err(AuthError::WrongScope)
        );
        // Invalid device id in the resource.
        let bad_id = mint(&format!("{HUB}/devices/a b"), &f.d1.primary, LATER, None);
        assert!(matches!(
            f.device(&bad_id, NOW, "d1", None),
            Err(AuthError::InvalidResource(ScopeError::InvalidDeviceId(_)))
        ));
        // Garbage.
        for junk in [
            "",
            "x",
            "SharedAccessSignature sr=a",
            "SharedAccessSignature sr=a&sig=b&se=c",
        ] {
            assert!(
                matches!(
                    f.device(junk, NOW, "d1", None),
                    Err(AuthError::Malformed(_))
                ),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn device_policy_tokens() {
        let f = Fixture::new();
        let k = &f.device_policy.keys.primary;
        let policy = |sr: &str| mint(sr, k, LATER, Some("device"));
        let ok = Ok(DeviceAuthMethod::Policy(name("device")));

        assert_eq!(f.device(&policy(HUB), NOW, "d1", None), ok);
        assert_eq!(f.device(&policy(HUB), NOW, "d1", Some("m1")), ok);
        let all = policy(&format!("{HUB}/devices"));
        assert_eq!(f.device(&all, NOW, "d2", None), ok);
        let d1 = policy(&format!("{HUB}/devices/d1"));
        assert_eq!(f.device(&d1, NOW, "d1", None), ok);
        assert_eq!(
            f.device(&d1, NOW, "d1", Some("m1")),
            ok,
            "a device scope covers its modules"
        );
        let m1 = policy(&format!("{HUB}/devices/d1/modules/m1"));
        assert_eq!(f.device(&m1, NOW, "d1", Some("m1")), ok);
        // Identities need not exist in the key lookup for policy tokens.
        assert_eq!(f.device(&all, NOW, "unregistered", None), ok);
        // iothubowner has DeviceConnect too.
        let owner = mint(HUB, &f.owner.keys.secondary, LATER, Some("iothubowner"));
        assert_eq!(
            f.device(&owner, NOW, "d1", None),
            Ok(DeviceAuthMethod::Policy(name("iothubowner")))
        );
    }

    #[test]
    fn device_policy_token_failures() {
        let f = Fixture::new();
        let k = &f.device_policy.keys.primary;
        let policy = |sr: &str| mint(sr, k, LATER, Some("device"));

        // Scoped to another device, another module, or a module used as its device.
        let d2 = policy(&format!("{HUB}/devices/d2"));
        assert_eq!(f.device(&d2, NOW, "d1", None), Err(AuthError::WrongScope));
        let m2 = policy(&format!("{HUB}/devices/d1/modules/m2"));
        assert_eq!(
            f.device(&m2, NOW, "d1", Some("m1")),
            Err(AuthError::WrongScope)
        );
        let m1 = policy(&format!("{HUB}/devices/d1/modules/m1"));
        assert_eq!(f.device(&m1, NOW, "d1", None), Err(AuthError::WrongScope));
        let other_path = policy(&format!("{HUB}/messages/events"));
        assert_eq!(
            f.device(&other_path, NOW, "d1", None),
            Err(AuthError::WrongScope)
        );
        // Policy without DeviceConnect.
        let service = mint(HUB, &f.service.keys.primary, LATER, Some("service"));
        assert_eq!(
            f.device(&service, NOW, "d1", None),
            Err(AuthError::MissingPermission(Permission::DeviceConnect))
        );
        // Unknown policy.
        let ghost = mint(HUB, k, LATER, Some("ghost"));
        assert_eq!(
            f.device(&ghost, NOW, "d1", None),
            Err(AuthError::UnknownPolicy("ghost".into()))
        );
        // Wrong key: the device's own key under a policy name.
        let wrong = mint(
            &format!("{HUB}/devices/d1"),
            &f.d1.primary,
            LATER,
            Some("device"),
        );
        assert_eq!(
            f.device(&wrong, NOW, "d1", None),
            Err(AuthError::BadSignature)
        );
        // Expired.
        let old = mint(HUB, k, NOW - 1000, Some("device"));
        assert_eq!(
            f.device(&old, NOW, "d1", None),
            Err(AuthError::Expired { expiry: NOW - 1000 })
        );
    }

    #[test]
    fn messages_are_safe_and_codes_right() {
        let f = Fixture::new();
        let token = mint(HUB, &f.owner.keys.primary, LATER, Some("iothubowner"));
        let parsed = SasToken::parse(&token).expect("parses");
        let sig_field = token
            .split('&')
            .find_map(|p| p.strip_prefix("sig="))
            .expect("has sig");
        let key_text = f.owner.keys.primary.to_base64();
        let errors = [
            AuthError::Malformed(SasError::MissingField("sr")),
            AuthError::InvalidResource(ScopeError::Malformed),
            AuthError::MissingPolicyName,
            AuthError::UnknownPolicy("ghost".into()),
            AuthError::BadSignature,
            AuthError::Expired {
                expiry: parsed.expiry(),
            },
            AuthError::WrongScope,
            AuthError::MissingPermission(Permission::RegistryWrite),
            AuthError::UnknownIdentity,
        ];
        for e in &errors {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            assert!(
                !msg.contains(sig_field) && !msg.contains(&key_text),
                "{msg}"
            );
            let expected = if matches!(e, AuthError::Expired { .. }) {
                ErrorCode::IotHubUnauthorized
            } else {
                ErrorCode::IotHubUnauthorizedAccess
            };
            assert_eq!(e.error_code(), expected, "{e}");
        }
        assert_eq!(
            AuthError::MissingPermission(Permission::RegistryWrite).to_string(),
            "the shared access policy lacks the RegistryWrite permission"
        );
        // Debug of credentials shows no key material.
        let dbg = format!("{:?}", f.owner);
        assert!(!dbg.contains(&key_text));
    }
}
