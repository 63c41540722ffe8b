//! Fetching creators' media URLs without reaching the internal network (SSRF).
//!
//! A media URL is the creator's input, and the worker sits inside the network: an unguarded
//! fetch would let a creator probe loopback services, cloud metadata or private hosts. So:
//! - only `https`, except plain `http` on the sandbox's exact origin (scheme, host and port),
//!   which exists only while a platform base points at the sandbox;
//! - IP-literal hosts are checked before any connection, and hostnames are checked on the
//!   addresses they resolve to, inside the client's resolver, so the address checked is the
//!   address connected to (DNS rebinding cannot swap it in between);
//! - redirects are followed here, each hop checked by the same rules.

use std::{
    error::Error as StdError,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::{
    Method, Response,
    dns::{Addrs, Name, Resolve, Resolving},
    header,
};
use url::{Host, Origin, Url};

/// Hops after the first request; real media hosts redirect once or twice (CDN, signed URL).
const MAX_REDIRECTS: usize = 5;

/// Why a media URL was not fetched. Neither variant carries anything an internal host said.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FetchError {
    /// The URL, or a redirect, leads off the public internet or off https.
    Forbidden(String),
    /// DNS, connection, TLS, timeout or too many redirects.
    Unreachable(String),
}

/// The resolver's refusal, found again in a request error's source chain.
#[derive(Debug, thiserror::Error)]
#[error("`{host}` resolves to an address that is not public")]
pub(crate) struct ForbiddenAddress {
    host: String,
}

/// Resolves hostnames for the guarded client and refuses them when ANY of their addresses is
/// not public (refusing only some would leave the others to the connector's choice).
struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // The port is replaced by the URL's when connecting.
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addresses.iter().any(|a| !is_public(a.ip())) {
                return Err(Box::new(ForbiddenAddress { host }) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// Which client may fetch a URL.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// The sandbox's own origin, over plain http (it is on loopback by design).
    Sandbox,
    /// Any other https URL, through the address-checking client.
    Public,
}

#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    NotHttps,
    NotPublic { host: String },
}

/// HEADs and GETs media URLs, refusing any hop that leads to a non-public address.
pub(crate) struct MediaFetcher {
    public: reqwest::Client,
    sandbox: reqwest::Client,
    sandbox_origins: Vec<Origin>,
}

impl MediaFetcher {
    /// `sandbox_origins`: the exact origins whose plain-http media is fetched unguarded.
    pub(crate) fn new(sandbox_origins: Vec<Origin>, request_timeout: Duration) -> reqwest::Result<Self> {
        // No proxy: a proxy would resolve and connect on our behalf, past the resolver's check.
        // No redirects: each hop must pass `route` first.
        let builder = || {
            reqwest::Client::builder()
                .timeout(request_timeout)
                .user_agent(concat!("autopost/", env!("CARGO_PKG_VERSION")))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
        };
        Ok(Self {
            public: builder().https_only(true).dns_resolver(Arc::new(PublicOnlyResolver)).build()?,
            sandbox: builder().build()?,
            sandbox_origins,
        })
    }

    /// Sends `method` to `url`, following up to [`MAX_REDIRECTS`] redirects, each checked.
    /// The answer is the first one that is not a redirect; its body is left unread.
    pub(crate) async fn fetch(&self, method: Method, url: &str) -> Result<Response, FetchError> {
        let mut url = Url::parse(url).map_err(|e| FetchError::Unreachable(format!("not a URL: {e}")))?;
        for hop in 0..=MAX_REDIRECTS {
            let client = match route(&url, &self.sandbox_origins) {
                Ok(Route::Sandbox) => &self.sandbox,
                Ok(Route::Public) => &self.public,
                Err(refusal) => return Err(FetchError::Forbidden(refusal_detail(&refusal, hop))),
            };
            let response = client.request(method.clone(), url.clone()).send().await.map_err(|e| request_error(e, &url, hop))?;
            let location = match response.headers().get(header::LOCATION) {
                Some(location) if response.status().is_redirection() => location,
                _ => return Ok(response),
            };
            // What a redirect names is shown to no one: only whether it passed.
            url = location
                .to_str()
                .ok()
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| FetchError::Unreachable("answered a redirect to an invalid location".into()))?;
        }
        Err(FetchError::Unreachable(format!("more than {MAX_REDIRECTS} redirects")))
    }
}

/// The scheme and origin rules, and the address rule for IP-literal hosts (hostnames are
/// checked by the resolver, at connect time).
fn route(url: &Url, sandbox_origins: &[Origin]) -> Result<Route, Refusal> {
    if url.scheme() == "http" && sandbox_origins.contains(&url.origin()) {
        return Ok(Route::Sandbox);
    }
    if url.scheme() != "https" {
        return Err(Refusal::NotHttps);
    }
    let ip = match url.host() {
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        // The URL parser turns numeric hosts into IPs; this catches any it would not.
        Some(Host::Domain(domain)) => domain.parse::<IpAddr>().ok(),
        None => return Err(Refusal::NotPublic { host: String::new() }),
    };
    match ip {
        Some(ip) if !is_public(ip) => Err(Refusal::NotPublic { host: url.host_str().unwrap_or_default().to_owned() }),
        _ => Ok(Route::Public),
    }
}

/// Only the first hop is the creator's own input: later hops are named by no one.
fn refusal_detail(refusal: &Refusal, hop: usize) -> String {
    match (refusal, hop) {
        (Refusal::NotHttps, 0) => "only https media URLs are fetched".into(),
        (Refusal::NotHttps, _) => "it redirects to a URL that is not https; media is fetched over https only".into(),
        (Refusal::NotPublic { host }, 0) => format!("the host `{host}` is not a public address"),
        (Refusal::NotPublic { .. }, _) => "it redirects to a host that is not a public address".into(),
    }
}

fn request_error(error: reqwest::Error, url: &Url, hop: usize) -> FetchError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&error);
    while let Some(e) = source {
        if e.downcast_ref::<ForbiddenAddress>().is_some() {
            return FetchError::Forbidden(match hop {
                0 => format!("the host `{}` is not a public address (it resolves to an internal one)", url.host_str().unwrap_or_default()),
                _ => "it redirects to a host that is not a public address".into(),
            });
        }
        source = e.source();
    }
    FetchError::Unreachable(format!("not reachable: {}", error.without_url()))
}

/// Whether `ip` is a unicast address on the public internet: not loopback, private,
/// link-local, unique-local, shared (CGNAT), multicast, unspecified, broadcast, reserved or
/// set aside for documentation and benchmarks, nor an IPv6 form embedding such an IPv4.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

/// IPv4 ranges that are not public unicast (IANA special-purpose registry).
const NON_PUBLIC_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network", unspecified
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // shared address space (CGNAT)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local (cloud metadata)
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation (TEST-NET-1)
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // 6to4 relay anycast (deprecated)
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation (TEST-NET-2)
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation (TEST-NET-3)
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, and the broadcast address
];

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let ip = u32::from(ip);
    !NON_PUBLIC_V4.iter().any(|&(net, len)| {
        let mask = u32::MAX << (32 - u32::from(len));
        ip & mask == u32::from(net) & mask
    })
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    // ::ffff:a.b.c.d reaches a.b.c.d.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        // ::/96: unspecified, loopback and the deprecated IPv4-compatible form; none is public.
        [0, 0, 0, 0, 0, 0, _, _] => false,
        // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they embed.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => is_public_v4(embedded(hi, lo)),
        [0x2002, hi, lo, ..] => is_public_v4(embedded(hi, lo)),
        // Only 2000::/3 is global unicast: this leaves out unique-local fc00::/7, link-local
        // fe80::/10, site-local fec0::/10, multicast ff00::/8, discard 100::/64, local NAT64.
        [first, ..] if first & 0xe000 != 0x2000 => false,
        // IETF protocol assignments 2001::/23 (Teredo, benchmarking 2001:2::/48, ORCHID).
        [0x2001, second, ..] if second < 0x0200 => false,
        // Documentation: 2001:db8::/32 and 3fff::/20.
        [0x2001, 0x0db8, ..] => false,
        [0x3fff, second, ..] if second < 0x1000 => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    /// One address in (and at the edges of) every non-public IPv4 range.
    const FORBIDDEN_V4: &[&str] = &[
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "10.255.255.255",
        "100.64.0.1",
        "100.127.255.255",
        "127.0.0.1",
        "127.255.255.254",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
    ];

    #[test]
    fn every_non_public_ipv4_range_is_refused() {
        for ip in FORBIDDEN_V4 {
            assert!(!is_public(v4(ip)), "{ip} must be refused");
        }
    }

    #[test]
    fn public_ipv4_addresses_are_allowed_including_the_neighbours_of_private_ranges() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert!(is_public(v4(ip)), "{ip} is public");
        }
    }

    #[test]
    fn ipv6_forms_embedding_a_non_public_ipv4_are_refused() {
        for ip in FORBIDDEN_V4 {
            let octets = ip.parse::<Ipv4Addr>().unwrap().octets();
            let (hi, lo) = (u16::from_be_bytes([octets[0], octets[1]]), u16::from_be_bytes([octets[2], octets[3]]));
            for form in [format!("::ffff:{ip}"), format!("::{ip}"), format!("64:ff9b::{ip}"), format!("2002:{hi:x}:{lo:x}::1")] {
                assert!(!is_public(v6(&form)), "{form} must be refused");
            }
        }
        // The same forms of a public IPv4 reach the public internet (except the deprecated ::a.b.c.d).
        for form in ["::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1"] {
            assert!(is_public(v6(form)), "{form} is public");
        }
        assert!(!is_public(v6("::8.8.8.8")), "IPv4-compatible addresses are deprecated and refused");
    }

    #[test]
    fn every_non_public_ipv6_range_is_refused() {
        for ip in [
            "::",
            "::1",
            "fe80::1",
            "febf:ffff::1",
            "fec0::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "ff0e::1",
            "100::1",
            "64:ff9b:1::1",
            "2001::1",
            "2001:2::1",
            "2001:db8::1",
            "3fff::1",
            "3fff:fff::1",
        ] {
            assert!(!is_public(v6(ip)), "{ip} must be refused");
        }
        for ip in ["2606:4700:4700::1111", "2a00:1450:4001:82b::200e", "2001:4860:4860::8888", "3ffe::1", "3fff:1000::1"] {
            assert!(is_public(v6(ip)), "{ip} is public");
        }
    }

    fn sandbox() -> Vec<Origin> {
        vec![Url::parse("http://127.0.0.1:8090/instagram/v25.0").unwrap().origin()]
    }

    fn route_of(url: &str) -> Result<Route, Refusal> {
        route(&Url::parse(url).unwrap(), &sandbox())
    }

    fn not_public(host: &str) -> Result<Route, Refusal> {
        Err(Refusal::NotPublic { host: host.into() })
    }

    #[test]
    fn only_https_is_fetched_except_plain_http_on_the_sandbox_exact_origin() {
        assert_eq!(route_of("https://cdn.example.com/a.jpg"), Ok(Route::Public));
        assert_eq!(route_of("http://127.0.0.1:8090/media/a.jpg"), Ok(Route::Sandbox));
        for url in [
            "http://cdn.example.com/a.jpg",
            "http://127.0.0.1:8091/media/a.jpg",
            "http://localhost:8090/media/a.jpg",
            "ftp://cdn.example.com/a.jpg",
            "file:///etc/passwd",
        ] {
            assert_eq!(route_of(url), Err(Refusal::NotHttps), "{url}");
        }
        // The sandbox's host over https is not its origin: it is loopback like any other.
        assert_eq!(route_of("https://127.0.0.1:8090/media/a.jpg"), not_public("127.0.0.1"));
        // No sandbox in use: no plain http at all.
        assert_eq!(route(&Url::parse("http://127.0.0.1:8090/media/a.jpg").unwrap(), &[]), Err(Refusal::NotHttps));
    }

    #[test]
    fn ip_literal_hosts_are_checked_in_every_spelling() {
        assert_eq!(route_of("https://169.254.169.254/latest/meta-data"), not_public("169.254.169.254"));
        assert_eq!(route_of("https://[::1]:8443/a.jpg"), not_public("[::1]"));
        assert_eq!(route_of("https://[::ffff:127.0.0.1]/a.jpg"), not_public("[::ffff:7f00:1]"));
        // Decimal, hex and short forms are normalised by the URL parser, then checked.
        assert_eq!(route_of("https://2130706433/a.jpg"), not_public("127.0.0.1"));
        assert_eq!(route_of("https://0x7f.1/a.jpg"), not_public("127.0.0.1"));
        assert_eq!(route_of("https://10.1/a.jpg"), not_public("10.0.0.1"));
        assert_eq!(route_of("https://8.8.8.8/a.jpg"), Ok(Route::Public));
    }

    /// A TCP listener counting the connections it accepts, standing for an internal service.
    async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        (port, accepted)
    }

    /// A plain-http server answering every request with `answer(path)`.
    async fn http_server(answer: impl Fn(&str) -> String + Send + 'static) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap().origin();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0; 4096];
                let read = stream.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..read]).into_owned();
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let _ = stream.write_all(answer(&path).as_bytes()).await;
            }
        });
        origin
    }

    fn redirect(location: &str) -> String {
        format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }

    fn fetcher(origins: Vec<Origin>) -> MediaFetcher {
        MediaFetcher::new(origins, Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn a_hostname_resolving_to_loopback_is_refused_by_the_resolver_without_connecting() {
        let (port, accepted) = counting_listener().await;
        let result = fetcher(vec![]).fetch(Method::HEAD, &format!("https://localhost:{port}/a.jpg")).await;
        let Err(FetchError::Forbidden(detail)) = result else { panic!("expected a refusal, got {result:?}") };
        assert_eq!(detail, "the host `localhost` is not a public address (it resolves to an internal one)");
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_redirect_from_an_allowed_origin_into_loopback_is_refused_without_connecting() {
        let (port, accepted) = counting_listener().await;
        let origin = http_server(move |_| redirect(&format!("https://127.0.0.1:{port}/a.jpg"))).await;
        let result = fetcher(vec![origin.clone()]).fetch(Method::GET, &format!("{}/start", origin.ascii_serialization())).await;
        assert_eq!(result.unwrap_err(), FetchError::Forbidden("it redirects to a host that is not a public address".into()));
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn relative_redirects_on_the_sandbox_are_followed_and_endless_ones_stop() {
        let origin = http_server(|path| match path {
            "/start" => redirect("/media/a.jpg"),
            "/media/a.jpg" => "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
            _ => redirect("/loop"),
        })
        .await;
        let fetcher = fetcher(vec![origin.clone()]);
        let base = origin.ascii_serialization();
        let response = fetcher.fetch(Method::HEAD, &format!("{base}/start")).await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(response.url().path(), "/media/a.jpg");
        assert_eq!(
            fetcher.fetch(Method::HEAD, &format!("{base}/loop")).await.unwrap_err(),
            FetchError::Unreachable("more than 5 redirects".into())
        );
    }

    #[tokio::test]
    async fn a_redirect_to_plain_http_off_the_sandbox_is_refused() {
        let origin = http_server(|_| redirect("http://cdn.example.com/a.jpg")).await;
        let result = fetcher(vec![origin.clone()]).fetch(Method::HEAD, &format!("{}/start", origin.ascii_serialization())).await;
        assert_eq!(
            result.unwrap_err(),
            FetchError::Forbidden("it redirects to a URL that is not https; media is fetched over https only".into())
        );
    }
}
