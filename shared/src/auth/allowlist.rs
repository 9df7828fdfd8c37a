//! Which serviceUrls may receive the bot's requests, and so its token.

use url::{Host, Url};

use crate::connector::ServiceUrlPolicy;

/// The default `ALLOWED_SERVICE_URL_HOSTS`: the public, US Government and Teams Connector
/// hosts.
pub const DEFAULT_ALLOWED_SERVICE_URL_HOSTS: &[&str] = &[
    "*.botframework.com",
    // Exactly this host: anyone can register a name under trafficmanager.net, so a wildcard
    // there would let a stranger's host receive the bot's token.
    "smba.trafficmanager.net",
    "*.teams.microsoft.com",
    "*.botframework.us",
    "*.botframework.azure.us",
    "smba.infra.gov.teams.microsoft.us",
    "*.teams.microsoft.us",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// `host` (a name or an IP address): that host only.
    Exact(String),
    /// `*.suffix`, stored as `.suffix`: any subdomain of `suffix`, not `suffix` itself.
    Subdomains(String),
}

impl HostPattern {
    fn parse(pattern: &str) -> Option<HostPattern> {
        let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
        if let Some(suffix) = pattern.strip_prefix("*.") {
            return (!suffix.is_empty() && !suffix.contains('*'))
                .then(|| HostPattern::Subdomains(format!(".{suffix}")));
        }
        let pattern = pattern
            .strip_prefix('[')
            .and_then(|p| p.strip_suffix(']'))
            .map(str::to_owned)
            .unwrap_or(pattern);
        (!pattern.is_empty() && !pattern.contains('*')).then_some(HostPattern::Exact(pattern))
    }

    fn matches(&self, host: &str, is_domain: bool) -> bool {
        match self {
            HostPattern::Exact(exact) => exact == host,
            HostPattern::Subdomains(suffix) => {
                is_domain && host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

/// The serviceUrl policy: `https` to a host the allowlist matches; plain `http` only to a
/// loopback host (`localhost`, `127.0.0.1`, `::1`) the allowlist names exactly. A URL with
/// userinfo, another scheme, or that does not parse is refused.
///
/// Emulator mode (no app id, so no token is ever sent) relaxes this for local development:
/// `https` to any host, and `http` to any loopback host; plain `http` to any other host still
/// needs that host named exactly in the allowlist. [`crate::auth::Auth::new`] asks for it only
/// outside Lambda: a deployed bot without an app id keeps the strict policy.
///
/// Patterns: `host` matches that host only, `*.example.com` any subdomain of `example.com`
/// (not `example.com` itself). Matching ignores case, the port and a trailing `.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUrlAllowlist {
    patterns: Vec<HostPattern>,
    emulator_mode: bool,
}

impl Default for ServiceUrlAllowlist {
    /// [`DEFAULT_ALLOWED_SERVICE_URL_HOSTS`], not in Emulator mode.
    fn default() -> Self {
        ServiceUrlAllowlist::new(DEFAULT_ALLOWED_SERVICE_URL_HOSTS, false)
    }
}

impl ServiceUrlAllowlist {
    /// An allowlist of `patterns` (blank or malformed ones are dropped).
    pub fn new<S: AsRef<str>>(patterns: &[S], emulator_mode: bool) -> Self {
        ServiceUrlAllowlist {
            patterns: patterns
                .iter()
                .filter_map(|p| HostPattern::parse(p.as_ref()))
                .collect(),
            emulator_mode,
        }
    }

    /// An allowlist from a comma-separated list, as in `ALLOWED_SERVICE_URL_HOSTS`.
    pub fn parse(list: &str, emulator_mode: bool) -> Self {
        let patterns: Vec<&str> = list.split(',').collect();
        ServiceUrlAllowlist::new(&patterns, emulator_mode)
    }

    pub fn is_emulator_mode(&self) -> bool {
        self.emulator_mode
    }

    fn named_exactly(&self, host: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| matches!(p, HostPattern::Exact(exact) if exact == host))
    }
}

impl ServiceUrlPolicy for ServiceUrlAllowlist {
    fn check(&self, service_url: &str) -> Result<(), String> {
        let url = Url::parse(service_url.trim()).map_err(|_| "not a valid URL".to_owned())?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("URLs with user information are not allowed".to_owned());
        }
        let (host, is_domain, loopback) = match url.host() {
            Some(Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                let loopback = d == "localhost";
                (d, true, loopback)
            }
            Some(Host::Ipv4(ip)) => (ip.to_string(), false, ip.is_loopback()),
            Some(Host::Ipv6(ip)) => (ip.to_string(), false, ip.is_loopback()),
            None => return Err("URL has no host".to_owned()),
        };
        match url.scheme() {
            "https" => {
                if self.emulator_mode || self.patterns.iter().any(|p| p.matches(&host, is_domain)) {
                    Ok(())
                } else {
                    Err(format!("host {host} is not in ALLOWED_SERVICE_URL_HOSTS"))
                }
            }
            "http" => {
                let named = self.named_exactly(&host);
                let allowed = if self.emulator_mode {
                    loopback || named
                } else {
                    loopback && named
                };
                if allowed {
                    Ok(())
                } else {
                    Err("plain http is only allowed to loopback hosts named in ALLOWED_SERVICE_URL_HOSTS".to_owned())
                }
            }
            _ => Err("only https URLs are allowed".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(list: &ServiceUrlAllowlist, url: &str) -> bool {
        list.check(url).is_ok()
    }

    #[test]
    fn default_hosts_pass_over_https() {
        let list = ServiceUrlAllowlist::default();
        for url in [
            "https://smba.trafficmanager.net/amer/",
            "https://smba.trafficmanager.net/teams/",
            "https://webchat.botframework.com/",
            "https://directline.botframework.com",
            "https://europe.directline.botframework.com/v3/",
            "https://smba.infra.gov.teams.microsoft.us/",
            "https://canary.botapi.skype.teams.microsoft.com/",
            "https://WebChat.BotFramework.com./",
            "https://webchat.botframework.com:443/",
            "https://europe.webchat.botframework.com/",
            "https://service.botframework.us/",
            "https://service.botframework.azure.us/",
            "https://x.teams.microsoft.com/",
            "https://x.teams.microsoft.us/",
        ] {
            assert!(ok(&list, url), "{url}");
        }
    }

    #[test]
    fn other_hosts_and_lookalikes_are_refused() {
        let list = ServiceUrlAllowlist::default();
        for url in [
            "https://evil.example.com/",
            "https://botframework.com.evil.com/",
            "https://evilbotframework.com/",
            "https://botframework.com/",
            "https://10.0.0.1/",
            // Anyone can register a name under trafficmanager.net: only smba is trusted.
            "https://attacker.trafficmanager.net/",
        ] {
            assert!(!ok(&list, url), "{url}");
        }
    }

    #[test]
    fn plain_http_is_refused_even_for_allowed_hosts() {
        let list = ServiceUrlAllowlist::default();
        assert!(!ok(&list, "http://smba.trafficmanager.net/amer/"));
        assert!(!ok(&list, "http://localhost:3979/"));
        assert!(!ok(&list, "http://127.0.0.1:3979/"));
    }

    #[test]
    fn loopback_http_passes_only_when_named() {
        let list = ServiceUrlAllowlist::parse("127.0.0.1, localhost, [::1], example.com", false);
        assert!(ok(&list, "http://127.0.0.1:9000/connector/"));
        assert!(ok(&list, "http://localhost:9000/"));
        assert!(ok(&list, "http://[::1]:9000/"));
        assert!(!ok(&list, "http://127.0.0.2:9000/"));
        assert!(!ok(&list, "http://example.com/"), "http only for loopback");
        assert!(ok(&list, "https://example.com/"));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let list = ServiceUrlAllowlist::parse("*.example.com", false);
        assert!(ok(&list, "https://a.example.com/"));
        assert!(ok(&list, "https://a.b.example.com/"));
        assert!(!ok(&list, "https://example.com/"));
        assert!(!ok(&list, "https://badexample.com/"));
        assert!(!ok(&list, "https://a.example.com.evil.net/"));
    }

    #[test]
    fn userinfo_other_schemes_and_garbage_are_refused() {
        let list = ServiceUrlAllowlist::parse("*.botframework.com, localhost", true);
        assert!(!ok(&list, "https://user@webchat.botframework.com/"));
        assert!(!ok(&list, "https://user:pw@webchat.botframework.com/"));
        assert!(!ok(&list, "https://webchat.botframework.com@evil.com/"));
        assert!(!ok(&list, "ftp://webchat.botframework.com/"));
        assert!(!ok(&list, "file:///etc/passwd"));
        assert!(!ok(&list, "javascript:alert(1)"));
        assert!(!ok(&list, "webchat.botframework.com"));
        assert!(!ok(&list, "https://"));
        assert!(!ok(&list, "not a url"));
        assert!(!ok(&list, ""));
    }

    #[test]
    fn emulator_mode_allows_loopback_http_and_any_https() {
        let list = ServiceUrlAllowlist::new(DEFAULT_ALLOWED_SERVICE_URL_HOSTS, true);
        assert!(list.is_emulator_mode());
        assert!(ok(&list, "http://localhost:53421/"));
        assert!(!ok(&list, "http://my-tunnel.example.net/"));
        assert!(!ok(&list, "https://user@localhost/"));
        assert!(ok(&list, "http://127.0.0.1:53421/"));
        assert!(ok(&list, "http://[::1]:53421/"));
        assert!(ok(&list, "https://my-tunnel.example.net/"));
        assert!(!ok(&list, "http://192.168.1.20:53421/"));
        let named = ServiceUrlAllowlist::parse("192.168.1.20", true);
        assert!(ok(&named, "http://192.168.1.20:53421/"));
    }
}
