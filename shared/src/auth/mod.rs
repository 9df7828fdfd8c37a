//! Authentication: who may talk to the bot, and how the bot proves itself to the Connector.
//!
//! - [`ChannelAuthenticator`] (incoming, channel → bot): every `POST /api/messages` must carry
//!   a Bot Framework JWT (`Authorization: Bearer …`) when an app id is configured. Channel
//!   tokens (issuer `https://api.botframework.com`) are checked against the Bot Framework's
//!   OpenID keys, including the key's `endorsements` and the `serviceurl` claim; Emulator/AAD
//!   tokens (the issuers of [`EMULATOR_ISSUERS`], plus the configured tenant's for
//!   SingleTenant) against the AAD keys, with the app id in `appid` (v1) or `azp` (v2). Keys
//!   are fetched lazily and cached ([`KeyCache`]). The checks come in two steps: the token
//!   alone ([`ChannelAuthenticator::verify_token`], before the body is parsed), then the token
//!   against the activity ([`VerifiedToken::check_activity`]: endorsements, `serviceurl`).
//!   Any failure is one generic [`AuthError`], which the HTTP layer answers with 401; the
//!   reason is logged at warn, never the token.
//! - [`AppCredentials`] (outgoing, bot → Connector): the client-credentials token, cached per
//!   app id and scope until 5 minutes before it expires, fetched by one request however many
//!   callers wait for it, retried on transient failures. It implements
//!   [`connector::Credentials`](crate::connector::Credentials).
//! - [`ServiceUrlAllowlist`]: which serviceUrls may receive the bot's requests (and so its
//!   token). It implements [`connector::ServiceUrlPolicy`](crate::connector::ServiceUrlPolicy).
//!
//! With no app id (`MicrosoftAppId` unset or empty) the bot runs in Emulator mode:
//! authentication is off and no token is sent. Outside Lambda (the local runner) the allowlist
//! is then relaxed for local development: plain http may reach loopback hosts (the local
//! Emulator) and https any host. Inside Lambda it is not relaxed at all
//! ([`AuthConfig::relax_allowlist_without_app_id`]): an anonymous deployed bot, which anyone
//! can talk to, still sends only to the allowlist's hosts, so it is no open relay.
//!
//! [`Auth::new`] builds all three from an [`AuthConfig`], once per process.

mod allowlist;
mod incoming;
mod keys;
mod outgoing;

use std::fmt;
use std::sync::Arc;

pub use allowlist::{DEFAULT_ALLOWED_SERVICE_URL_HOSTS, ServiceUrlAllowlist};
pub use incoming::{
    AuthError, AuthFailure, CHANNEL_ISSUER, ChannelAuthenticator, EMULATOR_ISSUERS, VerifiedToken,
};
pub use keys::{FORCED_REFRESH_INTERVAL, KEYS_MAX_AGE, KeyCache, KeyError, SigningKey};
pub use outgoing::{AppCredentials, BOT_FRAMEWORK_SCOPE, TokenError};

use crate::connector::{Credentials, NoCredentials, ServiceUrlPolicy};

/// Default channel OpenID metadata (`BOTFRAMEWORK_OPENID_METADATA_URL`).
pub const DEFAULT_OPENID_METADATA_URL: &str =
    "https://login.botframework.com/v1/.well-known/openidconfiguration";
/// Default Emulator/AAD OpenID metadata (`BOTFRAMEWORK_EMULATOR_OPENID_METADATA_URL`).
pub const DEFAULT_EMULATOR_OPENID_METADATA_URL: &str =
    "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration";
/// Default login base (`BOTFRAMEWORK_LOGIN_URL`): tokens come from
/// `{base}/{tenant}/oauth2/v2.0/token`.
pub const DEFAULT_LOGIN_URL: &str = "https://login.microsoftonline.com";
/// The tenant of MultiTenant bots' outgoing tokens.
pub const MULTI_TENANT_TENANT: &str = "botframework.com";

/// `MicrosoftAppType`: how the bot's Entra ID app registration is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppType {
    /// Tokens from the `botframework.com` tenant (the default when unset).
    #[default]
    MultiTenant,
    /// Tokens from `MicrosoftAppTenantId`; that tenant's issuers are also accepted incoming.
    SingleTenant,
}

/// Why the authentication settings are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "MicrosoftAppType UserAssignedMSI is not supported; use MultiTenant or SingleTenant with MicrosoftAppPassword"
    )]
    UserAssignedMsiNotSupported,
    #[error("MicrosoftAppType {0:?} is not one of MultiTenant, SingleTenant")]
    UnknownAppType(String),
    #[error("MicrosoftAppTenantId is required when MicrosoftAppType is SingleTenant")]
    MissingTenantId,
    #[error("{name} is not a valid http(s) URL: {value:?}")]
    InvalidUrl { name: &'static str, value: String },
}

/// The authentication settings, named as in the Bot Framework SDK.
///
/// `app_password` is public and may be filled in after [`AuthConfig::from_env`] (in Lambda it
/// may come from Secrets Manager). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `MicrosoftAppId`; `None` turns authentication off (Emulator mode).
    pub app_id: Option<String>,
    /// `MicrosoftAppPassword`, the client secret.
    pub app_password: Option<String>,
    /// `MicrosoftAppType`.
    pub app_type: AppType,
    /// `MicrosoftAppTenantId`, required for SingleTenant.
    pub tenant_id: Option<String>,
    /// `BOTFRAMEWORK_OPENID_METADATA_URL`.
    pub openid_metadata_url: String,
    /// `BOTFRAMEWORK_EMULATOR_OPENID_METADATA_URL`.
    pub emulator_openid_metadata_url: String,
    /// `BOTFRAMEWORK_LOGIN_URL`, without a trailing `/`.
    pub login_url: String,
    /// `ALLOWED_SERVICE_URL_HOSTS`, lower-cased host patterns.
    pub allowed_service_url_hosts: Vec<String>,
    /// Whether Emulator mode (no app id) relaxes the serviceUrl allowlist for local
    /// development (https to any host, http to any loopback host). True by default and for
    /// the local runner; [`AuthConfig::from_lookup`] makes it false inside Lambda, where an
    /// endpoint without authentication must not become a relay to any host.
    pub relax_allowlist_without_app_id: bool,
}

impl Default for AuthConfig {
    /// Emulator mode with the public endpoints and the default allowlist.
    fn default() -> Self {
        AuthConfig {
            app_id: None,
            app_password: None,
            app_type: AppType::MultiTenant,
            tenant_id: None,
            openid_metadata_url: DEFAULT_OPENID_METADATA_URL.to_owned(),
            emulator_openid_metadata_url: DEFAULT_EMULATOR_OPENID_METADATA_URL.to_owned(),
            login_url: DEFAULT_LOGIN_URL.to_owned(),
            allowed_service_url_hosts: DEFAULT_ALLOWED_SERVICE_URL_HOSTS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
            relax_allowlist_without_app_id: true,
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("app_id", &self.app_id)
            .field(
                "app_password",
                &self.app_password.as_ref().map(|_| "<redacted>"),
            )
            .field("app_type", &self.app_type)
            .field("tenant_id", &self.tenant_id)
            .field("openid_metadata_url", &self.openid_metadata_url)
            .field(
                "emulator_openid_metadata_url",
                &self.emulator_openid_metadata_url,
            )
            .field("login_url", &self.login_url)
            .field("allowed_service_url_hosts", &self.allowed_service_url_hosts)
            .field(
                "relax_allowlist_without_app_id",
                &self.relax_allowlist_without_app_id,
            )
            .finish()
    }
}

impl AuthConfig {
    /// Reads the settings from the process environment (see [`AuthConfig::from_lookup`]).
    pub fn from_env() -> Result<AuthConfig, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (a variable name → its value). Empty or blank
    /// values count as unset.
    ///
    /// `MicrosoftAppId`, `MicrosoftAppPassword`, `MicrosoftAppType` (`MultiTenant` when unset,
    /// `SingleTenant`; case-insensitive), `MicrosoftAppTenantId`,
    /// `BOTFRAMEWORK_OPENID_METADATA_URL`, `BOTFRAMEWORK_EMULATOR_OPENID_METADATA_URL`,
    /// `BOTFRAMEWORK_LOGIN_URL`, `ALLOWED_SERVICE_URL_HOSTS` (comma-separated); and Lambda's
    /// own variables ([`crate::config::LAMBDA_VARIABLES`]): inside Lambda the allowlist is
    /// never relaxed.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<AuthConfig, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let app_type = match get("MicrosoftAppType") {
            None => AppType::MultiTenant,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "multitenant" => AppType::MultiTenant,
                "singletenant" => AppType::SingleTenant,
                "userassignedmsi" => return Err(ConfigError::UserAssignedMsiNotSupported),
                _ => return Err(ConfigError::UnknownAppType(v)),
            },
        };
        let tenant_id = get("MicrosoftAppTenantId");
        // Without an app id (Emulator mode) nothing is fetched from a tenant, so the SAM
        // template's SingleTenant default must not stop a bot deployed without credentials.
        if app_type == AppType::SingleTenant
            && tenant_id.is_none()
            && get("MicrosoftAppId").is_some()
        {
            return Err(ConfigError::MissingTenantId);
        }
        let url = |name: &'static str, default: &str| -> Result<String, ConfigError> {
            let value = get(name).unwrap_or_else(|| default.to_owned());
            match url::Url::parse(&value) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {
                    Ok(value.trim_end_matches('/').to_owned())
                }
                _ => Err(ConfigError::InvalidUrl { name, value }),
            }
        };
        let allowed_service_url_hosts = match get("ALLOWED_SERVICE_URL_HOSTS") {
            Some(list) => list
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            None => AuthConfig::default().allowed_service_url_hosts,
        };
        Ok(AuthConfig {
            app_id: get("MicrosoftAppId"),
            // Not trimmed: a secret is taken exactly as given (blank still counts as unset).
            app_password: lookup("MicrosoftAppPassword").filter(|v| !v.trim().is_empty()),
            app_type,
            tenant_id,
            openid_metadata_url: url(
                "BOTFRAMEWORK_OPENID_METADATA_URL",
                DEFAULT_OPENID_METADATA_URL,
            )?,
            emulator_openid_metadata_url: url(
                "BOTFRAMEWORK_EMULATOR_OPENID_METADATA_URL",
                DEFAULT_EMULATOR_OPENID_METADATA_URL,
            )?,
            login_url: url("BOTFRAMEWORK_LOGIN_URL", DEFAULT_LOGIN_URL)?,
            allowed_service_url_hosts,
            relax_allowlist_without_app_id: !crate::config::in_lambda(&lookup),
        })
    }

    /// Authentication is on: an app id is configured.
    pub fn is_enabled(&self) -> bool {
        self.app_id
            .as_deref()
            .is_some_and(|id| !id.trim().is_empty())
    }

    /// The tenant outgoing tokens come from: `botframework.com` for MultiTenant, the
    /// configured tenant for SingleTenant.
    pub fn token_tenant(&self) -> &str {
        match (self.app_type, self.tenant_id.as_deref()) {
            (AppType::SingleTenant, Some(tenant)) => tenant,
            _ => MULTI_TENANT_TENANT,
        }
    }

    /// `{login_url}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.login_url.trim_end_matches('/'),
            self.token_tenant()
        )
    }
}

/// Everything authentication-related the bot needs, built once per process.
pub struct Auth {
    /// Checks incoming requests (disabled in Emulator mode).
    pub authenticator: ChannelAuthenticator,
    /// The bot's outgoing token ([`AppCredentials`], or no header in Emulator mode).
    pub credentials: Arc<dyn Credentials>,
    /// Where that token may go ([`ServiceUrlAllowlist`]).
    pub policy: Arc<dyn ServiceUrlPolicy>,
}

impl Auth {
    /// Builds the authenticator, the credentials and the allowlist from `config`, sharing
    /// `http` for key and token fetches. With no app id everything is in Emulator mode; the
    /// allowlist is relaxed then only if the config says so (not inside Lambda).
    pub fn new(config: &AuthConfig, http: reqwest::Client) -> Auth {
        let authenticator = ChannelAuthenticator::new(config, http.clone());
        let emulator_mode = !config.is_enabled() && config.relax_allowlist_without_app_id;
        let policy: Arc<dyn ServiceUrlPolicy> = Arc::new(ServiceUrlAllowlist::new(
            &config.allowed_service_url_hosts,
            emulator_mode,
        ));
        let credentials: Arc<dyn Credentials> = match AppCredentials::from_config(config, http) {
            Some(credentials) => {
                if config.app_password.is_none() {
                    tracing::warn!(
                        "MicrosoftAppId is set but MicrosoftAppPassword is not: sends to the Connector will fail"
                    );
                }
                Arc::new(credentials)
            }
            None => Arc::new(NoCredentials),
        };
        Auth {
            authenticator,
            credentials,
            policy,
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("authenticator", &self.authenticator)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<AuthConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        AuthConfig::from_lookup(move |name| vars.get(name).cloned())
    }

    #[test]
    fn nothing_set_means_emulator_mode_with_public_endpoints() {
        let c = config(&[]).expect("config");
        assert!(!c.is_enabled());
        assert_eq!(c.app_type, AppType::MultiTenant);
        assert_eq!(c.openid_metadata_url, DEFAULT_OPENID_METADATA_URL);
        assert_eq!(
            c.emulator_openid_metadata_url,
            DEFAULT_EMULATOR_OPENID_METADATA_URL
        );
        assert_eq!(
            c.token_url(),
            "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token"
        );
        assert_eq!(
            c.allowed_service_url_hosts.len(),
            DEFAULT_ALLOWED_SERVICE_URL_HOSTS.len()
        );
    }

    #[test]
    fn empty_app_id_turns_auth_off() {
        let c = config(&[("MicrosoftAppId", ""), ("MicrosoftAppPassword", "")]).expect("config");
        assert_eq!(c.app_id, None);
        assert_eq!(c.app_password, None);
        assert!(!c.is_enabled());
        let auth = Auth::new(&c, reqwest::Client::new());
        assert!(!auth.authenticator.is_enabled());
    }

    #[test]
    fn single_tenant_without_tenant_is_an_error_naming_the_variable() {
        let err = config(&[
            ("MicrosoftAppId", "app"),
            ("MicrosoftAppType", "SingleTenant"),
        ])
        .expect_err("must fail");
        assert_eq!(err, ConfigError::MissingTenantId);
        assert!(err.to_string().contains("MicrosoftAppTenantId"));
        // In Emulator mode (no app id) the tenant is not needed.
        let emulator = config(&[("MicrosoftAppType", "SingleTenant")]).expect("emulator mode");
        assert!(!emulator.is_enabled());
    }

    #[test]
    fn single_tenant_gets_tokens_from_its_tenant() {
        let c = config(&[
            ("MicrosoftAppId", "app"),
            ("MicrosoftAppType", "singletenant"),
            ("MicrosoftAppTenantId", "contoso-tenant"),
            ("BOTFRAMEWORK_LOGIN_URL", "http://127.0.0.1:9/"),
        ])
        .expect("config");
        assert_eq!(c.app_type, AppType::SingleTenant);
        assert_eq!(
            c.token_url(),
            "http://127.0.0.1:9/contoso-tenant/oauth2/v2.0/token"
        );
    }

    #[test]
    fn user_assigned_msi_is_not_supported() {
        let err = config(&[
            ("MicrosoftAppId", "app"),
            ("MicrosoftAppType", "UserAssignedMSI"),
        ])
        .expect_err("must fail");
        assert_eq!(err, ConfigError::UserAssignedMsiNotSupported);
        assert!(err.to_string().contains("not supported"));
    }

    #[test]
    fn unknown_app_type_is_an_error() {
        let err = config(&[("MicrosoftAppType", "Whatever")]).expect_err("must fail");
        assert!(matches!(err, ConfigError::UnknownAppType(_)));
    }

    #[test]
    fn overrides_and_allowlist_are_read() {
        let c = config(&[
            ("MicrosoftAppId", "app"),
            ("MicrosoftAppPassword", "s3cret"),
            (
                "BOTFRAMEWORK_OPENID_METADATA_URL",
                "http://127.0.0.1:1/channel",
            ),
            (
                "BOTFRAMEWORK_EMULATOR_OPENID_METADATA_URL",
                "http://127.0.0.1:1/emulator",
            ),
            (
                "ALLOWED_SERVICE_URL_HOSTS",
                " Example.com, *.contoso.com ,,localhost",
            ),
        ])
        .expect("config");
        assert!(c.is_enabled());
        assert_eq!(c.openid_metadata_url, "http://127.0.0.1:1/channel");
        assert_eq!(
            c.emulator_openid_metadata_url,
            "http://127.0.0.1:1/emulator"
        );
        assert_eq!(
            c.allowed_service_url_hosts,
            vec!["example.com", "*.contoso.com", "localhost"]
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn a_bad_override_url_is_an_error() {
        let err = config(&[("BOTFRAMEWORK_LOGIN_URL", "not a url")]).expect_err("must fail");
        assert!(err.to_string().contains("BOTFRAMEWORK_LOGIN_URL"));
    }
}
