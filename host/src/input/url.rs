//! Fetching images from URLs without becoming a proxy into the server's network (SSRF).
//!
//! By default only https is fetched, and never from loopback, private, link-local (cloud
//! metadata), or other non-public addresses. Host names are checked on the addresses they
//! resolve to, and the connection goes to exactly those addresses (no second lookup a DNS
//! rebinding could change); every redirect hop is checked again. Time and size are capped.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::{InputError, InputLimits};

/// Which URLs may be fetched.
#[derive(Clone, Debug, Default)]
pub struct UrlPolicy {
    /// Also fetch plain `http://` URLs.
    pub allow_http: bool,
    /// Also fetch from loopback, private and link-local addresses.
    pub allow_private: bool,
    /// Hosts (names or IP addresses) fetched even though they are not public.
    pub allowed_hosts: HashSet<String>,
}

impl UrlPolicy {
    fn host_allowed(&self, host: &str) -> bool {
        self.allow_private || self.allowed_hosts.contains(&host.to_ascii_lowercase())
    }

    /// Checks what can be checked before connecting: scheme, and IP-literal hosts.
    fn check(&self, url: &reqwest::Url) -> Result<(), String> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err("plain http URLs are not allowed (https only)".into()),
            other => return Err(format!("scheme {other:?} is not allowed")),
        }
        let host = url.host_str().ok_or("URL has no host")?;
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            if !is_public(ip) && !self.host_allowed(literal) {
                return Err(format!("address {ip} is not public"));
            }
        }
        Ok(())
    }

    /// The HTTP client for URL images: this policy's resolver and redirect checks.
    pub fn client(self) -> reqwest::Result<reqwest::Client> {
        let policy = Arc::new(self);
        let redirect_policy = policy.clone();
        reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .dns_resolver(Arc::new(CheckingResolver(policy)))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                match redirect_policy.check(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(why) => {
                        let message = format!("redirect to {} refused: {why}", attempt.url());
                        attempt.error(message)
                    }
                }
            }))
            .build()
    }
}

const MAX_REDIRECTS: usize = 5;

/// Resolves host names and refuses those with any non-public address.
struct CheckingResolver(Arc<UrlPolicy>);

impl Resolve for CheckingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !policy.host_allowed(&host) {
                if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                    return Err(format!("{host} resolves to {}, which is not public", bad.ip()).into());
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Whether an address is on the public internet (not loopback, private, link-local,
/// shared, documentation, multicast, reserved...).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0xdb8 // documentation
        || first == 0x64 && ip.segments()[1] == 0xff9b) // NAT64 can reach IPv4 private space
}

pub async fn fetch(
    http: &reqwest::Client,
    policy: &UrlPolicy,
    raw: &str,
    limits: &InputLimits,
) -> Result<Vec<u8>, InputError> {
    let url = reqwest::Url::parse(raw.trim()).map_err(|e| InputError::Url(format!("{raw:?} is not a URL: {e}")))?;
    policy
        .check(&url)
        .map_err(|why| InputError::Url(format!("{url}: {why}")))?;
    let response = http
        .get(url.clone())
        .timeout(limits.url_timeout)
        .send()
        .await
        .map_err(|e| InputError::Url(format!("{url}: {}", error_chain(&e))))?;
    if !response.status().is_success() {
        return Err(InputError::Url(format!("{url} answered {}", response.status())));
    }
    if response
        .content_length()
        .is_some_and(|n| n > limits.max_url_bytes as u64)
    {
        return Err(InputError::Url(format!(
            "{url} is larger than the {} byte limit",
            limits.max_url_bytes
        )));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| InputError::Url(format!("{url}: {}", error_chain(&e))))?;
        if body.len() + chunk.len() > limits.max_url_bytes {
            return Err(InputError::Url(format!(
                "{url} is larger than the {} byte limit",
                limits.max_url_bytes
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// reqwest's top-level message hides the reason (e.g. our resolver's refusal).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        for ip in ["8.8.8.8", "1.1.1.1", "151.101.1.1", "2606:4700::1111", "2a00:1450::1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn policy_checks_scheme_and_literal_hosts() {
        let strict = UrlPolicy::default();
        let ok = |p: &UrlPolicy, u: &str| p.check(&reqwest::Url::parse(u).unwrap());
        assert!(ok(&strict, "https://example.com/a.jpg").is_ok());
        assert!(ok(&strict, "http://example.com/a.jpg").is_err());
        assert!(ok(&strict, "file:///etc/passwd").is_err());
        assert!(ok(&strict, "https://127.0.0.1/a.jpg").is_err());
        assert!(ok(&strict, "https://[::1]/a.jpg").is_err());
        assert!(ok(&strict, "https://169.254.169.254/latest/meta-data").is_err());
        assert!(
            ok(&strict, "https://2130706433/").is_err(),
            "decimal IPv4 is parsed as 127.0.0.1"
        );
        let open = UrlPolicy {
            allow_http: true,
            allow_private: true,
            ..UrlPolicy::default()
        };
        assert!(ok(&open, "http://127.0.0.1:8000/a.jpg").is_ok());
        let listed = UrlPolicy {
            allowed_hosts: ["127.0.0.2".to_string()].into(),
            ..UrlPolicy::default()
        };
        assert!(ok(&listed, "https://127.0.0.2/a.jpg").is_ok());
        assert!(ok(&listed, "https://127.0.0.1/a.jpg").is_err());
    }
}
