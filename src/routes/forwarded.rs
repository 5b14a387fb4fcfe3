//! The client's address behind reverse proxies. Only a TCP peer inside
//! `LATCHKEY_TRUSTED_PROXIES` may name the client, through `Forwarded`
//! (RFC 7239) or, when that header is absent, `X-Forwarded-For`. Each proxy
//! appends the address it received the request from, so the list is read
//! from the right: the first hop that is not a trusted proxy is the client,
//! and everything left of it is whatever that client chose to send.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use actix_web::http::header::{self, HeaderMap, HeaderName};

use crate::config::TrustedProxies;

/// The address to count, log and store for a request from `peer`.
///
/// A header that cannot be read up to the client's hop (bad syntax, an
/// element without `for=`, `unknown` or an obfuscated name) gives the
/// peer: a proxy's address is shared by many clients, so a broken header
/// can only make its sender's limit stricter, never name another client.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let syntax = if headers.contains_key(header::FORWARDED) {
        Syntax::Forwarded
    } else if headers.contains_key(header::X_FORWARDED_FOR) {
        Syntax::XForwardedFor
    } else {
        return peer;
    };
    joined(headers, &syntax.header())
        .and_then(|value| rightmost_untrusted(&value, syntax, trusted))
        .unwrap_or(peer)
}

#[derive(Debug, Clone, Copy)]
enum Syntax {
    /// RFC 7239: `for=192.0.2.1;proto=https, for="[2001:db8::1]:4711"`.
    Forwarded,
    /// `192.0.2.1, 2001:db8::1`.
    XForwardedFor,
}

impl Syntax {
    fn header(self) -> HeaderName {
        match self {
            Syntax::Forwarded => header::FORWARDED,
            Syntax::XForwardedFor => header::X_FORWARDED_FOR,
        }
    }

    fn hops(self, value: &str) -> Option<Vec<&str>> {
        match self {
            // Elements end at a comma outside a quoted string; an
            // unterminated quote leaves the whole header unreadable.
            Syntax::Forwarded => split_outside_quotes(value, ','),
            Syntax::XForwardedFor => Some(value.split(',').collect()),
        }
    }

    fn address(self, hop: &str) -> Option<IpAddr> {
        match self {
            Syntax::Forwarded => forwarded_for(hop).and_then(|node| parse_node(&node, false)),
            Syntax::XForwardedFor => parse_node(hop, true),
        }
    }
}

/// Several lines of one header are one comma-separated list (RFC 9110 5.3).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut lines = Vec::new();
    for value in headers.get_all(name) {
        lines.push(value.to_str().ok()?);
    }
    Some(lines.join(","))
}

/// Walks the list from the right: the first hop that is not a trusted
/// proxy, or the leftmost when every hop is one. A hop is parsed only when
/// the walk reaches it, so what a client wrote left of its own hop is never
/// looked at; `None` when a hop on the way cannot be read.
fn rightmost_untrusted(value: &str, syntax: Syntax, trusted: &TrustedProxies) -> Option<IpAddr> {
    let hops = syntax.hops(value)?;
    let mut leftmost = None;
    // Empty list elements are ignored (RFC 9110 5.6.1).
    for hop in hops
        .iter()
        .map(|hop| hop.trim())
        .filter(|hop| !hop.is_empty())
        .rev()
    {
        let ip = syntax.address(hop)?.to_canonical();
        if !trusted.contains(ip) {
            return Some(ip);
        }
        leftmost = Some(ip);
    }
    leftmost
}

/// Splits `text` at `separator` outside `"…"` (with `\` escapes inside);
/// `None` for an unterminated quoted string.
fn split_outside_quotes(text: &str, separator: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted {
            match c {
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
        } else if c == '"' {
            quoted = true;
        } else if c == separator {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    if quoted || escaped {
        return None;
    }
    parts.push(&text[start..]);
    Some(parts)
}

/// The `for=` value of one `Forwarded` element, unquoted.
fn forwarded_for(element: &str) -> Option<String> {
    let mut found = None;
    for pair in split_outside_quotes(element, ';')? {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=')?;
        let value = parameter_value(value)?;
        if name.eq_ignore_ascii_case("for") {
            // Each parameter occurs at most once per element (RFC 7239 4).
            if found.replace(value).is_some() {
                return None;
            }
        } else if name.is_empty() || !name.bytes().all(is_token_byte) {
            return None;
        }
    }
    found
}

/// A token or a quoted string (RFC 9110 5.6), its escapes undone.
fn parameter_value(raw: &str) -> Option<String> {
    let Some(inner) = raw.strip_prefix('"') else {
        // A token; `[`, `]` and `:` are let through unquoted as well, since
        // some proxies write `for=[2001:db8::1]:80` without quotes.
        let lenient = |b: u8| is_token_byte(b) || matches!(b, b'[' | b']' | b':');
        return (!raw.is_empty() && raw.bytes().all(lenient)).then(|| raw.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut value = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?),
            '"' => return None,
            c => value.push(c),
        }
    }
    Some(value)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An address with an optional port: `192.0.2.1`, `192.0.2.1:80`,
/// `[2001:db8::1]`, `[2001:db8::1]:80`, and (only where `bare_ipv6`, as in
/// `X-Forwarded-For`) `2001:db8::1`. `unknown` and obfuscated names
/// (`_hidden`) are not addresses.
fn parse_node(node: &str, bare_ipv6: bool) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        let ip = address.parse::<Ipv6Addr>().ok()?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok.then_some(IpAddr::V6(ip));
    }
    if bare_ipv6 && let Ok(ip) = node.parse::<Ipv6Addr>() {
        return Some(IpAddr::V6(ip));
    }
    let (host, port) = match node.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (node, None),
    };
    if port.is_some_and(|port| !is_port(port)) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A port number or an obfuscated port (RFC 7239 6.3).
fn is_port(port: &str) -> bool {
    let digits = (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit());
    let obfuscated = port.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    });
    digits || obfuscated
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    const PROXY: &str = "10.0.0.1";

    /// The address resolved for a request from `peer` carrying `headers`,
    /// with `trusted` as LATCHKEY_TRUSTED_PROXIES.
    fn resolve(peer: &str, headers: &[(&str, &[u8])], trusted: &str) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        let trusted = TrustedProxies::parse(trusted).unwrap();
        client_address(peer.parse().unwrap(), &map, &trusted).to_string()
    }

    fn via_proxy(headers: &[(&str, &[u8])]) -> String {
        resolve(PROXY, headers, "10.0.0.0/8")
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let spoofed: &[(&str, &[u8])] = &[
            ("x-forwarded-for", b"198.51.100.7"),
            ("forwarded", b"for=198.51.100.8"),
        ];
        assert_eq!(resolve("203.0.113.5", spoofed, "10.0.0.0/8"), "203.0.113.5");
        assert_eq!(resolve("203.0.113.5", spoofed, ""), "203.0.113.5");
        assert_eq!(resolve(PROXY, spoofed, ""), PROXY);
        assert_eq!(
            resolve("2001:db8::5", spoofed, "10.0.0.0/8, 2001:db8:ffff::/48"),
            "2001:db8::5"
        );
        // A dual-stack socket's view of an IPv4 peer is that peer.
        assert_eq!(resolve("::ffff:203.0.113.5", spoofed, ""), "203.0.113.5");
        assert_eq!(resolve(PROXY, &[], "10.0.0.0/8"), PROXY);
    }

    #[test]
    fn x_forwarded_for_is_read_from_the_right() {
        assert_eq!(
            via_proxy(&[("x-forwarded-for", b"198.51.100.7")]),
            "198.51.100.7"
        );
        // Whatever the client wrote itself stays left of its own hop.
        assert_eq!(
            via_proxy(&[("x-forwarded-for", b"192.0.2.66, 198.51.100.7")]),
            "198.51.100.7"
        );
        assert_eq!(
            via_proxy(&[("x-forwarded-for", b"not an address, 198.51.100.7")]),
            "198.51.100.7"
        );
        // Trusted hops on the right are skipped.
        assert_eq!(
            via_proxy(&[("x-forwarded-for", b"198.51.100.7, 10.0.0.2, 10.9.9.9")]),
            "198.51.100.7"
        );
        // Several header lines are one list, in order.
        assert_eq!(
            via_proxy(&[
                ("x-forwarded-for", b"192.0.2.66"),
                ("x-forwarded-for", b"198.51.100.7"),
            ]),
            "198.51.100.7"
        );
        assert_eq!(
            via_proxy(&[("x-forwarded-for", b" , 198.51.100.7:5000 ,")]),
            "198.51.100.7"
        );
    }

    #[test]
    fn forwarded_is_read_from_the_right() {
        assert_eq!(
            via_proxy(&[("forwarded", b"for=198.51.100.7")]),
            "198.51.100.7"
        );
        assert_eq!(
            via_proxy(&[(
                "forwarded",
                b"For=\"198.51.100.7:4711\";proto=https;by=10.0.0.1"
            )]),
            "198.51.100.7"
        );
        assert_eq!(
            via_proxy(&[(
                "forwarded",
                b"for=192.0.2.66, for=198.51.100.7;proto=https, for=10.0.0.2"
            )]),
            "198.51.100.7"
        );
        // A comma inside a quoted value does not end the element.
        assert_eq!(
            via_proxy(&[("forwarded", b"for=198.51.100.7;ext=\"a, for=192.0.2.66\"")]),
            "198.51.100.7"
        );
        // Names the client made up left of its hop are not looked at.
        assert_eq!(
            via_proxy(&[("forwarded", b"for=unknown, for=_hidden, for=198.51.100.7")]),
            "198.51.100.7"
        );
        // Forwarded wins over X-Forwarded-For.
        assert_eq!(
            via_proxy(&[
                ("x-forwarded-for", b"198.51.100.8"),
                ("forwarded", b"for=198.51.100.7"),
            ]),
            "198.51.100.7"
        );
    }

    #[test]
    fn ipv6_hops_and_proxies() {
        assert_eq!(
            via_proxy(&[("forwarded", b"for=\"[2001:db8::1]:4711\"")]),
            "2001:db8::1"
        );
        assert_eq!(
            via_proxy(&[("forwarded", b"for=\"[2001:db8::1]\", for=10.0.0.2")]),
            "2001:db8::1"
        );
        assert_eq!(
            via_proxy(&[("x-forwarded-for", b"2001:db8::1")]),
            "2001:db8::1"
        );
        assert_eq!(
            via_proxy(&[("x-forwarded-for", b"[2001:db8::1]:4711")]),
            "2001:db8::1"
        );
        // A mapped address is the IPv4 client.
        assert_eq!(
            via_proxy(&[("x-forwarded-for", b"::ffff:198.51.100.7")]),
            "198.51.100.7"
        );
        // An IPv6 proxy network, and an IPv4 proxy seen as a mapped peer.
        let trusted = "2001:db8:ffff::/48, 10.0.0.0/8";
        let chain: &[(&str, &[u8])] = &[("x-forwarded-for", b"2001:db8:1::5, 2001:db8:ffff::2")];
        assert_eq!(resolve("2001:db8:ffff::1", chain, trusted), "2001:db8:1::5");
        assert_eq!(resolve("::ffff:10.0.0.1", chain, trusted), "2001:db8:1::5");
    }

    #[test]
    fn a_chain_of_trusted_proxies_gives_the_leftmost() {
        assert_eq!(
            via_proxy(&[("x-forwarded-for", b"10.0.0.3, 10.0.0.2")]),
            "10.0.0.3"
        );
        assert_eq!(
            via_proxy(&[("forwarded", b"for=10.0.0.3, for=10.0.0.2")]),
            "10.0.0.3"
        );
    }

    #[test]
    fn malformed_headers_give_the_peer() {
        let malformed: &[(&str, &[u8])] = &[
            ("x-forwarded-for", b""),
            ("x-forwarded-for", b"198.51.100.7, not an address"),
            ("x-forwarded-for", b"198.51.100.7:http"),
            ("x-forwarded-for", b"198.51.100.07"),
            ("x-forwarded-for", b"[2001:db8::1"),
            ("x-forwarded-for", b"\xff198.51.100.7"),
            ("forwarded", b""),
            ("forwarded", b"for=198.51.100.7, proto=https"),
            ("forwarded", b"for=198.51.100.7;for=198.51.100.8"),
            ("forwarded", b"for=unknown"),
            ("forwarded", b"for=_hidden"),
            ("forwarded", b"for=2001:db8::1"),
            ("forwarded", b"for=\"[2001:db8::1\""),
            ("forwarded", b"for=\"198.51.100.7:123456\""),
            ("forwarded", b"for=198.51.100.7;proto"),
            ("forwarded", b"for=198.51.100.7;pr\\o=https"),
            // An unterminated quote swallows the rest of the header.
            ("forwarded", b"for=\"192.0.2.66, for=198.51.100.7"),
        ];
        for (name, value) in malformed {
            assert_eq!(
                via_proxy(&[(name, value)]),
                PROXY,
                "{name}: {}",
                String::from_utf8_lossy(value)
            );
        }
        // A broken Forwarded is not replaced by X-Forwarded-For.
        assert_eq!(
            via_proxy(&[
                ("forwarded", b"for=unknown"),
                ("x-forwarded-for", b"198.51.100.7"),
            ]),
            PROXY
        );
    }
}
